"""Settings: the signing key that every replica and worker must share."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sessiongate.errors import ConfigurationError

from .conftest import make_settings

# Each racer waits for the go file, then resolves the key and prints it.
_RACER = """
import os, sys, time
from sessiongate.config import Settings
ready, go, url = sys.argv[1:4]
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    pass
print(Settings(_env_file=None, database_url=url).resolve_secret_key())
"""


def test_processes_racing_to_generate_the_secret_key_all_get_the_same_one(
    tmp_path: Path,
) -> None:
    racers = 16
    url = f"sqlite+aiosqlite:///{tmp_path}/data/g.db"
    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONGATE_")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path / f"ready-{i}"), str(go), url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for i in range(racers)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready-{i}").exists() for i in range(racers)):
            assert time.monotonic() < deadline, "racers did not start"
            assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
            time.sleep(0.05)
        go.touch()  # all of them imported and are spinning: release them at once
        outputs = [p.communicate(timeout=120) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    assert [p.returncode for p in processes] == [0] * racers, [err for _, err in outputs]
    keys = {out.strip() for out, _ in outputs}
    path = tmp_path / "data" / ".sessiongate-secret"
    assert keys == {path.read_text()}, keys  # one key, the one on disk, never empty
    assert len(keys.pop()) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [".sessiongate-secret"]  # no temps


def test_empty_secret_key_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / ".sessiongate-secret").write_text("\n")
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/g.db", secret_key=None)
    with pytest.raises(ConfigurationError) as exc:
        settings.resolve_secret_key()
    assert "SESSIONGATE_SECRET_KEY" in exc.value.message and "empty" in exc.value.message


def test_postgres_without_a_secret_key_is_refused_naming_what_to_set() -> None:
    settings = make_settings("postgresql+asyncpg://u@db.internal/gw", secret_key=None)
    with pytest.raises(ConfigurationError) as exc:
        settings.resolve_secret_key()
    assert "SESSIONGATE_SECRET_KEY" in exc.value.message
    assert "SESSIONGATE_SECRET_KEY_FILE" in exc.value.message


def test_secret_key_file_setting_is_generated_once_and_shared(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "gateway.key"
    first = make_settings(
        "postgresql+asyncpg://u@db.internal/gw", secret_key=None, secret_key_file=shared
    )
    second = make_settings(
        "postgresql+asyncpg://u@other.internal/gw", secret_key=None, secret_key_file=shared
    )
    key = first.resolve_secret_key()
    assert second.resolve_secret_key() == key == shared.read_text()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o600


def test_explicit_secret_key_wins_over_any_file(tmp_path: Path) -> None:
    (tmp_path / ".sessiongate-secret").write_text("a-key-on-disk-that-is-long-enough-000000")
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/g.db")
    assert settings.resolve_secret_key() == settings.secret_key.get_secret_value()  # type: ignore[union-attr]
