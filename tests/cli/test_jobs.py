"""The commands `microtopic batch`, `microtopic jobs show` and `microtopic worker`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from microtopic.config import load_settings
from microtopic.simulator import SimulatorServer
from tests.api.support import count_rows
from tests.app_server import AppServer
from tests.cli.support import KEY_NAMES, NARROW_ENV, Cli, one_line, table_lines
from tests.cli.test_main import MISSING_VARIABLE, set_fault, simulator_calls, table_names

COURSE = {
    "course": "physics-101",
    "subjects": [
        {
            "name": "Mechanics",
            "topics": [
                {"name": "Newton's laws", "microtopics": ["Inertia"]},
                {"name": "Kinematics", "microtopics": ["Velocity"]},
            ],
        },
        {"name": "Waves", "topics": [{"name": "Sound", "microtopics": ["Pitch"]}]},
    ],
}
JOB_ID = re.compile(r"job ([0-9a-f]{32})")


@pytest.fixture
def course_file(tmp_path: Path) -> Path:
    path = tmp_path / "course.yaml"
    path.write_text(yaml.safe_dump(COURSE), encoding="utf-8")
    return path


def job_id_in(text: str) -> str:
    match = JOB_ID.search(text)
    assert match is not None, text
    return match.group(1)


def test_batch_generates_every_topic(
    cli: Cli, config_file: Path, course_file: Path, database_path: Path
) -> None:
    result = cli.run("batch", str(course_file), "--config", str(config_file))

    assert result.exit_code == 0, result.stderr
    output = one_line(result.stderr)
    assert "3 topics of course 'physics-101' submitted" in output
    assert re.findall(r"succeeded (\d)/3 ", output) == ["1", "2", "3"]
    for label in ("Mechanics / Newton's laws", "Mechanics / Kinematics", "Waves / Sound"):
        assert re.search(rf"succeeded \d/3 {label}", output), label
    assert "succeeded: 3 of 3 items succeeded, 0 failed, 0 cancelled" in output
    assert count_rows(database_path, "jobs") == 1
    assert count_rows(database_path, "generated_topics") == 3


@pytest.mark.parametrize("flags", [(), ("--no-wait",)])
def test_batch_prints_job_id_on_stdout(
    cli: Cli, config_file: Path, course_file: Path, flags: tuple[str, ...]
) -> None:
    result = cli.run("batch", str(course_file), "--config", str(config_file), *flags)

    assert result.exit_code == 0, result.stderr
    assert result.stdout == job_id_in(result.stderr) + "\n"


def test_batch_again_returns_first_job(
    cli: Cli,
    config_file: Path,
    course_file: Path,
    database_path: Path,
    simulator: SimulatorServer,
) -> None:
    first = cli.run("batch", str(course_file), "--config", str(config_file))
    calls = simulator_calls(simulator)

    second = cli.run("batch", str(course_file), "--config", str(config_file))

    assert second.exit_code == 0, second.stderr
    assert job_id_in(second.stderr) == job_id_in(first.stderr)
    assert second.stdout == first.stdout
    assert "this course was submitted before" in one_line(second.stderr)
    assert "and its status is succeeded." in one_line(second.stderr)
    assert simulator_calls(simulator) == calls
    assert count_rows(database_path, "jobs") == 1


def test_finished_job_gets_no_advice(cli: Cli, config_file: Path, course_file: Path) -> None:
    cli.run("batch", str(course_file), "--config", str(config_file))

    result = cli.run("batch", str(course_file), "--config", str(config_file), "--no-wait")

    assert result.exit_code == 0, result.stderr
    output = one_line(result.stderr)
    assert "and its status is succeeded." in output
    assert "No process runs it yet" not in output


def test_finished_arq_job_gets_no_advice(
    cli: Cli,
    config_file: Path,
    course_file: Path,
    tmp_path: Path,
    redis_url: str,
    redis_namespace: str,
) -> None:
    cli.run("batch", str(course_file), "--config", str(config_file))
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config.update(jobs={"runner": "arq"}, redis_url=redis_url, redis_namespace=redis_namespace)
    arq_config = tmp_path / "arq.yaml"
    arq_config.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = cli.run("batch", str(course_file), "--config", str(arq_config))

    assert result.exit_code == 0, result.stderr
    output = one_line(result.stderr)
    assert "and its status is succeeded." in output
    assert "microtopic worker" not in output


def test_new_key_generates_course_again(
    cli: Cli, config_file: Path, course_file: Path, database_path: Path
) -> None:
    cli.run("batch", str(course_file), "--config", str(config_file))

    result = cli.run(
        "batch", str(course_file), "--config", str(config_file), "--idempotency-key", "again"
    )

    assert result.exit_code == 0, result.stderr
    assert count_rows(database_path, "jobs") == 2
    assert count_rows(database_path, "generated_topics") == 6


def test_failed_items_exit_1_with_reasons(
    cli: Cli, config_file: Path, course_file: Path, simulator: SimulatorServer
) -> None:
    for name in KEY_NAMES:
        set_fault(simulator, name, "revoked")

    result = cli.run("batch", str(course_file), "--config", str(config_file))

    assert result.exit_code == 1
    output = one_line(result.stderr)
    assert " failed: 0 of 3 items succeeded, 3 failed" in output
    assert "Items that did not succeed" in output
    assert "Mechanics / Kinematics" in output
    assert re.search(r"all_keys_failed|no_key_available", output)


def test_invalid_course_file_exits_2(cli: Cli, config_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("course: c\nsubjects:\n  - name: A\n    topics:\n      - title: x\n")

    result = cli.run("batch", str(path), "--config", str(config_file))

    assert result.exit_code == 2
    output = one_line(result.stderr)
    assert output.startswith("error [invalid_course]: ")
    assert "subjects[0].topics[0].name: Field required" in output


def test_course_error_brackets_are_printed(cli: Cli, config_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "[bold]course.yaml"
    path.write_text("course: c\nlanguage: english!\nsubjects:\n  - name: A\n    topics: [x]\n")

    result = cli.run("batch", str(path), "--config", str(config_file))

    assert result.exit_code == 2
    output = one_line(result.stderr)
    assert f"The course file {path} is invalid" in output
    assert "language: String should match pattern '^[a-z]{2,3}" in output


def test_course_name_brackets_are_printed(cli: Cli, config_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "course.yaml"
    path.write_text(yaml.safe_dump({**COURSE, "course": "[bold]physics"}), encoding="utf-8")

    result = cli.run("batch", str(path), "--config", str(config_file), "--no-wait")

    assert result.exit_code == 0, result.stderr
    assert "3 topics of course '[bold]physics' submitted" in one_line(result.stderr)


def test_no_wait_only_submits(
    cli: Cli, config_file: Path, course_file: Path, database_path: Path
) -> None:
    result = cli.run("batch", str(course_file), "--config", str(config_file), "--no-wait")

    assert result.exit_code == 0, result.stderr
    output = one_line(result.stderr)
    assert f"microtopic jobs show {job_id_in(output)}" in output
    assert "No process runs it yet" in output
    assert count_rows(database_path, "job_items") == 3
    assert count_rows(database_path, "generated_topics") == 0


def test_jobs_show_prints_items(cli: Cli, config_file: Path, course_file: Path) -> None:
    job_id = job_id_in(cli.run("batch", str(course_file), "--config", str(config_file)).stderr)

    result = cli.run("jobs", "show", job_id, "--config", str(config_file))

    assert result.exit_code == 0, result.stderr
    output = one_line(result.stdout)
    assert f"job {job_id} (course) succeeded: 3 of 3 items finished (100%)" in output
    assert "Newton's laws" in output
    assert "Sound" in output


def test_piped_jobs_show_keeps_headers(cli: Cli, config_file: Path, course_file: Path) -> None:
    job_id = job_id_in(cli.run("batch", str(course_file), "--config", str(config_file)).stderr)

    result = cli.run("jobs", "show", job_id, "--config", str(config_file), env=NARROW_ENV)

    assert result.exit_code == 0, result.stderr
    lines = table_lines(result.stdout)
    assert ["#", "subject", "topic", "status", "attempts", "request", "error"] in lines
    rows = {cells[0]: cells for cells in lines if cells[0].isdigit()}
    assert rows["1"][:5] == ["1", "Mechanics", "Newton's laws", "succeeded", "1"]
    assert re.fullmatch("[0-9a-f]{32}", rows["1"][5])


def test_jobs_show_json_has_topics(cli: Cli, config_file: Path, course_file: Path) -> None:
    job_id = job_id_in(cli.run("batch", str(course_file), "--config", str(config_file)).stderr)

    result = cli.run("jobs", "show", job_id, "--json", "--config", str(config_file))

    job = json.loads(result.stdout)
    assert job["id"] == job_id
    assert job["status"] == "succeeded"
    assert [item["data"]["topic_name"] for item in job["items"]] == [
        "Newton's laws",
        "Kinematics",
        "Sound",
    ]


def test_jobs_show_without_key_secrets(
    cli: Cli, config_file: Path, course_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = job_id_in(cli.run("batch", str(course_file), "--config", str(config_file)).stderr)
    monkeypatch.delenv(MISSING_VARIABLE, raising=False)
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    for key in config["keys"]:
        key["secret"] = "${" + MISSING_VARIABLE + "}"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    show = cli.run("jobs", "show", job_id, "--config", str(config_file))
    generated = cli.run("batch", str(course_file), "--config", str(config_file))

    assert show.exit_code == 0, show.stderr
    assert f"job {job_id} (course) succeeded" in one_line(show.stdout)
    assert generated.exit_code == 2
    assert MISSING_VARIABLE in one_line(generated.stderr)


def test_jobs_show_unknown_id_fails(cli: Cli, config_file: Path) -> None:
    result = cli.run("jobs", "show", "0" * 32, "--config", str(config_file))

    assert result.exit_code == 1
    assert "error [not_found]" in result.stderr


def test_jobs_show_on_server_prints_service_code(cli: Cli, config_file: Path) -> None:
    with AppServer(load_settings(config_file)) as server:
        result = cli.run("jobs", "show", "0" * 32, "--server", server.base_url)

    assert result.exit_code == 1
    assert "error [not_found]" in result.stderr


@pytest.mark.parametrize("job_id", ["../../etc", "..", "50%2F50", "what?"])
def test_jobs_show_on_server_quotes_id(cli: Cli, config_file: Path, job_id: str) -> None:
    with AppServer(load_settings(config_file)) as server:
        result = cli.run("jobs", "show", job_id, "--server", server.base_url)

    assert result.exit_code == 1
    output = one_line(result.stderr)
    assert "error [not_found]" in output
    assert f"No job has the id {job_id!r}." in output
    assert "No route matches" not in output


def test_batch_on_server(cli: Cli, config_file: Path, course_file: Path) -> None:
    with AppServer(load_settings(config_file)) as server:
        result = cli.run("batch", str(course_file), "--server", server.base_url)
        show = cli.run("jobs", "show", job_id_in(result.stderr), "--server", server.base_url)

    assert result.exit_code == 0, result.stderr
    assert result.stdout == job_id_in(result.stderr) + "\n"
    assert "succeeded: 3 of 3 items succeeded" in one_line(result.stderr)
    assert show.exit_code == 0, show.stderr
    assert "succeeded: 3 of 3 items finished" in one_line(show.stdout)


def test_batch_on_absent_server_fails(cli: Cli, course_file: Path) -> None:
    result = cli.run("batch", str(course_file), "--server", "http://127.0.0.1:1")

    assert result.exit_code == 1
    assert (
        "error [service_unreachable]: No Microtopic service responds at http://127.0.0.1:1"
        in one_line(result.stderr)
    )


def test_absent_server_credentials_are_not_printed(cli: Cli, course_file: Path) -> None:
    url = "http://reader:server-password@127.0.0.1:1"

    result = cli.run("batch", str(course_file), "--server", url)

    assert result.exit_code == 1
    output = one_line(result.stderr)
    assert "No Microtopic service responds at http://127.0.0.1:1 " in output
    assert "server-password" not in output


def test_batch_on_ftp_server_is_usage_error(cli: Cli, course_file: Path) -> None:
    result = cli.run("batch", str(course_file), "--server", "ftp://127.0.0.1:8001")

    assert result.exit_code == 2
    assert "Invalid value for '--server': must start with http://" in one_line(result.stderr)


def test_worker_needs_arq_runner(cli: Cli, config_file: Path) -> None:
    result = cli.run("worker", "--config", str(config_file))

    assert result.exit_code == 2
    output = one_line(result.stderr)
    assert output.startswith("error [invalid_config]: `microtopic worker` runs the job items")
    assert "needs `jobs.runner: arq` and `redis_url`, but jobs.runner is in_process." in output


def test_worker_reports_unreachable_redis(
    cli: Cli, config_file: Path, tmp_path: Path, database_path: Path
) -> None:
    config = yaml.safe_load(config_file.read_text())
    config["jobs"] = {"runner": "arq"}
    config["redis_url"] = "redis://:worker-password@127.0.0.1:1/0"
    path = tmp_path / "arq.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = cli.run("worker", "--config", str(path))

    assert result.exit_code == 1
    output = one_line(result.stderr)
    assert "error [queue_unavailable]" in output
    assert "worker-password" not in output
    assert "jobs" in table_names(database_path)
