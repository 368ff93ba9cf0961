"""Tenants and their API keys: create, rotate, revoke, look up.

An API key is ``sgk_`` + 43 URL-safe characters (256 random bits), shown once when it
is issued (creation or rotation); only its SHA-256 is stored. A fast hash is enough for
keys of that entropy (there is nothing to brute-force), and lookups stay one indexed
equality.

Rotation issues a new key for the same tenant row, so every (tenant, user) session —
keyed by the tenant's id, never by its key — keeps its conversations and history. The
replaced key moves to ``tenant_keys`` and keeps working until its grace period ends
(``grace_seconds`` 0: it stops at once). Revoking a tenant refuses all its keys; rotating
a revoked tenant reinstates it with a new key (its old keys stay dead).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update

from ..errors import Conflict, NotFound
from .database import DbSession
from .models import TenantKeyRow, TenantRow, new_id, utcnow

API_KEY_PREFIX = "sgk_"
#: Longest grace period a rotation may give the previous key (30 days), in seconds.
MAX_GRACE_SECONDS = 30 * 86400


def hash_api_key(api_key: str) -> str:
    """Hex SHA-256 of ``api_key``."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def is_api_key(token: str) -> bool:
    """Whether a bearer token has the shape of a tenant API key (not a JWT)."""
    return token.startswith(API_KEY_PREFIX)


def _new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def _key_prefix(api_key: str) -> str:
    # Enough to tell keys apart in a listing, far too little to guess the rest.
    return api_key[:12]


async def create_tenant(
    db: DbSession,
    name: str,
    *,
    allow_system_prompt: bool = False,
    now: datetime | None = None,
) -> tuple[TenantRow, str]:
    """Create tenant ``name``; returns the row and its API key (the only time it exists
    in clear). Raises ``Conflict`` (``tenant_exists``) if the name is taken, revoked or
    not — a revoked tenant is brought back with a rotation, which keeps its sessions."""
    name = name.strip()
    if not name:
        raise ValueError("tenant name must not be empty")
    existing = await db.scalar(select(TenantRow).where(TenantRow.name == name))
    if existing is not None:
        hint = (
            " It is revoked: `sessiongate tenants rotate "
            f"{name}` issues a new key and keeps its users' sessions."
            if existing.revoked_at is not None
            else f" Use `sessiongate tenants rotate {name}` for a new key."
        )
        raise Conflict(f"A tenant named {name!r} already exists.{hint}", code="tenant_exists")
    api_key = _new_api_key()
    row = TenantRow(
        id=new_id(),
        name=name,
        api_key_hash=hash_api_key(api_key),
        api_key_prefix=_key_prefix(api_key),
        created_at=now or utcnow(),
        allow_system_prompt=allow_system_prompt,
    )
    db.add(row)
    await db.flush()
    return row, api_key


async def get_tenant(db: DbSession, name_or_id: str) -> TenantRow:
    """The tenant named ``name_or_id`` (or with that id). Raises ``NotFound``."""
    row = await db.scalar(select(TenantRow).where(TenantRow.name == name_or_id))
    if row is None:
        row = await db.scalar(select(TenantRow).where(TenantRow.id == name_or_id))
    if row is None:
        raise NotFound(f"No tenant named {name_or_id!r}.", code="tenant_not_found")
    return row


async def update_tenant(
    db: DbSession, name: str, *, allow_system_prompt: bool | None = None
) -> TenantRow:
    """Change a tenant's options (``None`` leaves one as it is). Raises ``NotFound``."""
    row = await get_tenant(db, name)
    if allow_system_prompt is not None:
        row.allow_system_prompt = allow_system_prompt
    await db.flush()
    return row


@dataclass(frozen=True, slots=True)
class RotatedKey:
    """The outcome of a rotation: the tenant, its new key (in clear, this once), and
    when the previous key stops working (None: it already has)."""

    tenant: TenantRow
    api_key: str
    previous_key_expires_at: datetime | None


async def rotate_tenant_key(
    db: DbSession, name: str, *, grace_seconds: int = 0, now: datetime | None = None
) -> RotatedKey:
    """Issue a new API key for tenant ``name``, keeping its id and so its sessions.

    ``grace_seconds`` (0..``MAX_GRACE_SECONDS``): how long the replaced key keeps
    working; 0 stops it at once (a leaked key). Keys replaced by earlier rotations are
    cut to the same deadline at the latest. A revoked tenant is reinstated; none of its
    old keys work again. Raises ``NotFound`` and ``ValueError`` (grace out of range).
    """
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise ValueError(f"grace_seconds must be between 0 and {MAX_GRACE_SECONDS}")
    now = now or utcnow()
    row = await get_tenant(db, name)
    previous_expires: datetime | None = None
    if row.revoked_at is not None:
        # A revoked key must never come back: drop every earlier key.
        await db.execute(delete(TenantKeyRow).where(TenantKeyRow.tenant_id == row.id))
        row.revoked_at = None
    else:
        deadline = now + timedelta(seconds=grace_seconds)
        await db.execute(
            update(TenantKeyRow)
            .where(TenantKeyRow.tenant_id == row.id, TenantKeyRow.expires_at > deadline)
            .values(expires_at=deadline)
        )
        await db.execute(
            delete(TenantKeyRow).where(
                TenantKeyRow.tenant_id == row.id, TenantKeyRow.expires_at <= now
            )
        )
        if grace_seconds > 0:
            db.add(
                TenantKeyRow(
                    id=new_id(),
                    tenant_id=row.id,
                    key_hash=row.api_key_hash,
                    key_prefix=row.api_key_prefix,
                    created_at=now,
                    expires_at=deadline,
                )
            )
            previous_expires = deadline
    api_key = _new_api_key()
    row.api_key_hash = hash_api_key(api_key)
    row.api_key_prefix = _key_prefix(api_key)
    await db.flush()
    return RotatedKey(tenant=row, api_key=api_key, previous_key_expires_at=previous_expires)


async def revoke_tenant(db: DbSession, name: str, *, now: datetime | None = None) -> TenantRow:
    """Revoke the tenant and every key it has; its next request gets 401.

    Its sessions stay (an admin may delete them); ``rotate_tenant_key`` reinstates the
    tenant with a new key. Raises ``NotFound``.
    """
    row = await get_tenant(db, name)
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
    await db.execute(delete(TenantKeyRow).where(TenantKeyRow.tenant_id == row.id))
    await db.flush()
    return row


async def tenant_for_api_key(
    db: DbSession, api_key: str, *, now: datetime | None = None
) -> TenantRow | None:
    """The tenant owning ``api_key`` (revoked or not), or None.

    The current key always matches; a previous key only until its ``expires_at``.
    """
    digest = hash_api_key(api_key)
    previous = (
        select(TenantKeyRow.tenant_id)
        .where(TenantKeyRow.key_hash == digest, TenantKeyRow.expires_at > (now or utcnow()))
        .scalar_subquery()
    )
    return await db.scalar(
        select(TenantRow).where(or_(TenantRow.api_key_hash == digest, TenantRow.id == previous))
    )


__all__ = [
    "API_KEY_PREFIX",
    "MAX_GRACE_SECONDS",
    "RotatedKey",
    "create_tenant",
    "get_tenant",
    "hash_api_key",
    "is_api_key",
    "revoke_tenant",
    "rotate_tenant_key",
    "tenant_for_api_key",
    "update_tenant",
]
