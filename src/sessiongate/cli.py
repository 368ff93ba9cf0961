"""The ``sessiongate`` command: ``serve``, ``migrate`` and ``--version``."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from sqlalchemy.ext.asyncio import async_sessionmaker

from . import __version__
from .config import Settings
from .errors import ConfigurationError
from .store import DbSession
from .store.tenants import MAX_GRACE_SECONDS

T = TypeVar("T")

app = typer.Typer(help="sessiongate: an isolated multi-user AI chat gateway.", no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sessiongate {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool],  # noqa: UP045 - typer needs Optional here
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """sessiongate: an isolated multi-user AI chat gateway."""


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    provider: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="Override SESSIONGATE_PROVIDER: local, openai, coze-bot or coze-workflow."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes on this port; they share every session rule through the "
            "database (and Redis when SESSIONGATE_REDIS_URL is set).",
        ),
    ] = 1,
    graceful_timeout: Annotated[
        float,
        typer.Option(help="Seconds to let open requests and streams finish on shutdown."),
    ] = 30.0,
    log_level: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="debug, info, warning or error (overrides SESSIONGATE_LOG_LEVEL)."),
    ] = None,
) -> None:
    """Check settings, apply migrations once, and serve the gateway (http://HOST:PORT/).

    With ``--workers N`` uvicorn runs N processes, each building the app with
    ``sessiongate.app:create_app_from_env`` from the same environment; migrations and the
    generated secret key (if any) are done here first, before any worker starts.
    """
    import logging

    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from .app import MIGRATED_ENV, build_identity_provider, create_app
    from .logs import configure_logging
    from .metrics import MULTIPROC_ENV, cleanup_multiprocess, prepare_multiprocess
    from .server import server_options
    from .store.migration_lock import migrate_exclusively_sync
    from .upstreams import check_provider_settings

    # Worker processes read their settings from the environment: overrides go there too.
    if provider:
        os.environ["SESSIONGATE_PROVIDER"] = provider
    if log_level:
        os.environ["SESSIONGATE_LOG_LEVEL"] = log_level
    try:
        settings = Settings()
    except ValueError as exc:
        typer.echo(f"Invalid setting: {exc}", err=True)
        raise typer.Exit(2) from exc
    # Observability: one log format for ours, uvicorn's and the libraries' records.
    configure_logging(
        fmt=settings.log_format, level=settings.log_level, log_content=settings.log_content
    )
    # Every check runs, so one start lists everything to fix, not one problem per try.
    problems: list[str] = []
    for check in (check_provider_settings, build_identity_provider):
        try:
            check(settings)
        except ConfigurationError as exc:
            problems += exc.message.splitlines()
    if not problems:
        # Last: an unset key is generated (race-free) and written to disk, only for a
        # start that runs, so that every worker reads the same key.
        try:
            settings.resolve_secret_key()
        except ConfigurationError as exc:
            problems += exc.message.splitlines()
    if problems:
        noun = "setting needs" if len(problems) == 1 else "settings need"
        typer.echo(f"Cannot start: {len(problems)} {noun} attention:", err=True)
        for problem in problems:
            typer.echo(f"  - {problem}", err=True)
        typer.echo("Every setting is described in .env.example.", err=True)
        raise typer.Exit(2)
    try:
        # Once, under a cross-process lock (other replicas may be starting too).
        migrate_exclusively_sync(settings.database_url)
    except (OSError, SQLAlchemyError) as exc:
        typer.echo(f"Cannot start: migrating the database failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    # log_config=None: uvicorn keeps its hands off logging; its records reach our handler.
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": settings.log_level,
        "log_config": None,
        "lifespan": "on",
        "timeout_graceful_shutdown": graceful_timeout,
        **server_options(settings),  # the edge limits (server.py), in every worker
    }
    if workers == 1:
        uvicorn.run(create_app(settings, migrate_on_start=False), **common)
        return
    if not settings.redis_url:
        logging.getLogger("sessiongate.cli").warning(
            "--workers %d without SESSIONGATE_REDIS_URL: turns are coordinated through the "
            "database, but rate limits and the Coze token cache are per worker",
            workers,
        )
    os.environ[MIGRATED_ENV] = "1"
    # Metrics summed over the workers; an operator's PROMETHEUS_MULTIPROC_DIR is kept.
    metrics_dir = None if os.environ.get(MULTIPROC_ENV) else prepare_multiprocess(None)
    try:
        uvicorn.run("sessiongate.app:create_app_from_env", factory=True, workers=workers, **common)
    finally:
        if metrics_dir is not None:
            cleanup_multiprocess(metrics_dir)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for the key files.")] = Path("."),
) -> None:
    """Write an RSA key pair for a Coze OAuth (JWT) app and print the next steps."""
    from .coze import generate_keypair

    try:
        private_path, public_path = generate_keypair(out)
    except FileExistsError as exc:
        typer.echo(f"Refusing to overwrite {exc.filename}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"private key: {private_path} (mode 0600; keep it secret, never commit it)")
    typer.echo(f"public key:  {public_path}")
    typer.echo(
        "Next: upload the public key to your Coze OAuth app (Service application / JWT),\n"
        "note its public key id, then set COZE_OAUTH_CLIENT_ID, COZE_OAUTH_PUBLIC_KEY_ID and\n"
        f"COZE_OAUTH_PRIVATE_KEY_FILE={private_path}; "
        "check with `sessiongate token --session test`."
    )


@app.command()
def token(
    session: Annotated[str, typer.Option("--session", help="session_name to put in the JWT.")],
    show: Annotated[bool, typer.Option("--show", help="Also print the access token.")] = False,
) -> None:
    """Perform one Coze OAuth JWT exchange for SESSION and print when the token expires."""
    import asyncio
    from datetime import UTC, datetime

    from .coze import exchange_once, load_coze_settings
    from .errors import SessiongateError

    try:
        access_token, expires_at = asyncio.run(exchange_once(load_coze_settings(), session))
    except SessiongateError as exc:
        typer.echo(f"Token exchange failed: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    expiry = datetime.fromtimestamp(expires_at, UTC).isoformat()
    typer.echo(f"session_name {session}: access token expires at {expiry}")
    if show:
        typer.echo(access_token)


@app.command()
def audit(
    url: Annotated[str, typer.Option(help="Base URL of the running gateway.")],
    sessions: Annotated[int, typer.Option(min=0, help="Anonymous sessions to open.")] = 5,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of questions per session.")] = 1,
    api_key: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--api-key",
            envvar="SESSIONGATE_AUDIT_API_KEY",
            help="A tenant API key: also audit tenant users (the `user` path of API callers).",
        ),
    ] = None,
    users: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(min=1, help="Tenant users to audit with --api-key (default: --sessions)."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before spending upstream turns.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request.")] = 120.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a running gateway for leaks between sessions; exit 1 on any leak.

    Gives each session a secret (a made-up name and code number), asks every session
    about its own and every other session's secret, reads each session's history, and
    tries each session's conversations with the others' credentials. Every question is
    one paid upstream turn: the number is printed first and confirmed (--yes skips the
    question; without a terminal, --yes is required). Exit 2: nothing was answered.
    """
    import asyncio
    import json
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from .audit import (
        AuditError,
        describe_leak,
        exit_code,
        plan_turns,
        render_table,
        run_audit,
        verdict,
    )

    console = Console(stderr=True)
    tenant_users = (users if users is not None else max(sessions, 1)) if api_key else 0
    if sessions + tenant_users < 2:
        console.print("An audit needs at least 2 sessions (anonymous plus tenant users).")
        raise typer.Exit(2)
    turns, most = plan_turns(sessions, rounds, tenant_users)
    who = f"{sessions} anonymous session(s)"
    if tenant_users:
        who += f" and {tenant_users} tenant user(s)"
    console.print(
        f"This audit opens {who} on {url} and sends {turns} chat turns to the gateway's "
        f"upstream (up to {most} if the gateway wrongly lets one session chat into "
        "another's conversation). Each turn may be billed by your model provider."
    )
    if not yes:
        if not sys.stdin.isatty():
            console.print(
                f"Refusing to start without confirmation: no terminal to ask on. Run again "
                f"with --yes to spend these {turns} turns."
            )
            raise typer.Exit(2)
        if not typer.confirm(f"Spend {turns} upstream turns?", default=False, err=True):
            console.print("Nothing was sent.")
            raise typer.Exit(2)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=json_output,
    ) as bar:
        task = bar.add_task("auditing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            report = asyncio.run(
                run_audit(
                    url,
                    sessions=sessions,
                    rounds=rounds,
                    timeout=timeout,
                    progress=progress,
                    api_key=api_key,
                    tenant_users=tenant_users,
                )
            )
        except AuditError as exc:
            console.print(f"[red]Audit could not run:[/] {exc.message}")
            raise typer.Exit(2) from exc
    if json_output:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out = Console()
        out.print(render_table(report))
        for leak in report.leaks:
            out.print(f"[red]LEAK[/] {describe_leak(leak, report)}", soft_wrap=True)
        code = exit_code(report)
        # One unwrapped line, so scripts and eyes find it last.
        out.print(f"[{'green' if code == 0 else 'red'}]{verdict(report)}[/]", soft_wrap=True)
    raise typer.Exit(exit_code(report))


tenants = typer.Typer(help="Tenants and their API keys.", no_args_is_help=True)
sessions_cli = typer.Typer(help="Sessions: list and clean up.", no_args_is_help=True)
app.add_typer(tenants, name="tenants")
app.add_typer(sessions_cli, name="sessions")


def _run_with_db(work: Callable[[async_sessionmaker[DbSession]], Awaitable[T]]) -> T:
    """Migrate, open the configured database, run ``work(sessionmaker)``, close."""
    import asyncio

    from .store import create_engine, create_sessionmaker
    from .store.migration_lock import migrate_exclusively_sync

    settings = Settings()
    # A command's output (e.g. --json) must be only its output: migration progress is
    # not news here, whatever logging an embedding process configured.
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        migrate_exclusively_sync(settings.database_url)
    finally:
        alembic_log.setLevel(level)

    async def main() -> T:
        engine = create_engine(settings.database_url)
        try:
            return await work(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _print_listing(
    columns: list[str], rows: list[dict[str, Any]], *, as_json: bool, title: str | None = None
) -> None:
    """Print ``rows`` (dicts keyed by ``columns``): JSON with ``--json``; a table on a
    terminal; tab-separated lines with full values when piped (nothing is truncated)."""
    import json
    import sys

    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    cells = [["" if row[c] is None else str(row[c]) for c in columns] for row in rows]
    if not sys.stdout.isatty():
        typer.echo("\t".join(columns))
        for line in cells:
            typer.echo("\t".join(line))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        # fold, never ellipsis: an id cut short is useless for the next command.
        table.add_column(column, overflow="fold")
    for line in cells:
        table.add_row(*line)
    Console().print(table)


def _tenant_record(row: Any, sessions: int | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "key_prefix": row.api_key_prefix,
        "state": "revoked" if row.revoked_at else "active",
        "allow_system_prompt": row.allow_system_prompt,
        "created_at": row.created_at.isoformat(timespec="seconds"),
        "revoked_at": row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else None,
    }
    if sessions is not None:
        record["sessions"] = sessions
    return record


def _tenant_command(work: Callable[[async_sessionmaker[DbSession]], Awaitable[T]]) -> T:
    """Run a tenant command; a ``SessiongateError`` is printed and exits 1."""
    from .errors import SessiongateError

    try:
        return _run_with_db(work)
    except SessiongateError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from exc


@tenants.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="Unique tenant name.")],
    allow_system_prompt: Annotated[
        bool,
        typer.Option(
            "--allow-system-prompt",
            help="Let this tenant's /v1 clients send their own system prompt.",
        ),
    ] = False,
) -> None:
    """Create a tenant and print its API key (shown this once; only a hash is stored)."""
    from .store.tenants import create_tenant

    async def work(maker: async_sessionmaker[DbSession]) -> str:
        async with maker() as db, db.begin():
            _, key = await create_tenant(db, name, allow_system_prompt=allow_system_prompt)
        return key

    key = _tenant_command(work)
    typer.echo(f"tenant {name} created; API key (store it now, it is not shown again):")
    typer.echo(key)


@tenants.command("update")
def tenants_update(
    name: Annotated[str, typer.Argument(help="Tenant name.")],
    allow_system_prompt: Annotated[
        Optional[bool],  # noqa: UP045 - typer needs Optional here
        typer.Option(
            "--allow-system-prompt/--no-allow-system-prompt",
            help="Whether this tenant's /v1 clients may send their own system prompt.",
        ),
    ] = None,
) -> None:
    """Change a tenant's options."""
    from .store.tenants import update_tenant

    async def work(maker: async_sessionmaker[DbSession]) -> dict[str, Any]:
        async with maker() as db, db.begin():
            row = await update_tenant(db, name, allow_system_prompt=allow_system_prompt)
            return _tenant_record(row)

    record = _tenant_command(work)
    allowed = "may" if record["allow_system_prompt"] else "may not"
    typer.echo(f"tenant {name} updated; its clients {allowed} send their own system prompt")


@tenants.command("rotate")
def tenants_rotate(
    name: Annotated[str, typer.Argument(help="Tenant name.")],
    grace: Annotated[
        int,
        typer.Option(
            "--grace",
            min=0,
            max=MAX_GRACE_SECONDS,
            help="Seconds the previous key keeps working (0: it stops now, for a leaked key).",
        ),
    ] = 0,
) -> None:
    """Issue a new API key for a tenant; every end user keeps their sessions and history.

    The previous key stops working after --grace seconds. A revoked tenant is
    reinstated with the new key (its old keys stay refused).
    """
    from .store.tenants import rotate_tenant_key

    async def work(maker: async_sessionmaker[DbSession]) -> tuple[str, Any, bool]:
        async with maker() as db, db.begin():
            revoked = (await _tenant_state(db, name)) == "revoked"
            rotated = await rotate_tenant_key(db, name, grace_seconds=grace)
        return rotated.api_key, rotated.previous_key_expires_at, revoked

    key, expires, was_revoked = _tenant_command(work)
    if was_revoked:
        typer.echo(f"tenant {name} reinstated; its old keys stay refused.")
    elif expires is None:
        typer.echo(f"tenant {name}: the previous key stopped working now.")
    else:
        typer.echo(
            f"tenant {name}: the previous key keeps working until "
            f"{expires.isoformat(timespec='seconds')}."
        )
    typer.echo("New API key (store it now, it is not shown again):")
    typer.echo(key)


async def _tenant_state(db: DbSession, name: str) -> str:
    from .store.tenants import get_tenant

    row = await get_tenant(db, name)
    return "revoked" if row.revoked_at is not None else "active"


@tenants.command("list")
def tenants_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List tenants (active first, then revoked) with key prefix, state and session count."""
    from .store.admin import list_tenants

    async def work(maker: async_sessionmaker[DbSession]) -> list[dict[str, Any]]:
        async with maker() as db:
            return [_tenant_record(s.tenant, s.sessions) for s in await list_tenants(db)]

    rows = _run_with_db(work)
    columns = ["name", "id", "key_prefix", "state", "allow_system_prompt", "sessions", "created_at"]
    _print_listing(columns, rows, as_json=json_output, title="tenants")


@tenants.command("revoke")
def tenants_revoke(name: Annotated[str, typer.Argument(help="Tenant name.")]) -> None:
    """Revoke the tenant's API keys; its callers get 401 at once (`rotate` reinstates)."""
    from .store.tenants import revoke_tenant

    async def work(maker: async_sessionmaker[DbSession]) -> None:
        async with maker() as db, db.begin():
            await revoke_tenant(db, name)

    _tenant_command(work)
    typer.echo(f"tenant {name} revoked")


@sessions_cli.command("list")
def sessions_list(
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="How many, newest activity first.")
    ] = 50,
    expired: Annotated[bool, typer.Option(help="Only expired sessions.")] = False,
    tenant: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Only this tenant's sessions (name or id)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List sessions (id, kind, tenant, user, last activity, expiry); never their content."""
    from .store.admin import list_sessions
    from .store.models import utcnow

    async def work(maker: async_sessionmaker[DbSession]) -> list[dict[str, Any]]:
        now = utcnow()
        async with maker() as db:
            page = await list_sessions(
                db,
                limit=limit,
                tenant=tenant,
                state="expired" if expired else None,
                now=now,
            )
        return [
            {
                "id": item.session.id,
                "kind": item.session.kind,
                "tenant": item.tenant_name,
                "user": item.session.external_user,
                "state": "active" if item.session.expires_at > now else "expired",
                "conversations": item.conversations,
                "messages": item.messages,
                "last_active_at": item.session.last_active_at.isoformat(timespec="seconds"),
                "expires_at": item.session.expires_at.isoformat(timespec="seconds"),
            }
            for item in page.items
        ]

    columns = ["id", "kind", "tenant", "user", "state", "last_active_at", "expires_at"]
    _print_listing(columns, _run_with_db(work), as_json=json_output, title="sessions")


@sessions_cli.command("cleanup")
def sessions_cleanup(
    batch_size: Annotated[int, typer.Option(min=1, help="Sessions per transaction.")] = 500,
) -> None:
    """Delete expired sessions and everything under them, with a progress bar."""
    from rich.progress import Progress
    from sqlalchemy import func, select

    from .sessions import cleanup_expired_sessions
    from .store import SessionRow
    from .store.models import utcnow

    with Progress() as bar:
        task = bar.add_task("cleaning up", total=None)

        async def work(maker: async_sessionmaker[DbSession]) -> Any:
            now = utcnow()
            async with maker() as db:
                total = await db.scalar(
                    select(func.count()).select_from(SessionRow).where(SessionRow.expires_at <= now)
                )
            bar.update(task, total=total or 0)
            return await cleanup_expired_sessions(
                maker,
                batch_size=batch_size,
                now=now,
                progress=lambda done: bar.update(task, completed=done),
            )

        result = _run_with_db(work)
    if result.skipped:
        typer.echo("another cleanup is running; nothing done")
        raise typer.Exit(1)
    typer.echo(
        f"deleted {result.sessions} sessions, {result.conversations} conversations, "
        f"{result.messages} messages"
    )


@app.command()
def migrate() -> None:
    """Apply database migrations up to the newest and exit."""
    from .store.migration_lock import migrate_exclusively_sync

    settings = Settings()
    migrate_exclusively_sync(settings.database_url)
    typer.echo("database is up to date")


__all__ = ["app"]


if __name__ == "__main__":
    app()
