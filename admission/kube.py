"""A small async Kubernetes API client: the only place the operator's own writes go through.

kopf watches and serves webhooks; every read-modify-write the operator decides on (Workload
creation and status, Job patches, Lease renewals, Events) goes through `KubeApi`, so there
is one place that knows the URL layout, the patch content types and the error mapping.
Credentials come from kopf's `ConnectionInfo` (service account in a pod, else KUBECONFIG),
the same kopf itself logs in with; on 401 they are fetched again once (rotated tokens).

Every call is listed in `API_CALLS` (docs/operator.md and the ClusterRole derive from it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kopf

logger = logging.getLogger("tessera.kube")

USER_AGENT = "tessera-operator"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class Resource:
    """One API resource: group ("" for core), version, plural, and whether it is namespaced."""

    group: str
    version: str
    plural: str
    namespaced: bool
    kind: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base


JOBS = Resource("batch", "v1", "jobs", True, "Job")
PODS = Resource("", "v1", "pods", True, "Pod")
NODES = Resource("", "v1", "nodes", False, "Node")
NAMESPACES = Resource("", "v1", "namespaces", False, "Namespace")
EVENTS = Resource("", "v1", "events", True, "Event")
LEASES = Resource("coordination.k8s.io", "v1", "leases", True, "Lease")
RESOURCE_FLAVORS = Resource("tessera.dev", "v1alpha1", "resourceflavors", False, "ResourceFlavor")
CLUSTER_QUEUES = Resource("tessera.dev", "v1alpha1", "clusterqueues", False, "ClusterQueue")
LOCAL_QUEUES = Resource("tessera.dev", "v1alpha1", "localqueues", True, "LocalQueue")
COHORTS = Resource("tessera.dev", "v1alpha1", "cohorts", False, "Cohort")
PRIORITY_CLASSES = Resource("tessera.dev", "v1alpha1", "workloadpriorityclasses", False, "WorkloadPriorityClass")
TOPOLOGIES = Resource("tessera.dev", "v1alpha1", "topologies", False, "Topology")
WORKLOADS = Resource("tessera.dev", "v1alpha1", "workloads", True, "Workload")
# Integrations beyond batch/v1 Jobs (admission.integrations); the CRDs may be absent from a cluster.
JOBSETS = Resource("jobset.x-k8s.io", "v1alpha2", "jobsets", True, "JobSet")
PYTORCHJOBS = Resource("kubeflow.org", "v1", "pytorchjobs", True, "PyTorchJob")
DEPLOYMENTS = Resource("apps", "v1", "deployments", True, "Deployment")

TESSERA_RESOURCES = (RESOURCE_FLAVORS, CLUSTER_QUEUES, LOCAL_QUEUES, COHORTS, PRIORITY_CLASSES, TOPOLOGIES, WORKLOADS)
# Namespaces: their labels, for the ClusterQueues' namespaceSelector (the snapshot's `namespace_labels`).
WATCHED = (JOBS, PODS, NODES, NAMESPACES, *TESSERA_RESOURCES)

# Every API call the operator and kopf make: (group, resource, verbs). The end-to-end tests check that
# every request they see is listed here; docs/operator.md and the ClusterRole derive from it.
API_CALLS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("batch", "jobs", ("get", "list", "watch", "patch")),
    ("", "pods", ("list", "watch", "patch", "delete")),
    ("", "nodes", ("list", "watch")),
    ("jobset.x-k8s.io", "jobsets", ("get", "list", "watch", "patch")),
    ("kubeflow.org", "pytorchjobs", ("get", "list", "watch", "patch")),
    ("apps", "deployments", ("list", "watch")),
    ("", "events", ("create",)),
    ("coordination.k8s.io", "leases", ("get", "create", "patch")),
    ("tessera.dev", "resourceflavors", ("list", "watch")),
    ("tessera.dev", "clusterqueues", ("list", "watch")),
    ("tessera.dev", "clusterqueues/status", ("patch",)),
    ("tessera.dev", "localqueues", ("list", "watch")),
    ("tessera.dev", "localqueues/status", ("patch",)),
    ("tessera.dev", "cohorts", ("list", "watch")),
    ("tessera.dev", "workloadpriorityclasses", ("list", "watch")),
    ("tessera.dev", "topologies", ("list", "watch")),
    ("tessera.dev", "workloads", ("get", "list", "watch", "create", "patch", "delete")),
    ("tessera.dev", "workloads/status", ("patch",)),
    ("", "namespaces", ("list", "watch")),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
)


class ApiError(Exception):
    """A non-2xx answer: `status` (HTTP), `reason` and `message` from the API server's Status."""

    def __init__(self, status: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: a resourceVersion precondition failed, or the object already exists."""


LoginFn = Callable[[], "kopf.ConnectionInfo"]


def default_login() -> kopf.ConnectionInfo:
    """In a pod: the service account; elsewhere: KUBECONFIG (or ~/.kube/config), as kopf logs in."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError("no service account and no kubeconfig found: set KUBECONFIG")
    return info


class KubeApi:
    """Async JSON client over aiohttp; `get` returns None on 404, writes raise `Conflict` on 409."""

    def __init__(self, login: LoginFn, *, timeout: float = 30.0) -> None:
        self._login = login
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._lock = asyncio.Lock()

    @property
    def connection(self) -> kopf.ConnectionInfo:
        if self._info is None:
            self._info = self._login()
        return self._info

    async def _ensure(self) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is None or self._session.closed:
                info = self.connection
                context: ssl.SSLContext | bool | None = None
                if info.server.startswith("https"):
                    context = info.as_ssl_context()
                    if info.insecure:
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
                connector = aiohttp.TCPConnector(ssl=context if context is not None else False, limit=64)
                headers = {"User-Agent": USER_AGENT, **info.as_http_headers()}
                self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, headers=headers)
            return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _relogin(self) -> None:
        async with self._lock:
            self._info = None
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def request(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        for attempt in (1, 2):
            session = await self._ensure()
            url = self.connection.server.rstrip("/") + path
            if params:
                url += "?" + urlencode(params)
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type} if body is not None else {}
            async with session.request(method, url, data=data, headers=headers) as response:
                text = await response.text()
                if response.status == 401 and attempt == 1:
                    await self._relogin()
                    continue
                if response.status >= 400:
                    raise _error(response.status, text)
                return json.loads(text) if text else None
        raise AssertionError("unreachable")  # pragma: no cover

    # --- verbs ---------------------------------------------------------------------------------

    async def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", resource.path(namespace, name))
        except NotFound:
            return None

    async def list(self, resource: Resource, namespace: str | None = None,
                   label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        answer = await self.request("GET", resource.path(namespace), params=params)
        items = list((answer or {}).get("items") or [])
        for item in items:  # list items carry no apiVersion/kind
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
        return items

    async def create(self, resource: Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", resource.path(namespace), body=body)

    async def patch(self, resource: Resource, namespace: str | None, name: str, body: Any, *,
                    subresource: str | None = None, content_type: str = MERGE_PATCH) -> dict[str, Any]:
        return await self.request("PATCH", resource.path(namespace, name, subresource), body=body,
                                  content_type=content_type)

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        try:
            await self.request("DELETE", resource.path(namespace, name))
        except NotFound:
            return False
        return True


def _error(status: int, text: str) -> ApiError:
    reason, message = "", text[:500]
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        reason = str(payload.get("reason") or "")
        message = str(payload.get("message") or message)
    cls = NotFound if status == 404 else Conflict if status == 409 else ApiError
    return cls(status, reason, message)
