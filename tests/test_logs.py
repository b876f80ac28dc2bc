"""Structured logs (admission/logs.py) and `tessera run --log-format/--log-level`."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import kopf
import pytest
from typer.testing import CliRunner

from admission.logs import JsonFormatter, TextFormatter, configure_logging, rfc3339
from tessera.cli import app

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """configure_logging changes the root logger: put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    objects_level = logging.getLogger("kopf.objects").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("kopf.objects").setLevel(objects_level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_the_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    log = logging.getLogger("tessera.controller")
    log.info("Workload %s admitted in ClusterQueue %s", "ns/job-a", "cq",
             extra={"workload": "job-a", "namespace": "ns", "job": "a", "cluster_queue": "cq", "reason": "QuotaReserved",
                    "flavors": {"nvidia.com/gpu": "a100"}, "waited_seconds": 0.25})
    log.debug("not shown at info")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("pass failed", extra={"cluster_queue": "cq"})
    first, failed = lines(stream)
    assert RFC3339_MS.match(first["time"])
    assert abs(datetime.fromisoformat(first["time"].replace("Z", "+00:00")).timestamp()
               - datetime.now().timestamp()) < 60
    assert {k: first[k] for k in ("level", "logger", "message")} == {
        "level": "info", "logger": "tessera.controller", "message": "Workload ns/job-a admitted in ClusterQueue cq"}
    assert {k: first[k] for k in ("workload", "namespace", "job", "cluster_queue", "reason")} == {
        "workload": "job-a", "namespace": "ns", "job": "a", "cluster_queue": "cq", "reason": "QuotaReserved"}
    assert first["flavors"] == {"nvidia.com/gpu": "a100"} and first["waited_seconds"] == 0.25
    assert not {"args", "msg", "levelno", "pathname", "exc_info"} & set(first)  # no LogRecord internals
    assert failed["level"] == "error" and failed["cluster_queue"] == "cq"
    assert "RuntimeError: boom" in failed["exception"] and "Traceback" in failed["exception"]


def test_values_that_are_not_json_are_written_as_text() -> None:
    record = logging.LogRecord("tessera.x", logging.WARNING, __file__, 1, "odd %s", ("value",), None)
    record.path = Path("/tmp/x")
    record.items = ({1, 2},)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "odd value" and entry["level"] == "warning"
    assert entry["path"] == "/tmp/x" and sorted(entry["items"][0]) == [1, 2]


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500Z"
    assert rfc3339(1735787045.0) == "2025-01-02T03:04:05.000Z"


def test_kopf_logs_go_through_the_same_formatter() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    logging.getLogger("kopf.activities.startup").info("kopf starting")
    body = kopf.Body({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns", "uid": "u1"}})
    kopf_logger = kopf.ObjectLogger(body=body, settings=kopf.OperatorSettings())
    kopf_logger.warning("handler failed")
    startup, per_object = lines(stream)
    assert startup["logger"] == "kopf.activities.startup" and startup["message"] == "kopf starting"
    assert per_object["logger"] == "kopf.objects" and per_object["level"] == "warning"
    assert per_object["object"] == {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "namespace": "ns", "uid": "u1"}
    assert "settings" not in per_object and "k8s_skip" not in per_object


def test_text_lines_keep_the_plain_format_and_kopfs_object_prefix() -> None:
    stream = io.StringIO()
    configure_logging("text", "warning", stream=stream)
    logging.getLogger("tessera.controller").info("hidden below warning")
    logging.getLogger("tessera.controller").warning("quota %s", "low", extra={"cluster_queue": "cq"})
    body = kopf.Body({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns"}})
    kopf.ObjectLogger(body=body, settings=kopf.OperatorSettings()).error("bad")
    out = stream.getvalue().splitlines()
    assert len(out) == 2
    assert re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} WARNING tessera.controller: quota low$", out[0])
    assert out[1].endswith("ERROR kopf.objects: [ns/j] bad")
    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "x", (), None)
    assert TextFormatter().format(record).endswith("INFO kopf.objects: x")


def test_configuring_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("text", "info", stream=first)
    configure_logging("json", "debug", stream=second)
    logging.getLogger("tessera.x").debug("once")
    assert first.getvalue() == ""
    assert [e["message"] for e in lines(second)] == ["once"]
    with pytest.raises(ValueError):
        configure_logging("xml")
    with pytest.raises(ValueError):
        configure_logging("json", "loud")


# --- tessera run --log-format / --log-level -------------------------------------------------------


def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "default"}}],
    }))
    return path


def test_run_logs_json_at_the_chosen_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from admission.operator import Operator

    seen: dict[str, Any] = {}

    async def fake_run(self: Operator) -> None:  # the operator's first lines, without a cluster
        seen["policy"] = self.config.policy
        logging.getLogger("tessera.operator").info("caches synced")
        logging.getLogger("tessera.controller").warning("Workload ns/job-a preempted",
                                                        extra={"workload": "job-a", "namespace": "ns", "reason": "InClusterQueue"})

    monkeypatch.setattr(Operator, "run", fake_run)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    args = ["run", "--no-webhook", "--metrics-port", "0", "--health-port", "0", "--policy", "kueue",
            "--ledger", f"sqlite:///{tmp_path / 'l.sqlite'}"]
    result = CliRunner().invoke(app, [*args, "--log-format", "json", "--log-level", "warning"])
    assert result.exit_code == 0, result.output
    assert seen["policy"] == "kueue"
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [(e["logger"], e["level"], e["message"]) for e in entries] == [
        ("tessera.controller", "warning", "Workload ns/job-a preempted")]  # info is below --log-level warning
    assert entries[0]["reason"] == "InClusterQueue" and entries[0]["workload"] == "job-a"

    result = CliRunner().invoke(app, args)  # defaults: text at info
    assert result.exit_code == 0, result.output
    text = result.stderr.splitlines()
    assert any(line.endswith("INFO tessera.operator: caches synced") for line in text)
    assert not any(line.startswith("{") for line in text)


@pytest.mark.parametrize(("flag", "value"), [("--log-format", "xml"), ("--log-level", "loud")])
def test_run_refuses_unknown_log_options(flag: str, value: str) -> None:
    result = CliRunner().invoke(app, ["run", "--no-webhook", flag, value])
    assert result.exit_code == 2
    assert f"{flag}: must be one of" in result.stderr
