"""The operator's log output: plain text lines or one JSON object per line (`tessera run --log-format`).

`configure_logging(format, level)` installs one handler on the root logger, so the operator's
loggers (`tessera.*`) and kopf's (`kopf.*`, which `kopf.operator()` leaves to the application:
only kopf's own CLI calls `kopf.configure`) all go through the same formatter.

JSON lines carry `time` (RFC 3339, UTC, milliseconds), `level` (`debug`, `info`, `warning`,
`error`, `critical`), `logger`, `message`, then the structured fields a call passes with
`extra=` (`workload`, `namespace`, `job`, `cluster_queue`, `flavor`, `reason`, ...: whatever
is not a standard `LogRecord` attribute), kopf's object reference as `object` (`kind`,
`namespace`, `name`, `uid`), and `exception` with the traceback when there is one. Text
lines stay `time level logger: message`, with kopf's `[namespace/name]` prefix for per-object
lines.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has (and `message`/`asctime`, which formatting adds): not structured fields.
_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))) | {"message", "asctime"}
# kopf's per-object loggers attach these: `k8s_ref` becomes `object`, the others are internal.
_KOPF_INTERNAL = frozenset({"settings", "k8s_skip", "k8s_ref"})


def rfc3339(created: float) -> str:
    """`2025-01-02T03:04:05.678Z`: the record's time in UTC with milliseconds."""
    stamp = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def structured_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields passed with `extra=` (every attribute that is not a standard LogRecord one)."""
    return {key: value for key, value in vars(record).items()
            if key not in _STANDARD and key not in _KOPF_INTERNAL and not key.startswith("_")}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in structured_fields(record).items():
            if key not in entry:
                entry[key] = _jsonable(value)
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, Mapping):
            entry.setdefault("object", {k: v for k, v in ref.items() if v is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`time level logger: message`, with kopf's `[namespace/name]` prefix on per-object lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, Mapping) and ref.get("name"):
            prefix = f"[{ref['namespace']}/{ref['name']}]" if ref.get("namespace") else f"[{ref['name']}]"
            record = logging.makeLogRecord({**vars(record), "msg": f"{prefix} {record.msg}"})
        return super().format(record)


class _TesseraHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `configure_logging` installed, so that calling it again replaces it."""


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")


def configure_logging(log_format: str = "text", level: str | int = "info", stream: TextIO | None = None) -> logging.Handler:
    """Route every log record (Tessera's and kopf's) through one handler with the chosen format and level."""
    formatter = make_formatter(log_format)
    numeric = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    handler = _TesseraHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    # Replace an earlier handler of ours, or kopf's own (kopf.configure), rather than printing twice.
    root.handlers[:] = [h for h in root.handlers
                        if not isinstance(h, _TesseraHandler) and type(h).__name__ != "_KopfStreamHandler"]
    root.addHandler(handler)
    root.setLevel(numeric)
    if numeric > logging.DEBUG:  # asyncio's debug chatter only when asked for (as kopf.configure does)
        logging.getLogger("asyncio").setLevel(logging.WARNING)
    return handler
