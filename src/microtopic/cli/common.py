"""Options and helpers that the `microtopic` commands share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from microtopic.cli.logs import configure_logging
from microtopic.config import LOG_LEVEL_ENV_VAR, Settings, load_settings
from microtopic.errors import ConfigError, MicrotopicError

stderr = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML file of keys and settings (default: $MICROTOPIC_CONFIG, else the local model).",
        exists=True,
        dir_okay=False,
    ),
]


def load_cli_settings(
    config: Path | None, *, verbose: bool = True, need_secrets: bool = True
) -> Settings:
    """Load the settings and configure logging; exit with 2 when the config is invalid.

    A command that only reads or migrates the database passes `need_secrets=False`,
    so it runs without the keys' secrets in its environment.
    """
    try:
        settings = load_settings(config, need_secrets=need_secrets)
        # One-shot commands print their result; their info logs would only bury it.
        explicit = LOG_LEVEL_ENV_VAR in os.environ or "log_level" in settings.model_fields_set
        configure_logging(
            settings.log_level if verbose or explicit else "WARNING",
            log_file=settings.log_file,
            log_file_max_bytes=settings.log_file_max_bytes,
            log_file_backups=settings.log_file_backups,
        )
    except ConfigError as exc:
        print_error(exc.code, exc.message)
        raise typer.Exit(2) from None
    return settings


def print_error(code: str, message: str) -> None:
    """Print `error [code]: message` on stderr."""
    # Escaped, so Rich prints the brackets and a message's own brackets instead of reading markup.
    stderr.print(f"[red]error {escape(f'[{code}]')}:[/red] {escape(message)}", highlight=False)


def fail(exc: MicrotopicError) -> typer.Exit:
    """Print the error and return the exit for the caller to raise.

    The exit code is 2 for a `ConfigError`, as for invalid options, and 1 otherwise.
    """
    print_error(exc.code, exc.message)
    return typer.Exit(2 if isinstance(exc, ConfigError) else 1)
