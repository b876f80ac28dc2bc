"""Kubernetes Events on Jobs and Workloads (`kubectl describe` shows them): best effort, never blocking.

Each event is posted from a background task with bounded concurrency; a failure is logged
at debug level and forgotten (events are informational, the Workload status is the record).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

from admission.kube import EVENTS, ApiError, KubeApi

logger = logging.getLogger("tessera.events")

COMPONENT = "tessera-operator"


def event_body(obj: Mapping[str, Any], reason: str, message: str, kind: str = "Normal",
               instance: str = "", at: float | None = None) -> dict[str, Any]:
    """A core/v1 Event about `obj` (which carries apiVersion, kind and metadata)."""
    meta = obj.get("metadata") or {}
    stamp = datetime.datetime.fromtimestamp(at, datetime.timezone.utc) if at is not None else \
        datetime.datetime.now(datetime.timezone.utc)
    when = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = meta.get("namespace") or "default"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", ""),
            "kind": obj.get("kind", ""),
            "name": meta.get("name", ""),
            "namespace": namespace,
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message[:1024],
        "type": kind,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }


class EventRecorder:
    def __init__(self, api: KubeApi, instance: str = "", concurrency: int = 8) -> None:
        self.api = api
        self.instance = instance
        self._semaphore = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, obj: Mapping[str, Any] | None, reason: str, message: str, kind: str = "Normal") -> None:
        if not obj:
            return
        body = event_body(obj, reason, message, kind, self.instance)
        task = asyncio.get_running_loop().create_task(self._post(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, body: dict[str, Any]) -> None:
        async with self._semaphore:
            try:
                await self.api.create(EVENTS, body["metadata"]["namespace"], body)
            except (ApiError, OSError, asyncio.TimeoutError) as exc:
                logger.debug("event %s not posted: %s", body["reason"], exc)

    async def drain(self, timeout: float = 2.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
