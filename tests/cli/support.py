"""Running `microtopic` in-process, and constants shared by the command-line tests."""

from __future__ import annotations

import logging
import re

from typer.testing import CliRunner, Result

from microtopic.cli.logs import QUIETED_LOGGERS
from microtopic.cli.main import app

KEY_NAMES = ("east", "west", "north")
DEPLOYMENT = "gpt-4o-mini"
API_VERSION = "2024-10-21"

# Wide enough that Rich never wraps a table cell or a message.
TERMINAL_ENV = {"COLUMNS": "200", "NO_COLOR": "1"}
# The width Rich falls back to when no standard stream is a terminal. Tests of piped
# output set it, so that they do not depend on whether pytest's stdin is a terminal.
NARROW_ENV = {"COLUMNS": "80"}


class Cli:
    """Runs `microtopic` in-process, then puts back the logging set-up it replaced.

    The command points the root logger at the runner's stderr, which is closed once
    the run returns, so later log records (the simulator's shutdown, for one) would fail.
    """

    def __init__(self) -> None:
        self._runner = CliRunner()

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """Run `microtopic ARGS` with `TERMINAL_ENV`, updated by `env`."""
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        levels = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
        try:
            return self._runner.invoke(app, list(args), env={**TERMINAL_ENV, **(env or {})})
        finally:
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
            for name, saved in levels.items():
                logging.getLogger(name).setLevel(saved)


def one_line(text: str) -> str:
    """Return `text` with every run of whitespace, line breaks included, as one space."""
    return " ".join(text.split())


def table_lines(output: str) -> list[list[str]]:
    """Return the cells of each line of the Rich tables in `output`, stripped."""
    lines = []
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃]", line)[1:-1]]
        if cells:
            lines.append(cells)
    return lines
