"""Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` SDK.

The session's opaque ``session_name`` is sent as the request's ``user`` field (OpenAI's
per-end-user abuse-tracking id), never an internal id. The context is trimmed to
``context_tokens`` with a conservative character estimate, as the endpoint's tokenizer
is unknown here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any

import openai

from ..errors import RateLimited, UpstreamError, UpstreamTimeout
from .base import ContextWindow, Finish, ProviderEvent, TextDelta, TurnRequest, Usage
from .transport import TRANSPORT_ERRORS, transport_error

log = logging.getLogger(__name__)


def estimate_tokens(text: str) -> int:
    """Upper-bound-ish token estimate: ~1 token per CJK character, ~4 chars per token otherwise."""
    wide = sum(1 for ch in text if ord(ch) > 0x2E80)
    return wide + (len(text) - wide + 3) // 4


class OpenAIProvider:
    """Streams replies from ``{base_url}/chat/completions`` with model ``model``.

    Timeouts in seconds: ``connect_timeout`` to reach the endpoint, ``idle_timeout``
    between two chunks. The SDK's own retries are off: a turn is not silently repeated.
    """

    name = "openai"
    max_pending: int | None = None

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        context_tokens: int,
        max_tokens: int | None,
        connect_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.model = model
        self._max_tokens = max_tokens
        budget = context_tokens - (max_tokens or context_tokens // 4)
        self._window = ContextWindow(budget=max(budget, 64), count_tokens=estimate_tokens)
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # Local servers (vLLM, llama.cpp server, Ollama) often need no key.
            api_key=api_key or "unused",
            max_retries=0,
            timeout=openai.Timeout(idle_timeout, connect=connect_timeout),
        )

    async def stream_reply(self, request: TurnRequest) -> AsyncGenerator[ProviderEvent, None]:
        """Stream the reply; raises ``UpstreamError`` subclasses, never ``openai`` errors."""
        messages: list[Any] = [
            {"role": m.role, "content": m.content} for m in self._window.trim(request.messages)
        ]
        extra: dict[str, Any] = {}
        if self._max_tokens is not None:
            extra["max_tokens"] = self._max_tokens
        started = False  # a reply had begun: a failure now is a cut, not "unreachable"
        try:
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                user=request.session_name,
                **extra,
            )
            finish: str | None = None
            async with stream:
                async for chunk in stream:
                    started = True
                    for choice in chunk.choices:
                        if choice.delta.content:
                            yield TextDelta(choice.delta.content)
                        if choice.finish_reason:
                            finish = choice.finish_reason
                    if chunk.usage is not None:
                        yield Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            if finish is not None:
                # The endpoint's own reason: "length" when its max_tokens cut the reply.
                yield Finish(finish)
        except openai.APITimeoutError as exc:
            what = "stopped sending" if started else "did not answer in time"
            raise UpstreamTimeout(f"The model endpoint {what}.", detail=repr(exc)) from exc
        except openai.APIConnectionError as exc:
            # The SDK wraps the httpx failure; map the cause in the one shared place.
            raise transport_error(
                exc.__cause__ or exc, upstream="The model endpoint", started=started
            ) from exc
        except openai.RateLimitError as exc:
            raise RateLimited(
                "The model endpoint is rate limiting; try again shortly.",
                retry_after=_retry_after(exc.response.headers.get("retry-after")),
            ) from exc
        except openai.APIStatusError as exc:
            raise UpstreamError(
                f"The model endpoint answered HTTP {exc.status_code}.",
                upstream_code=exc.status_code,
                logid=exc.request_id,
            ) from exc
        except TRANSPORT_ERRORS as exc:
            # The SDK lets transport errors raised while iterating a stream escape raw.
            raise transport_error(exc, upstream="The model endpoint", started=True) from exc
        except openai.OpenAIError as exc:
            # Includes errors sent inside the stream; their text may echo the request.
            raise UpstreamError("The model endpoint failed mid-reply.") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            # A chunk that is not JSON (`data: {not json`) or not a chunk's shape
            # (`"choices": null`): the upstream is broken, the turn must say so.
            log.warning("unreadable chunk from the model endpoint", exc_info=exc)
            raise UpstreamError(
                "The model endpoint sent a reply the gateway could not read.",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc

    async def aclose(self) -> None:
        await self._client.close()


def _retry_after(header: str | None) -> int:
    try:
        return max(1, int(float(header or "5")))
    except ValueError:
        return 5


__all__ = ["OpenAIProvider", "estimate_tokens"]
