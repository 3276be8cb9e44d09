"""The `microtopic` command: generate, batch, jobs, worker, serve, keys, stats, trace,
simulate and db.

Every failure prints `error [code]: message` on stderr, where `code` is the stable
code of the error (the README lists them), and exits with 1, or with 2 for invalid
options or settings.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from microtopic.cli.checks import check_keys, check_table
from microtopic.cli.common import (
    ConfigOption,
    fail,
    listen_on,
    load_cli_settings,
    print_error,
    print_on_stdout,
    stderr,
)
from microtopic.cli.job_commands import batch, jobs_app, worker
from microtopic.cli.logs import configure_logging
from microtopic.cli.remote import DEFAULT_SERVER, check_server_url, describe_server
from microtopic.cli.render import topic_to_markdown
from microtopic.cli.stats import fetch_stats, stats_tables
from microtopic.cli.tables import key_table
from microtopic.cli.trace import load_trace, waterfall_lines
from microtopic.config import Settings
from microtopic.domain import Depth, GenerationRequest
from microtopic.errors import MicrotopicError
from microtopic.log_context import current_request_id
from microtopic.runtime import Runtime
from microtopic.service import GenerationOutcome
from microtopic.simulator import (
    SimulatedKey,
    SimulatorConfig,
    load_simulator_config,
    override_simulator_config,
    run_simulator,
)

app = typer.Typer(
    help="Generate microtopic lessons with LLMs through a pool of keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer()
app.add_typer(keys_app, name="keys")

# The `generate` option that sets each field of a generation request.
OPTION_BY_FIELD = {
    "course_id": "--course",
    "subject_name": "--subject",
    "topic_name": "--topic",
    "microtopics": "--microtopic",
    "audience": "--audience",
    "language": "--language",
    "depth": "--depth",
    "is_retry": "--retry",
}


@app.command()
def generate(
    subject: Annotated[str, typer.Option(help="Subject name, e.g. Mathematics.")],
    topic: Annotated[str, typer.Option(help="Topic name, e.g. Linear equations.")],
    course: Annotated[str, typer.Option(help="Course id stored with the request.")] = "cli",
    microtopic: Annotated[
        list[str] | None,
        typer.Option(
            "--microtopic", "-m", help="Microtopic to write; repeat it; skips the planner."
        ),
    ] = None,
    audience: Annotated[str | None, typer.Option(help='Audience, e.g. "grade 9".')] = None,
    language: Annotated[str, typer.Option(help="Language tag of the lesson.")] = "en",
    depth: Annotated[Depth, typer.Option(help="lite (short) or full.")] = Depth.LITE,
    retry: Annotated[
        bool,
        typer.Option(
            "--retry",
            help="Mark the request as a retry of a failed one: it gets the retry strategy, "
            "and the local model samples differently from the failed run.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the validated JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False,
    config: ConfigOption = None,
) -> None:
    """Generate the lessons of one topic and print them as Markdown (or JSON)."""
    settings = load_cli_settings(config, verbose=verbose)
    try:
        request = GenerationRequest(
            course_id=course,
            subject_name=subject,
            topic_name=topic,
            microtopics=microtopic or None,
            audience=audience,
            language=language,
            depth=depth,
            is_retry=retry,
        )
    except ValidationError as exc:
        print_error("invalid_request", f"invalid input: {_describe_input(exc)}")
        raise typer.Exit(2) from None

    try:
        outcome = asyncio.run(_generate(settings, request))
    except MicrotopicError as exc:
        raise fail(exc) from None

    if as_json:
        sys.stdout.write(outcome.topic.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(topic_to_markdown(outcome.topic))
    stderr.print(_summary(outcome), highlight=False)


def _summary(outcome: GenerationOutcome) -> str:
    count = len(outcome.topic.microtopics)
    if outcome.cached:
        return (
            f"request {outcome.request_id}: {count} microtopics from the cache "
            f"(no LLM calls), {outcome.duration_ms / 1000:.1f} s; add --retry to generate "
            "them again"
        )
    return (
        f"request {outcome.request_id}: {count} microtopics, {outcome.llm_calls} LLM calls, "
        f"{outcome.tokens.total_tokens} tokens, {outcome.duration_ms / 1000:.1f} s"
    )


async def _generate(settings: Settings, request: GenerationRequest) -> GenerationOutcome:
    # As the HTTP middleware does for a request, so every log line of the run carries
    # the id. `asyncio.run` gives this coroutine a context of its own, so it is not reset.
    request_id = uuid.uuid4().hex
    current_request_id.set(request_id)
    runtime = await Runtime.start(settings)
    try:
        label = ", ".join(key.name for key in runtime.gateway.pool.keys)
        with stderr.status(escape(f"Generating {request.topic_name!r} with {label}...")):
            return await runtime.service.generate(request, request_id=request_id)
    finally:
        await runtime.aclose()


def _describe_input(exc: ValidationError) -> str:
    # Only options and messages are shown, because pydantic's own text adds the input and
    # a docs URL.
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        parts = [str(part) for part in error["loc"]]
        if parts:
            parts[0] = OPTION_BY_FIELD.get(parts[0], parts[0])
        problems.append(f"{'.'.join(parts) or 'input'}: {error['msg']}")
    return "; ".join(problems) + "."


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8001,
    config: ConfigOption = None,
) -> None:
    """Start the HTTP API."""
    import uvicorn

    from microtopic.api import create_app
    from microtopic.storage import upgrade_database

    settings = load_cli_settings(config)
    listener = listen_on(host, port)
    # Migrated here as well as at start-up, so that a database that cannot be used
    # prints one error line, not a traceback in the server's log.
    try:
        upgrade_database(settings.database_url, setting=settings.database_url_setting)
    except MicrotopicError as exc:
        listener.close()
        raise fail(exc) from None
    server_config = uvicorn.Config(create_app(settings), host=host, port=port, log_config=None)
    server = uvicorn.Server(server_config)
    server.run(sockets=[listener])
    if not server.started:
        print_error("startup_failed", "The service did not start; its log above says why.")
        raise typer.Exit(1)


@keys_app.callback(invoke_without_command=True)
def keys(
    context: typer.Context,
    config: ConfigOption = None,
    server: Annotated[
        str | None,
        typer.Option(
            help="URL of a running service, e.g. http://127.0.0.1:8001, for live counts.",
            callback=check_server_url,
        ),
    ] = None,
) -> None:
    """Print the configured keys with masked secrets and their usage and error counts.

    `microtopic keys check` checks each key with a call instead.
    """
    if context.invoked_subcommand is not None:
        return  # `check` reads these options from the context.
    settings = load_cli_settings(config, verbose=False)
    try:
        table = asyncio.run(key_table(settings, server))
    except MicrotopicError as exc:
        raise fail(exc) from None
    print_on_stdout(table)


@keys_app.command("check")
def keys_check(
    context: typer.Context,
    config: ConfigOption = None,
    server: Annotated[
        str | None,
        typer.Option(
            help="URL of a running service, e.g. http://127.0.0.1:8001, to check its keys "
            "there; a passing check puts a disabled key back into its rotation.",
            callback=check_server_url,
        ),
    ] = None,
) -> None:
    """Check every key with one small call each and print the outcomes.

    Exits with 1 when any check failed.
    """
    # `microtopic keys --config FILE check` puts the options on the group.
    group = context.parent.params if context.parent is not None else {}
    config = config or group.get("config")
    server = server or group.get("server")
    settings = load_cli_settings(config, verbose=False)
    try:
        checks = asyncio.run(check_keys(settings, server))
    except MicrotopicError as exc:
        raise fail(exc) from None
    source = f"on {describe_server(server)}" if server else "from this machine"
    print_on_stdout(check_table(checks, source))
    if any(key.check.status == "failed" for key in checks):
        raise typer.Exit(1)


@app.command()
def stats(
    server: Annotated[
        str,
        typer.Option(
            help="URL of the running service whose stats to print.", callback=check_server_url
        ),
    ] = DEFAULT_SERVER,
) -> None:
    """Print a running service's capacity, operation timings, keys and errors by class.

    Stats live in the service, so this reads them from `--server`.
    """
    try:
        service_stats = asyncio.run(fetch_stats(server))
    except MicrotopicError as exc:
        raise fail(exc) from None
    print_on_stdout(*stats_tables(service_stats, describe_server(server)))


@app.command()
def trace(
    request_id: Annotated[
        str, typer.Argument(help="The request's id, as `generate` printed or returned it.")
    ],
    server: Annotated[
        str | None,
        typer.Option(
            help="URL of the running service that served the request; without it, the "
            "trace is read from the config's database.",
            callback=check_server_url,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Print a request's trace as a text waterfall: steps, key selection, LLM attempts."""
    settings = load_cli_settings(config, verbose=False, need_secrets=False)
    try:
        response = asyncio.run(load_trace(settings, server, request_id))
    except MicrotopicError as exc:
        raise fail(exc) from None
    console = Console()
    for line in waterfall_lines(response):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8100,
    sim_config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Simulator YAML: keys, quotas, latency and faults (see docs/simulator.md).",
            exists=True,
        ),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", "-k", help="A key the simulator accepts, as NAME=SECRET; repeat it."),
    ] = None,
    time_scale: Annotated[
        float | None,
        typer.Option(
            help="Simulated seconds per real second for quota windows, replacing the "
            "config's time_scale; 10 makes a minute of quota pass in 6 s.",
        ),
    ] = None,
) -> None:
    """Run the Azure OpenAI simulator, for testing configs offline."""
    configure_logging("INFO")
    try:
        sim = _simulator_config(sim_config, key or [], time_scale)
    except MicrotopicError as exc:
        print_error(exc.code, exc.message)
        raise typer.Exit(2) from None
    except ValueError as exc:
        print_error("invalid_request", str(exc))
        raise typer.Exit(2) from None
    listener = listen_on(host, port)
    key_names = ", ".join(k.name for k in sim.keys)
    stderr.print(
        escape(
            f"simulator on http://{host}:{port} with keys: {key_names} "
            f"(time scale {sim.time_scale:g})"
        ),
        highlight=False,
    )
    run_simulator(sim, host=host, port=port, listener=listener)


def _simulator_config(
    path: Path | None, key_texts: list[str], time_scale: float | None
) -> SimulatorConfig:
    extra_keys = [_simulated_key(text) for text in key_texts]
    if path is not None:
        base = load_simulator_config(path)
        return override_simulator_config(base, extra_keys=extra_keys, time_scale=time_scale)
    if not extra_keys:
        raise ValueError("Give the simulator a key: --key NAME=SECRET or --config FILE.")
    base = SimulatorConfig(keys=extra_keys)
    return override_simulator_config(base, time_scale=time_scale)


def _simulated_key(text: str) -> SimulatedKey:
    name, separator, secret = text.partition("=")
    if not separator or not name or not secret:
        raise ValueError(f"--key must be NAME=SECRET, got {name or text!r}")
    try:
        return SimulatedKey(name=name, secret=secret)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise ValueError(f"--key {name!r} is invalid: {problems}.") from None


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply the database migrations up to the newest."""
    from microtopic.storage import upgrade_database

    settings = load_cli_settings(config, need_secrets=False)
    try:
        upgrade_database(settings.database_url, setting=settings.database_url_setting)
    except MicrotopicError as exc:
        raise fail(exc) from None
    stderr.print("database is up to date")


app.command()(batch)
app.add_typer(jobs_app, name="jobs")
app.command()(worker)


def main() -> None:
    app()
