"""Converting Kueue manifests (and Kueue-labelled Jobs) to Tessera's `tessera.dev/v1alpha1` kinds.

Tessera's kinds carry Kueue v1beta1's field names, so most of a Kueue object carries over
as it is. What differs is mapped explicitly (v1beta2's `cohortName`, `MayStopSearch`,
`priorityClassRef`, Cohort `parent`, the `kueue.x-k8s.io/*` labels and annotations, the
Configuration's presence-means-enabled sections). Everything else is checked *generically*:
each Kueue object is walked against the pydantic model of its Tessera kind, by alias,
recursively through nested models, lists and maps, and any field the model does not have
is reported as a warning naming the input file:document, the object and the field path,
then dropped. Nothing is dropped silently except what is not configuration at all:
`status`, the metadata the API server or kubectl writes (uid, resourceVersion, managedFields,
Kueue's finalizers, last-applied-configuration, ...) and null values (unset, as the API
server reads them).

`convert_paths` then validates the converted set with `quotas.bundle.build_bundle`, so what
it returns without errors is what `tessera validate` accepts; problems found there are
reported against the input file, object and (where a field was renamed) the input field.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from quotas.api import (
    ClusterQueue,
    Cohort,
    Configuration,
    LocalQueue,
    ResourceFlavor,
    Topology,
    Workload,
    WorkloadPriorityClass,
)
from quotas.base import (
    GROUP_VERSION,
    MIN_PARALLELISM_ANNOTATION,
    PREFERRED_TOPOLOGY_ANNOTATION,
    PRIORITY_CLASS_LABEL,
    QUEUE_NAME_LABEL,
    REQUIRED_TOPOLOGY_ANNOTATION,
)
from quotas.bundle import build_bundle, format_path
from quotas.loader import RawObject, Source, load_paths, load_text
from quotas.problems import Problem

__all__ = [
    "KUEUE_GROUP",
    "KUEUE_CONFIG_GROUP",
    "KUEUE_KINDS",
    "convert_object",
    "convert_paths",
    "convert_raws",
    "dump_manifests",
    "is_kueue_key",
]

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_CONFIG_GROUP = f"config.{KUEUE_GROUP}"

# Kueue kinds that have a Tessera counterpart of the same name.
KUEUE_KINDS: dict[str, type[BaseModel]] = {
    "ResourceFlavor": ResourceFlavor,
    "ClusterQueue": ClusterQueue,
    "LocalQueue": LocalQueue,
    "Cohort": Cohort,
    "WorkloadPriorityClass": WorkloadPriorityClass,
    "Topology": Topology,
    "Workload": Workload,
}
# Which of them each Kueue API version serves (Cohort and Topology began in v1alpha1; the
# v1alpha1 ClusterQueue, LocalQueue, ... of Kueue 0.1/0.2 had another shape and are refused).
KUEUE_VERSIONS: dict[str, frozenset[str]] = {
    "v1beta1": frozenset(KUEUE_KINDS),
    "v1beta2": frozenset(KUEUE_KINDS),
    "v1alpha1": frozenset({"Cohort", "Topology"}),
}
KUEUE_CONFIG_VERSIONS = ("v1beta1", "v1beta2")

# Kueue's defaults that differ from Tessera's: written out so behaviour does not change.
KUEUE_WAIT_FOR_PODS_READY_TIMEOUT = "5m"

# Metadata the API server (or kubectl) writes: not configuration, dropped without a word.
SERVER_SET_METADATA = frozenset(
    {
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    }
)
KEPT_METADATA = ("name", "namespace", "labels", "annotations")
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"

K_QUEUE_NAME = f"{KUEUE_GROUP}/queue-name"
K_PRIORITY_CLASS = f"{KUEUE_GROUP}/priority-class"
K_MIN_PARALLELISM = f"{KUEUE_GROUP}/job-min-parallelism"
K_REQUIRED_TOPOLOGY = f"{KUEUE_GROUP}/podset-required-topology"
K_PREFERRED_TOPOLOGY = f"{KUEUE_GROUP}/podset-preferred-topology"

# Object metadata of a Job (or any workload object): Kueue key -> Tessera key.
TOP_LABELS = {K_QUEUE_NAME: QUEUE_NAME_LABEL, K_PRIORITY_CLASS: PRIORITY_CLASS_LABEL}
TOP_ANNOTATIONS = {K_MIN_PARALLELISM: MIN_PARALLELISM_ANNOTATION}
# Pod-template metadata (anywhere below the object's own metadata).
TEMPLATE_LABELS: dict[str, str] = {}
TEMPLATE_ANNOTATIONS = {
    K_REQUIRED_TOPOLOGY: REQUIRED_TOPOLOGY_ANNOTATION,
    K_PREFERRED_TOPOLOGY: PREFERRED_TOPOLOGY_ANNOTATION,
}

WORKLOAD_PRIORITY_SOURCE = f"{KUEUE_GROUP}/workloadpriorityclass"
UNSUPPORTED = "not supported by Tessera; dropped"

Loc = tuple[str | int, ...]


def is_kueue_key(key: object) -> bool:
    """Whether a label or annotation key belongs to Kueue (`kueue.x-k8s.io/...` or a subdomain of it)."""
    if not isinstance(key, str) or "/" not in key:
        return False
    prefix = key.split("/", 1)[0]
    return prefix == KUEUE_GROUP or prefix.endswith("." + KUEUE_GROUP)


# --- bookkeeping ---------------------------------------------------------------------------


@dataclass
class _Ctx:
    """Where we are in the input, and what conversion found: problems and renamed fields."""

    where: str
    label: str
    prefix: Loc = ()
    problems: list[Problem] = field(default_factory=list)
    # (output location, input location): lets problems found on the output name the input field.
    renames: list[tuple[Loc, Loc]] = field(default_factory=list)

    def path(self, loc: Loc) -> str:
        return format_path(self.prefix + tuple(loc))

    def warn(self, loc: Loc, message: str = UNSUPPORTED) -> None:
        self.problems.append(Problem(self.where, self.label, self.path(loc), message, "warning"))

    def error(self, loc: Loc, message: str) -> None:
        self.problems.append(Problem(self.where, self.label, self.path(loc), message))

    def renamed(self, out: Loc, src: Loc) -> None:
        self.renames.append((tuple(out), tuple(src)))


@dataclass
class _Output:
    """One converted object and how to map problems about it back to the input."""

    data: dict[str, Any]
    source: Source
    in_label: str
    prefix: Loc
    renames: list[tuple[Loc, Loc]]

    @property
    def out_label(self) -> str:
        return RawObject(self.source, self.data).label

    def raw(self) -> RawObject:
        return RawObject(self.source, self.data)


def _shown(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return f'"{value}"'


def _rename_key(data: dict[str, Any], old: str, new: str, loc: Loc, ctx: _Ctx) -> dict[str, Any]:
    """`data` with key `old` renamed to `new` in place (order kept); a conflicting `new` is an error."""
    if old not in data:
        return data
    if new in data and data[new] != data[old]:
        ctx.error(loc + (old,), f"conflicts with {format_path(loc + (new,))} ({_shown(data[new])})")
        return {k: v for k, v in data.items() if k != old}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == old:
            out[new] = value
        elif key != new:
            out[key] = value
    ctx.renamed(loc + (new,), loc + (old,))
    return out


def _put_after(data: dict[str, Any], after: str, key: str, value: Any) -> dict[str, Any]:
    """`data` with `key` inserted just after `after` (at the end when `after` is absent)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        out[k] = v
        if k == after:
            out[key] = value
    out.setdefault(key, value)
    return out


# --- the generic walk against a Tessera model -----------------------------------------------

_ANY: tuple[Any, ...] = ("any",)


def _shape(tp: Any) -> tuple[Any, ...]:
    """What a field's type says about its value: a strict model, a list or map of something, or anything."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _shape(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(tp) if a is not type(None)]
        return _shape(args[0]) if len(args) == 1 else _ANY
    if origin is list:
        return ("list", _shape(get_args(tp)[0]))
    if origin is dict:
        return ("dict", _shape(get_args(tp)[1]))
    if isinstance(tp, type) and issubclass(tp, BaseModel) and tp.model_config.get("extra") == "forbid":
        return ("model", tp)
    # Lenient models (Kubernetes' own types such as taints, tolerations, pod templates) keep
    # every field, so there is nothing to drop below them.
    return _ANY


def _walk(value: Any, shape: tuple[Any, ...], loc: Loc, ctx: _Ctx) -> Any:
    kind = shape[0]
    if kind == "model" and isinstance(value, dict):
        return _walk_model(value, shape[1], loc, ctx)
    if kind == "list" and isinstance(value, list):
        return [_walk(item, shape[1], loc + (i,), ctx) for i, item in enumerate(value)]
    if kind == "dict" and isinstance(value, dict):
        return {key: _walk(item, shape[1], loc + (key,), ctx) for key, item in value.items()}
    return value  # a scalar, or a value of the wrong type that validation will refuse


def _walk_model(
    data: dict[str, Any],
    model: type[BaseModel],
    loc: Loc,
    ctx: _Ctx,
    only: Iterable[str] | None = None,
) -> dict[str, Any]:
    """`data` without the fields `model` lacks (each one warned about), recursively."""
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    if only is not None:
        allowed = set(only)
        fields = {alias: info for alias, info in fields.items() if alias in allowed}
    out: dict[str, Any] = {}
    for key, value in data.items():
        info = fields.get(key) if isinstance(key, str) else None
        if info is None:
            ctx.warn(loc + (key,))
            continue
        if value is None and not info.is_required():
            continue  # null is unset, as the API server reads it
        new = _walk(value, _shape(info.annotation), loc + (key,), ctx)
        if isinstance(value, dict) and value and isinstance(new, dict) and not new and not info.is_required():
            # Everything inside was unsupported (and warned about): leave the optional field unset
            # rather than hand the model an empty object it may refuse.
            continue
        out[key] = new
    return out


# --- metadata, labels and annotations --------------------------------------------------------


def _convert_keys(mapping: Any, table: dict[str, str], loc: Loc, ctx: _Ctx, what: str) -> Any:
    """Labels or annotations with Kueue keys renamed by `table`, other Kueue keys warned about and dropped."""
    if not isinstance(mapping, dict) or not any(is_kueue_key(k) for k in mapping):
        return mapping
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if not is_kueue_key(key):
            if key not in out:
                out[key] = value
            continue
        target = table.get(key)
        if target is None:
            ctx.warn(loc + (key,), f"Kueue {what} {UNSUPPORTED}")
            continue
        existing = mapping.get(target, out.get(target))
        if existing is not None and existing != value:
            ctx.error(loc + (key,), f'conflicts with {format_path(loc + (target,))} ("{existing}")')
            continue
        out[target] = value
        ctx.renamed(loc + (target,), loc + (key,))
    return out


def _convert_object_meta(meta: dict[str, Any], loc: Loc, ctx: _Ctx, labels: dict[str, str],
                         annotations: dict[str, str]) -> dict[str, Any]:
    """Labels and annotations of one metadata block converted; other fields untouched."""
    out = dict(meta)
    for key, table, what in (("labels", labels, "label"), ("annotations", annotations, "annotation")):
        if key in out:
            converted = _convert_keys(out[key], table, loc + (key,), ctx, what)
            if converted is not out[key] and isinstance(converted, dict) and not converted:
                del out[key]
            else:
                out[key] = converted
    return out


def _kueue_metadata(meta: Any, ctx: _Ctx) -> Any:
    """Metadata of a converted Kueue object: name, namespace, labels and annotations."""
    if not isinstance(meta, dict):
        return meta  # validation reports it
    out: dict[str, Any] = {}
    for key, value in meta.items():
        loc: Loc = ("metadata", key)
        if key in SERVER_SET_METADATA:
            continue
        if key == "finalizers" and isinstance(value, list) and all(is_kueue_key(f) for f in value):
            continue  # Kueue's own `kueue.x-k8s.io/resource-in-use` and the like
        if key not in KEPT_METADATA:
            ctx.warn(loc)
            continue
        if key == "annotations" and isinstance(value, dict) and LAST_APPLIED_ANNOTATION in value:
            value = {k: v for k, v in value.items() if k != LAST_APPLIED_ANNOTATION}
        if key in ("labels", "annotations"):
            value = _convert_keys(value, {}, loc, ctx, key[:-1])
            if isinstance(value, dict) and not value and meta[key]:
                continue
        out[key] = value
    return out


# --- Kueue kinds -------------------------------------------------------------------------------


def _fungibility(spec: dict[str, Any], ctx: _Ctx) -> None:
    """v1beta2's `MayStopSearch` (also accepted by late v1beta1) to v1beta1's Borrow / Preempt."""
    ff = spec.get("flavorFungibility")
    if not isinstance(ff, dict):
        return
    ff = dict(ff)
    for key, value in (("whenCanBorrow", "Borrow"), ("whenCanPreempt", "Preempt")):
        if ff.get(key) == "MayStopSearch":
            ff[key] = value
    spec["flavorFungibility"] = ff


def _pre_cluster_queue(data: dict[str, Any], version: str, ctx: _Ctx) -> None:
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return
    spec = _rename_key(spec, "cohortName", "cohort", ("spec",), ctx)
    _fungibility(spec, ctx)
    data["spec"] = spec


def _pre_cohort(data: dict[str, Any], version: str, ctx: _Ctx) -> None:
    spec = data.get("spec")
    if isinstance(spec, dict):
        data["spec"] = _rename_key(spec, "parent", "parentName", ("spec",), ctx)


def _pre_workload(data: dict[str, Any], version: str, ctx: _Ctx) -> None:
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return
    spec = dict(spec)
    # v1beta1: priorityClassName names a WorkloadPriorityClass or, by priorityClassSource, a pod PriorityClass.
    if "priorityClassSource" in spec:
        source = spec.pop("priorityClassSource")
        if source not in ("", None, WORKLOAD_PRIORITY_SOURCE) and "priorityClassName" in spec:
            spec.pop("priorityClassName")
            ctx.warn(
                ("spec", "priorityClassName"),
                f'names a pod PriorityClass (priorityClassSource "{source}"); Tessera\'s priorityClassName '
                "names a WorkloadPriorityClass; dropped (spec.priority is kept)",
            )
    # v1beta2: priorityClassRef {group, kind, name}.
    if "priorityClassRef" in spec:
        ref = spec.pop("priorityClassRef")
        if isinstance(ref, dict) and ref.get("kind", "WorkloadPriorityClass") == "WorkloadPriorityClass" and ref.get(
            "group", KUEUE_GROUP
        ) == KUEUE_GROUP:
            if "priorityClassName" in spec and spec["priorityClassName"] != ref.get("name"):
                ctx.error(("spec", "priorityClassRef", "name"), "conflicts with spec.priorityClassName")
            else:
                spec.pop("priorityClassName", None)
                spec = _put_after(spec, "queueName", "priorityClassName", ref.get("name"))
                ctx.renamed(("spec", "priorityClassName"), ("spec", "priorityClassRef", "name"))
                for extra in ref:
                    if extra not in ("group", "kind", "name"):
                        ctx.warn(("spec", "priorityClassRef", extra))
        else:
            what = f"{ref.get('kind')} of group {ref.get('group')}" if isinstance(ref, dict) else _shown(ref)
            ctx.warn(
                ("spec", "priorityClassRef"),
                f"refers to {what}; Tessera's priorityClassName names a WorkloadPriorityClass; "
                "dropped (spec.priority is kept)",
            )
    pod_sets = spec.get("podSets")
    if isinstance(pod_sets, list):
        spec["podSets"] = [
            _convert_nested_meta(ps, ("spec", "podSets", i), ctx) if isinstance(ps, dict) else ps
            for i, ps in enumerate(pod_sets)
        ]
    data["spec"] = spec


_PRE = {
    "ClusterQueue": _pre_cluster_queue,
    "Cohort": _pre_cohort,
    "Workload": _pre_workload,
}


def _convert_kueue(data: dict[str, Any], version: str, ctx: _Ctx) -> dict[str, Any]:
    kind = str(data.get("kind"))
    model = KUEUE_KINDS[kind]
    data = copy.deepcopy(data)
    pre = _PRE.get(kind)
    if pre is not None:
        pre(data, version, ctx)
    out: dict[str, Any] = {"apiVersion": GROUP_VERSION, "kind": kind}
    if "metadata" in data:
        out["metadata"] = _kueue_metadata(data["metadata"], ctx)
    rest = {k: v for k, v in data.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    only = [alias for name, info in model.model_fields.items()
            if (alias := info.alias or name) not in ("apiVersion", "kind", "metadata", "status")]
    out.update(_walk_model(rest, model, (), ctx, only=only))
    return out


# --- the Kueue Configuration -------------------------------------------------------------------

CONFIG_SECTIONS = ("fairSharing", "admissionFairSharing", "waitForPodsReady")


def _convert_configuration(data: dict[str, Any], version: str, ctx: _Ctx) -> dict[str, Any]:
    data = copy.deepcopy(data)
    rest = {k: v for k, v in data.items() if k not in ("apiVersion", "kind")}
    wait = rest.get("waitForPodsReady")
    explicit_enable = isinstance(wait, dict) and "enable" in wait
    if version == "v1beta2":
        # Late v1beta2 dropped `enable`: a section that is present is on.
        for section in ("fairSharing", "waitForPodsReady"):
            if section in rest and rest[section] is None:
                del rest[section]
            elif isinstance(rest.get(section), dict) and "enable" not in rest[section]:
                rest[section] = {"enable": True, **rest[section]}
    wait = rest.get("waitForPodsReady")
    if isinstance(wait, dict) and wait.get("enable") is True and explicit_enable:
        # Kueue releases with `waitForPodsReady.enable` default the timeout to 5 minutes and
        # blockAdmission to true; Tessera (like late v1beta2) defaults to 30 minutes and false.
        # Write Kueue's values out so the cluster keeps behaving as it did.
        defaults = {"timeout": KUEUE_WAIT_FOR_PODS_READY_TIMEOUT, "blockAdmission": True}
        rest["waitForPodsReady"] = {**wait, **{k: v for k, v in defaults.items() if k not in wait}}
    out: dict[str, Any] = {"apiVersion": GROUP_VERSION, "kind": "Configuration"}
    out.update(_walk_model(rest, Configuration, (), ctx, only=CONFIG_SECTIONS))
    return out


def _embedded_configurations(data: dict[str, Any], ctx: _Ctx) -> list[tuple[dict[str, Any], _Ctx]] | None:
    """A ConfigMap holding a Kueue Configuration (`controller_manager_config.yaml`): the converted Configuration(s).

    None when the ConfigMap holds no Kueue Configuration (it then passes through unchanged).
    """
    values = data.get("data")
    if not isinstance(values, dict):
        return None
    found: list[tuple[str, list[RawObject], list[Problem]]] = []
    for key, text in values.items():
        if not isinstance(text, str) or KUEUE_CONFIG_GROUP not in text:
            continue
        raws, problems = load_text(text, ctx.where)
        if problems or any(r.kind == "Configuration" and _group(r.api_version) == KUEUE_CONFIG_GROUP for r in raws):
            found.append((str(key), raws, problems))
    if not found:
        return None
    results: list[tuple[dict[str, Any], _Ctx]] = []
    for key, raws, problems in found:
        loc: Loc = ("data", key)
        for problem in problems:
            ctx.error(loc, problem.message)
        for raw in raws:
            inner = _Ctx(ctx.where, ctx.label, loc, ctx.problems)
            converted = _convert_kueue_raw(raw, inner)
            results.extend((obj, inner) for obj in converted)
    for key in values:
        if key not in {k for k, _, _ in found}:
            ctx.warn(("data", key), "ConfigMap key beside the Kueue Configuration; not converted; dropped")
    for key in data:
        if key not in ("apiVersion", "kind", "metadata", "data"):
            ctx.warn((key,), "ConfigMap field beside the Kueue Configuration; not converted; dropped")
    return results


# --- Jobs and other non-Kueue objects -----------------------------------------------------------


def _convert_nested_meta(value: Any, loc: Loc, ctx: _Ctx) -> Any:
    """Every `metadata` block below the object's own (pod templates, Job templates of a JobSet, ...)."""
    if isinstance(value, list):
        return [_convert_nested_meta(item, loc + (i,), ctx) for i, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "metadata" and isinstance(item, dict):
            out[key] = _convert_object_meta(item, loc + (key,), ctx, TEMPLATE_LABELS, TEMPLATE_ANNOTATIONS)
        else:
            out[key] = _convert_nested_meta(item, loc + (key,), ctx)
    return out


def _convert_plain(data: dict[str, Any], ctx: _Ctx) -> dict[str, Any]:
    """A Job (or any non-Kueue object): Kueue labels and annotations to Tessera's; the rest unchanged."""
    out = dict(data)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta = dict(meta)
        annotations = meta.get("annotations")
        queue_annotation = None
        if isinstance(annotations, dict) and K_QUEUE_NAME in annotations:
            queue_annotation = annotations[K_QUEUE_NAME]
            rest = {k: v for k, v in annotations.items() if k != K_QUEUE_NAME}
            if rest:
                meta["annotations"] = rest
            else:
                del meta["annotations"]
        meta = _convert_object_meta(meta, ("metadata",), ctx, TOP_LABELS, TOP_ANNOTATIONS)
        if queue_annotation is not None:
            # Kueue's early, deprecated way of naming the queue: an annotation. Tessera reads a label.
            loc: Loc = ("metadata", "annotations", K_QUEUE_NAME)
            labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
            existing = labels.get(QUEUE_NAME_LABEL)
            if existing is not None and existing != queue_annotation:
                ctx.error(loc, f'conflicts with the queue-name label ("{existing}")')
            else:
                meta["labels"] = {**labels, QUEUE_NAME_LABEL: queue_annotation}
                if existing is None:
                    ctx.renamed(("metadata", "labels", QUEUE_NAME_LABEL), loc)
                ctx.warn(loc, f'deprecated Kueue annotation; converted to label "{QUEUE_NAME_LABEL}"')
        out["metadata"] = meta
    for key, value in out.items():
        if key not in ("apiVersion", "kind", "metadata", "status"):
            out[key] = _convert_nested_meta(value, (key,), ctx)
    return out


# --- dispatch --------------------------------------------------------------------------------------


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _is_kueue_group(group: str) -> bool:
    return group == KUEUE_GROUP or group.endswith("." + KUEUE_GROUP)


def _convert_kueue_raw(raw: RawObject, ctx: _Ctx) -> list[dict[str, Any]]:
    """A manifest of Kueue's groups: converted, or dropped with a warning, or refused."""
    api_version, kind = raw.api_version, raw.kind
    group, _, version = api_version.rpartition("/")
    if group == KUEUE_GROUP:
        if version not in KUEUE_VERSIONS:
            ctx.error(
                ("apiVersion",),
                f'unknown Kueue API version "{api_version}" (Tessera converts {KUEUE_GROUP}/v1beta1 and v1beta2, '
                "and v1alpha1 Cohort and Topology)",
            )
            return []
        if kind in KUEUE_VERSIONS[version]:
            return [_convert_kueue(raw.data, version, ctx)]
        if kind in KUEUE_KINDS:
            served = ", ".join(v for v, kinds in KUEUE_VERSIONS.items() if kind in kinds)
            ctx.error(("apiVersion",), f'Kueue serves {kind} in {served}, not in "{api_version}"')
            return []
    elif group == KUEUE_CONFIG_GROUP:
        if version not in KUEUE_CONFIG_VERSIONS:
            known = ", ".join(f"{KUEUE_CONFIG_GROUP}/{v}" for v in KUEUE_CONFIG_VERSIONS)
            ctx.error(("apiVersion",), f'unknown Kueue configuration API version "{api_version}" (Tessera converts {known})')
            return []
        if kind == "Configuration":
            return [_convert_configuration(raw.data, version, ctx)]
    ctx.warn((), f"{api_version} {kind or '<no kind>'} {UNSUPPORTED}")
    return []


def _label(raw: RawObject) -> str:
    """How messages name the input object; Kueue's Configuration has no name, so just its kind."""
    if raw.kind == "Configuration" and not raw.name:
        return "Configuration"
    return raw.label


def _convert(raw: RawObject) -> tuple[list[_Output], list[Problem]]:
    ctx = _Ctx(str(raw.source), _label(raw))
    group = _group(raw.api_version)
    outputs: list[_Output] = []
    if _is_kueue_group(group):
        for data in _convert_kueue_raw(raw, ctx):
            outputs.append(_Output(data, raw.source, ctx.label, (), ctx.renames))
        return outputs, ctx.problems
    if raw.api_version == "v1" and raw.kind == "ConfigMap":
        embedded = _embedded_configurations(raw.data, ctx)
        if embedded is not None:
            for data, inner in embedded:
                outputs.append(_Output(data, raw.source, ctx.label, inner.prefix, inner.renames))
            return outputs, ctx.problems
    # Tessera's own objects, Jobs and everything else: only Kueue keys change.
    data = _convert_plain(raw.data, ctx) if raw.api_version != GROUP_VERSION else raw.data
    outputs.append(_Output(data, raw.source, ctx.label, (), ctx.renames))
    return outputs, ctx.problems


# --- mapping problems about the output back to the input --------------------------------------------


def _join(base: str, rest: str) -> str:
    if not base:
        return rest
    if not rest:
        return base
    return base + rest if rest.startswith("[") else f"{base}.{rest}"


def _input_path(path: str, output: _Output) -> str:
    """A field path of the converted object as the path of the same field in the input."""
    prefix = format_path(output.prefix)
    best: tuple[int, str] | None = None
    for out_loc, in_loc in output.renames:
        out_path = format_path(out_loc)
        if path == out_path or path.startswith(out_path + ".") or path.startswith(out_path + "["):
            if best is None or len(out_path) > best[0]:
                rest = path[len(out_path):]
                best = (len(out_path), _join(format_path(output.prefix + in_loc), rest.removeprefix(".")))
    if best is not None:
        return best[1]
    return _join(prefix, path)


def _to_input(problem: Problem, outputs: dict[tuple[str, str], _Output]) -> Problem:
    output = outputs.get((problem.where, problem.obj))
    if output is None:
        return problem
    return Problem(problem.where, output.in_label, _input_path(problem.path, output), problem.message, problem.severity)


def _validate(outputs: list[_Output], with_references: bool) -> list[Problem]:
    """Errors `tessera validate` would report on the converted objects, named by their input."""
    from quotas.validation import check_references

    bundle, found = build_bundle(o.raw() for o in outputs)
    if not with_references:
        references = set(check_references(bundle))
        found = [p for p in found if p not in references]
    by_label = {(str(o.source), o.out_label): o for o in outputs}
    # Warnings about the output (kinds Tessera does not read, Jobs without a queue) are not
    # about the conversion: Namespaces, ConfigMaps and unqueued Jobs pass through on purpose.
    return [_to_input(p, by_label) for p in found if p.is_error]


# --- public API --------------------------------------------------------------------------------------


def convert_object(raw: RawObject) -> tuple[list[dict[str, Any]], list[Problem]]:
    """One manifest as Tessera manifests (none, one, or several) with the problems found.

    Warnings name what was dropped; errors what cannot be converted or what Tessera's models
    refuse in the result. References to other objects are not checked here (see `convert_paths`).
    """
    outputs, problems = _convert(raw)
    problems = problems + _validate(outputs, with_references=False)
    return [o.data for o in outputs], problems


def convert_raws(raws: Iterable[RawObject]) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Convert a set of manifests together and validate the result as one bundle, references included."""
    outputs: list[_Output] = []
    problems: list[Problem] = []
    for raw in raws:
        found, more = _convert(raw)
        outputs.extend(found)
        problems.extend(more)
    problems.extend(_validate(outputs, with_references=True))
    return [o.data for o in outputs], problems


def convert_paths(paths: Iterable[str | Path]) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Every manifest under the given files and folders, converted; the result passes `tessera validate`
    exactly when no problem returned is an error."""
    raws, problems = load_paths(paths)
    objects, more = convert_raws(raws)
    return objects, problems + more


# --- writing ------------------------------------------------------------------------------------------

_TOP_ORDER = ("apiVersion", "kind", "metadata", "spec")
_META_ORDER = ("name", "generateName", "namespace", "labels", "annotations")


def _ordered(data: dict[str, Any], first: tuple[str, ...]) -> dict[str, Any]:
    out = {key: data[key] for key in first if key in data}
    out.update((key, value) for key, value in data.items() if key not in out)
    return out


def _manifest(obj: dict[str, Any]) -> dict[str, Any]:
    out = _ordered(obj, _TOP_ORDER)
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = _ordered(out["metadata"], _META_ORDER)
    return out


class _Dumper(yaml.SafeDumper):
    """Block style, keys in the order given, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_manifests(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML, each document starting with `---`, keys apiVersion, kind, metadata, spec first."""
    if not objects:
        return ""
    return yaml.dump_all(
        [_manifest(obj) for obj in objects],
        Dumper=_Dumper,
        sort_keys=False,
        explicit_start=True,
        default_flow_style=False,
        allow_unicode=True,
        width=120,
    )

