"""Terminal views of jobs: a progress bar while they run, then a summary or a table.

User text (subject and topic names, error messages) is escaped, so that Rich prints
it as written instead of reading brackets in it as markup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from microtopic.api.job_schemas import JobItemOut, JobOut

STATUS_STYLES = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "pending": "dim",
}


async def follow_job(
    job: JobOut, fetch: Callable[[], Awaitable[JobOut]], console: Console, *, poll_s: float
) -> JobOut:
    """Show a progress bar and a line per finished item until the job finishes; return it."""
    reported: set[int] = set()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        bar = progress.add_task(_counts(job), total=job.progress.total)
        while True:
            for item in job.items:
                if item.position in reported or item.status in ("pending", "running"):
                    continue
                reported.add(item.position)
                progress.console.print(item_line(item, len(reported), job.progress.total))
            progress.update(bar, completed=job.progress.finished, description=_counts(job))
            if job.is_finished:
                return job
            await asyncio.sleep(poll_s)
            job = await fetch()


def item_line(item: JobItemOut, finished: int, total: int) -> Text:
    """Return the line printed when an item finishes: its status, `finished/total` and name.

    `finished` counts the items finished so far, this one included, so that the lines
    count up in whatever order the items finish.
    """
    style = STATUS_STYLES.get(item.status, "")
    line = Text.assemble((f"{item.status:>9}", style), f"  {finished}/{total}  {item.label}")
    if item.error is not None:
        line.append(f": {item.error.code}", style="red")
    return line


def summary(job: JobOut) -> RenderableType:
    """Return the closing summary: the counts, then a table of the items that did not succeed."""
    progress = job.progress
    duration = ""
    if job.finished_at is not None:
        seconds = (job.finished_at - job.created_at).total_seconds()
        duration = f" in {seconds:.1f} s"
    headline = Text.from_markup(
        f"job {job.id} [{_style(job.status)}]{job.status}[/]: {progress.succeeded} of "
        f"{progress.total} items succeeded, {progress.failed} failed, "
        f"{progress.cancelled} cancelled{duration}"
    )
    unsuccessful = [item for item in job.items if item.status in ("failed", "cancelled")]
    if not unsuccessful:
        return headline

    table = Table(title="Items that did not succeed", title_justify="left")
    for column in ("#", "subject / topic", "status", "error", "message"):
        table.add_column(column, overflow="fold")
    for item in unsuccessful:
        error = item.error
        table.add_row(
            str(item.position + 1),
            escape(item.label),
            item.status,
            error.code if error else "-",
            escape(error.message) if error else "-",
        )
    return Group(headline, table)


def job_table(job: JobOut) -> RenderableType:
    """Return the job's headline and a table of all its items."""
    progress = job.progress
    headline = Text.from_markup(
        f"job {job.id} ({job.kind}) [{_style(job.status)}]{job.status}[/]: "
        f"{progress.finished} of {progress.total} items finished ({progress.percent:g}%), "
        f"{progress.running} running, {progress.succeeded} succeeded, {progress.failed} "
        f"failed, {progress.cancelled} cancelled"
    )
    table = Table()
    for column in ("#", "subject", "topic", "status", "attempts", "request", "error"):
        table.add_column(column, overflow="fold")
    for item in job.items:
        table.add_row(
            str(item.position + 1),
            escape(item.subject_name),
            escape(item.topic_name),
            Text(item.status, style=STATUS_STYLES.get(item.status, "")),
            str(item.attempts),
            item.request_id or "-",
            "-" if item.error is None else escape(f"{item.error.code}: {item.error.message}"),
        )
    return Group(headline, table)


def _counts(job: JobOut) -> str:
    progress = job.progress
    return f"{progress.running} running, {progress.succeeded} succeeded, {progress.failed} failed"


def _style(status: str) -> str:
    if status == "succeeded":
        return "green"
    if status in ("failed", "partially_failed"):
        return "red"
    if status == "cancelled":
        return "yellow"
    return "cyan"
