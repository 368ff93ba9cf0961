"""Migrations applied once when several processes start at the same moment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from sessiongate.store import create_engine
from sessiongate.store.migration_lock import migration_lock_path

# Each racer waits for the go file, then migrates the database under the lock.
_RACER = """
import os, sys, time
from sessiongate.store.migration_lock import migrate_exclusively_sync
ready, go, url = sys.argv[1:4]
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    pass
migrate_exclusively_sync(url)
"""


def _race(tmp_path: Path, url: str, racers: int = 4) -> list[tuple[int, str]]:
    """Start ``racers`` processes, release them at once; (returncode, stderr) of each."""
    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONGATE_")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path / f"ready-{i}"), str(go), url],
            stdout=subprocess.DEVNULL,
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
        go.touch()
        return [(p.wait(timeout=180), p.communicate(timeout=10)[1]) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


async def _versions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return [
                row[0]
                for row in await conn.execute(text("SELECT version_num FROM alembic_version"))
            ]
    finally:
        await engine.dispose()


async def _head() -> str:
    from alembic.script import ScriptDirectory

    from sessiongate.store.database import _alembic_config

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def test_processes_starting_together_on_one_sqlite_file_migrate_it_once(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/db/gateway.db"
    results = _race(tmp_path, url)
    assert [code for code, _ in results] == [0] * len(results), [err for _, err in results]
    assert await _versions(url) == [await _head()]
    assert migration_lock_path(url) == tmp_path / "db" / "gateway.db.migrate-lock"


@pytest.mark.postgres
async def test_processes_starting_together_on_postgres_migrate_it_once(
    tmp_path: Path, postgres_url: str
) -> None:
    results = _race(tmp_path, postgres_url)
    assert [code for code, _ in results] == [0] * len(results), [err for _, err in results]
    assert await _versions(postgres_url) == [await _head()]
