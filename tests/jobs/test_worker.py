"""`microtopic worker` in child processes over Redis, PostgreSQL and the simulator.

The batch survives a worker killed with SIGKILL in its middle: a new worker
finishes it, every item succeeds exactly once, and no item that had finished
before the kill is generated again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import text

from microtopic.config import (
    CONFIG_ENV_VAR,
    DATABASE_URL_ENV_VAR,
    LOG_LEVEL_ENV_VAR,
    REDIS_URL_ENV_VAR,
    JobRunnerKind,
    JobsConfig,
    Settings,
)
from microtopic.errors import NotFoundError
from microtopic.jobs.queue import ArqQueue
from microtopic.jobs.service import JobService
from microtopic.storage import (
    Database,
    GenerationStore,
    ItemStatus,
    JobStatus,
    JobStore,
    RequestStatus,
    StoredJob,
)
from tests.harness import API_VERSION, DEPLOYMENT, KEY_NAMES, SimulatorHarness
from tests.jobs.support import make_course
from tests.jobs.test_queue import delete_arq_keys
from tests.jobs.worker_process import SCHEMA_ENV_VAR
from tests.storage.conftest import POSTGRES_URL

# The worker runs in its own processes, which see only a database server, not a file.
pytestmark = pytest.mark.parametrize("empty_database", ["postgresql"], indirect=True)

ROOT = Path(__file__).parents[2]
ITEM_COUNT = 40
# Each item makes two calls at once, so with 4 items at a time 40 items take about 10 s.
REPLY_S = 0.5
WORKER_JOBS = JobsConfig(runner=JobRunnerKind.ARQ, concurrency=4, lease_s=2.0, max_attempts=3)


class WorkerProcess:
    """`microtopic worker` in a child process, its output in a log file."""

    def __init__(self, config_path: Path, schema: str, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        environment = {
            name: value
            for name, value in os.environ.items()
            if name
            not in (CONFIG_ENV_VAR, DATABASE_URL_ENV_VAR, REDIS_URL_ENV_VAR, LOG_LEVEL_ENV_VAR)
        }
        environment[SCHEMA_ENV_VAR] = schema
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.jobs.worker_process", "worker", "-c", str(config_path)],
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def kill(self) -> None:
        """Kill the worker with SIGKILL, which it cannot catch, and wait until it is gone."""
        self.process.kill()
        self.process.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


def write_worker_config(
    path: Path, simulator: SimulatorHarness, redis_url: str, namespace: str
) -> Path:
    config = {
        "database_url": POSTGRES_URL,
        "redis_url": redis_url,
        "redis_namespace": namespace,
        "log_level": "INFO",
        "jobs": WORKER_JOBS.model_dump(mode="json"),
        "gateway": {
            "request_deadline_s": 30,
            "health_check_interval_s": 0,
            "retry": {
                "first_request": {"retries": 2, "delay_s": 0.01},
                "retry_request": {"retries": 3, "delay_s": 0.01},
            },
        },
        "keys": [
            {
                "name": name,
                "provider": "azure",
                "endpoint": simulator.server.base_url,
                "deployment": DEPLOYMENT,
                "api_version": API_VERSION,
                "secret": simulator.secrets[name],
            }
            for name in KEY_NAMES
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def current_schema(database: Database) -> str:
    async with database.engine.connect() as connection:
        schema = await connection.scalar(text("SELECT current_schema()"))
    return str(schema)


async def wait_for_job(
    store: JobStore,
    job_id: str,
    condition: Callable[[StoredJob], bool],
    worker: WorkerProcess,
    *,
    timeout_s: float,
) -> StoredJob:
    """Read the job until `condition` holds; fail with the worker's log otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = await store.get_job(job_id)
        if condition(job):
            return job
        if worker.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"the job reached {job.progress} and the worker exited with "
                f"{worker.process.returncode}; its log ends with:\n{worker.log_tail()}"
            )
        await asyncio.sleep(0.1)


async def calls_of(generations: GenerationStore, request_id: str) -> int:
    return len((await generations.get_request(request_id)).calls)


async def request_status(generations: GenerationStore, request_id: str) -> RequestStatus | None:
    """Return the request's status, or None when its attempt was killed before storing it."""
    try:
        return (await generations.get_request(request_id)).status
    except NotFoundError:
        return None


async def request_error(generations: GenerationStore, request_id: str) -> str | None:
    """Return the request's error code, or None when it has none or was never stored."""
    try:
        return (await generations.get_request(request_id)).error_code
    except NotFoundError:
        return None


@pytest.mark.timeout(120)
async def test_killed_worker_batch_completes_exactly_once(
    database: Database, redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    schema = await current_schema(database)
    store = JobStore(database)
    generations = GenerationStore(database)
    settings = Settings(
        redis_url=SecretStr(redis_url), redis_namespace=redis_namespace, jobs=WORKER_JOBS
    )
    queue = ArqQueue.from_settings(settings)
    try:
        async with SimulatorHarness.start(latency_s=REPLY_S) as simulator:
            config = write_worker_config(
                tmp_path / "worker.yaml", simulator, redis_url, redis_namespace
            )
            with WorkerProcess(config, schema, tmp_path / "first.log") as first:
                submission = await JobService(store, queue).submit_course(make_course(ITEM_COUNT))
                job_id = submission.job.id
                await wait_for_job(
                    store,
                    job_id,
                    lambda job: job.progress.succeeded >= 8 and job.progress.running > 0,
                    first,
                    timeout_s=40,
                )
                first.kill()
            at_kill = await store.get_job(job_id)

            with WorkerProcess(config, schema, tmp_path / "second.log") as second:
                job = await wait_for_job(
                    store, job_id, lambda job: job.finished_at is not None, second, timeout_s=40
                )
            simulator_calls = await simulator.calls()
    finally:
        await queue.aclose()
        await delete_arq_keys(redis_url, redis_namespace)

    finished_before = [item for item in at_kill.items if item.status is ItemStatus.SUCCEEDED]
    in_flight = [item for item in at_kill.items if item.status is ItemStatus.RUNNING]
    assert 8 <= len(finished_before) < ITEM_COUNT
    assert 1 <= len(in_flight) <= WORKER_JOBS.concurrency

    # Every item succeeded, once: one succeeded request and one topic each.
    assert job.status is JobStatus.SUCCEEDED
    assert job.progress.succeeded == ITEM_COUNT
    assert await generations.count_topics() == ITEM_COUNT
    request_ids = {item.request_id for item in job.items}
    assert len(request_ids) == ITEM_COUNT
    for item in job.items:
        assert item.request_id is not None
        assert await request_status(generations, item.request_id) is RequestStatus.SUCCEEDED

    # Items finished before the kill were not run again; the interrupted ones ran once more.
    after = {item.id: item for item in job.items}
    for item in finished_before:
        assert after[item.id].attempts == 1
        assert after[item.id].request_id == item.request_id
    for item in in_flight:
        assert after[item.id].attempts == 2
        assert item.request_id is not None
        # The claim that took the item over failed the killed attempt's request.
        assert await request_error(generations, item.request_id) in ("lease_lost", None)
    others = set(after) - {item.id for item in finished_before + in_flight}
    assert {after[item_id].attempts for item_id in others} == {1}

    # The simulator saw the calls of the 40 stored successes, plus at most the calls that
    # the killed attempts had made.
    stored_calls = [await calls_of(generations, item.request_id or "") for item in job.items]
    lost_calls = simulator_calls - sum(stored_calls)
    assert lost_calls >= 0
    assert lost_calls <= len(in_flight) * max(stored_calls)


@pytest.mark.timeout(90)
async def test_stopped_worker_puts_items_back(
    database: Database, redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    schema = await current_schema(database)
    store = JobStore(database)
    settings = Settings(
        redis_url=SecretStr(redis_url), redis_namespace=redis_namespace, jobs=WORKER_JOBS
    )
    queue = ArqQueue.from_settings(settings)
    try:
        async with SimulatorHarness.start(latency_s=REPLY_S) as simulator:
            config = write_worker_config(
                tmp_path / "worker.yaml", simulator, redis_url, redis_namespace
            )
            with WorkerProcess(config, schema, tmp_path / "first.log") as first:
                submission = await JobService(store, queue).submit_course(make_course(8))
                job_id = submission.job.id
                await wait_for_job(
                    store, job_id, lambda job: job.progress.running > 0, first, timeout_s=40
                )
                first.process.send_signal(signal.SIGTERM)
                exit_code = first.process.wait(timeout=20)
            at_stop = await store.get_job(job_id)

            with WorkerProcess(config, schema, tmp_path / "second.log") as second:
                job = await wait_for_job(
                    store, job_id, lambda job: job.finished_at is not None, second, timeout_s=40
                )
    finally:
        await queue.aclose()
        await delete_arq_keys(redis_url, redis_namespace)

    assert exit_code == 0
    assert at_stop.progress.running == 0
    put_back = [
        item for item in at_stop.items if item.status is ItemStatus.PENDING and item.attempts
    ]
    assert put_back
    assert job.status is JobStatus.SUCCEEDED
    after = {item.id: item for item in job.items}
    for item in put_back:
        assert after[item.id].attempts == item.attempts + 1
