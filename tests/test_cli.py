"""End-to-end checks of the `tessera` command: exit codes, messages, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from tessera import __version__
from tessera.cli import app

runner = CliRunner()

FLAVOR = {"apiVersion": "tessera.dev/v1alpha1", "kind": "ResourceFlavor", "metadata": {"name": "a100"}}


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"tessera {__version__}"


def test_validate_ok(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("ok.yaml", FLAVOR)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 object(s) valid" in result.stdout


def test_validate_reports_every_error_and_exits_2(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        "bad.yaml",
        {**FLAVOR, "spec": {"nodeLabels": {"bad key": "x"}}},
        {"apiVersion": "tessera.dev/v1alpha1", "kind": "LocalQueue", "metadata": {"name": "lq"}, "spec": {}},
    )
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2
    assert f"{path}:1: ResourceFlavor/a100: spec.nodeLabels" in lines[0]
    assert f"{path}:2: LocalQueue/lq: spec.clusterQueue: required field is missing" in lines[1]
    assert "Traceback" not in result.output


def test_validate_broken_yaml_and_missing_file(write_yaml: Callable[..., Path], tmp_path: Path) -> None:
    path = write_yaml("broken.yaml", "kind: [\n")
    result = runner.invoke(app, ["validate", str(path), str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "invalid YAML" in result.stderr and "no such file or folder" in result.stderr


def test_console_script_runs_without_traceback(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml("bad.yaml", {"apiVersion": "tessera.dev/v1alpha1", "kind": "Cohort", "metadata": {"name": "c"}, "spec": {"parentName": "c"}})
    proc = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "validate", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "Cohort/c: spec.parentName: a Cohort cannot be its own parent" in proc.stderr
    assert "Traceback" not in proc.stderr
