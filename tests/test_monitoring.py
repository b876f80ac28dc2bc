"""deploy/monitoring: the ServiceMonitor, the alerts and the Grafana dashboard.

What the operator exports is not written down here: it is read off a fresh
`admission.metrics.Metrics` registry after the operator's own code paths have observed a
sample of every metric (a real scheduling cycle of the `tessera` and `kueue` policies, an
admission, both kinds of eviction, the leader flag), so the `_bucket`, `_count`, `_sum` and
`_total` names come from prometheus-client itself. Every PromQL expression of the alerts
and of the dashboard may only name those samples, with their labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from ortools.sat.python import cp_model
from prometheus_client import CollectorRegistry

from admission import workloads as wl
from admission.metrics import Metrics
from quotas.api import ClusterQueue, Configuration, LocalQueue, ResourceFlavor
from quotas.duration import parse_duration
from quotas.preemption import PreemptionReason
from scheduler.cluster import GPU_RESOURCE, Cluster, PodRequest
from scheduler.decisions import make_policy, policy_names
from scheduler.snapshot import Pending, build_snapshot
from scheduler.workload import PodSetInfo, WorkloadInfo

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "deploy" / "monitoring"
METRICS_DOC = REPO / "docs" / "metrics.md"

# Labels Prometheus puts on every scraped series itself (job, instance) and those the
# Prometheus Operator adds for a ServiceMonitor target; the operator does not export them.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint", "container"})

# The metrics Service contract stated in servicemonitor.yaml (the operator's manifests must match it).
SERVICE_NAMESPACE = "tessera-system"
SERVICE_LABELS = {"app.kubernetes.io/name": "tessera", "app.kubernetes.io/component": "controller"}
SEVERITIES = {"critical", "warning", "info"}

G = 1000


# --- what the operator exports ---------------------------------------------------------------------


@dataclass
class Exported:
    labels: dict[str, set[str]] = field(default_factory=dict)
    """Sample name -> label names (prometheus-client's own: `le` on `_bucket` only)."""
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    """(sample name, label) -> values the code produced."""
    family_of: dict[str, str] = field(default_factory=dict)
    """Sample name -> family name."""
    types: dict[str, str] = field(default_factory=dict)
    """Family name -> counter, gauge, histogram."""

    @property
    def families(self) -> set[str]:
        return set(self.types)

    def monotonic(self, sample: str) -> bool:
        """A counter's total or a histogram's bucket/count/sum: what rate() and increase() take."""
        if sample.endswith("_created"):
            return False
        return self.types.get(self.family_of.get(sample, ""), "") in ("counter", "histogram")


def _node(name: str) -> Any:
    return Cluster.make_node(name, {"cpu": 64 * G, "memory": 512 * 2**30 * G, GPU_RESOURCE: 8 * G, "pods": 110 * G},
                             {"kubernetes.io/hostname": name})


def _workload(name: str, gpus: int, queue: str = "lq") -> WorkloadInfo:
    pod = PodRequest.of({"cpu": G, "memory": 2**30 * G, GPU_RESOURCE: gpus * G})
    return WorkloadInfo("default", name, queue, (PodSetInfo("main", 1, pod),))


def _snapshot(time_limit: float) -> Any:
    """A small real cycle: one ClusterQueue of 16 GPUs, three 8/8/4-GPU workloads, one in requeue
    backoff and one naming a LocalQueue that does not exist."""
    flavor = ResourceFlavor.model_validate({"metadata": {"name": "gpu"}, "spec": {}})
    queue = ClusterQueue.model_validate({"metadata": {"name": "cq"}, "spec": {
        "namespaceSelector": {},
        "resourceGroups": [{"coveredResources": ["cpu", "memory", GPU_RESOURCE], "flavors": [{"name": "gpu", "resources": [
            {"name": "cpu", "nominalQuota": 1000}, {"name": "memory", "nominalQuota": "64Ti"},
            {"name": GPU_RESOURCE, "nominalQuota": 16}]}]}],
    }})
    local = LocalQueue.model_validate({"metadata": {"name": "lq", "namespace": "default"}, "spec": {"clusterQueue": "cq"}})
    pending = [Pending(_workload("a", 8), 0.0), Pending(_workload("b", 8), 0.0), Pending(_workload("c", 4), 0.0),
               Pending(_workload("later", 1), 0.0, requeue_count=1, not_before=1e9),
               Pending(_workload("lost", 1, queue="no-such-queue"), 0.0)]
    return build_snapshot(now=100.0, cluster=Cluster([_node("n1"), _node("n2")]), cluster_queues=[queue], cohorts=[],
                          flavors=[flavor], local_queues=[local], pending=pending,
                          config=Configuration.model_validate({"solver": {"timeLimit": time_limit, "workers": 1}}))


@pytest.fixture(scope="module")
def exported() -> Exported:
    metrics = Metrics(CollectorRegistry())
    # Scheduling cycles as the operator runs them: the policy's decisions, then the gauges.
    for policy, time_limit in (("tessera", 2.0), ("tessera", 0.0), ("kueue", 2.0)):
        snapshot = _snapshot(time_limit)
        metrics.observe_decisions(make_policy(policy).schedule(snapshot))
        metrics.observe_cycle(snapshot)
    metrics.observe_admission("cq", 12.0)
    metrics.observe_eviction("cq", wl.EVICTED_BY_PODS_READY_TIMEOUT)
    for reason in PreemptionReason:
        metrics.observe_eviction("cq", wl.EVICTED_BY_PREEMPTION, reason.value)
    metrics.leader.set(1)

    out = Exported()
    for family in metrics.registry.collect():
        out.types[family.name] = family.type
        assert family.samples, f"{family.name}: no sample observed; make this fixture exercise it"
        for sample in family.samples:
            out.labels.setdefault(sample.name, set()).update(sample.labels)
            out.family_of[sample.name] = family.name
            for label, value in sample.labels.items():
                out.values.setdefault((sample.name, label), set()).add(value)
    return out


def test_exported_names_come_from_prometheus_client(exported: Exported) -> None:
    # The suffixes are prometheus-client's: a histogram has _bucket (with le), _count and _sum.
    assert exported.labels["tessera_admission_wait_time_seconds_bucket"] == {"cluster_queue", "le"}
    assert "tessera_admission_wait_time_seconds_count" in exported.labels
    assert "tessera_admission_wait_time_seconds" not in exported.labels
    assert "tessera_admitted_workloads_total" in exported.labels
    statuses = exported.values[("tessera_solver_outcomes_total", "status")]
    assert "NOT_SOLVED (no time left): greedy fallback" in statuses, statuses
    assert any(s.startswith(("OPTIMAL", "FEASIBLE")) for s in statuses), statuses
    assert {"KeepGoing", "SlowDown"} & statuses, statuses


# --- a small PromQL reader ----------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r"\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*\"(\d+)\"\s*")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?[\w$]+")
_NUMBER = re.compile(r"(?<![\w:.])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w:])")
_IDENT = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset({
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
    "inf", "nan", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio",
})


@dataclass
class Matcher:
    metric: str
    label: str
    op: str
    value: str


@dataclass
class Grouping:
    keyword: str
    labels: list[str]
    scope: list[str]
    """Metrics the clause applies to: the aggregation's argument (by, without) or the whole expression."""


@dataclass
class Query:
    expr: str
    metrics: list[str]
    matchers: list[Matcher]
    groupings: list[Grouping]
    calls: dict[str, list[list[str]]]
    """Function name -> metrics inside each call's argument (rate, increase, histogram_quantile, ...)."""


def _balanced(text: str, open_at: int) -> int:
    """Index of the parenthesis closing the one at `open_at`."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses in {text!r}")


def _opening(text: str, close_at: int) -> int:
    depth = 0
    for i in range(close_at, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced parentheses in {text!r}")


def _metric_names(text: str) -> list[str]:
    """Identifiers that are metric names: not functions or aggregations (followed by "("), not keywords."""
    text = _NUMBER.sub(" ", _GROUPING.sub(" ", text))
    names = []
    for m in _IDENT.finditer(text):
        rest = text[m.end():].lstrip()
        if m.group() in _KEYWORDS or rest.startswith("("):
            continue
        names.append(m.group())
    return names


def parse_promql(expr: str) -> Query:
    strings: list[str] = []

    def keep(m: re.Match[str]) -> str:
        strings.append(m.group()[1:-1])
        return f'"{len(strings) - 1}"'

    text = _STRING.sub(keep, expr)
    matchers: list[Matcher] = []
    for sel in _SELECTOR.finditer(text):
        metric = sel.group(1)
        assert metric and metric not in _KEYWORDS, f"selector without a metric name in {expr!r}"
        body = sel.group(2).strip().rstrip(",")
        for part in filter(None, (p.strip() for p in body.split(","))):
            m = _MATCHER.fullmatch(part)
            assert m, f"cannot read label matcher {part!r} in {expr!r}"
            matchers.append(Matcher(metric, m.group(1), m.group(2), strings[int(m.group(3))]))
    text = _SELECTOR.sub(lambda m: m.group(1) or "", text)
    text = _OFFSET.sub(" ", _RANGE.sub(" ", text))
    assert not re.search(r'["{}\[\]$]', text), f"unexpected characters left in {expr!r}: {text!r}"

    everything = _metric_names(text)
    groupings = []
    for g in _GROUPING.finditer(text):
        labels = [x.strip() for x in g.group(2).split(",") if x.strip()]
        scope = everything
        if g.group(1) in ("by", "without"):
            after = g.end() + len(text[g.end():]) - len(text[g.end():].lstrip())
            if after < len(text) and text[after] == "(":  # sum by (x) (argument)
                scope = _metric_names(text[after:_balanced(text, after) + 1])
            else:  # sum (argument) by (x)
                before = len(text[:g.start()].rstrip()) - 1
                assert text[before] == ")", f"cannot find the argument of {g.group()!r} in {expr!r}"
                scope = _metric_names(text[_opening(text, before):before + 1])
        groupings.append(Grouping(g.group(1), labels, scope))

    calls: dict[str, list[list[str]]] = {}
    for call in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", text):
        if call.group(1) in _KEYWORDS:
            continue
        start = call.end() - 1
        calls.setdefault(call.group(1), []).append(_metric_names(text[start:_balanced(text, start) + 1]))
    return Query(expr, everything, matchers, groupings, calls)


def problems(query: Query, exported: Exported) -> list[str]:
    """Everything in one expression that the operator does not export."""
    out = []
    if not query.metrics:
        out.append("names no metric")
    for name in query.metrics:
        if name not in exported.labels:
            out.append(f"metric {name} is not exported")
    known = set().union(*(exported.labels.get(m, set()) for m in query.metrics)) | TARGET_LABELS
    for m in query.matchers:
        if m.metric in exported.labels and m.label not in exported.labels[m.metric] | TARGET_LABELS:
            out.append(f"{m.metric} has no label {m.label}")
    for g in query.groupings:
        allowed = set().union(*(exported.labels.get(m, set()) for m in g.scope)) | TARGET_LABELS
        for label in g.labels:
            if label not in (allowed if g.keyword in ("by", "without") else known):
                out.append(f"{g.keyword} ({label}): no metric in {sorted(set(g.scope))} has label {label}")
    for fn in ("rate", "irate", "increase"):
        for inside in query.calls.get(fn, []):
            for name in inside:
                if name in exported.labels and not exported.monotonic(name):
                    out.append(f"{fn}() over {name}, which is not a counter or histogram sample")
    for inside in query.calls.get("histogram_quantile", []):
        if not inside or not all(name.endswith("_bucket") for name in inside):
            out.append(f"histogram_quantile() over {inside}, not _bucket series")
    return out


def test_promql_reader_finds_metrics_labels_and_scopes() -> None:
    q = parse_promql(
        'histogram_quantile(0.9, sum by (cluster_queue, le) (rate(a_bucket{x="1", y=~"$v|b"}[$__rate_interval])))'
        " > 3600 and on (instance) (sum(b_total) by (z) == 1) unless c offset 1h"
    )
    assert q.metrics == ["a_bucket", "b_total", "c"]
    assert [(m.metric, m.label, m.op, m.value) for m in q.matchers] == [("a_bucket", "x", "=", "1"), ("a_bucket", "y", "=~", "$v|b")]
    assert [(g.keyword, g.labels, g.scope) for g in q.groupings] == [
        ("by", ["cluster_queue", "le"], ["a_bucket"]), ("on", ["instance"], ["a_bucket", "b_total", "c"]),
        ("by", ["z"], ["b_total"])]
    assert q.calls["rate"] == [["a_bucket"]] and q.calls["histogram_quantile"] == [["a_bucket"]]


# --- the files --------------------------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((MONITORING / "kustomization.yaml").read_text())


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MONITORING / name).read_text()) if d]


def _one(kind: str) -> dict[str, Any]:
    found = [d for name in _kustomization()["resources"] for d in _documents(name) if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/monitoring, found {len(found)}"
    return found[0]


def _dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "tessera-dashboard.json").read_text())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _one("PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _panels() -> list[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels") or [])

    return list(walk(_dashboard()["panels"]))


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every rule and every dashboard target."""
    out = [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in _rules()]
    for panel in _panels():
        for target in panel.get("targets") or []:
            out.append((f"panel {panel['id']} {panel['title']!r} target {target.get('refId')}", target["expr"]))
    return out


def test_every_file_parses_and_the_kustomization_lists_exactly_the_files() -> None:
    kustomization = _kustomization()
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = list(kustomization.get("resources") or [])
    [generator] = kustomization["configMapGenerator"]
    listed += [entry.split("=", 1)[-1] for entry in generator["files"]]
    for name in listed:
        assert (MONITORING / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    present = {p.name for p in MONITORING.iterdir() if p.suffix in (".yaml", ".yml", ".json")} - {"kustomization.yaml"}
    assert present == set(listed), f"files not in kustomization.yaml: {sorted(present - set(listed))}"
    for name in kustomization["resources"]:
        for doc in _documents(name):
            assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["metadata"]["name"]
    assert isinstance(_dashboard(), dict)


def test_dashboard_configmap_is_generated_for_the_grafana_sidecar() -> None:
    kustomization = _kustomization()
    assert kustomization["namespace"] == SERVICE_NAMESPACE
    [generator] = kustomization["configMapGenerator"]
    assert generator["files"] == ["tessera-dashboard.json"]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"
    assert generator["options"]["disableNameSuffixHash"] is True


def test_service_monitor_scrapes_the_metrics_service_contract() -> None:
    monitor = _one("ServiceMonitor")
    assert monitor["metadata"]["namespace"] == SERVICE_NAMESPACE
    spec = monitor["spec"]
    assert spec["selector"] == {"matchLabels": SERVICE_LABELS}
    assert spec["namespaceSelector"] == {"matchNames": [SERVICE_NAMESPACE]}
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert parse_duration(endpoint["scrapeTimeout"]) < parse_duration(endpoint["interval"])
    text = (MONITORING / "servicemonitor.yaml").read_text()
    for key, value in SERVICE_LABELS.items():
        assert f"{key}: {value}" in text.split("apiVersion:")[0], "the contract comment must name the Service labels"



def _operator_objects() -> list[dict[str, Any]]:
    """Every object of the operator's own manifests (deploy/, without the CRDs, samples and this component)."""
    out = []
    for path in sorted((REPO / "deploy").rglob("*.yaml")):
        if {"monitoring", "samples", "crds"} & set(path.relative_to(REPO / "deploy").parts):
            continue
        out.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and d.get("kind"))
    return out


def test_operator_manifests_provide_the_metrics_service_the_monitor_selects() -> None:
    objects = _operator_objects()
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"].get("namespace") == SERVICE_NAMESPACE
                and SERVICE_LABELS.items() <= (o["metadata"].get("labels") or {}).items()]
    assert len(services) == 1, f"expected one Service labelled {SERVICE_LABELS} in {SERVICE_NAMESPACE}, found {len(services)}"
    [service] = services
    [port] = [p for p in service["spec"]["ports"] if p.get("name") == "metrics"]
    selector = service["spec"]["selector"]
    pods = [o["spec"]["template"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")
            and selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()]
    assert pods, f"no Deployment's pods match the metrics Service's selector {selector}"
    for template in pods:
        [container] = [c for c in template["spec"]["containers"] if any(p.get("name") == port["targetPort"]
                                                                        for p in c.get("ports") or [])]
        [container_port] = [p["containerPort"] for p in container["ports"] if p["name"] == port["targetPort"]]
        flags = [a.split("=", 1)[1] for a in container.get("args") or [] if a.startswith("--metrics-port=")]
        assert flags == [str(container_port)], f"--metrics-port {flags} does not match containerPort {container_port}"


# --- expressions against the export -----------------------------------------------------------------


@pytest.mark.parametrize("where, expr", _expressions(), ids=[w for w, _ in _expressions()])
def test_expression_uses_only_exported_metrics_and_labels(where: str, expr: str, exported: Exported) -> None:
    assert problems(parse_promql(expr), exported) == []


def test_label_values_in_selectors_are_values_the_operator_produces(exported: Exported) -> None:
    enumerations = {
        ("tessera_evicted_workloads_total", "reason"): {wl.EVICTED_BY_PREEMPTION, wl.EVICTED_BY_PODS_READY_TIMEOUT},
        ("tessera_preempted_workloads_total", "reason"): {r.value for r in PreemptionReason},
        ("tessera_scheduling_cycle_seconds_count", "policy"): set(policy_names()),
        ("tessera_scheduling_cycle_seconds_bucket", "policy"): set(policy_names()),
        # CP-SAT's status names, which the tessera policy's statuses start with
        ("tessera_solver_outcomes_total", "status"): exported.values[("tessera_solver_outcomes_total", "status")]
        | {cp_model.CpSolver().status_name(s) for s in (cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.UNKNOWN,
                                                          cp_model.INFEASIBLE, cp_model.MODEL_INVALID)},
    }
    checked = 0
    for where, expr in _expressions():
        for m in parse_promql(expr).matchers:
            if "$" in m.value or m.label in TARGET_LABELS:
                continue  # Grafana variables; labels Prometheus adds
            seen = exported.values.get((m.metric, m.label), set())
            allowed = enumerations.get((m.metric, m.label), seen) | ({""} if m.label == "cluster_queue" else set())
            if m.op in ("=", "!="):
                assert m.value in allowed, f"{where}: {m.metric}{{{m.label}{m.op}{m.value!r}}}: not one of {sorted(allowed)}"
            else:
                assert any(re.fullmatch(m.value, v) for v in allowed | seen), \
                    f"{where}: {m.metric}{{{m.label}{m.op}{m.value!r}}} matches no value the operator produces"
            checked += 1
    assert checked >= 5


def test_solver_alert_regexes_match_the_statuses_the_solver_reports(exported: Exported) -> None:
    statuses = exported.values[("tessera_solver_outcomes_total", "status")]
    fallback = next(a for a in _alerts() if a["alert"] == "TesseraSolverFallingBack")
    limit = next(a for a in _alerts() if a["alert"] == "TesseraSolverHittingTimeLimit")
    [fallback_regex] = [m.value for m in parse_promql(fallback["expr"]).matchers if m.label == "status"]
    [limit_regex] = [m.value for m in parse_promql(limit["expr"]).matchers if m.label == "status"]
    real_fallback = "NOT_SOLVED (no time left): greedy fallback"
    assert real_fallback in statuses
    assert re.fullmatch(fallback_regex, real_fallback)
    assert re.fullmatch(fallback_regex, "UNKNOWN: greedy fallback")
    assert not re.fullmatch(fallback_regex, "OPTIMAL") and not re.fullmatch(fallback_regex, "KeepGoing")
    solver = cp_model.CpSolver()
    for status in (cp_model.FEASIBLE, cp_model.UNKNOWN):
        assert re.fullmatch(limit_regex, solver.status_name(status))
        assert re.fullmatch(limit_regex, f"{solver.status_name(status)} (1 of 2 components unsolved)")
    assert not re.fullmatch(limit_regex, solver.status_name(cp_model.OPTIMAL))
    # the denominator of both alerts counts the tessera policy's cycles
    assert "tessera" in exported.values[("tessera_scheduling_cycle_seconds_count", "policy")]


def test_reader_catches_misspelled_metrics_and_labels(exported: Exported) -> None:
    """The checks above would fail on a typo: misspell each expression's first metric and first label."""
    for where, expr in _expressions():
        query = parse_promql(expr)
        name = query.metrics[0]
        typo = re.sub(rf"\b{re.escape(name)}\b", name.replace("tessera_", "tesera_", 1), expr, count=1)
        assert any("is not exported" in p for p in problems(parse_promql(typo), exported)), where
        labels = [g.labels[0] for g in query.groupings if g.labels] + [m.label for m in query.matchers]
        if labels:
            wrong = re.sub(rf"\b{re.escape(labels[0])}\b", labels[0] + "_x", expr, count=1)
            assert problems(parse_promql(wrong), exported), where
    assert problems(parse_promql("rate(tessera_pending_workloads[5m])"), exported)
    assert problems(parse_promql("histogram_quantile(0.9, tessera_admission_wait_time_seconds_sum)"), exported)
    assert problems(parse_promql("tessera_admission_wait_time_seconds"), exported)


# --- the alerts ---------------------------------------------------------------------------------------


def test_alerts_have_severity_summary_and_description() -> None:
    rule = _one("PrometheusRule")
    assert rule["metadata"]["namespace"] == SERVICE_NAMESPACE
    names = [a["alert"] for a in _alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for alert in _alerts():
        assert alert["labels"]["severity"] in SEVERITIES, alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert alert["annotations"]["description"].strip(), alert["alert"]
        if "for" in alert:
            assert parse_duration(alert["for"]) > 0, alert["alert"]


def test_alert_templates_name_labels_of_their_expression(exported: Exported) -> None:
    for alert in _alerts():
        query = parse_promql(alert["expr"])
        available = set().union(*(exported.labels[m] for m in query.metrics)) | TARGET_LABELS
        grouped = [g for g in query.groupings if g.keyword == "by"]
        if grouped:  # an aggregation keeps only its by-labels
            available = set(grouped[0].labels)
        elif re.match(r"\W*(sum|min|max|avg|count)\s*\(", alert["expr"]):
            available = set()  # an aggregation without by keeps no label
        for text in alert["annotations"].values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in available, f"{alert['alert']}: $labels.{label} is not a label of its result"


def test_required_alerts_watch_the_right_metrics() -> None:
    by_name = {a["alert"]: parse_promql(a["expr"]) for a in _alerts()}
    wants = {
        "TesseraClusterQueueStalled": {"tessera_pending_workloads", "tessera_admitted_workloads_total"},
        "TesseraAdmissionWaitHigh": {"tessera_admission_wait_time_seconds_bucket"},
        "TesseraSolverFallingBack": {"tessera_solver_outcomes_total"},
        "TesseraSolverHittingTimeLimit": {"tessera_solver_outcomes_total"},
        "TesseraPodsReadyTimeoutEvictions": {"tessera_evicted_workloads_total"},
        "TesseraClusterQueueAboveNominalQuota": {"tessera_cluster_queue_resource_usage", "tessera_cluster_queue_nominal_quota"},
        "TesseraNoLeader": {"tessera_leader"},
    }
    for name, metrics in wants.items():
        assert name in by_name, f"missing alert {name}"
        assert metrics <= set(by_name[name].metrics), name
    evictions = by_name["TesseraPodsReadyTimeoutEvictions"].matchers
    assert {(m.label, m.value) for m in evictions} == {("reason", wl.EVICTED_BY_PODS_READY_TIMEOUT)}


def test_gauge_expressions_read_the_leader() -> None:
    """Followers keep stale gauges: every gauge of the queues (all but tessera_leader) is filtered to the leader."""
    gauges = {"tessera_pending_workloads", "tessera_cluster_queue_resource_usage", "tessera_cluster_queue_nominal_quota",
              "tessera_cluster_queue_weighted_share", "tessera_gpu_allocation_ratio"}
    for where, expr in _expressions():
        query = parse_promql(expr)
        if gauges & set(query.metrics):
            assert "tessera_leader" in query.metrics and any(g.keyword == "on" and g.labels == ["instance"]
                                                              for g in query.groupings), where


# --- the dashboard ------------------------------------------------------------------------------------


def test_dashboard_panels_have_unique_ids_targets_and_the_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = _panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['id']} {panel['title']!r} has no target"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in targets:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _panels():
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_dashboard_variables_query_exported_labels(exported: Exported) -> None:
    queries = [v for v in _dashboard()["templating"]["list"] if v["type"] == "query"]
    assert queries
    for variable in queries:
        assert variable["datasource"]["uid"] == "${datasource}"
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert m, query
        assert m.group(1) in exported.labels and m.group(2) in exported.labels[m.group(1)], query
        assert m.group(2) == variable["name"]


def test_dashboard_shows_every_exported_metric_and_the_wait_quantiles(exported: Exported) -> None:
    dashboard_used = {exported.family_of[n] for p in _panels() for t in p.get("targets") or []
                      for n in parse_promql(t["expr"]).metrics if n in exported.family_of}
    assert dashboard_used == exported.families, f"not on the dashboard: {sorted(exported.families - dashboard_used)}"
    quantiles = set()
    for panel in _panels():
        for target in panel.get("targets") or []:
            m = re.match(r"histogram_quantile\((0\.\d+),.*tessera_admission_wait_time_seconds_bucket", target["expr"])
            if m:
                quantiles.add(m.group(1))
    assert {"0.5", "0.9", "0.99"} <= quantiles


# --- the reference page -------------------------------------------------------------------------------


def test_metrics_reference_names_every_metric_alert_and_panel(exported: Exported) -> None:
    text = METRICS_DOC.read_text()
    for family in sorted(exported.families):
        shown = family + "_total" if exported.types[family] == "counter" else family
        assert f"`{shown}`" in text, f"docs/metrics.md does not describe {shown}"
    for alert in _alerts():
        assert f"`{alert['alert']}`" in text, f"docs/metrics.md does not describe alert {alert['alert']}"
    for panel in _panels():
        assert panel["title"].split(" (")[0] in text, f"docs/metrics.md does not list panel {panel['title']!r}"
