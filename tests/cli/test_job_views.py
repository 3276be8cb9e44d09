"""The terminal views of jobs: the lines printed while a job runs."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from microtopic.api.job_schemas import JobItemOut, JobOut, JobProgressOut
from microtopic.cli.job_views import follow_job

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TOPICS = ("Newton's laws", "Kinematics", "Sound")


def make_job(statuses: tuple[str, ...]) -> JobOut:
    """Return a job of three items in `statuses`, in the order of their positions."""
    items = [
        JobItemOut(
            id=f"item-{position}",
            position=position,
            subject_name="Physics",
            topic_name=TOPICS[position],
            status=status,
            attempts=0 if status == "pending" else 1,
            request_id=None,
            error=None,
            started_at=None,
            finished_at=None,
            data=None,
        )
        for position, status in enumerate(statuses)
    ]
    succeeded = statuses.count("succeeded")
    progress = JobProgressOut(
        total=len(items),
        pending=statuses.count("pending"),
        running=statuses.count("running"),
        succeeded=succeeded,
        failed=0,
        cancelled=0,
        finished=succeeded,
        percent=round(100.0 * succeeded / len(items), 1),
    )
    return JobOut(
        id="0" * 32,
        kind="course",
        status="succeeded" if succeeded == len(items) else "running",
        idempotency_key=None,
        created_at=T0,
        cancelled_at=None,
        finished_at=T0 if succeeded == len(items) else None,
        progress=progress,
        items=items,
    )


async def test_item_lines_count_finished_items() -> None:
    snapshots = [
        make_job(("running", "pending", "succeeded")),
        make_job(("succeeded", "running", "succeeded")),
        make_job(("succeeded", "succeeded", "succeeded")),
    ]
    later = iter(snapshots[1:])
    output = io.StringIO()
    console = Console(file=output, width=200, color_system=None)

    async def fetch() -> JobOut:
        return next(later)

    job = await follow_job(snapshots[0], fetch, console, poll_s=0)

    lines = [line.split() for line in output.getvalue().splitlines() if line.strip()]
    assert job.is_finished
    assert [line[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert [line[-1] for line in lines] == ["Sound", "laws", "Kinematics"]
    assert all(line[0] == "succeeded" for line in lines)
