"""The operator's plain HTTP endpoints: Prometheus metrics, liveness and readiness (aiohttp).

* `GET /metrics` on `--metrics-port`: the text exposition of `admission.metrics.Metrics`.
* `GET /healthz` on `--health-port`: 200 while the controller loop is alive (its heartbeat is
  recent) and kopf is running; 500 otherwise (the kubelet restarts the pod).
* `GET /readyz` on `--health-port`: 200 once every watched resource has been listed into the
  caches (the webhooks and the controller can trust what they see); 503 before.

Port 0 disables an endpoint (DESIGN.md); both may share one port.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp.web

Check = Callable[[], tuple[bool, dict[str, Any]]]


def _json(ok: bool, detail: dict[str, Any], failing: int) -> aiohttp.web.Response:
    return aiohttp.web.Response(status=200 if ok else failing, text=json.dumps({"ok": ok, **detail}),
                                content_type="application/json")


class Endpoints:
    """One aiohttp server per distinct port; `start()` then `stop()`."""

    def __init__(self, *, metrics_port: int, health_port: int, render_metrics: Callable[[], bytes],
                 metrics_content_type: str, live: Check, ready: Check, addr: str = "0.0.0.0") -> None:
        self.addr = addr
        self.routes: dict[int, list[aiohttp.web.RouteDef]] = {}
        if metrics_port:
            async def metrics(_: aiohttp.web.Request) -> aiohttp.web.Response:
                response = aiohttp.web.Response(body=render_metrics())
                response.headers["Content-Type"] = metrics_content_type
                return response
            self.routes.setdefault(metrics_port, []).append(aiohttp.web.get("/metrics", metrics))
        if health_port:
            async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
                ok, detail = live()
                return _json(ok, detail, 500)

            async def readyz(_: aiohttp.web.Request) -> aiohttp.web.Response:
                ok, detail = ready()
                return _json(ok, detail, 503)
            self.routes.setdefault(health_port, []).extend([aiohttp.web.get("/healthz", healthz),
                                                            aiohttp.web.get("/readyz", readyz)])
        self._runners: list[aiohttp.web.AppRunner] = []

    async def start(self) -> None:
        for port, routes in self.routes.items():
            app = aiohttp.web.Application()
            app.add_routes(routes)
            runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
            await runner.setup()
            await aiohttp.web.TCPSite(runner, self.addr, port, reuse_address=True).start()
            self._runners.append(runner)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
