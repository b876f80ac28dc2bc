"""`tessera run`: kopf watches and webhooks, the controller loop, leader election, metrics and health.

`Operator.run()` starts, in one event loop:

* kopf (`kopf.operator`, standalone: kopf's own peering is off) with one event handler per
  watched resource feeding `ClusterState`, a login handler sharing the operator's
  credentials, and, unless disabled, the admission webhooks (`admission.webhooks`);
* an initial LIST of every watched resource, after which the caches count as synced (the
  controller never decides on a partial view: a restarted operator must see every admitted
  Workload before it admits anything);
* the leader elector (`admission.leader`, a coordination.k8s.io Lease); only the leader
  runs controller passes, every replica serves webhooks;
* the controller loop (`admission.scheduling.Controller`);
* the metrics and health endpoints (`admission.endpoints`).

If any of them fails, the others are stopped and the error is raised (the pod restarts).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf

from admission import integrations as ig
from admission import webhooks
from admission.endpoints import Endpoints
from admission.events import EventRecorder
from admission.kube import JOBS, TESSERA_RESOURCES, WATCHED, KubeApi, LoginFn, NotFound, Resource, default_login
from admission.leader import DEFAULT_LEASE_NAME, LeaderElector, default_identity
from admission.metrics import Metrics
from admission.scheduling import Controller, ControllerOptions
from admission.snapshot import objects_of
from admission.state import ClusterState
from quotas.api import Configuration
from quotas.problems import ManifestError, Problem
from scheduler.decisions import Policy, make_policy

logger = logging.getLogger("tessera.operator")

DEFAULT_WEBHOOK_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"


@dataclass
class OperatorConfig:
    """Everything `tessera run` takes; the defaults are a production deployment's."""

    namespaces: list[str] = field(default_factory=list)
    """Namespaces to watch for Jobs (and the other queued kinds), Pods, LocalQueues and Workloads; empty: all."""
    configuration: Configuration = field(default_factory=Configuration)
    metrics_port: int = 8080
    health_port: int = 8081
    webhook_port: int = 9443
    """0: no webhook server (Jobs are still held, by suspending them after creation)."""
    webhook_cert_dir: str = DEFAULT_WEBHOOK_CERT_DIR
    webhook_insecure: bool = False
    """Serve webhooks over plain HTTP (local runs and tests: Kubernetes requires HTTPS)."""
    bind_address: str = "0.0.0.0"
    ledger_url: str | None = None
    policy: str = "tessera"
    leader_election: bool = True
    lease_name: str = DEFAULT_LEASE_NAME
    lease_namespace: str | None = None
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    period: float = 10.0
    absent_retry: float = 30.0
    """How often to list again an enabled integration's resource that the API server does not serve yet
    (its CRD is not installed): once it is served, the integration starts without a restart."""
    login: LoginFn | None = None


class ConfigError(ValueError):
    """Bad `tessera run` input (exit status 2)."""


def load_configuration(path: str | Path | None) -> Configuration:
    """The Configuration document in `path` (a file with just it, or with other objects); defaults without a path."""
    if path is None:
        return Configuration()
    from quotas.bundle import load_bundle

    bundle, problems = load_bundle([path])
    errors = [p for p in problems if p.is_error]
    if errors:
        raise ManifestError(errors)
    if bundle.configuration is None:
        raise ManifestError([Problem(str(path), "", "", "no tessera.dev/v1alpha1 Configuration document found")])
    return bundle.configuration


def make_policy_factory(name: str) -> Callable[[], Policy]:
    """A factory of the named policy; `tessera` falls back to `kueue` when the solver cannot load."""
    def factory() -> Policy:
        chosen = name
        if chosen == "tessera":
            try:
                return make_policy("tessera")
            except (ImportError, KeyError) as exc:
                logger.warning("policy tessera unavailable (%s); using kueue", exc)
                chosen = "kueue"
        if chosen == "kueue":
            from scheduler.kueue import KueuePolicy

            return KueuePolicy(drain=True)  # back-to-back cycles in one call: one pass admits all that fits
        return make_policy(chosen)
    factory()  # fail fast on an unknown name
    return factory


class EventOnlyDiffBase(kopf.DiffBaseStorage):
    """kopf's diff-base storage for an operator with only `on.event` handlers (and webhooks): no diff base.

    kopf builds an object's "essence" (a deep copy of its spec, labels and annotations) and reads its stored
    one (a JSON annotation) for every watch event, then strips its progress records from both: about half of
    kopf's own handling of an event (2-2.7 ms of 4-6 ms, profiled), spent on a diff that only
    `on.create/update/delete/resume` handlers and daemons read. With none of those registered, nothing reads it, and nothing is ever stored
    (event handlers never patch the object): `build` gives an empty essence, `fetch` none. `Operator` uses it
    (with `EventOnlyProgress`) only while its registry holds no such handler (`only_event_handlers`)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: Any) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


class EventOnlyProgress(kopf.ProgressStorage):
    """kopf's progress storage for an operator with only `on.event` handlers: nothing to record or read.

    Progress records (retries, started and finished times) are kept for change handlers and daemons only;
    with none, kopf still deep-copies and cleans the (empty) diff-base essence through the storage on every
    watch event. This one returns it as is and never writes to an object."""

    def fetch(self, *, key: Any, body: Any) -> None:
        return None

    def store(self, *, key: Any, record: Any, body: Any, patch: Any) -> None:
        return None

    def purge(self, *, key: Any, body: Any, patch: Any) -> None:
        return None

    def touch(self, *, body: Any, patch: Any, value: str | None) -> None:
        return None

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return essence


def only_event_handlers(registry: kopf.OperatorRegistry) -> bool:
    """Whether no handler of `registry` reads kopf's diff base or progress records: no change handlers
    (`on.create`, `on.update`, `on.delete`, `on.resume`, `on.field`) and no daemons or timers. Unknown
    (a kopf whose registry is laid out otherwise): False."""
    try:
        stateful = (registry._changing, registry._spawning)  # noqa: SLF001 - kopf keeps no public view of these
        return not any(list(handlers.get_all_handlers()) for handlers in stateful)
    except AttributeError:
        return False


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without managedFields (large and never read)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


class Operator:
    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.api = KubeApi(config.login or default_login)
        try:
            self.integrations = ig.enabled(config.configuration.integrations.frameworks)
        except ValueError as exc:
            raise ConfigError(f"--config: integrations.frameworks: {exc}") from None
        self.watched: tuple[Resource, ...] = (*(r for r in WATCHED if r != JOBS),
                                              *(i.resource for i in self.integrations))
        """Every resource listed and watched: the base kinds, then each enabled integration's kind."""
        self.state = ClusterState((r.plural for r in self.watched),
                                  managed={i.plural: i.is_managed for i in self.integrations})
        self.metrics = Metrics()
        self.stop = asyncio.Event()
        self.kopf_ready = asyncio.Event()
        self.kopf_stop = asyncio.Event()
        self.elector: LeaderElector | None = None
        self.ledger: Any = None
        self.events = EventRecorder(self.api, config.identity)
        self.policy_factory = make_policy_factory(config.policy)
        self.controller = Controller(
            self.api, self.state, self.policy_factory, config=config.configuration, metrics=self.metrics,
            events=self.events, is_leader=self.is_leader, options=ControllerOptions(period=config.period),
            integrations=self.integrations,
        )
        self.registry = self.build_registry()
        self._kopf_task: asyncio.Task[None] | None = None

    # --- state ----------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    def live(self) -> tuple[bool, dict[str, Any]]:
        age = time.time() - self.controller.heartbeat if self.controller.heartbeat else 0.0
        kopf_alive = self._kopf_task is not None and not self._kopf_task.done()
        ok = kopf_alive and age < max(3 * self.config.period, 60.0)
        return ok, {"kopf": kopf_alive, "loopAge": round(age, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        absent = self.controller.absent
        missing = sorted(r.plural for r in self.watched if r.plural not in self.state.synced and r.plural not in absent)
        ok = not missing and self.kopf_ready.is_set()
        return ok, {"unsynced": missing, "absent": sorted(absent), "kopf": self.kopf_ready.is_set(),
                    "leader": self.is_leader()}

    # --- kopf -----------------------------------------------------------------------------------

    def build_registry(self) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        state = self.state

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return self.api.connection

        def watch(resource: Resource) -> None:
            # async: kopf runs sync handlers in a thread pool, which would mutate the caches (and set their
            # asyncio Event) from another thread while the controller reads them, and cost a thread hop per event.
            async def on_event(event: dict[str, Any], **_: Any) -> None:
                obj = event.get("object")
                if isinstance(obj, dict):
                    state.apply(resource.plural, event.get("type"), _slim(obj))

            kopf.on.event(resource.group, resource.version, resource.plural, id=f"watch-{resource.plural}",
                          registry=registry)(on_event)

        for resource in self.watched:  # kopf waits (with a warning) for the kinds whose CRD is not installed
            watch(resource)

        if self.config.webhook_port:
            webhooks.register(registry, lambda: [m for r in TESSERA_RESOURCES if r.plural != "workloads"
                                                 for m in objects_of(self.state, r.plural)], self.integrations)
        return registry

    def kopf_settings(self) -> kopf.OperatorSettings:
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False  # Events are ours (admission.events), not per-handler noise
        if only_event_handlers(self.registry):  # no diff base nor progress: nothing would read them
            settings.persistence.diffbase_storage = EventOnlyDiffBase()
            settings.persistence.progress_storage = EventOnlyProgress()
        settings.watching.server_timeout = 300
        if self.config.webhook_port:
            certfile = os.path.join(self.config.webhook_cert_dir, "tls.crt")
            keyfile = os.path.join(self.config.webhook_cert_dir, "tls.key")
            if not self.config.webhook_insecure and not (os.path.exists(certfile) and os.path.exists(keyfile)):
                raise ConfigError(f"--webhook-port: no certificate at {certfile} and {keyfile} "
                                  "(mount the webhook's TLS Secret there, or pass --no-webhook)")
            settings.admission.server = webhooks.make_server(
                self.config.webhook_port, addr=self.config.bind_address, certfile=certfile, pkeyfile=keyfile,
                insecure=self.config.webhook_insecure)
            settings.admission.managed = None  # the WebhookConfigurations are deployed with the operator
        return settings

    async def _run_kopf(self, settings: kopf.OperatorSettings) -> None:
        kwargs: dict[str, Any] = {"clusterwide": True} if not self.config.namespaces else \
            {"namespaces": list(self.config.namespaces)}
        await kopf.operator(registry=self.registry, settings=settings, standalone=True, stop_flag=self.kopf_stop,
                            ready_flag=self.kopf_ready, **kwargs)

    # --- initial listing --------------------------------------------------------------------------

    async def initial_sync(self) -> None:
        """List every watched resource once; until then the controller does not act.

        An enabled integration whose resource the API server does not serve (404: its CRD is not
        installed) is marked absent, so that nothing waits for it, and listed again every
        `absent_retry` seconds: once its CRD is installed, it is listed and starts (kopf, which
        watches CRDs, starts its watch by itself).
        """
        delay = 0.5
        pending = list(self.watched)
        optional = {i.plural: i for i in self.integrations}
        reported = False
        while pending and not self.stop.is_set():
            failed, absent = [], []
            for resource in pending:
                try:
                    items: list[dict[str, Any]] = []
                    integration = optional.get(resource.plural)
                    selector = integration.list_selector if integration is not None else None
                    if resource.namespaced and self.config.namespaces:
                        for namespace in self.config.namespaces:
                            items += await self.api.list(resource, namespace, label_selector=selector)
                    else:
                        items = await self.api.list(resource, label_selector=selector)
                    self.state.replace_all(resource.plural, (_slim(item) for item in items))
                    if resource.plural in self.controller.absent:
                        self.controller.absent.discard(resource.plural)
                        logger.info("%s is served now: integration %s started", resource.plural,
                                    optional[resource.plural].framework)
                except NotFound as exc:
                    if resource.plural not in optional:
                        logger.warning("listing %s failed: %s", resource.plural, exc)
                        failed.append(resource)
                        continue
                    if resource.plural not in self.controller.absent:
                        logger.warning("%s (%s) is not served by the API server (is its CRD installed?): integration "
                                       "%s waits for it", resource.plural, resource.api_version,
                                       optional[resource.plural].framework)
                        self.controller.absent.add(resource.plural)
                        self.state.changed.set()
                    absent.append(resource)
                except Exception as exc:  # retried: the API server may not be reachable yet
                    logger.warning("listing %s failed: %s", resource.plural, exc)
                    failed.append(resource)
            if not failed and not reported:
                reported = True
                logger.info("caches synced: %s", ", ".join(sorted(self.state.synced)))
            pending = failed + absent
            if failed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            elif absent:
                try:
                    await asyncio.wait_for(self.stop.wait(), timeout=self.config.absent_retry)
                except asyncio.TimeoutError:
                    pass

    # --- running ----------------------------------------------------------------------------------

    def lease_namespace(self) -> str:
        if self.config.lease_namespace:
            return self.config.lease_namespace
        env = os.environ.get("POD_NAMESPACE")
        if env:
            return env
        return self.api.connection.default_namespace or "default"

    async def run(self) -> None:
        """Run until `self.stop` is set or a component fails (then raise its error)."""
        settings = self.kopf_settings()
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # one line per watch event otherwise
        if self.config.ledger_url is not None:
            from quotas.ledger import Ledger

            self.ledger = await asyncio.to_thread(Ledger, self.config.ledger_url)
            self.controller.ledger = self.ledger
        if self.config.leader_election:
            self.elector = LeaderElector(
                self.api, self.lease_namespace(), self.config.lease_name, identity=self.config.identity,
                lease_duration=self.config.lease_duration, renew_deadline=self.config.renew_deadline,
                retry_period=self.config.retry_period,
                on_change=lambda leading: (self.metrics.leader.set(1 if leading else 0), self.state.changed.set()),
            )
        endpoints = Endpoints(metrics_port=self.config.metrics_port, health_port=self.config.health_port,
                              render_metrics=self.metrics.render, metrics_content_type=self.metrics.content_type,
                              live=self.live, ready=self.ready, addr=self.config.bind_address)
        await endpoints.start()
        tasks: dict[str, asyncio.Task[Any]] = {}
        try:
            tasks["sync"] = asyncio.create_task(self.initial_sync(), name="tessera-sync")
            tasks["controller"] = asyncio.create_task(self.controller.run(self.stop), name="tessera-controller")
            if self.elector is not None:
                tasks["leader"] = asyncio.create_task(self.elector.run(self.stop), name="tessera-leader")
            stopper = asyncio.create_task(self.stop.wait(), name="tessera-stop")
            tasks["stop"] = stopper
            # kopf cancels every task created after it starts when it stops: start it last.
            self._kopf_task = tasks["kopf"] = asyncio.create_task(self._run_kopf(settings), name="tessera-kopf")
            watched = set(tasks.values())
            while True:
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                sync = tasks["sync"]
                if done == {sync} and not sync.cancelled() and sync.exception() is None:
                    watched.discard(sync)  # listing finished: keep running
                    continue
                break
            for task in done:
                if task is stopper or (self.stop.is_set() and not task.cancelled() and task.exception() is None):
                    continue  # stopping: components end as they notice
                if task.cancelled():
                    raise RuntimeError(f"operator component {task.get_name()} was cancelled")
                error = task.exception()
                if error is not None:
                    raise error
                if task is not self._kopf_task:  # kopf ends by itself on SIGTERM/SIGINT: a graceful stop
                    raise RuntimeError(f"operator component {task.get_name()} stopped unexpectedly")
                logger.info("kopf stopped (signal): stopping the operator")
        finally:
            self.stop.set()
            self.kopf_stop.set()
            await self._shutdown(tasks)
            await endpoints.stop()

    async def _shutdown(self, tasks: dict[str, asyncio.Task[Any]]) -> None:
        others = [t for name, t in tasks.items() if name != "kopf"]
        if others:
            await asyncio.wait(others, timeout=5)
        kopf_task = tasks.get("kopf")
        if kopf_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(kopf_task), timeout=10)
            except (asyncio.TimeoutError, Exception):
                kopf_task.cancel()
        for task in tasks.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await self.events.drain()
        await self.api.close()
        await self.controller.flush_ledger()  # the writes queued by the last passes, before the ledger closes
        if self.ledger is not None:
            self.ledger.close()
