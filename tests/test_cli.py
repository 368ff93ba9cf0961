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

    async def stored() -> tuple[bool, bool]:
        engine = create_engine(url)
        async with create_sessionmaker(engine)() as db:
            tenant = await tenant_for_api_key(db, key)
        await engine.dispose()
        return tenant is not None, tenant is not None and tenant.revoked_at is not None

    assert asyncio.run(stored()) == (True, True)


def test_sessions_cleanup_and_list(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("SESSIONGATE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/s.db")
    runner = CliRunner()
    result = runner.invoke(app, ["sessions", "cleanup"])
    assert result.exit_code == 0 and "deleted 0 sessions" in result.output
    assert runner.invoke(app, ["sessions", "list"]).exit_code == 0
