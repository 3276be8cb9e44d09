"""The job commands: `microtopic batch`, `microtopic jobs show` and `microtopic worker`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.markup import escape

from microtopic.api.job_schemas import JobOut
from microtopic.cli.common import (
    ConfigOption,
    fail,
    load_cli_settings,
    print_error,
    print_on_stdout,
    stderr,
)
from microtopic.cli.job_client import (
    JobClient,
    LocalJobs,
    RemoteJobs,
    course_idempotency_key,
    read_local_job,
)
from microtopic.cli.job_views import follow_job, job_table, summary
from microtopic.cli.remote import check_server_url
from microtopic.config import JobRunnerKind, Settings
from microtopic.errors import ConfigError, CourseFileError, MicrotopicError
from microtopic.jobs.course import CourseSpec, load_course
from microtopic.jobs.worker import run_worker
from microtopic.runtime import Runtime

LOCAL_POLL_S = 0.5
REMOTE_POLL_S = 1.0
# Exit code of a command stopped by Ctrl-C, as shells report it (128 + SIGINT).
INTERRUPTED_EXIT_CODE = 130

jobs_app = typer.Typer(help="Follow background jobs.", no_args_is_help=True)

ServerOption = Annotated[
    str | None,
    typer.Option(
        help="URL of a running service, e.g. http://127.0.0.1:8001, to use in place of "
        "the configured database.",
        callback=check_server_url,
    ),
]


def batch(
    course_file: Annotated[
        Path,
        typer.Argument(
            help="YAML file of the course's subjects and topics (see examples/course.yaml).",
            exists=True,
            dir_okay=False,
        ),
    ],
    config: ConfigOption = None,
    server: ServerOption = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Follow the job until it finishes, or only submit it (for a service or "
            "workers to run).",
        ),
    ] = True,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="Key that makes a second submission return the first job (default: the "
            "SHA-256 of the course). Give a new key to generate the course again.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False,
) -> None:
    """Generate every topic of a course file as one background job, with a progress bar.

    Without --server, the job runs in this process (or on the arq workers when
    jobs.runner is arq). Prints the job's id on stdout once the job is submitted, and
    the progress and summary on stderr. Exits with 1 when any item failed or was cancelled.
    """
    settings = load_cli_settings(config, verbose=verbose)
    try:
        course = load_course(course_file)
    except CourseFileError as exc:
        print_error(exc.code, exc.message)
        raise typer.Exit(2) from None
    key = idempotency_key or course_idempotency_key(course)

    try:
        job = asyncio.run(_batch(settings, course, key, server=server, wait=wait))
    except MicrotopicError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        stderr.print(
            "interrupted: the running items went back to pending. Run the same command "
            "again to resume the job."
        )
        raise typer.Exit(INTERRUPTED_EXIT_CODE) from None

    if not wait:
        return
    stderr.print(summary(job), highlight=False)
    if job.status != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The id that `batch` or the API returned.")],
    config: ConfigOption = None,
    server: ServerOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the job as JSON, with every topic.")
    ] = False,
) -> None:
    """Print a job's status, progress and items."""
    settings = load_cli_settings(config, verbose=False, need_secrets=False)
    try:
        job = asyncio.run(_read_job(settings, job_id, server, results=as_json))
    except MicrotopicError as exc:
        raise fail(exc) from None
    if as_json:
        sys.stdout.write(job.model_dump_json(indent=2) + "\n")
    else:
        print_on_stdout(job_table(job))


def worker(config: ConfigOption = None) -> None:
    """Run an arq worker: it runs the job items queued in Redis until SIGINT or SIGTERM.

    Needs jobs.runner: arq and redis_url in the config.
    """
    settings = load_cli_settings(config)
    if settings.jobs.runner is not JobRunnerKind.ARQ:
        raise fail(
            ConfigError(
                "`microtopic worker` runs the job items queued in Redis, so it needs "
                f"`jobs.runner: arq` and `redis_url`, but jobs.runner is {settings.jobs.runner}. "
                "Set both in the config file, or leave jobs.runner as in_process and let "
                "`microtopic serve` or `microtopic batch` run the items."
            )
        )
    try:
        asyncio.run(run_worker(settings))
    except MicrotopicError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED_EXIT_CODE) from None


async def _batch(
    settings: Settings, course: CourseSpec, key: str, *, server: str | None, wait: bool
) -> JobOut:
    if server:
        async with httpx.AsyncClient(timeout=30.0) as http:
            remote = RemoteJobs(server, http)
            return await _submit_and_follow(remote, course, key, wait=wait, poll_s=REMOTE_POLL_S)

    in_process = settings.jobs.runner is JobRunnerKind.IN_PROCESS
    runtime = await Runtime.start(settings, run_jobs=wait and in_process)
    try:
        local = LocalJobs(runtime)
        return await _submit_and_follow(
            local,
            course,
            key,
            wait=wait,
            poll_s=LOCAL_POLL_S,
            runner_advice=_runner_advice(in_process=in_process, wait=wait),
        )
    finally:
        await runtime.aclose()


def _runner_advice(*, in_process: bool, wait: bool) -> str | None:
    """Return the advice on which process runs the job's items, or None when there is none."""
    if in_process and not wait:
        return (
            "No process runs it yet: `microtopic serve` on the same database runs it, or "
            "this command without --no-wait."
        )
    if wait and not in_process:
        return "The arq workers run the items; start `microtopic worker` if none runs."
    return None


async def _submit_and_follow(
    client: JobClient,
    course: CourseSpec,
    key: str,
    *,
    wait: bool,
    poll_s: float,
    runner_advice: str | None = None,
) -> JobOut:
    """Submit the course and print its job, then, with `wait`, follow it until it finishes.

    `runner_advice` is printed only when the job is not finished, because a re-submitted
    course may return a finished job, which no process needs to run.
    """
    job, created = await client.submit_course(course, key)
    # Scripts read the id alone from stdout, as in `JOB=$(microtopic batch FILE --no-wait)`.
    # It is flushed so that a reader of a pipe gets it before the job finishes.
    sys.stdout.write(job.id + "\n")
    sys.stdout.flush()
    _print_submission(job, course, key, created=created)
    if runner_advice is not None and not job.is_finished:
        stderr.print(runner_advice, highlight=False)
    if not wait:
        stderr.print(f"follow it with: microtopic jobs show {job.id}", highlight=False)
        return job

    return await follow_job(job, lambda: client.get(job.id), stderr, poll_s=poll_s)


def _print_submission(job: JobOut, course: CourseSpec, key: str, *, created: bool) -> None:
    if created:
        stderr.print(
            escape(
                f"job {job.id}: {job.progress.total} topics of course {course.course!r} submitted"
            ),
            highlight=False,
        )
    else:
        stderr.print(
            escape(
                f"job {job.id}: this course was submitted before, with the idempotency key "
                f"{key!r}, and its status is {job.status}. Pass a new --idempotency-key to "
                "generate it again."
            ),
            highlight=False,
        )


async def _read_job(
    settings: Settings, job_id: str, server: str | None, *, results: bool
) -> JobOut:
    if not server:
        return await read_local_job(settings, job_id, results=results)
    async with httpx.AsyncClient(timeout=30.0) as http:
        return await RemoteJobs(server, http).get(job_id, results=results)
