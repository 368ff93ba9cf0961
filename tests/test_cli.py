"""The sessiongate command."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from sessiongate import __version__
from sessiongate.cli import app


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"sessiongate {__version__}"


def test_serve_refuses_an_unknown_provider_naming_the_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sessiongate.cli", "serve", "--provider", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "provider" in result.stderr


def test_migrate_creates_the_database(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("SESSIONGATE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/m.db")
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.db").exists()


def test_tenants_create_list_revoke(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import asyncio

    from sessiongate.store import create_engine, create_sessionmaker
    from sessiongate.store.tenants import tenant_for_api_key

    url = f"sqlite+aiosqlite:///{tmp_path}/t.db"
    monkeypatch.setenv("SESSIONGATE_DATABASE_URL", url)
    runner = CliRunner()
    created = runner.invoke(app, ["tenants", "create", "acme"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("sgk_")
    assert runner.invoke(app, ["tenants", "create", "acme"]).exit_code == 1  # name taken
    listed = runner.invoke(app, ["tenants", "list"])
    assert "acme" in listed.output and "active" in listed.output and key not in listed.output
    assert runner.invoke(app, ["tenants", "revoke", "acme"]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["tenants", "list"]).output
    again = runner.invoke(app, ["tenants", "create", "acme"])
    assert again.exit_code == 1 and "tenants rotate acme" in again.output

    async def stored() -> tuple[bool, bool]:
        engine = create_engine(url)
        async with create_sessionmaker(engine)() as db:
            tenant = await tenant_for_api_key(db, key)
        await engine.dispose()
        return tenant is not None, tenant is not None and tenant.revoked_at is not None

    assert asyncio.run(stored()) == (True, True)


def test_sessions_list_and_cleanup_act_on_exactly_the_expired_sessions(
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    import asyncio
    from datetime import timedelta

    from sessiongate.store import create_engine, create_sessionmaker, migrate
    from sessiongate.store import queries as q
    from sessiongate.store.models import utcnow

    url = f"sqlite+aiosqlite:///{tmp_path}/s.db"
    monkeypatch.setenv("SESSIONGATE_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "200")  # rich would fold the ids in a narrow table

    async def seed() -> tuple[list[str], str]:
        await migrate(url)
        engine = create_engine(url)
        try:
            async with create_sessionmaker(engine)() as db, db.begin():
                past = utcnow() - timedelta(hours=2)
                expired = [(await q.create_session(db, idle_ttl=60, now=past)).id for _ in range(2)]
                active = (await q.create_session(db, idle_ttl=3600)).id
        finally:
            await engine.dispose()
        return expired, active

    expired, active = asyncio.run(seed())
    runner = CliRunner()
    listed = runner.invoke(app, ["sessions", "list", "--expired"])
    assert listed.exit_code == 0, listed.output
    assert all(sid in listed.output for sid in expired) and active not in listed.output
    result = runner.invoke(app, ["sessions", "cleanup"])
    assert result.exit_code == 0, result.output
    assert "deleted 2 sessions" in result.output
    remaining = runner.invoke(app, ["sessions", "list"])
    assert active in remaining.output and not any(sid in remaining.output for sid in expired)


def _tenant_of(url: str, key: str) -> tuple[str | None, bool]:
    """(tenant name owning ``key`` or None, whether it is revoked)."""
    import asyncio

    from sessiongate.store import create_engine, create_sessionmaker
    from sessiongate.store.tenants import tenant_for_api_key

    async def look() -> tuple[str | None, bool]:
        engine = create_engine(url)
        try:
            async with create_sessionmaker(engine)() as db:
                tenant = await tenant_for_api_key(db, key)
        finally:
            await engine.dispose()
        return (tenant.name, tenant.revoked_at is not None) if tenant else (None, False)

    return asyncio.run(look())


def test_tenants_rotate_issues_a_new_key_and_ends_the_old_one(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    url = f"sqlite+aiosqlite:///{tmp_path}/r.db"
    monkeypatch.setenv("SESSIONGATE_DATABASE_URL", url)
    runner = CliRunner()
    old = runner.invoke(app, ["tenants", "create", "acme"]).output.strip().splitlines()[-1]
    graced = runner.invoke(app, ["tenants", "rotate", "acme", "--grace", "3600"])
    assert graced.exit_code == 0, graced.output
    assert "keeps working until" in graced.output
    second = graced.output.strip().splitlines()[-1]
    assert second.startswith("sgk_") and second != old
    assert _tenant_of(url, old) == ("acme", False)  # within its grace period
    now = runner.invoke(app, ["tenants", "rotate", "acme"])
    assert now.exit_code == 0 and "stopped working now" in now.output
    third = now.output.strip().splitlines()[-1]
    assert _tenant_of(url, old) == (None, False)
    assert _tenant_of(url, second) == (None, False)
    assert _tenant_of(url, third) == ("acme", False)
    # A revoked tenant comes back by rotation, with the same id (so the same sessions).
    assert runner.invoke(app, ["tenants", "revoke", "acme"]).exit_code == 0
    back = runner.invoke(app, ["tenants", "rotate", "acme"])
    assert back.exit_code == 0 and "reinstated" in back.output
    assert _tenant_of(url, back.output.strip().splitlines()[-1]) == ("acme", False)
    assert runner.invoke(app, ["tenants", "rotate", "nobody"]).exit_code == 1


def test_listings_print_json_and_full_ids_when_piped(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import json

    url = f"sqlite+aiosqlite:///{tmp_path}/l.db"
    monkeypatch.setenv("SESSIONGATE_DATABASE_URL", url)
    runner = CliRunner()
    runner.invoke(app, ["tenants", "create", "acme", "--allow-system-prompt"])
    runner.invoke(app, ["tenants", "create", "globex"])
    runner.invoke(app, ["tenants", "revoke", "acme"])
    assert (
        runner.invoke(app, ["tenants", "update", "globex", "--allow-system-prompt"]).exit_code == 0
    )
    tenants = json.loads(runner.invoke(app, ["tenants", "list", "--json"]).output)
    assert [(t["name"], t["state"], t["allow_system_prompt"]) for t in tenants] == [
        ("globex", "active", True),
        ("acme", "revoked", True),
    ]
    assert all(len(t["id"]) == 32 and t["sessions"] == 0 for t in tenants)
    # Not a terminal: tab-separated, header first, ids in full.
    piped = runner.invoke(app, ["tenants", "list"]).output.splitlines()
    assert piped[0].split("\t")[:2] == ["name", "id"]
    assert {line.split("\t")[1] for line in piped[1:]} == {t["id"] for t in tenants}
    sessions = runner.invoke(app, ["sessions", "list", "--json"])
    assert sessions.exit_code == 0 and json.loads(sessions.output) == []
    header = runner.invoke(app, ["sessions", "list", "--tenant", "acme"]).output.splitlines()
    assert header[0].split("\t")[0] == "id"


def test_serve_lists_every_missing_setting_in_one_start(tmp_path) -> None:  # noqa: ANN001
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("COZE_", "SESSIONGATE_"))}
    env["SESSIONGATE_SECRET_KEY"] = "x" * 40
    result = subprocess.run(
        [sys.executable, "-m", "sessiongate.cli", "serve", "--provider", "coze-workflow"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    for named in (
        "COZE_OAUTH_CLIENT_ID",
        "COZE_OAUTH_PUBLIC_KEY_ID",
        "COZE_OAUTH_PRIVATE_KEY_FILE",
        "COZE_WORKFLOW_ID",
        "COZE_APP_ID",
    ):
        assert named in result.stderr
    assert "5 settings need attention" in result.stderr


def test_serve_on_postgres_without_a_secret_key_refuses_saying_what_to_set(tmp_path) -> None:  # noqa: ANN001
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONGATE_", "COZE_"))}
    env |= {
        "SESSIONGATE_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/never_used",
        "SESSIONGATE_PROVIDER": "openai",
    }
    result = subprocess.run(
        [sys.executable, "-m", "sessiongate.cli", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "SESSIONGATE_SECRET_KEY" in result.stderr
    assert not (tmp_path / ".sessiongate-secret").exists()
