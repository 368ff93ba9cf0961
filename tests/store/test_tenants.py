"""Tenant keys (store.tenants): rotation keeps the tenant and so its end users' sessions;
the previous key works only for its grace period; revocation refuses every key; a
revoked tenant comes back by rotation, not by re-creating its name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from sessiongate.errors import Conflict, NotFound
from sessiongate.store import DbSession, create_engine, create_sessionmaker, migrate
from sessiongate.store import queries as q
from sessiongate.store.models import utcnow
from sessiongate.store.tenants import (
    create_tenant,
    revoke_tenant,
    rotate_tenant_key,
    tenant_for_api_key,
    update_tenant,
)


@pytest.fixture
async def maker(database_url: str) -> AsyncIterator[async_sessionmaker[DbSession]]:
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


async def owner(maker: async_sessionmaker[DbSession], key: str, **kw: object) -> str | None:
    async with maker() as db:
        row = await tenant_for_api_key(db, key, **kw)  # type: ignore[arg-type]
    return row.name if row is not None else None


async def test_rotation_with_grace_keeps_the_old_key_until_its_deadline(
    maker: async_sessionmaker[DbSession],
) -> None:
    now = utcnow()
    async with maker() as db, db.begin():
        tenant, old = await create_tenant(db, "acme", now=now)
        rotated = await rotate_tenant_key(db, "acme", grace_seconds=600, now=now)
    assert rotated.tenant.id == tenant.id and rotated.api_key != old
    assert rotated.previous_key_expires_at == now + timedelta(seconds=600)
    assert await owner(maker, rotated.api_key) == "acme"
    assert await owner(maker, old, now=now + timedelta(seconds=599)) == "acme"
    assert await owner(maker, old, now=now + timedelta(seconds=600)) is None


async def test_rotation_without_grace_stops_the_old_key_and_cuts_earlier_ones(
    maker: async_sessionmaker[DbSession],
) -> None:
    now = utcnow()
    async with maker() as db, db.begin():
        _, first = await create_tenant(db, "acme", now=now)
        second = (await rotate_tenant_key(db, "acme", grace_seconds=3600, now=now)).api_key
        third = await rotate_tenant_key(db, "acme", grace_seconds=0, now=now)
    assert third.previous_key_expires_at is None
    assert await owner(maker, first) is None  # a leaked key is not kept alive by its grace
    assert await owner(maker, second) is None
    assert await owner(maker, third.api_key) == "acme"


async def test_end_users_keep_their_session_across_a_rotation(
    maker: async_sessionmaker[DbSession],
) -> None:
    async with maker() as db, db.begin():
        tenant, _ = await create_tenant(db, "acme")
        before = await q.session_for_principal(
            db,
            kind="tenant",
            principal=f"tenant:{tenant.id}:alice",
            idle_ttl=3600,
            tenant_id=tenant.id,
            external_user="alice",
        )
        rotated = await rotate_tenant_key(db, "acme")
    async with maker() as db:
        again = await tenant_for_api_key(db, rotated.api_key)
        assert again is not None
        after = await q.session_for_principal(
            db,
            kind="tenant",
            principal=f"tenant:{again.id}:alice",
            idle_ttl=3600,
            tenant_id=again.id,
            external_user="alice",
        )
    assert after.id == before.id


async def test_revoke_refuses_every_key_and_rotation_reinstates_with_a_new_one(
    maker: async_sessionmaker[DbSession],
) -> None:
    async with maker() as db, db.begin():
        tenant, first = await create_tenant(db, "acme")
        graced = (await rotate_tenant_key(db, "acme", grace_seconds=3600)).api_key
        await revoke_tenant(db, "acme")
    async with maker() as db:
        revoked = await tenant_for_api_key(db, graced)
        assert revoked is not None and revoked.revoked_at is not None
        assert await tenant_for_api_key(db, first) is None  # the graced old key is gone
    async with maker() as db, db.begin():
        with pytest.raises(Conflict, match="tenants rotate acme"):
            await create_tenant(db, "acme")
    async with maker() as db, db.begin():
        back = await rotate_tenant_key(db, "acme", grace_seconds=3600)
    assert back.tenant.id == tenant.id and back.tenant.revoked_at is None
    assert back.previous_key_expires_at is None
    assert await owner(maker, graced) is None  # revoked keys never come back
    assert await owner(maker, back.api_key) == "acme"


async def test_update_sets_allow_system_prompt_and_unknown_tenants_are_not_found(
    maker: async_sessionmaker[DbSession],
) -> None:
    async with maker() as db, db.begin():
        row, _ = await create_tenant(db, "acme")
        assert row.allow_system_prompt is False
        assert (await update_tenant(db, "acme", allow_system_prompt=True)).allow_system_prompt
        assert (await update_tenant(db, row.id)).allow_system_prompt  # by id; None keeps it
        with pytest.raises(NotFound):
            await rotate_tenant_key(db, "nobody")
        with pytest.raises(ValueError):
            await rotate_tenant_key(db, "acme", grace_seconds=-1)


async def test_migration_0006_keeps_existing_tenants_and_downgrades(database_url: str) -> None:
    import asyncio

    from alembic import command

    from sessiongate.store.database import _alembic_config

    config = _alembic_config(database_url)
    await asyncio.to_thread(command.upgrade, config, "0005_feedback")
    engine = create_engine(database_url)
    try:
        maker = create_sessionmaker(engine)
        async with maker() as db, db.begin():
            await db.execute(
                text(
                    "INSERT INTO tenants (id, name, api_key_hash, api_key_prefix, created_at) "
                    "VALUES ('t1', 'acme', :h, 'sgk_abc', CURRENT_TIMESTAMP)"
                ),
                {"h": "0" * 64},
            )
        await asyncio.to_thread(command.upgrade, config, "head")
        async with maker() as db, db.begin():
            row = await update_tenant(db, "acme")
            assert row.allow_system_prompt is False
            rotated = await rotate_tenant_key(db, "acme", grace_seconds=60)
        assert rotated.previous_key_expires_at is not None
        await asyncio.to_thread(command.downgrade, config, "0005_feedback")
        await asyncio.to_thread(command.upgrade, config, "head")
    finally:
        await engine.dispose()
