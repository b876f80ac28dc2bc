"""A consistent set of manifests, parsed into models: what the simulator and the operator start from.

`load_bundle` reads files, parses every object, runs every check and returns the
accepted objects together with all problems found, so one bad object never hides
another and never costs the good ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from quotas.api import (
    NAMESPACED_KINDS,
    TESSERA_KINDS,
    ClusterQueue,
    Cohort,
    Configuration,
    LocalQueue,
    ResourceFlavor,
    Topology,
    Workload,
    WorkloadPriorityClass,
)
from quotas.base import API_GROUP, GROUP_VERSION, QUEUE_NAME_LABEL
from quotas.jobs import JobConversionError, workload_from_job
from quotas.kube import Job, Namespace, Node
from quotas.loader import RawObject, Source, load_paths
from quotas.problems import Problem

KUBE_KINDS: dict[tuple[str, str], type[BaseModel]] = {
    ("v1", "Node"): Node, ("batch/v1", "Job"): Job, ("v1", "Namespace"): Namespace,
}
KUEUE_GROUP = "kueue.x-k8s.io"

ObjectKey = tuple[str, str, str]  # kind, namespace ("" when cluster-scoped), name


@dataclass
class Bundle:
    """Accepted objects by kind and name (namespaced kinds by (namespace, name)), with their sources."""

    flavors: dict[str, ResourceFlavor] = field(default_factory=dict)
    cluster_queues: dict[str, ClusterQueue] = field(default_factory=dict)
    local_queues: dict[tuple[str, str], LocalQueue] = field(default_factory=dict)
    cohorts: dict[str, Cohort] = field(default_factory=dict)
    priority_classes: dict[str, WorkloadPriorityClass] = field(default_factory=dict)
    topologies: dict[str, Topology] = field(default_factory=dict)
    workloads: dict[tuple[str, str], Workload] = field(default_factory=dict)
    jobs: dict[tuple[str, str], Job] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    configuration: Configuration | None = None
    sources: dict[ObjectKey, Source] = field(default_factory=dict)
    # Objects refused for their own errors: references to them are not reported again.
    rejected: set[ObjectKey] = field(default_factory=set)
    # Workloads derived from queued Jobs, keyed like the Jobs.
    job_workloads: dict[tuple[str, str], Workload] = field(default_factory=dict)

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        """Labels per namespace given as Namespace manifests (for `namespaceSelector`)."""
        return {name: dict(ns.metadata.labels) for name, ns in self.namespaces.items()}

    def source_of(self, kind: str, name: str, namespace: str = "") -> str:
        source = self.sources.get((kind, namespace, name))
        return str(source) if source else ""

    def all_workloads(self) -> list[Workload]:
        """Workloads given directly and those converted from queued Jobs, in load order."""
        return [*self.workloads.values(), *self.job_workloads.values()]

    def count(self) -> int:
        return (
            len(self.flavors)
            + len(self.cluster_queues)
            + len(self.local_queues)
            + len(self.cohorts)
            + len(self.priority_classes)
            + len(self.topologies)
            + len(self.workloads)
            + len(self.jobs)
            + len(self.nodes)
            + (1 if self.configuration else 0)
        )


# --- turning pydantic errors into messages that name the field ------------------------------


def format_path(loc: Iterable[Any]) -> str:
    """('spec', 'resourceGroups', 0, 'flavors') -> 'spec.resourceGroups[0].flavors'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.replace("_", "a").isalnum() and part[:1].isalpha():
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


def _shown(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f'"{value}"'


def error_message(error: dict[str, Any]) -> str:
    """A short, consistent message for one pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"must be one of {expected}, got {_shown(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer, got {_shown(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {_shown(value)}"
    if kind in ("string_type",):
        return f"must be a string, got {_shown(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, got {_shown(value)}"
    if kind == "list_type":
        return f"must be a list, got {_shown(value)}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        limit = next(iter(ctx.values()), "")
        return f"must be {bound} {limit}, got {_shown(value)}"
    message = str(error.get("msg", "invalid"))
    return message[:1].lower() + message[1:]


def problems_from_validation(exc: ValidationError, where: str, label: str, prefix: str = "") -> list[Problem]:
    out = []
    for error in exc.errors():
        path = format_path(error["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path and not path.startswith("[") else f"{prefix}{path}"
        out.append(Problem(where, label, path, error_message(error)))
    return out


# --- parsing raw objects -------------------------------------------------------------------


def without_nulls(value: Any) -> Any:
    """Drop null fields: the API server reads `spec: null` as an unset field, and so do we."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def parse_object(raw: RawObject) -> tuple[BaseModel | None, list[Problem]]:
    """The model for one raw manifest, or None with the problems that refused it (or a warning to skip it)."""
    where, label = str(raw.source), raw.label
    api_version, kind = raw.api_version, raw.kind
    if not api_version:
        return None, [Problem(where, label, "apiVersion", "required field is missing")]
    if not kind:
        return None, [Problem(where, label, "kind", "required field is missing")]
    group = api_version.rpartition("/")[0]
    if group == API_GROUP:
        if api_version != GROUP_VERSION:
            return None, [Problem(where, label, "apiVersion", f'must be {GROUP_VERSION}, got "{api_version}"')]
        model = TESSERA_KINDS.get(kind)
        if model is None:
            known = ", ".join(TESSERA_KINDS)
            return None, [Problem(where, label, "kind", f'unknown kind "{kind}" in {GROUP_VERSION} (known: {known})')]
    elif group == KUEUE_GROUP or group.endswith("." + KUEUE_GROUP):
        return None, [Problem(where, label, "apiVersion", f'"{api_version}" is Kueue\'s API: convert it first with `tessera import-kueue`')]
    else:
        model = KUBE_KINDS.get((api_version, kind))
        if model is None:
            return None, [Problem(where, label, "", f"{api_version} {kind} is not a kind Tessera reads; ignored", "warning")]
    try:
        obj = model.model_validate(without_nulls(raw.data))
    except ValidationError as exc:
        return None, problems_from_validation(exc, where, label)
    return obj, []


def object_key(obj: BaseModel) -> ObjectKey:
    kind = getattr(obj, "kind")
    meta = getattr(obj, "metadata", None)
    name = meta.name if meta is not None else "config"
    namespace = ""
    if kind in NAMESPACED_KINDS or kind == "Job":
        namespace = (meta.namespace if meta is not None else None) or "default"
    return kind, namespace, name


def _add(bundle: Bundle, obj: BaseModel, key: ObjectKey) -> None:
    kind, namespace, name = key
    if isinstance(obj, ResourceFlavor):
        bundle.flavors[name] = obj
    elif isinstance(obj, ClusterQueue):
        bundle.cluster_queues[name] = obj
    elif isinstance(obj, LocalQueue):
        bundle.local_queues[(namespace, name)] = obj
    elif isinstance(obj, Cohort):
        bundle.cohorts[name] = obj
    elif isinstance(obj, WorkloadPriorityClass):
        bundle.priority_classes[name] = obj
    elif isinstance(obj, Topology):
        bundle.topologies[name] = obj
    elif isinstance(obj, Workload):
        bundle.workloads[(namespace, name)] = obj
    elif isinstance(obj, Job):
        bundle.jobs[(namespace, name)] = obj
    elif isinstance(obj, Node):
        bundle.nodes[name] = obj
    elif isinstance(obj, Namespace):
        bundle.namespaces[name] = obj
    elif isinstance(obj, Configuration):
        bundle.configuration = obj
    else:  # pragma: no cover - every parsed kind is listed above
        raise TypeError(f"unexpected object kind {kind}")


def _remove(bundle: Bundle, key: ObjectKey) -> None:
    kind, namespace, name = key
    del bundle.sources[key]
    bundle.rejected.add(key)
    by_name: dict[str, dict[str, Any]] = {
        "ResourceFlavor": bundle.flavors,
        "ClusterQueue": bundle.cluster_queues,
        "Cohort": bundle.cohorts,
        "WorkloadPriorityClass": bundle.priority_classes,
        "Topology": bundle.topologies,
        "Node": bundle.nodes,
        "Namespace": bundle.namespaces,
    }
    by_namespace: dict[str, dict[tuple[str, str], Any]] = {
        "LocalQueue": bundle.local_queues,
        "Workload": bundle.workloads,
        "Job": bundle.jobs,
    }
    if kind in by_name:
        del by_name[kind][name]
    elif kind in by_namespace:
        del by_namespace[kind][(namespace, name)]
        bundle.job_workloads.pop((namespace, name), None)
    elif kind == "Configuration":
        bundle.configuration = None


def build_bundle(raws: Iterable[RawObject]) -> tuple[Bundle, list[Problem]]:
    """Parse, check each object alone, then check references across them."""
    from quotas.validation import check_object, check_references

    bundle = Bundle()
    problems: list[Problem] = []
    flawed: list[ObjectKey] = []
    for raw in raws:
        obj, found = parse_object(raw)
        if obj is None:
            problems.extend(found)
            if any(p.is_error for p in found):
                namespace = ""
                if raw.kind in NAMESPACED_KINDS or raw.kind == "Job":
                    meta = raw.data.get("metadata")
                    namespace = str(meta.get("namespace") or "default") if isinstance(meta, dict) else "default"
                bundle.rejected.add((raw.kind, namespace, raw.name))
            continue
        key = object_key(obj)
        where, label = str(raw.source), raw.label
        if key in bundle.sources:
            problems.append(Problem(where, label, "metadata.name", f"duplicate of {label} at {bundle.sources[key]}"))
            continue
        if key[0] == "Configuration" and bundle.configuration is not None:
            problems.append(Problem(where, label, "", "more than one Configuration given"))
            continue
        own = [Problem(where, label, path, message) for path, message in check_object(obj)]
        if isinstance(obj, Job) and QUEUE_NAME_LABEL in obj.metadata.labels:
            try:
                bundle.job_workloads[(key[1], key[2])] = workload_from_job(obj)
            except JobConversionError as exc:
                found = Problem(where, label, exc.field, exc.message)
                if found not in own:  # check_object may have said the same (workload type)
                    own.append(found)
            except ValidationError as exc:
                own.extend(problems_from_validation(exc, where, label, "spec.template"))
        problems.extend(own)
        bundle.sources[key] = raw.source
        _add(bundle, obj, key)
        if own:
            flawed.append(key)
    # References are checked with the flawed objects still present, so their own references
    # are reported too and nothing pointing at them is reported as unknown; then they go.
    problems.extend(check_references(bundle))
    for key in flawed:
        _remove(bundle, key)
    return bundle, problems


def load_bundle(paths: Iterable[str | Path]) -> tuple[Bundle, list[Problem]]:
    """Everything under the given files and folders, checked; see the module docstring."""
    raws, problems = load_paths(paths)
    bundle, more = build_bundle(raws)
    return bundle, problems + more
