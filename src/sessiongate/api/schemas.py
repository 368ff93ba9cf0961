"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..store import ConversationRow, MessageRow


class ChatRequest(BaseModel):
    """One user message. Only a tenant's API-key caller may name the end user
    (``user``, or the old clients' ``user_id``); anyone else who does gets 403."""

    model_config = ConfigDict(extra="ignore")

    message: str = Field(description="The user's message (UTF-8 text).")
    conversation_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Continue this conversation; omitted: the most recent one, or a new one.",
    )
    user: str | None = Field(None, description="End user, for API-key callers only.")
    user_id: str | None = Field(None, description="Same as `user` (old clients' name).")
    new_conversation: bool = Field(
        False, description="Start a new conversation with this message (no conversation_id)."
    )
    regenerate: bool = Field(
        False,
        description="Answer the last user message of `conversation_id` again, replacing "
        "the reply after it; `message` is ignored.",
    )
    edit_last: bool = Field(
        False,
        description="Replace the last user message of `conversation_id` with `message` "
        "(dropping what followed) and answer it.",
    )
    parameters: dict[str, Any] | None = Field(
        None,
        description="Coze workflow inputs for this turn, only the keys the operator allows "
        "(`COZE_WORKFLOW_CLIENT_PARAMETERS`); tenant API-key callers with `coze-workflow`.",
    )
    custom_variables: dict[str, Any] | None = Field(
        None,
        description="Coze bot `custom_variables` for this turn, only the keys the operator "
        "allows (`COZE_BOT_CLIENT_VARIABLES`); tenant API-key callers with `coze-bot`.",
    )


class ChatResponse(BaseModel):
    success: Literal[True] = True
    message: str = Field(description="The assistant's reply.")
    conversation_id: str
    message_id: str
    finish_reason: str = Field(
        "stop", description="`stop`, `length` (token limit or reply cap) or `cancelled`."
    )


class StopResult(BaseModel):
    stopped: bool = Field(description="Whether a reply in progress was asked to stop.")


class ConversationRename(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=120)


class SessionCreated(BaseModel):
    token: str = Field(description="Send as 'Authorization: Bearer <token>'; also set as a cookie.")
    session_id: str
    expires_at: datetime


class SessionInfo(BaseModel):
    session_id: str
    created_at: datetime
    last_active_at: datetime
    expires_at: datetime
    conversation_count: int
    message_count: int


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, max_length=120)


class Conversation(BaseModel):
    id: str
    title: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int = 0

    @classmethod
    def of(cls, row: ConversationRow, message_count: int = 0) -> Conversation:
        return cls(
            id=row.id,
            title=row.title,
            created_at=row.created_at,
            updated_at=row.updated_at,
            message_count=message_count,
        )


class ConversationPage(BaseModel):
    conversations: list[Conversation]
    total: int
    limit: int
    offset: int


class Message(BaseModel):
    id: str
    role: Literal["user", "assistant"]
    content: str
    status: Literal["complete", "streaming", "incomplete", "error", "interrupted"]
    created_at: datetime
    error_code: str | None = None
    finish_reason: str | None = None
    feedback: Literal["up", "down"] | None = Field(None, description="Your rating of a reply.")

    @classmethod
    def of(cls, row: MessageRow) -> Message:
        return cls.model_validate(
            {
                "id": row.id,
                "role": row.role,
                "content": row.content,
                "status": row.status,
                "created_at": row.created_at,
                "error_code": row.error_code,
                "finish_reason": row.finish_reason,
                "feedback": row.feedback,
            }
        )


class MessagePage(BaseModel):
    messages: list[Message]
    total: int | None = Field(
        None, description="All messages of the conversation (offset paging only)."
    )
    limit: int
    offset: int | None = None
    has_more: bool = Field(False, description="Older messages exist (`before` paging).")


class SessionReset(BaseModel):
    conversation: Conversation


class SessionCounts(BaseModel):
    total: int
    active: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    provider: str
    database: Literal["ok", "unreachable"]
    sessions: SessionCounts | None
    turns_in_progress: int


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorEnvelope(BaseModel):
    error: ErrorBody


__all__ = [
    "ChatRequest",
    "ChatResponse",
    "Conversation",
    "ConversationCreate",
    "ConversationPage",
    "ErrorEnvelope",
    "Health",
    "Message",
    "MessagePage",
    "SessionCreated",
    "SessionInfo",
    "SessionReset",
    "StopResult",
    "ConversationRename",
]
