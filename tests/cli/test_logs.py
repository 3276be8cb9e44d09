"""The logging set-up: JSON lines with the request and key, text for terminals, a rotated file."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from microtopic.cli.logs import (
    QUIETED_LOGGERS,
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    configure_logging,
)
from microtopic.errors import ConfigError
from microtopic.log_context import current_key_name, current_request_id

logger = logging.getLogger("microtopic.tests.logs")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put back the root logger's handlers and the levels that `configure_logging` sets."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("microtopic.test", logging.WARNING, __file__, 1, message, (), None)


def test_json_lines_carry_request_and_key(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    request_token = current_request_id.set("req-1234")
    key_token = current_key_name.set("east")
    try:
        logger.warning("key %s cooling down for %.2f s", "east", 1.5)
    finally:
        current_key_name.reset(key_token)
        current_request_id.reset(request_token)
    logger.info("runtime started")

    first, second = json_lines(capsys.readouterr().err)

    assert first["message"] == "key east cooling down for 1.50 s"
    assert first["level"] == "warning"
    assert first["logger"] == "microtopic.tests.logs"
    assert first["request_id"] == "req-1234"
    assert first["key"] == "east"
    assert first["time"].endswith("+00:00")
    assert second["message"] == "runtime started"
    assert "request_id" not in second
    assert "key" not in second


def test_extra_wins_over_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    token = current_key_name.set("east")
    try:
        logger.warning("key west disabled", extra={"key_name": "west"})
    finally:
        current_key_name.reset(token)

    (line,) = json_lines(capsys.readouterr().err)

    assert line["key"] == "west"


def test_exception_has_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("request failed unexpectedly")

    (line,) = json_lines(capsys.readouterr().err)
    assert line["message"] == "request failed unexpectedly"
    assert "RuntimeError: boom" in line["exception"]


def test_text_line_names_request_and_key() -> None:
    log_record = record("key east cooling down")
    request_token = current_request_id.set("req-77")
    key_token = current_key_name.set("east")
    try:
        ContextFilter().filter(log_record)
    finally:
        current_key_name.reset(key_token)
        current_request_id.reset(request_token)

    text = TextFormatter().format(log_record)

    assert text.endswith(
        " WARNING microtopic.test [request req-77, key east]: key east cooling down"
    )


def test_text_line_without_context_has_no_brackets() -> None:
    log_record = record("runtime started")
    ContextFilter().filter(log_record)

    text = TextFormatter().format(log_record)

    assert text.endswith(" WARNING microtopic.test: runtime started")


def test_json_formatter_leaves_out_unknown_context() -> None:
    log_record = record("runtime started")
    ContextFilter().filter(log_record)

    line = json.loads(JsonFormatter().format(log_record))

    assert set(line) == {"time", "level", "logger", "message"}


def test_log_file_rotates_by_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "microtopic.log"
    configure_logging("INFO", log_file=path, log_file_max_bytes=4096, log_file_backups=2)

    for index in range(200):
        logger.info("line %d of the rotation test, padded to fill the file faster", index)

    files = sorted(tmp_path.iterdir())
    assert [file.name for file in files] == [
        "microtopic.log",
        "microtopic.log.1",
        "microtopic.log.2",
    ]
    for file in files:
        assert file.stat().st_size <= 4096
        assert all(line["level"] == "info" for line in json_lines(file.read_text("utf-8")))
    last = json_lines(path.read_text("utf-8"))[-1]
    assert last["message"].startswith("line 199 ")
    assert len(json_lines(capsys.readouterr().err)) == 200


def test_missing_log_folder_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "microtopic.log"

    with pytest.raises(ConfigError, match="Cannot open the log file") as caught:
        configure_logging("INFO", log_file=path)

    assert str(path) in caught.value.message


def test_reconfiguring_closes_own_file(tmp_path: Path) -> None:
    configure_logging("INFO", log_file=tmp_path / "first.log")
    (first,) = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]

    configure_logging("INFO", log_file=tmp_path / "second.log")

    assert first.stream is None or first.stream.closed
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    assert [Path(h.baseFilename).name for h in files] == ["second.log"]


def test_noisy_loggers_stay_at_warning() -> None:
    configure_logging("DEBUG")

    assert logging.getLogger().level == logging.DEBUG
    for name in QUIETED_LOGGERS:
        assert logging.getLogger(name).level == logging.WARNING
    assert "aiosqlite" in QUIETED_LOGGERS
