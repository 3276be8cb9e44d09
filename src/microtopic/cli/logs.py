"""Logging set-up for the command line and the server; called once, at the entry point.

Records go to stderr, as readable text on a terminal and as JSON lines otherwise,
and also to a size-rotated file of JSON lines when `log_file` is set. Every record
carries the request id and key name of the work in progress (see
`microtopic.log_context`), so call sites need not pass them.

A JSON line has `time` (ISO 8601, UTC), `level`, `logger` and `message`, plus
`request_id` and `key` when they are known and `exception` with the traceback of
a logged exception.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path

from microtopic.errors import ConfigError
from microtopic.log_context import current_key_name, current_request_id

# Loggers held at warning whatever the level: the HTTP client logs every request at
# info, and at debug the openai SDK logs request bodies and aiosqlite the statements'
# parameters, which contain prompts and completions.
QUIETED_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "aiosqlite")

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(context)s: %(message)s"


class ContextFilter(logging.Filter):
    """Sets `request_id` and `key_name` on each record from the logging context.

    A value passed in `extra` wins over the context.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id.get()
        if getattr(record, "key_name", None) is None:
            record.key_name = current_key_name.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        key_name = getattr(record, "key_name", None)
        if key_name is not None:
            entry["key"] = key_name
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A line for people: time, level, logger, `[request … key …]` when known, message."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            parts.append(f"request {request_id}")
        key_name = getattr(record, "key_name", None)
        if key_name is not None:
            parts.append(f"key {key_name}")
        record.context = f" [{', '.join(parts)}]" if parts else ""
        return super().format(record)


def configure_logging(
    level: str,
    *,
    log_file: Path | None = None,
    log_file_max_bytes: int = 10 * 2**20,
    log_file_backups: int = 5,
) -> None:
    """Log to stderr, and to `log_file` too when it is set.

    Raises `ConfigError` when the log file cannot be opened.
    """
    handlers: list[logging.Handler] = [_stderr_handler()]
    if log_file is not None:
        handlers.append(_file_handler(log_file, log_file_max_bytes, log_file_backups))
    for handler in handlers:
        handler.addFilter(ContextFilter())

    root = logging.getLogger()
    for previous in root.handlers:
        # Only handlers set up here are closed: a file handler would leak its file.
        if any(isinstance(f, ContextFilter) for f in previous.filters):
            previous.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if sys.stderr.isatty() else JsonFormatter())
    return handler


def _file_handler(path: Path, max_bytes: int, backups: int) -> logging.Handler:
    try:
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
    except OSError as exc:
        raise ConfigError(
            f"Cannot open the log file {path}: {exc.strerror}. Check `log_file` and that "
            "its folder exists and is writable."
        ) from None
    handler.setFormatter(JsonFormatter())
    return handler
