"""A full scenario through the real logging set-up: no secret, prompt or completion leaks.

The app runs under uvicorn with its keys served by the simulator, a gateway API key,
and a Redis URL whose password Redis refuses. Logging is configured as the
`microtopic` command does it, at debug level, in JSON mode, with a log file. Every
log line, every HTTP response (body and headers) and every stored row is scanned.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from microtopic.cli.logs import QUIETED_LOGGERS, configure_logging
from microtopic.config import KeyConfig, ProviderKind, Settings
from microtopic.simulator import SimulatorServer
from tests.api.support import (
    API_VERSION,
    CHECK_PATH,
    CLIENT_BODY,
    DASHBOARD_PATH,
    DEPLOYMENT,
    FAST_GATEWAY,
    GENERATE_PATH,
    STATS_PATH,
    SimulatorControl,
    table_rows,
)

GATEWAY_TOKEN = "gw-secret-" + uuid.uuid4().hex
REDIS_PASSWORD = "redis-pw-" + uuid.uuid4().hex
TOPIC_MARKER = "Topic-" + uuid.uuid4().hex[:12]
PROMPT_MARKER = "Forwarded prompt " + uuid.uuid4().hex[:12]


@pytest.fixture
def log_prompts() -> bool:
    """The `log_prompts` setting. A test class may override it."""
    return False


@pytest.fixture
def settings(
    simulator: SimulatorServer,
    key_secrets: dict[str, str],
    database_path: Path,
    redis_url: str,
    redis_namespace: str,
    tmp_path: Path,
    log_prompts: bool,
) -> Settings:
    keys = [
        KeyConfig(
            name=name,
            provider=ProviderKind.AZURE,
            endpoint=simulator.azure_endpoint,
            deployment=DEPLOYMENT,
            api_version=API_VERSION,
            secret=secret,
        )
        for name, secret in key_secrets.items()
    ]
    redis = urlsplit(redis_url)
    return Settings(
        keys=keys,
        gateway=FAST_GATEWAY,
        gateway_api_keys=[GATEWAY_TOKEN],
        database_url=f"sqlite+aiosqlite:///{database_path}",
        redis_url=f"redis://microtopic-test:{REDIS_PASSWORD}@{redis.netloc}{redis.path}",
        redis_namespace=redis_namespace,
        log_level="DEBUG",
        log_prompts=log_prompts,
        log_file=tmp_path / "microtopic.log",
    )


@pytest.fixture
def stderr_logs(settings: Settings) -> Iterator[io.StringIO]:
    """Logging as `microtopic serve` sets it up, with stderr read into a buffer.

    The buffer is not a terminal, so stderr gets JSON lines, as under a process manager.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        configure_logging(
            settings.log_level,
            log_file=settings.log_file,
            log_file_max_bytes=settings.log_file_max_bytes,
            log_file_backups=settings.log_file_backups,
        )
    yield buffer
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


def logged_lines(settings: Settings, stderr: io.StringIO) -> list[str]:
    """Return every line written to the log file and to stderr, checking each is JSON."""
    assert settings.log_file is not None
    lines = settings.log_file.read_text(encoding="utf-8").splitlines()
    lines += stderr.getvalue().splitlines()
    for line in lines:
        json.loads(line)
    return lines


def secret_fragments(key_secrets: dict[str, str]) -> list[str]:
    # Each secret whole, and its random part alone.
    secrets = [*key_secrets.values(), GATEWAY_TOKEN, REDIS_PASSWORD]
    return [fragment for secret in secrets for fragment in (secret, secret[-24:])]


async def run_scenario(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> dict[str, Any]:
    """Generate with a revoked and a rate-limited key, forward calls, read every stats route."""
    await simulator_control.set_fault("west", "revoked")
    await simulator_control.set_fault("north", "rate_limit", retry_after_ms=300, count=2)
    body = {**CLIENT_BODY, "topic_name": TOPIC_MARKER}
    generations = await asyncio.gather(*(client.post(GENERATE_PATH, json=body) for _ in range(4)))

    chat = {"model": "any", "messages": [{"role": "user", "content": PROMPT_MARKER}]}
    forwarded = await client.post(
        "/v1/chat/completions",
        json={**chat, "max_tokens": 60},
        headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"},
    )
    azure_path = f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    azure = await client.post(
        azure_path,
        params={"api-version": API_VERSION},
        json={**chat, "max_tokens": 60},
        headers={"api-key": GATEWAY_TOKEN},
    )
    refused = await client.post(
        "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {GATEWAY_TOKEN}x"}
    )

    for path in (STATS_PATH, DASHBOARD_PATH, "/metrics"):
        await client.get(path)
    await client.post(CHECK_PATH)

    return {
        "generations": generations,
        "forwarded": forwarded,
        "azure": azure,
        "refused": refused,
    }


def assert_nothing_leaks(
    texts: list[str], fragments: list[str], where: str, *, prompts_allowed: bool = False
) -> None:
    for text in texts:
        for fragment in fragments:
            assert fragment not in text, where
        if not prompts_allowed:
            assert TOPIC_MARKER not in text, where
            assert PROMPT_MARKER not in text, where


async def test_secrets_stay_out_of_logs_responses_and_rows(
    stderr_logs: io.StringIO,
    settings: Settings,
    client: httpx.AsyncClient,
    simulator_control: SimulatorControl,
    received: list[httpx.Response],
    key_secrets: dict[str, str],
    database_path: Path,
) -> None:
    outcome = await run_scenario(client, simulator_control)

    lines = logged_lines(settings, stderr_logs)

    assert [response.status_code for response in outcome["generations"]] == [200] * 4
    assert outcome["forwarded"].status_code == 200
    assert outcome["azure"].status_code == 200
    assert outcome["refused"].status_code == 401
    fragments = secret_fragments(key_secrets)
    assert_nothing_leaks(lines, fragments, "log line")
    completion = outcome["forwarded"].json()["choices"][0]["message"]["content"]
    assert len(completion) > 20
    assert not [line for line in lines if completion in line]
    for response in received:
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
        # A lesson quotes its topic, so only secrets are looked for in responses.
        assert_nothing_leaks([headers], fragments, f"headers of {response.url}")
        texts = [response.text]
        assert_nothing_leaks(texts, fragments, f"body of {response.url}", prompts_allowed=True)
    rows = table_rows(database_path)
    assert rows["llm_calls"]
    for table, contents in rows.items():
        texts = [" ".join(str(value) for value in row) for row in contents]
        assert_nothing_leaks(texts, fragments, table, prompts_allowed=True)


async def test_log_lines_carry_request_and_key(
    stderr_logs: io.StringIO,
    settings: Settings,
    client: httpx.AsyncClient,
    simulator_control: SimulatorControl,
) -> None:
    outcome = await run_scenario(client, simulator_control)

    entries = [json.loads(line) for line in logged_lines(settings, stderr_logs)]

    request_ids = {r.json()["metadata"]["request_id"] for r in outcome["generations"]}
    disabled = [e for e in entries if e["message"].startswith("key west disabled")]
    assert disabled
    assert all(entry["key"] == "west" for entry in disabled)
    assert disabled[0]["request_id"] in request_ids
    cooling = [e for e in entries if e["message"].startswith("key north cooling down")]
    assert cooling
    assert all(entry["key"] == "north" for entry in cooling)
    started = [e for e in entries if e["message"].endswith(": generation started")]
    assert {entry["request_id"] for entry in started} == request_ids
    forwarded_id = outcome["forwarded"].headers["X-Request-ID"]
    forwarded = [e for e in entries if e.get("request_id") == forwarded_id]
    assert any("forwarded through key" in entry["message"] for entry in forwarded)
    redis = [e for e in entries if e["logger"] == "microtopic.keypool.sharing"]
    assert any("rejected the credentials" in entry["message"] for entry in redis)


class TestWithLogPrompts:
    """`log_prompts: true` writes prompts and completions at debug level, and still no secret."""

    @pytest.fixture
    def log_prompts(self) -> bool:
        return True

    async def test_prompts_are_logged_without_secrets(
        self,
        stderr_logs: io.StringIO,
        settings: Settings,
        client: httpx.AsyncClient,
        simulator_control: SimulatorControl,
        key_secrets: dict[str, str],
    ) -> None:
        outcome = await run_scenario(client, simulator_control)

        lines = logged_lines(settings, stderr_logs)

        entries = [json.loads(line) for line in lines]
        prompts = [e for e in entries if e["message"].startswith("prompt of attempt ")]
        assert any(TOPIC_MARKER in entry["message"] for entry in prompts)
        assert any(PROMPT_MARKER in entry["message"] for entry in prompts)
        assert all(entry["level"] == "debug" and entry["key"] for entry in prompts)
        completion = outcome["forwarded"].json()["choices"][0]["message"]["content"]
        completions = [e for e in entries if e["message"].startswith("completion of attempt ")]
        assert any(completion in entry["message"] for entry in completions)
        assert_nothing_leaks(lines, secret_fragments(key_secrets), "log line", prompts_allowed=True)
