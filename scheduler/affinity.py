"""Node selection constraints of a pod template: nodeSelector, required node affinity, tolerations.

Pod templates keep `affinity` as a raw dict (quotas.kube.PodSpec), so it is parsed here
once into small frozen objects, with kube-scheduler's semantics (NodeAffinity filter):
``nodeSelectorTerms`` are ORed, the expressions of one term ANDed; a term with nothing in
it matches no node; operators In, NotIn, Exists, DoesNotExist, Gt, Lt on labels and In/NotIn
on the field ``metadata.name``. Preferred affinity only scores, so it is not kept.

`NodeConstraints` is hashable: placement and the topology code cache per-node feasibility
by it, since labels and taints do not change while pods are bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quotas.kube import Taint, Toleration, tolerates_all

__all__ = [
    "NodeConstraints",
    "NodeSelectorRequirement",
    "NodeSelectorTerm",
    "parse_required_terms",
    "toleration_key",
]

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")


@dataclass(frozen=True)
class NodeSelectorRequirement:
    """One ``matchExpressions`` (or ``matchFields``) entry."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        present = self.key in labels
        if op == "In":
            return present and labels[self.key] in self.values
        if op == "NotIn":
            return not present or labels[self.key] not in self.values
        if op == "Exists":
            return present
        if op == "DoesNotExist":
            return not present
        if op in ("Gt", "Lt"):
            if not present or len(self.values) != 1:
                return False
            try:
                have, bound = int(labels[self.key]), int(self.values[0])
            except ValueError:
                return False
            return have > bound if op == "Gt" else have < bound
        return False

    def describe(self) -> str:
        if self.operator in ("Exists", "DoesNotExist"):
            return f"{self.key} {self.operator}"
        return f"{self.key} {self.operator} ({', '.join(self.values)})"


@dataclass(frozen=True)
class NodeSelectorTerm:
    """Expressions ANDed; ``match_fields`` apply to ``metadata.name``."""

    match_expressions: tuple[NodeSelectorRequirement, ...] = ()
    match_fields: tuple[NodeSelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str], node_name: str = "") -> bool:
        if not self.match_expressions and not self.match_fields:
            return False  # kube: an empty term selects no node
        if not all(req.matches(labels) for req in self.match_expressions):
            return False
        fields = {"metadata.name": node_name}
        return all(req.matches(fields) for req in self.match_fields)

    def restricted_to(self, keys: Iterable[str]) -> NodeSelectorTerm:
        """The term with only the label expressions on ``keys`` (fields dropped), as Kueue's flavor check does."""
        allowed = set(keys)
        return NodeSelectorTerm(tuple(r for r in self.match_expressions if r.key in allowed))


def _requirement(raw: Any, path: str, fields: bool) -> NodeSelectorRequirement:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: must be an object")
    key, op = raw.get("key"), raw.get("operator")
    values = raw.get("values") or []
    if not isinstance(key, str) or not key:
        raise ValueError(f"{path}.key: required")
    if op not in _OPERATORS or (fields and op not in ("In", "NotIn")):
        allowed = "In, NotIn" if fields else ", ".join(_OPERATORS)
        raise ValueError(f"{path}.operator: must be one of {allowed}, got {op!r}")
    if fields and key != "metadata.name":
        raise ValueError(f"{path}.key: only metadata.name is supported in matchFields, got {key!r}")
    if not isinstance(values, list) or not all(isinstance(v, (str, int)) for v in values):
        raise ValueError(f"{path}.values: must be a list of strings")
    vals = tuple(str(v) for v in values)
    if op in ("In", "NotIn") and not vals:
        raise ValueError(f"{path}.values: must be non-empty for operator {op}")
    if op in ("Exists", "DoesNotExist") and vals:
        raise ValueError(f"{path}.values: must be empty for operator {op}")
    if op in ("Gt", "Lt"):
        if len(vals) != 1:
            raise ValueError(f"{path}.values: operator {op} takes exactly one integer value")
        try:
            int(vals[0])
        except ValueError:
            raise ValueError(f"{path}.values: operator {op} takes an integer, got {vals[0]!r}") from None
    return NodeSelectorRequirement(key, op, vals)


def parse_required_terms(affinity: Mapping[str, Any] | None, path: str = "spec.affinity") -> tuple[NodeSelectorTerm, ...] | None:
    """The required node-affinity terms of a pod spec's raw ``affinity``; None when there are none.

    An empty ``nodeSelectorTerms`` list yields ``()``, which matches no node (as in Kubernetes).
    Raises ValueError naming the field on malformed input.
    """
    if not affinity:
        return None
    node_affinity = affinity.get("nodeAffinity") or affinity.get("node_affinity")
    if not node_affinity:
        return None
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return None
    base = f"{path}.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
    raw_terms = required.get("nodeSelectorTerms") if isinstance(required, Mapping) else None
    if not isinstance(raw_terms, list):
        raise ValueError(f"{base}: must be a list")
    terms = []
    for i, raw in enumerate(raw_terms):
        if not isinstance(raw, Mapping):
            raise ValueError(f"{base}[{i}]: must be an object")
        exprs = tuple(
            _requirement(r, f"{base}[{i}].matchExpressions[{j}]", False) for j, r in enumerate(raw.get("matchExpressions") or [])
        )
        flds = tuple(_requirement(r, f"{base}[{i}].matchFields[{j}]", True) for j, r in enumerate(raw.get("matchFields") or []))
        terms.append(NodeSelectorTerm(exprs, flds))
    return tuple(terms)


def toleration_key(t: Toleration) -> tuple[Any, ...]:
    """A hashable identity for a (pydantic, unhashable) Toleration."""
    return (t.key, t.operator, t.value, t.effect)


@dataclass(frozen=True)
class NodeConstraints:
    """Where a pod may run by labels and taints (not by free resources)."""

    node_selector: tuple[tuple[str, str], ...] = ()
    required_terms: tuple[NodeSelectorTerm, ...] | None = None
    tolerations: tuple[Toleration, ...] = field(default=(), compare=False, hash=False)
    _toleration_keys: tuple[tuple[Any, ...], ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_selector", tuple(sorted(self.node_selector)))
        object.__setattr__(self, "_toleration_keys", tuple(toleration_key(t) for t in self.tolerations))

    @classmethod
    def build(
        cls,
        node_selector: Mapping[str, str] | None = None,
        affinity: Mapping[str, Any] | None = None,
        tolerations: Sequence[Toleration] = (),
        path: str = "spec",
    ) -> NodeConstraints:
        return cls(
            tuple((node_selector or {}).items()),
            parse_required_terms(affinity, f"{path}.affinity"),
            tuple(tolerations),
        )

    def with_tolerations(self, more: Sequence[Toleration]) -> NodeConstraints:
        if not more:
            return self
        return NodeConstraints(self.node_selector, self.required_terms, self.tolerations + tuple(more))

    def with_selector(self, labels: Mapping[str, str]) -> NodeConstraints:
        """Add labels to the nodeSelector (Kueue injects the admitted flavor's nodeLabels this way)."""
        if not labels:
            return self
        merged = dict(self.node_selector)
        merged.update(labels)
        return NodeConstraints(tuple(merged.items()), self.required_terms, self.tolerations)

    @property
    def unconstrained(self) -> bool:
        return not self.node_selector and self.required_terms is None and not self.tolerations

    def matches_labels(self, labels: Mapping[str, str], node_name: str = "") -> bool:
        """nodeSelector and required node affinity against a node's labels (and name)."""
        for key, value in self.node_selector:
            if labels.get(key) != value:
                return False
        if self.required_terms is None:
            return True
        return any(term.matches(labels, node_name) for term in self.required_terms)

    def tolerates(self, taints: Sequence[Taint]) -> bool:
        """TaintToleration filter: every NoSchedule/NoExecute taint tolerated."""
        return not taints or tolerates_all(list(self.tolerations), list(taints))

    def untolerated(self, taints: Sequence[Taint]) -> Taint | None:
        """The first taint that blocks placement, for messages."""
        for taint in taints:
            if taint.effect == "PreferNoSchedule":
                continue
            if not any(t.tolerates(taint) for t in self.tolerations):
                return taint
        return None
