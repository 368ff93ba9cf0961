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
