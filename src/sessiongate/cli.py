"""The ``sessiongate`` command: ``serve``, ``migrate`` and ``--version``."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from . import __version__
from .config import Settings
from .errors import ConfigurationError

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
        typer.Option(help="Override SESSIONGATE_PROVIDER: local or openai."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Apply migrations and serve the gateway (chat page at http://HOST:PORT/)."""
    import uvicorn

    from .app import create_app
    from .store import migrate_sync

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {"provider": provider} if provider else {}
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        typer.echo(f"Invalid setting: {exc}", err=True)
        raise typer.Exit(2) from exc
    migrate_sync(settings.database_url)
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, lifespan="on")
    except ConfigurationError as exc:
        typer.echo(f"Cannot start: {exc.message}", err=True)
        raise typer.Exit(2) from exc


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
