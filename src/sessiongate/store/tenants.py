"""Tenants and their API keys.

An API key is ``sgk_`` + 43 URL-safe characters (256 random bits), shown once at
creation; only its SHA-256 is stored. A fast hash is enough for keys of that entropy
(there is nothing to brute-force), and lookups stay one indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from ..errors import Conflict, NotFound
from .database import DbSession
from .models import TenantRow, new_id, utcnow

API_KEY_PREFIX = "sgk_"


def hash_api_key(api_key: str) -> str:
    """Hex SHA-256 of ``api_key``."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def is_api_key(token: str) -> bool:
    """Whether a bearer token has the shape of a tenant API key (not a JWT)."""
    return token.startswith(API_KEY_PREFIX)


async def create_tenant(
    db: DbSession, name: str, *, now: datetime | None = None
) -> tuple[TenantRow, str]:
    """Create tenant ``name``; returns the row and its API key (the only time it exists
    in clear). Raises ``Conflict`` if the name is taken."""
    name = name.strip()
    if not name:
        raise ValueError("tenant name must not be empty")
    if await db.scalar(select(TenantRow.id).where(TenantRow.name == name)) is not None:
        raise Conflict(f"A tenant named {name!r} already exists.", code="tenant_exists")
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    row = TenantRow(
        id=new_id(),
        name=name,
        api_key_hash=hash_api_key(api_key),
        api_key_prefix=api_key[:12],
        created_at=now or utcnow(),
    )
    db.add(row)
    await db.flush()
    return row, api_key


async def list_tenants(db: DbSession) -> Sequence[TenantRow]:
    """Every tenant, oldest first, revoked ones included."""
    return (await db.scalars(select(TenantRow).order_by(TenantRow.created_at))).all()


async def revoke_tenant(db: DbSession, name: str, *, now: datetime | None = None) -> TenantRow:
    """Revoke the tenant's API key; its next request gets 401. Raises ``NotFound``."""
    row = await db.scalar(select(TenantRow).where(TenantRow.name == name))
    if row is None:
        raise NotFound(f"No tenant named {name!r}.", code="tenant_not_found")
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
        await db.execute(
            update(TenantRow).where(TenantRow.id == row.id).values(revoked_at=row.revoked_at)
        )
    return row


async def tenant_for_api_key(db: DbSession, api_key: str) -> TenantRow | None:
    """The tenant owning ``api_key`` (revoked or not), or None."""
    return await db.scalar(select(TenantRow).where(TenantRow.api_key_hash == hash_api_key(api_key)))


__all__ = [
    "API_KEY_PREFIX",
    "create_tenant",
    "hash_api_key",
    "is_api_key",
    "list_tenants",
    "revoke_tenant",
    "tenant_for_api_key",
]
