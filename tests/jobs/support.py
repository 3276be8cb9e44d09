"""The job machinery built from real parts, over a test database and a simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from microtopic.config import JobsConfig, KeyConfig
from microtopic.jobs.course import CourseSpec, SubjectSpec, TopicSpec
from microtopic.jobs.executor import ItemExecutor
from microtopic.jobs.runner import InProcessRunner
from microtopic.jobs.service import ItemDispatcher, JobService
from microtopic.observability import PerformanceStats, RequestCallLog
from microtopic.pipeline import LessonPipeline, PromptLibrary
from microtopic.service import GenerationService
from microtopic.storage import Database, GenerationStore, JobStore, StoredJob
from tests.harness import SimulatorHarness

# Short enough for a test to wait out a lease, long enough for each renewal to land in time.
TEST_JOBS = JobsConfig(
    concurrency=2,
    lease_s=1.0,
    max_attempts=3,
    poll_interval_s=0.1,
    retry_delay_s=0.1,
    max_retry_delay_s=0.5,
)


def make_course(topic_count: int, *, name: str = "physics-101") -> CourseSpec:
    """Return a course of one subject whose topics each name one microtopic (two LLM calls)."""
    topics = [
        TopicSpec(name=f"Topic {index}", microtopics=[f"Lesson {index}"])
        for index in range(topic_count)
    ]
    return CourseSpec(course=name, subjects=[SubjectSpec(name="Mechanics", topics=topics)])


@dataclass
class JobParts:
    """A job store and an executor whose generation service calls the simulator."""

    database: Database
    store: JobStore
    generations: GenerationStore
    generation_service: GenerationService
    executor: ItemExecutor
    config: JobsConfig

    def runner(self) -> InProcessRunner:
        return InProcessRunner(self.store, self.executor, self.config)

    def service(self, dispatcher: ItemDispatcher | None = None) -> JobService:
        return JobService(self.store, dispatcher)

    async def run_course(self, topic_count: int) -> StoredJob:
        """Submit a course to an in-process runner, and return the job once it finished."""
        runner = self.runner()
        runner.start()
        try:
            submission = await self.service(runner).submit_course(make_course(topic_count))
            return await wait_until(lambda: self.store.get_job(submission.job.id), is_finished)
        finally:
            await runner.aclose()


def build_parts(
    database: Database,
    simulator: SimulatorHarness,
    *,
    config: JobsConfig = TEST_JOBS,
    keys: list[KeyConfig] | None = None,
) -> JobParts:
    gateway = simulator.gateway(keys)
    call_log = RequestCallLog()
    gateway.subscribe(call_log)
    generations = GenerationStore(database)
    service = GenerationService(
        LessonPipeline(gateway, PromptLibrary.load_default()),
        generations,
        PerformanceStats(),
        call_log,
        deadline_s=60.0,
    )
    store = JobStore(database)
    executor = ItemExecutor(service, store, config)
    return JobParts(database, store, generations, service, executor, config)


def is_finished(job: StoredJob) -> bool:
    return job.finished_at is not None


async def wait_until(
    read: Callable[[], Awaitable[StoredJob]],
    condition: Callable[[StoredJob], bool],
    *,
    timeout_s: float = 30.0,
) -> StoredJob:
    """Read the job until `condition` holds for it, and return it; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = await read()
        if condition(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"the job did not reach the condition in {timeout_s} s: {job}")
        await asyncio.sleep(0.05)
