"""The ``sessiongate`` command: ``serve``, ``migrate`` and ``--version``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer
from sqlalchemy.ext.asyncio import async_sessionmaker

from . import __version__
from .config import Settings
from .errors import ConfigurationError
from .store import DbSession

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
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Check settings, apply migrations and serve the gateway (chat page at http://HOST:PORT/)."""
    import uvicorn

    from .app import build_identity_provider, create_app
    from .providers import check_provider_settings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {"provider": provider} if provider else {}
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        typer.echo(f"Invalid setting: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        check_provider_settings(settings)
        build_identity_provider(settings)
        settings.resolve_secret_key()
    except ConfigurationError as exc:
        typer.echo(f"Cannot start: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    # The app's lifespan applies migrations before it serves.
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, lifespan="on")


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
    sessions: Annotated[int, typer.Option(min=2, help="Anonymous sessions to open.")] = 5,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of questions per session.")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP request.")] = 120.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a running gateway for cross-session leaks; exit 1 on any leak.

    Plants a canary in each session, probes every session for the others' canaries and
    tries each session's conversations from the others. Exit 2: nothing was answered.
    """
    import asyncio
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from .audit import AuditError, exit_code, render_table, run_audit

    console = Console(stderr=True)
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
                run_audit(url, sessions=sessions, rounds=rounds, timeout=timeout, progress=progress)
            )
        except AuditError as exc:
            console.print(f"[red]Audit failed:[/] {exc.message}")
            raise typer.Exit(2) from exc
    if json_output:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out = Console()
        out.print(render_table(report))
        for leak in report.leaks:
            out.print(
                f"[red]LEAK[/] session {leak.session} <- session {leak.source}: "
                f"{leak.detail} ({leak.where})"
            )
    raise typer.Exit(exit_code(report))


tenants = typer.Typer(help="Tenants and their API keys.", no_args_is_help=True)
sessions_cli = typer.Typer(help="Sessions: list and clean up.", no_args_is_help=True)
app.add_typer(tenants, name="tenants")
app.add_typer(sessions_cli, name="sessions")


def _run_with_db(work: Callable[[async_sessionmaker[DbSession]], Awaitable[T]]) -> T:
    """Migrate, open the configured database, run ``work(sessionmaker)``, close."""
    import asyncio

    from .store import create_engine, create_sessionmaker, migrate_sync

    settings = Settings()
    migrate_sync(settings.database_url)

    async def main() -> T:
        engine = create_engine(settings.database_url)
        try:
            return await work(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


@tenants.command("create")
def tenants_create(name: Annotated[str, typer.Argument(help="Unique tenant name.")]) -> None:
    """Create a tenant and print its API key (shown this once; only a hash is stored)."""
    from .errors import SessiongateError
    from .store.tenants import create_tenant

    async def work(maker: async_sessionmaker[DbSession]) -> str:
        async with maker() as db, db.begin():
            _, key = await create_tenant(db, name)
        return key

    try:
        key = _run_with_db(work)
    except SessiongateError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"tenant {name} created; API key (store it now, it is not shown again):")
    typer.echo(key)


@tenants.command("list")
def tenants_list() -> None:
    """List tenants with their key prefix and state."""
    from rich.console import Console
    from rich.table import Table

    from .store.tenants import list_tenants

    async def work(maker: async_sessionmaker[DbSession]) -> list[tuple[str, str, str, str]]:
        async with maker() as db:
            return [
                (
                    t.name,
                    t.api_key_prefix + "…",
                    t.created_at.isoformat(timespec="seconds"),
                    "revoked" if t.revoked_at else "active",
                )
                for t in await list_tenants(db)
            ]

    table = Table("name", "key", "created", "state")
    for row in _run_with_db(work):
        table.add_row(*row)
    Console().print(table)


@tenants.command("revoke")
def tenants_revoke(name: Annotated[str, typer.Argument(help="Tenant name.")]) -> None:
    """Revoke the tenant's API key; its callers get 401 at once."""
    from .errors import SessiongateError
    from .store.tenants import revoke_tenant

    async def work(maker: async_sessionmaker[DbSession]) -> None:
        async with maker() as db, db.begin():
            await revoke_tenant(db, name)

    try:
        _run_with_db(work)
    except SessiongateError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"tenant {name} revoked")


@sessions_cli.command("list")
def sessions_list(
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="How many, newest activity first.")
    ] = 50,
    expired: Annotated[bool, typer.Option(help="Only expired sessions.")] = False,
) -> None:
    """List sessions (id, kind, user, last activity, expiry); never their content."""
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from .store import SessionRow
    from .store.models import utcnow

    async def work(maker: async_sessionmaker[DbSession]) -> list[SessionRow]:
        query = select(SessionRow).order_by(SessionRow.last_active_at.desc()).limit(limit)
        if expired:
            query = query.where(SessionRow.expires_at <= utcnow())
        async with maker() as db:
            return list((await db.scalars(query)).all())

    table = Table("session", "kind", "user", "last active", "expires")
    for row in _run_with_db(work):
        table.add_row(
            row.id,
            row.kind,
            row.external_user or "",
            row.last_active_at.isoformat(timespec="seconds"),
            row.expires_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


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
    from .store import migrate_sync

    settings = Settings()
    migrate_sync(settings.database_url)
    typer.echo("database is up to date")


__all__ = ["app"]


if __name__ == "__main__":
    app()
