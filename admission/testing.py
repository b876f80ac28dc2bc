"""A stricter kmock Kubernetes emulator for operator tests and benchmarks (needs the `test` extra).

kmock's `KubernetesEmulator` stores objects and serves list/watch/fetch/create/patch/delete
over real HTTP, but it merges patches blindly. The operator's safety rests on a few API
server behaviours, so this subclass adds them:

* every write gets a new integer ``metadata.resourceVersion``; creation also sets ``uid``,
  ``creationTimestamp`` and ``generation``;
* a merge patch carrying ``metadata.resourceVersion`` is refused with 409 Conflict when it
  differs from the stored one (optimistic concurrency, as the API server does);
* creating an object that exists is refused with 409 AlreadyExists;
* the ``status`` subresource: a patch to ``.../status`` changes only ``status``, and a patch
  to the object itself leaves ``status`` alone (as for Jobs and the CRDs with a status
  subresource).

`EmulatedCluster` runs the emulator in a thread with its own event loop, so the operator
under test owns its loop alone (kopf cancels every task it did not start when it stops).

Two workarounds for kmock 0.8: Namespaces (whose paths kmock cannot parse: it takes
`/namespaces/` for the prefix of a namespaced path) are stored and served here, with list,
watch, get, create, merge patch and delete (see `StrictEmulator.namespaces`); and kmock's
request history is kept to the requests in flight (it scans the whole history on every
request, which made long runs quadratic); `StrictEmulator.calls` records every request instead.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp.web
import attrs
import kmock
from kmock._internal import enums

if TYPE_CHECKING:  # loaded inside the helpers: importing this module does not load the operator and kopf
    from admission.operator import Operator, OperatorConfig

T = TypeVar("T")

# Every resource the operator reads or writes, with its kind, scope and verbs (for discovery).
CORE_RESOURCES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "v1/namespaces": ("Namespace", False, ("list", "watch", "get")),
    "v1/nodes": ("Node", False, ("list", "watch", "get")),
    "v1/pods": ("Pod", True, ("list", "watch", "get", "create", "patch", "delete")),
    "v1/events": ("Event", True, ("create", "patch", "list", "watch")),
    "batch/v1/jobs": ("Job", True, ("list", "watch", "get", "create", "patch", "delete")),
    "coordination.k8s.io/v1/leases": ("Lease", True, ("get", "create", "patch", "list", "watch")),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, ("list", "watch", "get")),
}
# The kinds of the integrations beyond Jobs (`admission.integrations`); `EmulatedCluster(without=...)` leaves
# some out, as a cluster without their CRDs.
INTEGRATION_RESOURCES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "jobset.x-k8s.io/v1alpha2/jobsets": ("JobSet", True, ("list", "watch", "get", "create", "patch", "delete")),
    "kubeflow.org/v1/pytorchjobs": ("PyTorchJob", True, ("list", "watch", "get", "create", "patch", "delete")),
    "apps/v1/deployments": ("Deployment", True, ("list", "watch", "get", "create", "patch", "delete")),
}
TESSERA_RESOURCES: dict[str, tuple[str, bool]] = {
    "resourceflavors": ("ResourceFlavor", False),
    "clusterqueues": ("ClusterQueue", False),
    "localqueues": ("LocalQueue", True),
    "cohorts": ("Cohort", False),
    "workloadpriorityclasses": ("WorkloadPriorityClass", False),
    "topologies": ("Topology", False),
    "workloads": ("Workload", True),
}
ALL_VERBS = ("list", "watch", "get", "create", "patch", "update", "delete")


_VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "UPDATE": "patch", "DELETE": "delete"}
NAMESPACES_PATH = "/api/v1/namespaces"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@attrs.frozen
class Call:
    """One request as the emulator saw it (who, which resource, which verb)."""

    agent: str
    group: str | None
    plural: str | None
    subresource: str | None
    verb: str


@attrs.define(kw_only=True)
class StrictEmulator(kmock.KubernetesEmulator):
    """`kmock.KubernetesEmulator` with resource versions, preconditions and a status subresource."""

    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    calls: list[Call] = attrs.field(factory=list, init=False)
    """A light record of every request (kmock's own request list is kept to the requests in flight:
    kmock scans it on every request to match reactions, which made a long run quadratic)."""
    _inflight: set[int] = attrs.field(factory=set, init=False)
    namespaces: dict[str, dict[str, Any]] = attrs.field(factory=dict, init=False)
    """Namespace objects by name, served by `_serve_namespaces` (not kmock). "default" exists from the start, and
    a namespaced object created in a namespace that does not exist creates it (a cluster where the namespaces
    were provisioned beforehand); every Namespace carries `kubernetes.io/metadata.name`, as the API server sets it.
    Deleting a Namespace leaves the objects in it alone (no namespace controller here)."""
    _namespace_log: list[tuple[int, str, dict[str, Any]]] = attrs.field(factory=list, init=False)
    """(resourceVersion, event type, object) of every Namespace change, for watches resuming from a version."""
    _namespace_changed: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)

    def declare(self, without: tuple[str, ...] = ()) -> None:
        """Declare every resource the operator uses, so discovery and kopf's scanning find them
        (except the integration resources whose plural is in `without`)."""
        integration = {k: v for k, v in INTEGRATION_RESOURCES.items() if k.rsplit("/", 1)[-1] not in without}
        for key, (kind, namespaced, verbs) in {**CORE_RESOURCES, **integration}.items():
            subresources = {"status"} if kind in ("Job", "Pod", "Node", *(v[0] for v in integration.values())) \
                else set()
            self.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=set(verbs),
                                                     subresources=subresources)
        for plural, (kind, namespaced) in TESSERA_RESOURCES.items():
            self.resources[f"tessera.dev/v1alpha1/{plural}"] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, verbs=set(ALL_VERBS), subresources={"status"})
        self.ensure_namespace("default")

    async def __call__(self, raw_request: Any) -> Any:  # type: ignore[override]
        # kmock 0.8 cannot parse /api/v1/namespaces[/name] (it takes "namespaces" for the namespace prefix of
        # a namespaced path): Namespaces are served here. Longer paths (/api/v1/namespaces/ns/pods) are kmock's.
        path = raw_request.path.rstrip("/")
        if path == NAMESPACES_PATH or (path.startswith(NAMESPACES_PATH + "/") and path.count("/") == 4):
            return await self._serve_namespaces(raw_request, path[len(NAMESPACES_PATH) + 1:] or None)
        return await super().__call__(raw_request)

    # --- Namespaces -------------------------------------------------------------------------------

    def ensure_namespace(self, name: str) -> None:
        """Create the Namespace `name` (no labels but its name's) unless it exists."""
        if name not in self.namespaces:
            self._namespace_event("ADDED", {"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": name, "uid": str(uuid.uuid4()),
                                                         "creationTimestamp": _now(),
                                                         "labels": {NAMESPACE_NAME_LABEL: name}},
                                            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})

    def _namespace_event(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store (or drop, for DELETED) a new version of a Namespace and wake the watches."""
        obj = copy.deepcopy(obj)
        name = obj["metadata"]["name"]
        rv = next(self._versions)
        obj["metadata"]["resourceVersion"] = str(rv)
        obj["metadata"].setdefault("labels", {})[NAMESPACE_NAME_LABEL] = name  # users cannot change it
        if kind == "DELETED":
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = obj
        self._namespace_log.append((rv, kind, obj))
        changed, self._namespace_changed = self._namespace_changed, asyncio.Event()
        changed.set()
        return obj

    async def _serve_namespaces(self, raw_request: Any, name: str | None) -> Any:
        body = await raw_request.read()
        method = raw_request.method
        watch = raw_request.query.get("watch") in ("true", "1")
        verb = "watch" if watch else {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch",
                                      "PUT": "update", "DELETE": "delete"}.get(method, method.lower())
        self.calls.append(Call(agent=str(raw_request.headers.get("User-Agent", "")), group="",
                               plural="namespaces", subresource=None, verb=verb))
        if method == "GET" and watch:
            return await self._watch_namespaces(raw_request, name)
        if method == "GET" and name is None:
            items = [self.namespaces[n] for n in sorted(self.namespaces)]
            latest = self._namespace_log[-1][0] if self._namespace_log else 1
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "NamespaceList",
                                              "metadata": {"resourceVersion": str(latest)}, "items": items})
        current = self.namespaces.get(name) if name else None
        if method == "POST" and name is None:
            obj = json.loads(body or b"{}")
            wanted = str((obj.get("metadata") or {}).get("name") or "")
            if not wanted:
                return _status(422, "Invalid", "metadata.name: Required value")
            if wanted in self.namespaces:
                return _status(409, "AlreadyExists", f'namespaces "{wanted}" already exists')
            meta = obj.setdefault("metadata", {})
            meta.update({"uid": str(uuid.uuid4()), "creationTimestamp": _now()})
            obj.update({"apiVersion": "v1", "kind": "Namespace", "status": {"phase": "Active"}})
            return aiohttp.web.json_response(self._namespace_event("ADDED", obj), status=201)
        if name is None or method not in ("GET", "PATCH", "DELETE"):
            return _status(405, "MethodNotAllowed", f"{method} is not supported on namespaces here")
        if current is None:
            return _status(404, "NotFound", f'namespaces "{name}" not found')
        if method == "GET":
            return aiohttp.web.json_response(current)
        if method == "DELETE":
            return aiohttp.web.json_response(self._namespace_event("DELETED", current))
        patch = json.loads(body or b"{}")
        if not isinstance(patch, dict):
            return _status(415, "UnsupportedMediaType", "only JSON merge patches are served for namespaces")
        wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted_rv is not None and str(wanted_rv) != current["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", f'Operation cannot be fulfilled on namespaces "{name}": the object has '
                                            "been modified; please apply your changes to the latest version and try again")
        merged = merge_patch(current, patch)
        merged["metadata"]["name"] = name
        return aiohttp.web.json_response(self._namespace_event("MODIFIED", merged))

    async def _watch_namespaces(self, raw_request: Any, name: str | None) -> Any:
        """A watch stream: the changes after `resourceVersion` (without one: every Namespace as ADDED), then
        each change as it happens, until the client goes or `timeoutSeconds` pass."""
        since = str(raw_request.query.get("resourceVersion") or "")
        timeout = float(raw_request.query.get("timeoutSeconds") or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout > 0 else None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw_request)
        if since.isdigit() and int(since) > 0:
            position = next((i for i, (rv, _, _) in enumerate(self._namespace_log) if rv > int(since)),
                            len(self._namespace_log))
            backlog: list[tuple[str, dict[str, Any]]] = []
        else:
            position = len(self._namespace_log)
            backlog = [("ADDED", obj) for obj in self.namespaces.values()]
        try:
            while raw_request.transport is not None and not raw_request.transport.is_closing():
                changed = self._namespace_changed  # set by any change after this point, even during the writes
                events = backlog + [(kind, obj) for _, kind, obj in self._namespace_log[position:]]
                backlog, position = [], len(self._namespace_log)
                for kind, obj in events:
                    if name is None or obj["metadata"]["name"] == name:
                        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                if deadline is not None and loop.time() >= deadline:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), timeout=0.2)  # (and look at the transport again)
                except asyncio.TimeoutError:
                    pass
        except ConnectionError:  # the client went away mid-write
            pass
        return response

    def _stored(self, request: Any) -> Any | None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key]
        return None

    async def _handle(self, request: Any) -> Any:  # type: ignore[override]
        resource = request.resource
        self.calls.append(Call(
            agent=str(request.headers.get("User-Agent", "")),
            group=None if resource is None else resource.group,
            plural=None if resource is None else resource.plural,
            subresource=request.subresource,
            verb=_VERBS.get(getattr(request.action, "name", ""), ""),
        ))
        self._inflight.add(id(request))
        self._requests[:] = [r for r in self._requests if id(r) in self._inflight]
        try:
            return await self._handle_strictly(request)
        finally:
            self._inflight.discard(id(request))

    async def _handle_strictly(self, request: Any) -> Any:
        if request.resource is None or request.action not in (enums.action.CREATE, enums.action.UPDATE):
            return await super()._handle(request)
        async with self._write_lock:
            data = request.data
            if request.action == enums.action.CREATE and isinstance(data, dict):
                if request.namespace:
                    self.ensure_namespace(request.namespace)
                meta = data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
                if request.namespace and not meta.get("namespace"):
                    meta["namespace"] = request.namespace
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta.setdefault("generation", 1)
                meta["resourceVersion"] = str(next(self._versions))
            elif request.action == enums.action.UPDATE:
                stored = self._stored(request)
                if stored is None:
                    raise kmock.KubernetesObjectNotFoundError()
                current = str(stored.get("metadata", {}).get("resourceVersion", ""))
                if isinstance(data, dict):
                    wanted = (data.get("metadata") or {}).get("resourceVersion")
                    if wanted is not None and str(wanted) != current:
                        raise kmock.KubernetesError(
                            status=409, reason="Conflict",
                            message=(f"Operation cannot be fulfilled on {request.resource.plural} "
                                     f'"{request.name}": the object has been modified; please apply your '
                                     "changes to the latest version and try again"),
                            details={"name": request.name, "kind": request.resource.plural})
                    if request.subresource == "status":
                        for key in list(data):
                            if key not in ("status", "metadata"):
                                del data[key]
                        data["metadata"] = {}
                    else:
                        data.pop("status", None)
                    data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
                elif isinstance(data, list):
                    data.append({"op": "add", "path": "/metadata/resourceVersion", "value": str(next(self._versions))})
            return await super()._handle(request)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> Any:
    """An API server's error answer (a `Status` object)."""
    return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason,
                                      "message": message, "code": code}, status=code)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of `target` (not changed) by `patch`: null removes a key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class EmulatedCluster:
    """A `StrictEmulator` served over HTTP from a background thread: `with EmulatedCluster() as cluster:`."""

    def __init__(self, without: tuple[str, ...] = ()) -> None:
        self.without = without
        """Integration resources (plurals) the emulated API server does not serve."""
        self.emulator: StrictEmulator | None = None
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready: Future[str] = Future()

    def __enter__(self) -> EmulatedCluster:
        self._thread = threading.Thread(target=self._main, name="kmock-emulator", daemon=True)
        self._thread.start()
        self.url = self._ready.result(timeout=10)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with StrictEmulator() as emulator, kmock.Server(emulator) as server:
                emulator.declare(self.without)
                self.emulator = emulator
                self._ready.set_result(str(server.url).rstrip("/"))
                await self._stop.wait()
        except BaseException as exc:  # pragma: no cover - startup failures surface in the test thread
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    # --- reading the stored objects from the test thread ---------------------------------------

    def object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (a plain dict copy), or None when absent or deleted."""
        assert self.emulator is not None
        key = (kmock.resource(resource), namespace, name)
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            return None
        return _plain(self.emulator.objects[key].raw)

    def objects(self, resource: str) -> list[dict[str, Any]]:
        assert self.emulator is not None
        wanted = kmock.resource(resource)
        out = []
        for (res, _ns, _name), obj in list(self.emulator.objects.items()):
            if res == wanted and not obj.deleted:
                out.append(_plain(obj.raw))
        return out

    def calls(self) -> list[Call]:
        """Every request served so far."""
        assert self.emulator is not None
        return list(self.emulator.calls)


def _plain(value: Any) -> Any:
    if isinstance(value, dict) or hasattr(value, "raw"):
        items = value.raw.items() if hasattr(value, "raw") and not isinstance(value, dict) else value.items()
        return {k: _plain(v) for k, v in items}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --- manifests for tests and benchmarks ----------------------------------------------------------

GV = "tessera.dev/v1alpha1"
GPU = "nvidia.com/gpu"


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A v1 Namespace with these labels (the API server adds `kubernetes.io/metadata.name`)."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}


def flavor(name: str, labels: dict[str, str] | None = None, tolerations: list[dict[str, Any]] | None = None,
           topology: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeLabels": dict(labels or {})}
    if tolerations:
        spec["tolerations"] = tolerations
    if topology:
        spec["topologyName"] = topology
    return {"apiVersion": GV, "kind": "ResourceFlavor", "metadata": {"name": name}, "spec": spec}


def cluster_queue(name: str, flavors: dict[str, int | str], resource: str = GPU, cohort: str | None = None,
                  preemption: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A ClusterQueue covering one resource with a nominal quota per flavor, open to every namespace."""
    body: dict[str, Any] = {
        "namespaceSelector": {},
        "resourceGroups": [{
            "coveredResources": [resource],
            "flavors": [{"name": f, "resources": [{"name": resource, "nominalQuota": str(q)}]} for f, q in flavors.items()],
        }],
        **spec,
    }
    if cohort:
        body["cohort"] = cohort
    if preemption:
        body["preemption"] = preemption
    return {"apiVersion": GV, "kind": "ClusterQueue", "metadata": {"name": name}, "spec": body}


def local_queue(namespace: str, name: str, cluster_queue_name: str) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "LocalQueue", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue_name}}


def priority_class(name: str, value: int) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value}


def topology(name: str, *levels: str) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "Topology", "metadata": {"name": name},
            "spec": {"levels": [{"nodeLabel": level} for level in levels]}}


def node(name: str, gpus: int = 8, labels: dict[str, str] | None = None, cpu: str = "64",
         memory: str = "512Gi") -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110", GPU: str(gpus)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "status": {"allocatable": allocatable, "capacity": dict(allocatable)}}


def job(namespace: str, name: str, queue: str | None, gpus: int = 1, parallelism: int = 1,
        priority: str | None = None, suspend: bool | None = True, node_selector: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, template_annotations: dict[str, str] | None = None,
        tolerations: list[dict[str, Any]] | None = None, cpu: str | None = None) -> dict[str, Any]:
    """A batch/v1 Job of `parallelism` pods asking `gpus` GPUs each, queued in `queue` (None: not managed)."""
    labels: dict[str, str] = {}
    if queue is not None:
        labels["tessera.dev/queue-name"] = queue
    if priority is not None:
        labels["tessera.dev/priority-class"] = priority
    requests = {GPU: str(gpus), **({"cpu": cpu} if cpu else {})}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox",
                        "resources": {"requests": requests, "limits": {GPU: str(gpus)}}}],
    }
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = list(tolerations)
    spec: dict[str, Any] = {"parallelism": parallelism, "completions": parallelism,
                            "template": {"metadata": {"annotations": dict(template_annotations or {})},
                                         "spec": pod_spec}}
    if suspend is not None:
        spec["suspend"] = suspend
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def pod(namespace: str, name: str, node_name: str | None, gpus: int = 1, job_name: str | None = None,
        phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if job_name:
        meta["labels"] = {"batch.kubernetes.io/job-name": job_name}
        meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": "x"}]
    spec: dict[str, Any] = {"containers": [{"name": "main", "resources": {"requests": {"cpu": "1", GPU: str(gpus)}}}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": phase}}


# --- the other integrations (admission.integrations) --------------------------------------------


def pod_template(gpus: int = 1, node_selector: dict[str, str] | None = None,
                 tolerations: list[dict[str, Any]] | None = None, annotations: dict[str, str] | None = None,
                 labels: dict[str, str] | None = None, restart_policy: str | None = "Never") -> dict[str, Any]:
    """A pod template of one container asking `gpus` GPUs."""
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox",
                                            "resources": {"requests": {GPU: str(gpus)}, "limits": {GPU: str(gpus)}}}]}
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = list(tolerations)
    meta: dict[str, Any] = {}
    if annotations:
        meta["annotations"] = dict(annotations)
    if labels:
        meta["labels"] = dict(labels)
    return {"metadata": meta, "spec": spec}


def _queue_labels(queue: str | None, priority: str | None, workload_type: str | None = None) -> dict[str, str]:
    labels: dict[str, str] = {}
    if queue is not None:
        labels["tessera.dev/queue-name"] = queue
    if priority is not None:
        labels["tessera.dev/priority-class"] = priority
    if workload_type is not None:
        labels["tessera.dev/workload-type"] = workload_type
    return labels


def jobset(namespace: str, name: str, queue: str | None, replicated: dict[str, tuple[int, int, int]],
           priority: str | None = None, suspend: bool | None = True,
           templates: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A JobSet; `replicated` maps each replicated Job's name to (replicas, pods per Job, GPUs per pod)."""
    rjobs = []
    for rj_name, (replicas, pods, gpus) in replicated.items():
        template = (templates or {}).get(rj_name) or pod_template(gpus)
        rjobs.append({"name": rj_name, "replicas": replicas,
                      "template": {"spec": {"parallelism": pods, "completions": pods, "template": template}}})
    spec: dict[str, Any] = {"replicatedJobs": rjobs}
    if suspend is not None:
        spec["suspend"] = suspend
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": name, "namespace": namespace, "labels": _queue_labels(queue, priority)},
            "spec": spec}


def pytorchjob(namespace: str, name: str, queue: str | None, replicas: dict[str, tuple[int, int]],
               priority: str | None = None, suspend: bool | None = True,
               run_policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Kubeflow PyTorchJob; `replicas` maps a replica type (Master, Worker) to (replicas, GPUs per pod)."""
    specs = {kind: {"replicas": count, "restartPolicy": "OnFailure",
                    "template": pod_template(gpus, restart_policy=None)}
             for kind, (count, gpus) in replicas.items()}
    policy: dict[str, Any] = dict(run_policy or {})
    if suspend is not None:
        policy["suspend"] = suspend
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": namespace, "labels": _queue_labels(queue, priority)},
            "spec": {"runPolicy": policy, "pytorchReplicaSpecs": specs}}


def deployment(namespace: str, name: str, queue: str | None, replicas: int = 1, gpus: int = 1,
               priority: str | None = None, workload_type: str | None = "inference") -> dict[str, Any]:
    """An inference Deployment of `replicas` pods asking `gpus` GPUs each."""
    template = pod_template(gpus, labels={"app": name}, restart_policy="Always")
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": _queue_labels(queue, priority, workload_type if queue else None)},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": template}}


def replica_pod(deployment_obj: dict[str, Any], index: int, template_hash: str = "5d8f7c9b4") -> dict[str, Any]:
    """A pod as the Deployment's ReplicaSet `<name>-<hash>` creates it from the pod template (no node yet)."""
    meta = deployment_obj["metadata"]
    template = deployment_obj["spec"]["template"]
    labels = {**(template.get("metadata") or {}).get("labels", {}), "pod-template-hash": template_hash}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{meta['name']}-{template_hash}-{index}", "namespace": meta["namespace"],
                         "labels": labels,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": True,
                                              "name": f"{meta['name']}-{template_hash}", "uid": "rs-uid"}]},
            "spec": dict(template["spec"]), "status": {"phase": "Pending"}}


# --- waiting in tests ----------------------------------------------------------------------------


async def until(probe: Callable[[], Awaitable[T]], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


# --- an operator under test ----------------------------------------------------------------------


def operator_config(cluster: EmulatedCluster, **overrides: Any) -> OperatorConfig:
    """An `admission.operator.OperatorConfig` against ``cluster``: no metrics, health or webhook port,
    no leader election, the kueue policy, a cycle every half second (each can be overridden)."""
    import kopf

    from admission.operator import OperatorConfig

    values: dict[str, Any] = dict(metrics_port=0, health_port=0, webhook_port=0, leader_election=False,
                                  policy="kueue", period=0.5, bind_address="127.0.0.1",
                                  login=lambda: kopf.ConnectionInfo(server=cluster.url))
    values.update(overrides)
    return OperatorConfig(**values)


@asynccontextmanager
async def running_operator(cluster: EmulatedCluster, **overrides: Any) -> AsyncIterator[Operator]:
    """The operator of `operator_config` running for the block, once ready (what stops it early is raised)."""
    from admission.operator import Operator

    operator = Operator(operator_config(cluster, **overrides))
    task = asyncio.create_task(operator.run())

    async def ready() -> bool:
        if task.done():
            task.result()
        return bool(operator.ready()[0])

    try:
        await until(ready, what="operator ready")
        yield operator
    finally:
        operator.stop.set()
        await asyncio.wait_for(task, timeout=20)


def condition(workload: Mapping[str, Any] | None, kind: str) -> dict[str, Any]:
    """The condition of type ``kind`` of an object, {} when it has none."""
    for cond in ((workload or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}
