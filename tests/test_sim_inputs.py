"""The simulator's workload loaders: Job manifests, jsonl, openb, philly, synthetic, and the built-in defaults.

Every loader is tested on small inline data (always), including malformed rows whose
messages must name the file and line; the real traces in ../shared/traces/ are tested
too where present (parametrized over the files that exist).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from quotas.base import dns1123_label_problem
from quotas.problems import ManifestError, errors_in
from scheduler.cluster import Cluster
from simulator.cluster_gen import GPU_MODEL_LABEL, HOSTNAME_LABEL, RACK_LABEL
from simulator.defaults import (
    DEFAULT_TEAMS,
    default_bundle,
    default_cluster_bundle,
    default_queue_manifests,
    default_queues_bundle,
    default_trace,
)
from simulator.openb import OPENB_QOS_PRIORITY, load_openb, openb_nodes
from simulator.philly import load_philly, sanitize_label
from simulator.synthetic import SyntheticSpec, generate_synthetic, parse_synthetic_spec
from simulator.trace import (
    SimJob,
    Trace,
    check_queues,
    gang_podsets,
    job_to_dict,
    load_job_manifests,
    load_jsonl,
    load_workload,
    write_jsonl,
)

TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
OPENB = TRACES / "openb"
PHILLY = TRACES / "philly" / "philly_pollux_processed.csv"
GPU = "nvidia.com/gpu"


def existing(*paths: Path) -> list[Path]:
    """Only the trace files present on this machine (parametrize over none when absent)."""
    return [p for p in paths if p.exists()]


def problems_of(exc: pytest.ExceptionInfo[ManifestError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- jsonl ------------------------------------------------------------------------------------

GOOD_JSONL = [
    {"name": "pretrain", "namespace": "team-a", "queue": "team-a", "submit_at": 10, "duration": 3600,
     "priority_class": "training", "gpus": 8, "pods": 4, "cpu": "16", "memory": "64Gi",
     "required_topology": RACK_LABEL},
    {"name": "serve", "queue": "default", "submit_at": 0, "duration": None, "type": "inference", "priority": 1000,
     "podsets": [{"name": "replicas", "count": 2, "min_count": 1, "requests": {GPU: "500m", "cpu": 2},
                  "node_selector": {"pool": "inference"},
                  "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                  "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                      "nodeSelectorTerms": [{"matchExpressions": [
                          {"key": GPU_MODEL_LABEL, "operator": "In", "values": ["H100", "A100"]}]}]}}}}]},
    {"name": "two-sets", "queue": "default", "duration": 60.5, "preferred_topology": RACK_LABEL,
     "gpus": 0.25},
]


def jsonl_text(records: list[object]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def test_jsonl_full_and_shorthand_forms(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", "# a comment\n\n" + jsonl_text(GOOD_JSONL))
    trace = load_jsonl(path, priority_classes={"training": 100})
    assert [j.name for j in trace] == ["serve", "two-sets", "pretrain"]  # submission order, ties in input order
    serve, small, pretrain = trace.jobs
    assert serve.duration is None and serve.workload.workload_type == "inference" and serve.workload.priority == 1000
    ps = serve.workload.podsets[0]
    assert (ps.name, ps.count, ps.min_count) == ("replicas", 2, 1)
    assert ps.requests.as_dict() == {GPU: 500, "cpu": 2000}
    assert ps.constraints.matches_labels({"pool": "inference", GPU_MODEL_LABEL: "A100"})
    assert not ps.constraints.matches_labels({"pool": "inference", GPU_MODEL_LABEL: "T4"})
    assert len(ps.constraints.tolerations) == 1
    assert pretrain.workload.key == "team-a/pretrain" and pretrain.queue == "team-a"
    assert pretrain.workload.priority == 100 and pretrain.workload.priority_class == "training"
    assert pretrain.submit_at == 10 and pretrain.workload.creation_time == 10 and pretrain.duration == 3600
    main = pretrain.workload.podsets[0]
    assert main.count == 4 and main.requests[GPU] == 8000 and main.requests["memory"] == 64 * 2**30 * 1000
    assert main.topology is not None and main.topology.required and main.topology.level == RACK_LABEL
    assert small.workload.podsets[0].requests[GPU] == 250 and small.workload.podsets[0].topology.mode == "preferred"
    assert pretrain.source == f"{path}:3"  # after a comment and a blank line
    assert pretrain.gpu_milli == 32000 and trace.gpu_milli() == 32000 + 1000 + 250


def test_jsonl_round_trip(tmp_path: Path) -> None:
    trace = load_jsonl(write(tmp_path, "t.jsonl", jsonl_text(GOOD_JSONL)), priority_classes={"training": 100})
    out = tmp_path / "out.jsonl"
    write_jsonl(trace, out)
    again = load_jsonl(out)  # explicit priorities are written: no classes needed to read back
    assert [job_to_dict(j) for j in again] == [job_to_dict(j) for j in trace]
    assert [(j.submit_at, j.duration) for j in again] == [(j.submit_at, j.duration) for j in trace]
    # and a synthetic trace survives the trip too
    synthetic = generate_synthetic(SyntheticSpec(jobs=60, seed=3))
    write_jsonl(synthetic, out)
    assert [job_to_dict(j) for j in load_jsonl(out)] == [job_to_dict(j) for j in synthetic]


def test_jsonl_reports_every_bad_line(tmp_path: Path) -> None:
    lines = [
        GOOD_JSONL[1],
        {"name": "no-duration", "queue": "q", "gpus": 1},
        "{not json",
        {"name": "Bad_Name", "queue": "q", "duration": 1, "gpus": 1},
        {"name": "odd", "queue": "q", "duration": 1, "gpus": 1.5, "pods": 0, "colour": "red"},
        {"name": "serve", "queue": "default", "duration": 5, "gpus": 1},
        {"name": "cls", "queue": "q", "duration": 5, "gpus": 1, "priority_class": "nope"},
        {"name": "neg", "queue": "q", "duration": -5, "submit_at": "soon", "gpus": 1},
        {"name": "mixed", "queue": "q", "duration": 5, "gpus": 1, "podsets": [{"requests": {GPU: 1}}]},
        {"name": "aff", "queue": "q", "duration": 5, "podsets": [{"requests": {"cpu": "x"}, "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "k", "operator": "Near"}]}]}}}}]},
        [1, 2],
    ]
    path = write(tmp_path, "bad.jsonl", jsonl_text(lines))
    with pytest.raises(ManifestError) as exc:
        load_jsonl(path, priority_classes={"training": 100})
    messages = problems_of(exc)
    text = "\n".join(messages)
    for line in range(2, 12):
        assert f"bad.jsonl:{line}:" in text, f"line {line} not reported:\n{text}"
    assert "bad.jsonl:1:" not in text
    assert f"{path}:2: job/no-duration: duration: required" in text
    assert f"{path}:3: invalid JSON" in text
    assert "bad.jsonl:5: job/odd: colour: unknown field" in text
    assert "bad.jsonl:5: job/odd: pods: must be at least 1" in text
    assert "bad.jsonl:5: job/odd: gpus: must be a share of one GPU" in text
    assert 'bad.jsonl:6: job/serve: name: duplicate of job "default/serve"' in text
    assert 'unknown WorkloadPriorityClass "nope" (known: training)' in text
    assert "bad.jsonl:8: job/neg: submit_at" in text and "bad.jsonl:8: job/neg: duration: must not be negative" in text
    assert "shorthand fields cannot be combined with podsets" in text
    assert "bad.jsonl:10: job/aff: podsets[0].requests.cpu" in text
    assert "matchExpressions[0].operator" in text
    assert "bad.jsonl:11: expected a JSON object" in text


def test_jsonl_queue_default_and_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "q.jsonl", jsonl_text([{"name": "a", "duration": 1, "gpus": 1}]))
    assert load_workload(f"jsonl:{path}", default_queue="shared").jobs[0].queue == "shared"
    with pytest.raises(ManifestError, match="holds no jobs"):
        load_jsonl(write(tmp_path, "empty.jsonl", "\n# nothing\n"))
    with pytest.raises(ManifestError, match="cannot read"):
        load_jsonl(tmp_path / "missing.jsonl")


# --- Job manifests ----------------------------------------------------------------------------

JOBS_YAML = f"""\
apiVersion: tessera.dev/v1alpha1
kind: WorkloadPriorityClass
metadata: {{name: urgent}}
value: 500
---
apiVersion: batch/v1
kind: Job
metadata:
  name: train
  namespace: team-a
  labels: {{tessera.dev/queue-name: team-a, tessera.dev/priority-class: urgent}}
  annotations: {{tessera.dev/sim-submit-at: "30", tessera.dev/sim-duration: "3600"}}
spec:
  parallelism: 2
  template:
    metadata:
      annotations: {{tessera.dev/podset-required-topology: {RACK_LABEL}}}
    spec:
      containers: [{{name: c, resources: {{requests: {{nvidia.com/gpu: 8, cpu: 16}}}}}}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: serve
  labels: {{tessera.dev/queue-name: default, tessera.dev/workload-type: inference, tessera.dev/priority-class: high}}
spec:
  template:
    spec:
      containers: [{{name: c, resources: {{requests: {{nvidia.com/gpu: 500m}}}}}}]
"""


def test_job_manifests_with_sim_annotations(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.yaml", JOBS_YAML)
    trace = load_workload(str(path), priority_classes={"high": 1000})
    serve, train = trace.jobs
    assert (serve.submit_at, serve.duration) == (0.0, None)  # inference without sim-duration runs forever
    assert serve.workload.priority == 1000 and serve.workload.workload_type == "inference"
    assert serve.workload.podsets[0].requests[GPU] == 500
    assert (train.submit_at, train.duration) == (30.0, 3600.0)
    assert train.workload.priority == 500  # the class from the same file
    assert train.namespace == "team-a" and train.queue == "team-a"
    podset = train.workload.podsets[0]
    assert podset.count == 2 and podset.requests.as_dict() == {GPU: 8000, "cpu": 16000}
    assert podset.topology is not None and podset.topology.level == RACK_LABEL
    assert train.source == f"{path}:2" and serve.source == f"{path}:3"
    # a folder works too
    assert len(load_job_manifests(tmp_path, priority_classes={"high": 1000})) == 2


def test_job_manifests_report_every_problem(tmp_path: Path) -> None:
    bad = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: no-duration
  labels: {tessera.dev/queue-name: q}
  annotations: {tessera.dev/sim-submit-at: "soon"}
---
apiVersion: batch/v1
kind: Job
metadata: {name: unqueued}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: badclass
  labels: {tessera.dev/queue-name: q, tessera.dev/priority-class: nope}
  annotations: {tessera.dev/sim-duration: "5"}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: ok
  labels: {tessera.dev/queue-name: q}
  annotations: {tessera.dev/sim-duration: "90m"}
"""
    path = write(tmp_path, "bad.yaml", bad)
    with pytest.raises(ManifestError) as exc:
        load_workload(str(path), priority_classes={"training": 100})
    text = "\n".join(problems_of(exc))
    assert f'{path}:1: Job/no-duration: metadata.annotations["tessera.dev/sim-submit-at"]: must be a number' in text
    assert f'{path}:1: Job/no-duration: metadata.annotations["tessera.dev/sim-duration"]: required' in text
    assert f'{path}:2: Job/unqueued: metadata.labels["tessera.dev/queue-name"]: required' in text
    assert f'{path}:3: Job/badclass: metadata.labels["tessera.dev/priority-class"]: unknown WorkloadPriorityClass "nope"' in text
    assert f"{path}:4" not in text
    ok = write(tmp_path, "ok.yaml", bad.split("---\n")[-1])
    assert load_workload(str(ok)).jobs[0].duration == 5400.0


# --- openb ------------------------------------------------------------------------------------

OPENB_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
OPENB_NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P100\nn1,96000,786432,8,V100M32\nn2,32000,131072,0,\n"


def test_openb_inline(tmp_path: Path) -> None:
    rows = [
        "p0,12000,16384,1,1000,,LS,Running,0,100,0",
        "p1,6000,12288,1,460,,BE,Running,50,400,70",
        "p2,88000,327680,8,1000,V100M16|V100M32|V100M32,Burstable,Running,10,,",
        "p3,4000,8192,0,0,,Guaranteed,Pending,20,80,",
    ]
    (tmp_path / "openb_pod_list_default.csv").write_text(OPENB_HEADER + "\n".join(rows) + "\n")
    (tmp_path / "openb_node_list_gpu_node.csv").write_text(OPENB_NODES)
    trace = load_workload(f"openb:{tmp_path}", default_queue="shared")
    by_name = {j.name: j for j in trace}
    assert [j.name for j in trace] == ["p0", "p2", "p3", "p1"]
    assert all(j.queue == "shared" and j.namespace == "default" for j in trace)
    assert by_name["p0"].workload.podsets[0].requests.as_dict() == {"cpu": 12000, "memory": 16384 * 2**20 * 1000, GPU: 1000}
    assert by_name["p1"].workload.podsets[0].requests[GPU] == 460  # a share of one GPU
    assert by_name["p2"].workload.podsets[0].requests[GPU] == 8000
    assert by_name["p3"].workload.podsets[0].requests[GPU] == 0
    assert (by_name["p1"].submit_at, by_name["p1"].duration) == (50.0, 330.0)  # deletion - scheduled
    assert (by_name["p3"].submit_at, by_name["p3"].duration) == (20.0, 60.0)  # never scheduled: deletion - creation
    assert by_name["p2"].duration is None
    assert {j.name: j.workload.priority for j in trace} == {
        "p0": OPENB_QOS_PRIORITY["LS"], "p1": OPENB_QOS_PRIORITY["BE"],
        "p2": OPENB_QOS_PRIORITY["Burstable"], "p3": OPENB_QOS_PRIORITY["Guaranteed"]}
    assert OPENB_QOS_PRIORITY["LS"] > OPENB_QOS_PRIORITY["Guaranteed"] > OPENB_QOS_PRIORITY["Burstable"] > OPENB_QOS_PRIORITY["BE"]
    constraints = by_name["p2"].workload.podsets[0].constraints
    assert constraints.matches_labels({GPU_MODEL_LABEL: "V100M32"})
    assert not constraints.matches_labels({GPU_MODEL_LABEL: "P100"})
    assert by_name["p0"].workload.podsets[0].constraints.unconstrained
    assert by_name["p0"].source.endswith("openb_pod_list_default.csv:2")
    # the node list beside it is the trace's cluster, with the model label the gpu_spec affinity uses
    assert trace.nodes is not None and [n.metadata.name for n in trace.nodes] == ["n0", "n1", "n2"]
    cluster = Cluster.from_nodes(trace.nodes)
    assert cluster.capacity(GPU) == 10_000
    assert cluster.node("n1").labels[GPU_MODEL_LABEL] == "V100M32" and cluster.node("n1").labels[HOSTNAME_LABEL] == "n1"
    assert GPU_MODEL_LABEL not in cluster.node("n2").labels
    assert cluster.node("n0").allocatable == {"cpu": 64000, "memory": 262144 * 2**20 * 1000, GPU: 2000}
    assert constraints.matches_labels(cluster.node("n1").labels)


def test_openb_minimal_variant_and_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "openb_pod_list_multigpu20.csv",
                 "name,cpu_milli,memory_mib,num_gpu,gpu_milli\na,1000,1024,2,1000\nb,1000,1024,1,250\n")
    trace = load_openb(path)
    assert trace.nodes is None  # no node list beside it
    assert [(j.submit_at, j.duration, j.workload.priority) for j in trace] == [(0.0, None, 0), (0.0, None, 0)]
    assert [j.gpu_milli for j in trace] == [2000, 250]
    assert len(load_workload(f"openb:{path},limit=1")) == 1


def test_openb_reports_every_bad_row(tmp_path: Path) -> None:
    rows = [
        "ok,1000,1024,1,500,,LS,Running,0,10,0",
        "bad-int,x,1024,1,500,,LS,Running,0,10,0",
        "frac0,1000,1024,1,0,,LS,Running,0,10,0",
        "cpu-gpu,1000,1024,0,300,,LS,Running,0,10,0",
        "qos,1000,1024,1,500,,Platinum,Running,0,10,0",
        "short,1000,1024",
        "time,1000,1024,1,500,,BE,Running,50,10,",
        "ok,1000,1024,1,500,,LS,Running,0,10,0",
        "neg,-5,1024,1,500,,LS,Running,0,10,0",
        "spec,1000,1024,1,500,A 100|T4,LS,Running,0,10,0",
    ]
    path = write(tmp_path, "pods.csv", OPENB_HEADER + "\n".join(rows) + "\n")
    with pytest.raises(ManifestError) as exc:
        load_openb(path)
    text = "\n".join(problems_of(exc))
    for line in range(3, 12):
        assert f"pods.csv:{line}:" in text, f"line {line} not reported:\n{text}"
    assert "pods.csv:2:" not in text
    assert f"{path}:3: pod/bad-int: cpu_milli: must be an integer" in text
    assert "gpu_milli: must be 1 to 1000" in text and "gpu_milli: must be 0 when num_gpu is 0" in text
    assert 'qos: must be one of LS, Guaranteed, Burstable, BE, got "Platinum"' in text
    assert "pods.csv:7: expected 11 columns, got 3" in text
    assert "pods.csv:8: pod/time: deletion_time: is before creation_time" in text
    assert "pods.csv:9: pod/ok: name: duplicate of the pod at line 2" in text
    assert "pods.csv:11: pod/spec: gpu_spec" in text
    with pytest.raises(ManifestError, match=r"pods2.csv:1: missing column\(s\) gpu_milli"):
        load_openb(write(tmp_path, "pods2.csv", "name,cpu_milli,memory_mib,num_gpu\n"))


def test_openb_node_list_bad_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "openb_node_list_gpu_node.csv",
                 "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,1024,2,P100\nn1,lots,1024,2,P100\nn0,1,1,1,T4\nn3,1,1,1,bad model\n")
    with pytest.raises(ManifestError) as exc:
        openb_nodes(path)
    text = "\n".join(problems_of(exc))
    assert "openb_node_list_gpu_node.csv:3: node/n1: cpu_milli" in text
    assert "openb_node_list_gpu_node.csv:4: node/n0: sn: duplicate" in text
    assert "openb_node_list_gpu_node.csv:5: node/n3: model" in text


# The same checks run on a small inline pod list (always) and on the real files present in
# ../shared/traces/ (the expectations of each case travel with it), so nothing is skipped.

OPENB_SMALL_PODS = OPENB_HEADER + "\n".join([
    "s0,1000,1024,0,0,,BE,Running,0,10,0",
    "s1,1000,1024,1,1000,,LS,Running,1,11,1",
    "s2,1000,1024,1,250,,LS,Running,2,12,3",
    "s3,1000,1024,1,500,,Burstable,Pending,3,13,",
    "s4,8000,4096,2,1000,,Guaranteed,Running,4,14,4",
    "s5,8000,4096,8,1000,,BE,Failed,5,15,5",
]) + "\n"
OPENB_SMALL_EXPECTED = {"pods": 6, "cpu_only": 1, "fractional": 2, "gpu_8000": 1, "gpu_2000": 1, "seconds": 1.0}
OPENB_REAL_EXPECTED = {"pods": 8152, "cpu_only": 1088, "fractional": 3078, "gpu_8000": 44, "gpu_2000": 16,
                       "seconds": 1.5}  # "well under a second" on a normal machine; slack for a loaded CI runner


def openb_pod_cases() -> list[object]:
    cases = [pytest.param("inline", OPENB_SMALL_EXPECTED, id="inline")]
    cases += [pytest.param(str(p), OPENB_REAL_EXPECTED, id=p.name) for p in existing(OPENB / "openb_pod_list_default.csv")]
    return cases


def case_path(case: str, tmp_path: Path, name: str, text: str) -> Path:
    """The real file, or the inline text written to tmp_path."""
    return write(tmp_path, name, text) if case == "inline" else Path(case)


@pytest.mark.parametrize(("case", "expected"), openb_pod_cases())
def test_openb_default_pod_list(case: str, expected: dict[str, float], tmp_path: Path) -> None:
    path = case_path(case, tmp_path, "openb_pod_list_default.csv", OPENB_SMALL_PODS)
    started = time.perf_counter()
    trace = load_openb(path, with_nodes=False)
    assert time.perf_counter() - started < expected["seconds"]
    assert len(trace) == expected["pods"]
    gpu = Counter(j.gpu_milli for j in trace)
    assert gpu[0] == expected["cpu_only"] and gpu[8000] == expected["gpu_8000"] and gpu[2000] == expected["gpu_2000"]
    assert sum(n for milli, n in gpu.items() if 0 < milli < 1000) == expected["fractional"]  # shares of one GPU
    assert all(j.submit_at >= 0 for j in trace) and all(j.duration is not None and j.duration >= 0 for j in trace)
    assert {j.workload.priority for j in trace} == set(OPENB_QOS_PRIORITY.values())


def openb_node_cases() -> list[object]:
    cases = [pytest.param("inline", {"nodes": 2, "gpus": 10}, id="inline")]
    cases += [pytest.param(str(p), {"nodes": 1213, "gpus": 6212}, id=p.name)
              for p in existing(OPENB / "openb_node_list_gpu_node.csv")]
    return cases


@pytest.mark.parametrize(("case", "expected"), openb_node_cases())
def test_openb_node_list(case: str, expected: dict[str, int], tmp_path: Path) -> None:
    path = case_path(case, tmp_path, "openb_node_list_gpu_node.csv", "sn,cpu_milli,memory_mib,gpu,model\n"
                     "n0,64000,262144,2,P100\nn1,96000,786432,8,V100M32\n")
    nodes = openb_nodes(path.parent)
    assert len(nodes) == expected["nodes"]
    cluster = Cluster.from_nodes(nodes)
    assert cluster.capacity(GPU) == expected["gpus"] * 1000
    assert all(GPU_MODEL_LABEL in n.labels and n.labels[HOSTNAME_LABEL] == n.name for n in cluster)


def openb_variant_cases() -> list[str]:
    """Inline variants, plus the heaviest real file of each family (cpuNNN, gpushareNN, gpuspecNN, multigpuNN)."""
    families: dict[str, Path] = {}
    for path in sorted(OPENB.glob("openb_pod_list_*.csv")) if OPENB.is_dir() else []:
        family = path.stem.removeprefix("openb_pod_list_").rstrip("0123456789")
        if family != "default":
            families[family] = path
    return ["inline-gpuspec", "inline-multigpu", *(str(p) for p in existing(*families.values()))]


INLINE_VARIANTS = {
    "inline-gpuspec": ("openb_pod_list_gpuspec50.csv", OPENB_HEADER + "a,1000,1024,1,500,T4|G2,LS,Running,0,1,0\n"
                       "b,1000,1024,1,1000,,BE,Running,0,1,0\n"),
    "inline-multigpu": ("openb_pod_list_multigpu50.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
                        "a,1000,1024,4,1000\nb,1000,1024,8,1000\nc,1000,1024,1,300\n"),
}


@pytest.mark.parametrize("case", openb_variant_cases(), ids=lambda c: Path(c).name)
def test_openb_variants_load(case: str, tmp_path: Path) -> None:
    path = write(tmp_path, *INLINE_VARIANTS[case]) if case in INLINE_VARIANTS else Path(case)
    trace = load_openb(path, with_nodes=False)
    assert len(trace) >= (2 if case in INLINE_VARIANTS else 7000)
    if "gpuspec" in path.name:
        constrained = [j for j in trace if j.workload.podsets[0].constraints.required_terms]
        assert constrained, "gpuspec variants restrict some pods to GPU models"
        terms = constrained[0].workload.podsets[0].constraints.required_terms
        assert terms[0].match_expressions[0].key == GPU_MODEL_LABEL
    if "multigpu" in path.name:
        assert all(j.duration is None and j.submit_at == 0 for j in trace)  # only the five resource columns
        assert sum(1 for j in trace if j.gpu_milli > 1000) >= (2 if case in INLINE_VARIANTS else 60)


# --- philly -----------------------------------------------------------------------------------

PHILLY_CSV = """\
timestamp,duration,num_gpus,gpu_time,cluster
2017-10-01 00:00:10,100.0,1,100.0,6214e9
2017-10-01 00:00:00,50.0,8,400.0,11cb48
2017-10-02 12:00:00,10.0,12,120.0,VC_One
2017-10-03 00:00:00,1.0,32,32.0,6214e9
2017-09-30 23:59:59,5.0,2,10.0,6214e9
"""


def test_philly_gangs(tmp_path: Path) -> None:
    path = write(tmp_path, "philly.csv", PHILLY_CSV)
    trace = load_workload(f"philly:{path}")
    assert [j.submit_at for j in trace] == [0.0, 1.0, 11.0, 36.0 * 3600 + 1, 48 * 3600 + 1]
    by_gpus = {j.gpu_milli // 1000: j for j in trace}
    one, eight, twelve, big = by_gpus[1], by_gpus[8], by_gpus[12], by_gpus[32]
    assert [(p.count, p.requests[GPU]) for p in one.workload.podsets] == [(1, 1000)]
    assert [(p.count, p.requests[GPU]) for p in eight.workload.podsets] == [(1, 8000)]
    assert [(p.name, p.count, p.requests[GPU]) for p in twelve.workload.podsets] == [("main", 1, 8000), ("rest", 1, 4000)]
    assert [(p.count, p.requests[GPU]) for p in big.workload.podsets] == [(4, 8000)]
    assert all(p.min_count is None for j in trace for p in j.workload.podsets)  # all-or-nothing
    assert twelve.queue == twelve.namespace == "vc-one"
    assert one.queue == "6214e9" and all(j.workload.workload_type == "training" for j in trace)
    assert eight.duration == 50.0 and eight.source == f"{path}:3"


def test_philly_window_limit_and_resources(tmp_path: Path) -> None:
    path = write(tmp_path, "philly.csv", PHILLY_CSV)
    window = load_philly(path, start="2017-10-01", end="2017-10-02T12:00:00")
    assert [(j.submit_at, j.gpu_milli) for j in window] == [(0.0, 8000), (10.0, 1000)]
    assert len(load_workload(f"philly:{path},limit=2")) == 2
    with_cpu = load_philly(path, limit=1, cpu_per_gpu="4", memory_per_gpu="32Gi")
    assert with_cpu.jobs[0].workload.podsets[0].requests.as_dict() == {GPU: 2000, "cpu": 8000, "memory": 64 * 2**30 * 1000}
    with pytest.raises(ManifestError, match="holds no jobs between"):
        load_philly(path, start="2018-01-01")
    with pytest.raises(ManifestError) as exc:
        load_workload(f"philly:{path},start=yesterday,end=2017-01-01,colour=red")
    text = "\n".join(problems_of(exc))
    assert "start: must be an ISO date" in text and "colour: unknown option" in text


def test_philly_reports_every_bad_row(tmp_path: Path) -> None:
    path = write(tmp_path, "philly.csv", PHILLY_CSV + "yesterday,1.0,1,1.0,a\n2017-10-01 00:00:00,-1,1,1,a\n"
                 "2017-10-01 00:00:00,1,0,1,a\n2017-10-01 00:00:00,1,1.5,1,a\n2017-10-01 00:00:00,1,1,1,\n")
    with pytest.raises(ManifestError) as exc:
        load_philly(path, start="2017-10-02")  # rows outside the window are still checked
    text = "\n".join(problems_of(exc))
    assert f"{path}:7: timestamp" in text and f"{path}:8: duration" in text
    assert f"{path}:9: num_gpus" in text and f"{path}:10: num_gpus" in text and f"{path}:11: cluster" in text
    assert sanitize_label("VC_One!") == "vc-one" and sanitize_label("___") == "vc"


def philly_window_cases() -> list[object]:
    """(case, start, end, fewest jobs, most jobs): the inline CSV always, the real trace when present."""
    cases = [pytest.param("inline", "2017-10-01", "2017-10-03", 3, 3, id="inline")]
    cases += [pytest.param(str(p), "2017-10-09", "2017-10-16", 1000, 82246, id=p.name) for p in existing(PHILLY)]
    return cases


@pytest.mark.parametrize(("case", "start", "end", "fewest", "most"), philly_window_cases())
def test_philly_window(case: str, start: str, end: str, fewest: int, most: int, tmp_path: Path) -> None:
    path = case_path(case, tmp_path, "philly.csv", PHILLY_CSV)
    trace = load_philly(path, start=start, end=end)
    assert fewest <= len(trace) <= most
    span = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    assert all(0 <= j.submit_at < span for j in trace)
    for job in trace:
        assert job.workload.workload_type == "training" and job.duration is not None
        assert all(p.requests[GPU] <= 8000 and p.min_count is None for p in job.workload.podsets)
        assert job.namespace == job.queue and not dns1123_label_problem(job.queue)


# --- synthetic --------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed() -> None:
    a = load_workload("synthetic:jobs=200,seed=7")
    b = load_workload("synthetic:jobs=200,seed=7")
    c = load_workload("synthetic:jobs=200,seed=8")
    assert [job_to_dict(j) for j in a] == [job_to_dict(j) for j in b]
    assert [job_to_dict(j) for j in a] != [job_to_dict(j) for j in c]
    # the seed argument fills in when the spec has none; the spec's own seed wins
    assert [job_to_dict(j) for j in load_workload("synthetic:jobs=200", seed=7)] == [job_to_dict(j) for j in a]
    assert [job_to_dict(j) for j in load_workload("synthetic:jobs=200,seed=7", seed=1)] == [job_to_dict(j) for j in a]


def test_synthetic_distribution() -> None:
    trace = load_workload("synthetic:jobs=1000,seed=11")
    assert len(trace) == 1000
    training = [j for j in trace if j.workload.workload_type == "training"]
    inference = [j for j in trace if j.workload.workload_type == "inference"]
    assert 50 < len(inference) < 150
    sizes = Counter(j.gpu_milli // 1000 for j in training)
    assert set(sizes) <= {1, 2, 4, 8, 16, 32, 64} and {1, 64} <= set(sizes)
    assert sizes[1] > sizes[8] > sizes[64]  # heavy toward small gangs
    for job in training:
        pods = job.workload.podsets
        assert all(p.requests[GPU] <= 8000 for p in pods)
        if job.gpu_milli > 8000:
            assert pods[0].count == job.gpu_milli // 8000
        assert 60 <= job.duration <= 86400
    durations = sorted(j.duration for j in training)
    assert durations[len(durations) // 2] < sum(durations) / len(durations)  # right-skewed
    topo = Counter(p.topology.mode for j in training for p in j.workload.podsets[:1] if p.topology)
    assert topo["required"] > 0 and topo["preferred"] > 0
    assert all(j.duration is None for j in inference)
    assert all(j.workload.priority == 1000 and j.workload.priority_class == "inference-high" for j in inference)
    assert max(j.workload.priority for j in training) < 1000
    assert any(0 < p.requests[GPU] < 1000 for j in inference for p in j.workload.podsets)  # fractional
    assert {j.queue for j in trace} == {"team-a", "team-b", "team-c"}
    assert all(j.namespace == j.queue for j in trace)
    times = [j.submit_at for j in trace]
    assert times == sorted(times) and times[0] == 0.0
    # the arrival rate gives roughly the asked offered load
    span = times[-1]
    offered = sum(j.gpu_milli / 1000 * j.duration for j in training) / (512 * span)
    assert 0.8 < offered < 1.3


def test_synthetic_spec_grammar_and_errors() -> None:
    spec = parse_synthetic_spec("jobs=10,queues=ns1/q1|q2,inference-duration=2h,load=0.5,max_gpus=8")
    assert spec.jobs == 10 and spec.queues == ("ns1/q1", "q2") and spec.inference_duration == 7200.0
    assert parse_synthetic_spec(spec.to_spec().partition(":")[2]) == spec
    trace = generate_synthetic(spec)
    assert {(j.namespace, j.queue) for j in trace} <= {("ns1", "q1"), ("q2", "q2")}
    assert all(j.gpu_milli <= 8000 for j in trace)
    with pytest.raises(ManifestError) as exc:
        load_workload("synthetic:jobs=x,colour=red,load=-1,inference=2,queues=Bad_Q,jobs=3")
    text = "\n".join(problems_of(exc))
    assert 'jobs: must be an integer, got "x"' in text
    assert "colour: unknown key (known: jobs, seed," in text
    assert "load: must be greater than 0" in text and "inference: must be between 0 and 1" in text
    assert '"Bad_Q"' in text and "jobs: given more than once" in text
    with pytest.raises(ManifestError, match='unknown WorkloadPriorityClass "vip"'):
        load_workload("synthetic:jobs=5,training_class=vip")
    # the queues' own classes set the priorities
    custom = load_workload("synthetic:jobs=50,inference=1", priority_classes={"inference-high": 7})
    assert {j.workload.priority for j in custom} == {7}


# --- dispatch and helpers -----------------------------------------------------------------------


def test_unknown_prefix_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match='unknown workload prefix "csv:"'):
        load_workload("csv:foo.csv")
    with pytest.raises(ManifestError, match="no such file or folder"):
        load_workload(str(tmp_path / "missing.yaml"))
    with pytest.raises(ManifestError, match="no such file or folder"):
        load_workload(f"openb:{tmp_path / 'nope'}")


def test_gang_podsets_keep_gpu_count_exact() -> None:
    for gpus in range(1, 70):
        podsets = gang_podsets(gpus, 8)
        assert sum(p.count * p.requests[GPU] for p in podsets) == gpus * 1000
        assert all(p.requests[GPU] <= 8000 for p in podsets)
    with pytest.raises(ValueError):
        gang_podsets(0)


def test_check_queues_names_the_job_source(tmp_path: Path) -> None:
    trace = load_jsonl(write(tmp_path, "t.jsonl", jsonl_text([{"name": "a", "queue": "nowhere", "duration": 1, "gpus": 1}])))
    problems = check_queues(trace, default_queues_bundle())
    assert [str(p) for p in problems] == [f'{tmp_path}/t.jsonl:1: job/a: queue: unknown LocalQueue "nowhere" in namespace "default"']


def test_simjob_is_frozen() -> None:
    job = load_workload("synthetic:jobs=1").jobs[0]
    assert isinstance(job, SimJob)
    with pytest.raises(AttributeError):
        job.submit_at = 5  # type: ignore[misc]
    assert isinstance(Trace("x"), Trace) and len(Trace("x")) == 0


# --- the built-in default setup ---------------------------------------------------------------


def test_default_bundle_is_valid() -> None:
    from quotas.bundle import build_bundle
    from quotas.loader import RawObject, Source

    raws = [RawObject(Source("defaults", i + 1), m) for i, m in enumerate(default_queue_manifests())]
    _, problems = build_bundle(raws)
    assert problems == []
    bundle = default_bundle()
    assert len(bundle.nodes) == 64 and set(bundle.cluster_queues) == set(DEFAULT_TEAMS)
    assert {(ns, name) for ns, name in bundle.local_queues} == {(t, t) for t in DEFAULT_TEAMS}
    assert {n: c.value for n, c in bundle.priority_classes.items()} == {"inference-high": 1000, "training": 100, "batch-low": 10}
    cluster = Cluster.from_nodes(default_cluster_bundle().nodes.values())
    assert cluster.capacity(GPU) == 512_000
    # nominal quotas add up to the cluster, for every resource
    totals: Counter[str] = Counter()
    for cq in bundle.cluster_queues.values():
        assert cq.spec.cohort == "all-teams" and cq.spec.namespace_selector is not None
        assert cq.spec.preemption.reclaim_within_cohort == "Any"
        assert cq.spec.preemption.within_cluster_queue == "LowerPriority"
        for quota in cq.spec.resource_groups[0].flavors[0].resources:
            totals[quota.name] += int(quota.nominal_quota * 1000)
    assert totals == Counter({res: cluster.capacity(res) for res in ("cpu", "memory", GPU)})
    flavor = bundle.flavors["h100"]
    assert flavor.spec.topology_name in bundle.topologies
    assert all(cluster.node(n).labels[k] == v for n in cluster.nodes for k, v in flavor.spec.node_labels.items())
    assert bundle.configuration is not None and bundle.configuration.wait_for_pods_ready.enable


def test_default_trace() -> None:
    trace = default_trace(seed=5)
    assert len(trace) == 500
    assert check_queues(trace, default_queues_bundle()) == []
    assert [job_to_dict(j) for j in trace] == [job_to_dict(j) for j in default_trace(seed=5)]
    assert {j.workload.priority_class for j in trace} == {"inference-high", "training", "batch-low"}
    assert not errors_in(trace.warnings)
