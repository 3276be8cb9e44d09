"""Options and helpers that the `microtopic` commands share."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.measure import Measurement

from microtopic.cli.logs import configure_logging
from microtopic.config import LOG_LEVEL_ENV_VAR, Settings, load_settings
from microtopic.errors import ConfigError, MicrotopicError

# Soft wrap: a message is one line however wide the terminal or the log that reads it.
stderr = Console(stderr=True, soft_wrap=True)

# Rich measures a renderable within a given width. Output on stdout that is not a terminal
# is measured within this one, so only a table wider than it would wrap.
MEASURE_WIDTH = 10_000

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


def print_on_stdout(*renderables: RenderableType) -> None:
    """Print Rich tables and text on stdout, each at its full width unless stdout is a terminal.

    Piped or redirected, Rich would still fit a table into $COLUMNS, or the width of stdin
    or stderr if one is a terminal, or else 80 columns, and cut headers such as `operation`
    to `ope…`. So each renderable is measured and printed at its full width instead.
    On a terminal, Rich's own detection of the width applies.
    """
    console = Console()
    if console.is_terminal:
        for renderable in renderables:
            console.print(renderable)
        return

    options = console.options.update_width(MEASURE_WIDTH)
    for renderable in renderables:
        width = Measurement.get(console, options, renderable).maximum
        Console(width=max(width, 1)).print(renderable)


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


def listen_on(host: str, port: int) -> socket.socket:
    """Return a socket bound to `host` and `port`, or print why not and exit with 1.

    The servers bind it before they start, so a taken port fails at once with a
    clear message, not after start-up with uvicorn's log line and exit code 3.
    """
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        print_error("address_unavailable", f"Cannot listen on {host}: {exc.strerror}.")
        raise typer.Exit(1) from None
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            advice = "Stop the process that uses the port, or choose another with --port."
        else:
            advice = (
                f"{host} may not be an address of this machine: use 127.0.0.1, "
                "or 0.0.0.0 for every interface."
            )
        print_error(
            "address_unavailable", f"Cannot listen on {host}:{port}: {exc.strerror}. {advice}"
        )
        raise typer.Exit(1) from None
    return listener
