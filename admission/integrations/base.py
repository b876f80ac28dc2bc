"""The adapter interface every integration implements, and the pod-template helpers they share.

An `Integration` answers, for one kind of object (a batch/v1 Job, a JobSet, ...), the few
questions the controller asks (see `admission/integrations/__init__.py` for the list). It is
pure: it reads plain dicts (the object as the API server returns it, and the live pods the
controller attributes to it) and returns what to write as a `Change`; the controller does the
writing. So every adapter is tested without a server.

Admission injects, per podset, the admitted flavors' `nodeLabels` and the topology domain's
labels as `nodeSelector` and the flavors' `tolerations` into the podset's pod template, after
saving the template's original `nodeSelector` and `tolerations` in the object's
`tessera.dev/original-pod-template` annotation (JSON, keyed by podset name for the kinds with
several podsets); holding the object again restores them from there. A podset admitted with a
per-pod plan (`admission.placement`) also gets the scheduling gate `tessera.dev/placement` in
its template, taken off again when the object is held; `Integration.placement_change` ungates
its pods onto the planned nodes.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import ValidationError

from admission import jobs as jb
from admission import placement as pl
from admission import workloads as wl
from admission.kube import Resource
from quotas.api import MAX_PODSETS, PodSet, ResourceFlavor, Topology
from quotas.base import QUEUE_NAME_LABEL
from quotas.bundle import without_nulls
from quotas.jobs import JobConversionError, build_workload, topology_request
from quotas.kube import ObjectMeta, PodTemplateSpec
from scheduler.snapshot import PodSetPlacement

Obj = Mapping[str, Any]
Pods = Sequence[Mapping[str, Any]]
"""The pods (not Succeeded or Failed) the controller attributes to one object (`Integration.pod_owner`);
empty for an integration that does not read pods (`Integration.uses_pods`)."""

ORIGINAL_TEMPLATE_ANNOTATION = jb.ORIGINAL_TEMPLATE_ANNOTATION
TERMINAL_POD_PHASES = ("Succeeded", "Failed")


@dataclass
class Change:
    """What the controller writes for one step: a merge patch of the object, pod patches, pod deletions."""

    patch: dict[str, Any] | None = None
    """JSON merge patch of the object itself (None: the object is not written)."""
    pod_patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(pod name, JSON merge patch) for pods of the object, in its namespace."""
    pod_deletions: list[str] = field(default_factory=list)
    """Names of pods of the object to delete (graceful deletion; their controller replaces them)."""
    starts: bool = False
    """This change lets the object's pods run under an admission (the `Started` event)."""
    unplaced: list[str] = field(default_factory=list)
    """Pods among `pod_patches` ungated without a planned node (no planned node could take them):
    the controller posts a `PlacementFallback` Warning Event."""

    def __bool__(self) -> bool:
        return self.patch is not None or bool(self.pod_patches) or bool(self.pod_deletions)


class Integration(ABC):
    """One kind of queued object; see the package docstring for the contract."""

    framework: ClassVar[str]
    """The name in `Configuration.integrations.frameworks` (Kueue's names)."""
    resource: ClassVar[Resource]
    """The watched resource (its plural keys the operator's cache)."""
    prefix: ClassVar[str]
    """Workload names are `<prefix>-<object name>`."""
    webhook_id: ClassVar[str]
    """The mutating webhook's kopf handler id, hence its path `/<id>`."""
    webhook_operations: ClassVar[tuple[str, ...]] = ("CREATE",)
    hold_event: ClassVar[str] = "Suspended"
    """The Event reason posted on the object when Tessera holds it again (eviction)."""
    uses_pods: ClassVar[bool] = False
    """Whether it reads the object's pods; the others get no pods (their controller's status tells enough)."""
    honours_plans: ClassVar[bool] = True
    """Whether its pods follow a policy's per-pod plan (template gate, `placement_change`); if not, no plan
    is recorded for its Workloads and kube-scheduler places the pods within the admitted flavor."""

    @property
    def plural(self) -> str:
        return self.resource.plural

    @property
    def list_selector(self) -> str:
        """The label selector of the operator's initial LIST (the cache keeps only `is_managed` objects)."""
        return QUEUE_NAME_LABEL

    def __repr__(self) -> str:
        return f"<integration {self.framework}>"

    # --- which objects, and their Workload ------------------------------------------------------

    def is_managed(self, obj: Obj) -> bool:
        """Whether Tessera queues this object: it carries `tessera.dev/queue-name`."""
        return bool(_labels(obj).get(QUEUE_NAME_LABEL))

    def owns(self, owner_reference: Mapping[str, Any]) -> bool:
        """Whether a Workload's owner reference points at an object of this kind."""
        group = str(owner_reference.get("apiVersion") or "").rpartition("/")[0]
        return owner_reference.get("kind") == self.resource.kind and group == self.resource.group

    @abstractmethod
    def podsets(self, obj: Obj) -> list[PodSet]:
        """The object's podsets (name, count, minCount, pod template, topology request);
        raises `JobConversionError` naming the bad field."""

    def workload_manifest(self, obj: Obj) -> dict[str, Any]:
        """The Workload this object should have: owned by it, labelled with its uid."""
        meta = ObjectMeta.model_validate(without_nulls(dict(obj.get("metadata") or {})))
        podsets = self.podsets(obj)
        workload = build_workload(meta, self.resource.api_version, self.resource.kind, podsets, prefix=self.prefix)
        manifest = workload.to_manifest()
        out_meta = manifest.setdefault("metadata", {})
        out_meta.pop("creationTimestamp", None)
        if meta.uid:
            out_meta.setdefault("labels", {})[wl.JOB_UID_LABEL] = meta.uid
        return manifest

    # --- the mutating webhook -------------------------------------------------------------------

    @abstractmethod
    def mutation(self, obj: Obj) -> dict[str, Any] | None:
        """The merge patch the mutating webhook applies to a new object (None: leave it as it is)."""

    # --- holding and releasing ------------------------------------------------------------------

    @abstractmethod
    def is_held(self, obj: Obj, pods: Pods) -> bool:
        """No pod of it runs or is schedulable (suspended, or every pod scheduling-gated)."""

    @abstractmethod
    def hold(self, obj: Obj, pods: Pods) -> Change:
        """Hold it (again), restoring what admission changed."""

    @abstractmethod
    def is_started(self, obj: Obj, pods: Pods) -> bool:
        """It carries an admission of Tessera's (the saved original template, an admitted pod)."""

    @abstractmethod
    def release(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement],
                flavors: Mapping[str, ResourceFlavor], topologies: Mapping[str, Topology]) -> Change:
        """Let it run on its admission: per podset, the flavors' node labels and tolerations and the
        topology domain's labels (idempotent: computed from the saved original)."""

    def admitted_change(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement],
                        flavors: Mapping[str, ResourceFlavor], topologies: Mapping[str, Topology]) -> Change | None:
        """For an object whose Workload holds quota: what makes it run as admitted, or None when it does.

        One that runs without Tessera's admission (started around the webhook) is held first; the
        next pass releases it. This also repairs a crash between the Workload write and the release.
        """
        held, started = self.is_held(obj, pods), self.is_started(obj, pods)
        if not held and not started:
            return self.hold(obj, pods)
        if held:
            return self.release(obj, pods, placements, flavors, topologies)
        return None

    def placement_change(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement],
                         flavors: Mapping[str, ResourceFlavor], topologies: Mapping[str, Topology],
                         available: Collection[str] | None = None) -> Change | None:
        """For a running object admitted with a per-pod plan (`placements[i].nodes`): ungate its pods
        held by the placement gate onto their planned nodes (`admission.placement.match_pods`), or
        with the podset's node selector only when no planned node can take them (`Change.unplaced`);
        None when no pod waits. `available`: the nodes that exist and are schedulable."""
        if not any(pl.is_gated(p) for p in pods):
            return None
        by_podset: dict[str, list[Mapping[str, Any]]] = {}
        for pod in pods:
            found = self.pod_owner(pod)
            name = placements[0].name if len(placements) == 1 else (found[1] if found else None)
            if name is not None:
                by_podset.setdefault(name, []).append(pod)
        patches: list[tuple[str, dict[str, Any]]] = []
        unplaced: list[str] = []
        for placement in placements:
            podset_pods = by_podset.get(placement.name, [])
            if not any(pl.is_gated(p) for p in podset_pods):
                continue
            labels, _ = jb.admission_selector(placement, flavors, wl.topology_of(placement, flavors, topologies))
            for match in pl.match_pods(podset_pods, pl.plan_counts(placement.nodes), placement.count, labels,
                                       available):
                patches.append((match.pod, match.patch))
                if match.node is None:
                    unplaced.append(match.pod)
        return Change(pod_patches=patches, unplaced=unplaced) if patches else None

    # --- progress -------------------------------------------------------------------------------

    @abstractmethod
    def finished(self, obj: Obj) -> tuple[str, str] | None:
        """("Succeeded" | "Failed", message) once the object's own controller says it is done."""

    @abstractmethod
    def active_pods(self, obj: Obj, pods: Pods) -> int:
        """Pods (or child Jobs) still running or terminating: an evicted Workload keeps its quota until 0."""

    @abstractmethod
    def pods_ready(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement]) -> bool:
        """All admitted pods are ready (or done): `waitForPodsReady` stops counting."""

    @abstractmethod
    def pod_owner(self, pod: Obj) -> tuple[str, str] | None:
        """(object name, podset name) of a pod of this kind, in the pod's namespace; None for other pods."""


# --- shared helpers ---------------------------------------------------------------------------------


def _labels(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def conditions(obj: Obj) -> list[dict[str, Any]]:
    return [c for c in ((obj.get("status") or {}).get("conditions") or []) if isinstance(c, dict)]


def true_condition(obj: Obj, kind: str) -> dict[str, Any] | None:
    for cond in conditions(obj):
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def as_count(value: Any, path: str, default: int = 1) -> int:
    """A non-negative integer field (replicas, parallelism), `default` when absent."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise JobConversionError(path, f"must be a non-negative integer, got {value!r}")
    return value


def podset(name: Any, count: int, template: Any, path: str, name_path: str,
           min_count: int | None = None) -> PodSet:
    """One podset from a raw pod template (`path` names the template, `name_path` the name in errors)."""
    if not isinstance(template, Mapping):
        raise JobConversionError(path, "a pod template is required")
    try:
        parsed = PodTemplateSpec.model_validate(without_nulls(dict(template)))
    except ValidationError as exc:
        raise JobConversionError(path, str(exc).splitlines()[0]) from None
    request = topology_request(parsed, path)
    try:
        return PodSet(name=name, count=count, min_count=min_count, template=parsed, topology_request=request)
    except ValidationError as exc:
        raise JobConversionError(name_path, _first_error(exc)) from None


def check_podset_count(podsets: Sequence[Any], path: str) -> None:
    if not podsets:
        raise JobConversionError(path, "at least one is required")
    if len(podsets) > MAX_PODSETS:
        raise JobConversionError(path, f"at most {MAX_PODSETS} podsets are supported, got {len(podsets)}")


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    return str(errors[0].get("msg")) if errors else str(exc).splitlines()[0]


# --- pod template fields ------------------------------------------------------------------------


def pod_fields(pod_spec: Mapping[str, Any]) -> dict[str, Any]:
    """What admission may change in a pod spec: its `nodeSelector` and `tolerations`."""
    return {"nodeSelector": dict(pod_spec.get("nodeSelector") or {}),
            "tolerations": list(pod_spec.get("tolerations") or [])}


def admitted_fields(original: Mapping[str, Any], placement: PodSetPlacement, flavors: Mapping[str, ResourceFlavor],
                    topologies: Mapping[str, Topology]) -> dict[str, Any]:
    """The original fields plus what the podset's admission adds (flavor and domain labels, tolerations)."""
    topology = wl.topology_of(placement, flavors, topologies)
    labels, tolerations = jb.admission_selector(placement, flavors, topology)
    wanted = list(original.get("tolerations") or [])
    for toleration in tolerations:
        if toleration not in wanted:
            wanted.append(toleration)
    return {"nodeSelector": {**dict(original.get("nodeSelector") or {}), **labels}, "tolerations": wanted}


def pod_spec_merge_patch(pod_spec: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning the pod spec's `nodeSelector` and `tolerations` (and `schedulingGates`, when
    `wanted` names them) into `wanted` ({} if equal)."""
    patch: dict[str, Any] = {}
    selector = jb._selector_patch(pod_spec.get("nodeSelector") or {}, wanted.get("nodeSelector") or {})
    if selector is not jb._UNCHANGED:
        patch["nodeSelector"] = selector
    tolerations = list(wanted.get("tolerations") or [])
    if list(pod_spec.get("tolerations") or []) != tolerations:
        patch["tolerations"] = tolerations or None
    if "schedulingGates" in wanted:
        gates = list(wanted.get("schedulingGates") or [])
        if list(pod_spec.get("schedulingGates") or []) != gates:
            patch["schedulingGates"] = gates or None
    return patch


def with_gate(pod_spec: Mapping[str, Any], fields: Mapping[str, Any], gated: bool) -> dict[str, Any]:
    """`fields` plus the pod spec's scheduling gates with the placement gate added (`gated`) or removed."""
    return {**fields, "schedulingGates": pl.template_gates(pod_spec, gated)}


def with_fields(pod_spec: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec with `nodeSelector` and `tolerations` (and `schedulingGates`, when `wanted` names them)
    replaced by `wanted` (empty ones removed)."""
    out = copy.deepcopy(dict(pod_spec))
    for key in ("nodeSelector", "tolerations", "schedulingGates"):
        if key == "schedulingGates" and key not in wanted:
            continue
        value = wanted.get(key)
        if value:
            out[key] = copy.deepcopy(value)
        else:
            out.pop(key, None)
    return out


def saved_originals(obj: Obj) -> dict[str, dict[str, Any]] | None:
    """Per podset, the template fields saved before admission; None when the object carries no admission."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ORIGINAL_TEMPLATE_ANNOTATION)
    if raw is None:
        return None
    try:
        saved = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(saved, dict):
        return None
    return {str(k): v for k, v in saved.items() if isinstance(v, dict)}


def merge(*patches: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge merge patches (later ones win)."""
    out: dict[str, Any] = {}
    for patch in patches:
        for key, value in patch.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value
    return out


class SuspendableIntegration(Integration):
    """A kind held by a `suspend` flag, with one pod template per podset (JobSet, PyTorchJob)."""

    @abstractmethod
    def pod_specs(self, obj: Obj) -> dict[str, dict[str, Any]]:
        """The current pod spec of each podset, by podset name."""

    @abstractmethod
    def is_suspended(self, obj: Obj) -> bool: ...

    @abstractmethod
    def suspend_patch(self, value: bool) -> dict[str, Any]:
        """The merge patch setting the suspend flag."""

    @abstractmethod
    def templates_patch(self, obj: Obj, wanted: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The merge patch giving each podset in `wanted` those `nodeSelector` and `tolerations` (and
        `schedulingGates`, when named) ({} if none change)."""

    def mutation(self, obj: Obj) -> dict[str, Any] | None:
        if not self.is_managed(obj) or self.is_suspended(obj):
            return None
        return self.suspend_patch(True)

    def is_held(self, obj: Obj, pods: Pods) -> bool:
        return self.is_suspended(obj)

    def is_started(self, obj: Obj, pods: Pods) -> bool:
        return saved_originals(obj) is not None

    def originals(self, obj: Obj) -> dict[str, dict[str, Any]]:
        saved = saved_originals(obj)
        if saved is not None:
            return saved
        return {name: pod_fields(spec) for name, spec in self.pod_specs(obj).items()}

    def release(self, obj: Obj, pods: Pods, placements: Sequence[PodSetPlacement],
                flavors: Mapping[str, ResourceFlavor], topologies: Mapping[str, Topology]) -> Change:
        originals = self.originals(obj)
        specs = self.pod_specs(obj)
        wanted = {p.name: with_gate(specs.get(p.name) or {}, admitted_fields(originals[p.name], p, flavors, topologies),
                                    bool(p.nodes))
                  for p in placements if p.name in originals}
        saved = json.dumps(originals, sort_keys=True)
        annotation = {"metadata": {"annotations": {ORIGINAL_TEMPLATE_ANNOTATION: saved}}}
        patch = merge(annotation, self.suspend_patch(False), self.templates_patch(obj, wanted))
        return Change(patch=patch, starts=True)

    def hold(self, obj: Obj, pods: Pods) -> Change:
        saved = saved_originals(obj)
        patch = self.suspend_patch(True)
        specs = self.pod_specs(obj)
        restore = {name: with_gate(spec, saved[name] if saved is not None and name in saved else pod_fields(spec),
                                   False)
                   for name, spec in specs.items() if (saved is not None and name in saved) or pl.has_gate(spec)}
        if restore:
            patch = merge(patch, self.templates_patch(obj, restore))
        if saved is not None:
            patch = merge(patch, {"metadata": {"annotations": {ORIGINAL_TEMPLATE_ANNOTATION: None}}})
        return Change(patch=patch)
