"""Loading the trace exporter: off by default, and a clear error without the `otel` extra."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib.metadata import distribution
from pathlib import Path

from microtopic.config import TelemetryConfig
from microtopic.observability.export import load_trace_exporter

SOURCE_DIR = Path(__file__).resolve().parents[2] / "src"

# The distributions that the `otel` extra adds. The OpenTelemetry API stays: FastAPI needs it.
OTEL_EXTRA = ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")


def site_packages_without_otel_extra(target: Path) -> Path:
    """Build in `target` a copy of site-packages, made of symbolic links, without `OTEL_EXTRA`."""
    hidden: set[Path] = set()
    for name in OTEL_EXTRA:
        installed = distribution(name)
        hidden |= {
            Path(str(installed.locate_file(file))).resolve() for file in installed.files or []
        }
    site_dirs = {Path(sysconfig.get_paths()[name]).resolve() for name in ("purelib", "platlib")}
    holding_hidden = {parent for path in hidden for parent in path.parents}
    for site_dir in site_dirs:
        link_tree(site_dir, target, hidden, holding_hidden)
    return target


def link_tree(source: Path, target: Path, hidden: set[Path], holding_hidden: set[Path]) -> None:
    """Link each entry of `source` into `target`, descending into folders that hold hidden files."""
    target.mkdir(exist_ok=True)
    for entry in source.iterdir():
        if entry in hidden or (target / entry.name).exists():
            continue
        if entry in holding_hidden:
            link_tree(entry, target / entry.name, hidden, holding_hidden)
        else:
            (target / entry.name).symlink_to(entry)


def test_export_is_off_without_endpoint() -> None:
    assert load_trace_exporter(TelemetryConfig()) is None


def test_missing_packages_name_the_extra(tmp_path: Path) -> None:
    site = site_packages_without_otel_extra(tmp_path / "site-packages")
    config = tmp_path / "microtopic.yaml"
    config.write_text(
        f"database_url: sqlite+aiosqlite:///{tmp_path / 'core.db'}\n"
        "telemetry:\n"
        "  otlp_endpoint: http://127.0.0.1:4318/v1/traces\n",
        encoding="utf-8",
    )
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": f"{SOURCE_DIR}{os.pathsep}{site}",
        "HOME": str(tmp_path),
    }
    command = [sys.executable, "-S", "-m", "microtopic", "generate"]
    command += ["--config", str(config), "--subject", "Math", "--topic", "Algebra"]

    # -S leaves the real site-packages, and with it the extra, off the path.
    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 2, result.stderr  # invalid settings
    assert "error [invalid_config]" in result.stderr
    assert "pip install 'microtopic[otel]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "core.db").exists()
