"""The generated CRDs: committed copies up to date, structural schemas, names and columns, samples valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import Field
from typer.testing import CliRunner

from quotas.api import TESSERA_KINDS, ClusterQueue
from quotas.base import ApiModel
from quotas.crds import (
    CRD_KINDS,
    KUSTOMIZATION,
    NonStructuralSchema,
    crd_file_name,
    crd_schema,
    diff_crds,
    generate_crds,
    json_schema,
    render_crds,
    structural_schema,
    write_crds,
)
from quotas.jobs import workload_from_job
from quotas.kube import Job
from quotas.quantity import NonNegativeQuantity
from tessera.cli import app

ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT / "deploy" / "crds"
SAMPLES = ROOT / "deploy" / "samples"


# --- a structural-schema checker, after Kubernetes' rules for CRD schemas ---------------------
# https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema

# The fields of apiextensions.k8s.io/v1 JSONSchemaProps that a generated schema may use.
ALLOWED_KEYWORDS = {
    "description", "type", "format", "default", "enum", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "items", "properties", "additionalProperties", "required", "anyOf", "nullable", "example",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-validations",
}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}
INT_OR_STRING_ANYOF = [{"type": "integer"}, {"type": "string"}]
PYTHON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


def structural_violations(node: Any, path: str = "") -> list[str]:
    """Every reason `node` is not a structural schema Kubernetes accepts (empty when it is)."""
    where = path or "<root>"
    if not isinstance(node, dict):
        return [f"{where}: schema must be a mapping, got {type(node).__name__}"]
    out = []
    for key in node:
        if key not in ALLOWED_KEYWORDS:
            out.append(f"{where}: keyword {key!r} is not allowed in a CRD schema")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    for flag in ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields"):
        if flag in node and node[flag] is not True:
            out.append(f"{where}: {flag} must be true when set")
    kind = node.get("type")
    if int_or_string:
        if "type" in node:
            out.append(f"{where}: an int-or-string node must not set type")
        if node.get("anyOf", INT_OR_STRING_ANYOF) != INT_OR_STRING_ANYOF:
            out.append(f"{where}: int-or-string anyOf must be exactly [integer, string], got {node['anyOf']}")
    else:
        if "anyOf" in node:
            out.append(f"{where}: anyOf is only structural for int-or-string, got {node['anyOf']}")
        if kind is None and not preserve:
            out.append(f"{where}: no type")
        elif kind is not None and kind not in TYPES:
            out.append(f"{where}: unknown type {kind!r}")
    if "nullable" in node and "type" not in node:
        out.append(f"{where}: nullable without a type")
    if node.get("uniqueItems"):
        out.append(f"{where}: uniqueItems is forbidden")
    for key in ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        if key in node and (isinstance(node[key], bool) or not isinstance(node[key], (int, float))):
            out.append(f"{where}: {key} must be a number")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            out.append(f"{where}: {key} must be a boolean in OpenAPI v3.0")
    if "enum" in node:
        expected = PYTHON_TYPES.get(kind or "")
        if not isinstance(node["enum"], list) or not node["enum"]:
            out.append(f"{where}: enum must be a non-empty list")
        elif expected is not None:
            wrong = [v for v in node["enum"] if not isinstance(v, expected) or (kind == "integer" and isinstance(v, bool))]
            if wrong:
                out.append(f"{where}: enum values {wrong} are not of type {kind}")
    if "default" in node:
        if isinstance(node["default"], (dict, list)) or node["default"] is None:
            out.append(f"{where}: only scalar defaults are generated, got {node['default']!r}")
        else:
            problems = [e.message for e in jsonschema.Draft7Validator(node).iter_errors(node["default"])]
            if problems:
                out.append(f"{where}: default {node['default']!r} does not validate: {problems}")

    properties = node.get("properties")
    extra = node.get("additionalProperties")
    if properties is not None or extra is not None:
        if kind != "object":
            out.append(f"{where}: properties/additionalProperties need type: object")
    if properties is not None and extra is not None:
        out.append(f"{where}: properties and additionalProperties are mutually exclusive")
    if extra is not None and not isinstance(extra, dict):
        out.append(f"{where}: additionalProperties must be a schema, got {extra!r}")
    if kind == "array" and not isinstance(node.get("items"), dict):
        out.append(f"{where}: an array needs items: <one schema>")
    if "items" in node and kind != "array":
        out.append(f"{where}: items on a non-array")
    required = node.get("required")
    if required is not None:
        if not isinstance(required, list) or not required:
            out.append(f"{where}: required must be a non-empty list")
        else:
            unknown = [name for name in required if name not in (properties or {})]
            if unknown:
                out.append(f"{where}: required names unknown properties {unknown}")

    for name, child in (properties or {}).items():
        out += structural_violations(child, f"{path}.{name}" if path else name)
    if isinstance(extra, dict):
        out += structural_violations(extra, f"{where}.*")
    if isinstance(node.get("items"), dict):
        out += structural_violations(node["items"], f"{where}[]")
    for i, branch in enumerate(node.get("anyOf") or []):
        if not isinstance(branch, dict) or set(branch) - {"type"}:
            out.append(f"{where}.anyOf[{i}]: a branch may only carry a type here, got {branch}")
    return out


def root_violations(schema: dict[str, Any]) -> list[str]:
    out = structural_violations(schema)
    if schema.get("type") != "object":
        out.append("<root>: must be type: object")
    props = schema.get("properties", {})
    if props.get("metadata") != {"type": "object"}:
        out.append(f"metadata: must be exactly {{type: object}}, got {props.get('metadata')}")
    for name in ("apiVersion", "kind"):
        if props.get(name, {}).get("type") != "string":
            out.append(f"{name}: must be type: string")
    if "metadata" in schema.get("required", []):
        out.append("<root>: metadata must not be required")
    return out


def test_checker_catches_non_structural_schemas() -> None:
    assert structural_violations({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}})
    assert structural_violations({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}})
    assert structural_violations({"type": "object", "properties": {"a": {"description": "no type"}}})
    assert structural_violations({"type": "object", "properties": {"a": {"nullable": True}}})
    assert structural_violations({"type": "array"})
    assert structural_violations({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False})
    assert structural_violations({"anyOf": [{"type": "integer"}, {"type": "string", "default": "1"}], "x-kubernetes-int-or-string": True})
    assert structural_violations({"type": "string", "default": 3})
    assert structural_violations({"type": "object", "properties": {"a": {"type": "string", "title": "A"}}})
    assert not structural_violations(
        {"anyOf": INT_OR_STRING_ANYOF, "pattern": "^[0-9]+$", "x-kubernetes-int-or-string": True}
    )
    assert not structural_violations({"type": "object", "x-kubernetes-preserve-unknown-fields": True})


# --- the generated CRDs ----------------------------------------------------------------------


def test_committed_crds_are_up_to_date() -> None:
    rendered = render_crds()
    stale = [name for name, text in rendered.items() if not (CRD_DIR / name).is_file() or (CRD_DIR / name).read_text() != text]
    extra = sorted(p.name for p in CRD_DIR.glob("*.yaml") if p.name not in rendered)
    assert not stale and not extra, (
        f"deploy/crds is stale (differs: {stale}, not generated: {extra}): run `tessera crds` and commit the result"
    )


def test_rendered_yaml_is_the_generated_objects() -> None:
    rendered = render_crds()
    for name, obj in generate_crds().items():
        assert yaml.safe_load(rendered[name]) == obj
    kustomization = yaml.safe_load(rendered[KUSTOMIZATION])
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == [crd_file_name(kind) for kind in CRD_KINDS]
    assert render_crds() == rendered  # deterministic


def test_one_crd_per_resource_kind() -> None:
    assert set(CRD_KINDS) == set(TESSERA_KINDS) - {"Configuration"}
    crds = generate_crds()
    assert sorted(crds) == sorted(f"tessera.dev_{p}.yaml" for p in (
        "resourceflavors", "clusterqueues", "localqueues", "cohorts", "workloadpriorityclasses", "topologies", "workloads"
    ))
    for name, crd in crds.items():
        spec = crd["spec"]
        plural = spec["names"]["plural"]
        assert name == f"tessera.dev_{plural}.yaml"
        assert list(crd) == ["apiVersion", "kind", "metadata", "spec"]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
        assert crd["metadata"]["name"] == f"{plural}.tessera.dev"
        assert spec["group"] == "tessera.dev"
        kind = spec["names"]["kind"]
        assert spec["names"]["singular"] == kind.lower()
        assert spec["names"]["listKind"] == f"{kind}List"
        assert spec["scope"] == ("Namespaced" if kind in ("LocalQueue", "Workload") else "Cluster")
        [version] = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        has_status = kind in ("ClusterQueue", "LocalQueue", "Cohort", "Workload")
        assert ("subresources" in version) == has_status
        if has_status:
            assert version["subresources"] == {"status": {}}
            assert "status" in version["schema"]["openAPIV3Schema"]["properties"]


@pytest.mark.parametrize("kind", CRD_KINDS)
def test_schema_is_structural(kind: str) -> None:
    schema = generate_crds()[crd_file_name(kind)]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema == crd_schema(kind)
    violations = root_violations(schema)
    assert not violations, "\n".join(violations)


def test_schema_details() -> None:
    cq = crd_schema("ClusterQueue")["properties"]["spec"]["properties"]
    quota = cq["resourceGroups"]["items"]["properties"]["flavors"]["items"]["properties"]["resources"]["items"]
    for field in ("nominalQuota", "borrowingLimit", "lendingLimit"):
        assert quota["properties"][field]["x-kubernetes-int-or-string"] is True
        assert "type" not in quota["properties"][field]
    assert quota["required"] == ["name", "nominalQuota"]  # optional limits are simply not required
    assert cq["queueingStrategy"] == {"type": "string", "enum": ["BestEffortFIFO", "StrictFIFO"], "default": "BestEffortFIFO"}
    assert cq["preemption"]["properties"]["withinClusterQueue"]["enum"] == ["Never", "LowerPriority", "LowerOrNewerEqualPriority"]
    assert cq["namespaceSelector"]["properties"]["matchLabels"]["additionalProperties"] == {"type": "string"}
    podset = crd_schema("Workload")["properties"]["spec"]["properties"]["podSets"]["items"]["properties"]
    assert podset["template"]["type"] == "object"
    assert podset["template"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "properties" not in podset["template"]
    cohort_status = crd_schema("Cohort")["properties"]["status"]
    assert cohort_status == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    wpc = crd_schema("WorkloadPriorityClass")
    assert set(wpc["properties"]) == {"apiVersion", "kind", "metadata", "value", "description"}
    assert wpc["required"] == ["value"]


def test_short_names() -> None:
    names = {crd["spec"]["names"]["kind"]: crd["spec"]["names"].get("shortNames", []) for crd in generate_crds().values()}
    assert names == {
        "ResourceFlavor": ["rf"],
        "ClusterQueue": ["cq"],
        "LocalQueue": ["lq", "queues"],
        "Cohort": [],
        "WorkloadPriorityClass": ["wpc"],
        "Topology": [],
        "Workload": ["wl"],
    }


def test_printer_columns() -> None:
    columns = {
        crd["spec"]["names"]["kind"]: [
            (c["name"], c["jsonPath"], c["type"]) for c in crd["spec"]["versions"][0].get("additionalPrinterColumns", [])
        ]
        for crd in generate_crds().values()
    }
    pending = ("Pending Workloads", ".status.pendingWorkloads", "integer")
    admitted = ("Admitted Workloads", ".status.admittedWorkloads", "integer")
    assert columns["ClusterQueue"] == [("Cohort", ".spec.cohort", "string"), pending, admitted]
    assert columns["LocalQueue"] == [("ClusterQueue", ".spec.clusterQueue", "string"), pending, admitted]
    assert columns["Workload"] == [
        ("Queue", ".spec.queueName", "string"),
        ("Reserved in", ".status.admission.clusterQueue", "string"),
        ("Admitted", '.status.conditions[?(@.type=="Admitted")].status', "string"),
        ("Age", ".metadata.creationTimestamp", "date"),
    ]
    assert columns["WorkloadPriorityClass"] == [("Value", ".value", "integer")]
    assert columns["ResourceFlavor"] == columns["Cohort"] == columns["Topology"] == []


# --- conversion of models that are not (yet) in the API --------------------------------------


class _Inner(ApiModel):
    limit: NonNegativeQuantity | None = None
    mode: str = "fast"


class _Good(ApiModel):
    api_version: str = "tessera.dev/v1alpha1"
    kind: str = "Good"
    spec: _Inner | None = None
    items: list[_Inner] = Field(default_factory=list, max_length=3)
    extra: dict[str, Any] = Field(default_factory=dict)


class _Union(ApiModel):
    value: int | str


class _Untyped(ApiModel):
    value: Any


class _Node(ApiModel):
    children: list[_Node] = Field(default_factory=list)


def test_converter_output_is_structural_for_a_new_model() -> None:
    schema = structural_schema(_Good)
    assert not root_violations(schema)
    assert schema["properties"]["spec"]["properties"]["mode"] == {"type": "string", "default": "fast"}
    assert schema["properties"]["extra"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


@pytest.mark.parametrize("model", [_Union, _Untyped, _Node])
def test_converter_refuses_non_structural_models(model: type[ApiModel]) -> None:
    with pytest.raises(NonStructuralSchema):
        structural_schema(model)


# --- validating manifests against the schemas ------------------------------------------------


def _sample_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(SAMPLES.rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict):
                out.append((f"{path.relative_to(ROOT)}:{i + 1}", doc))
    return out


def _errors(kind: str, obj: dict[str, Any], *, strict: bool = True) -> list[str]:
    validator = jsonschema.Draft202012Validator(json_schema(kind, strict=strict))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]


def test_json_schemas_are_valid_json_schema() -> None:
    for kind in CRD_KINDS:
        for strict in (True, False):
            jsonschema.Draft202012Validator.check_schema(json_schema(kind, strict=strict))
            jsonschema.Draft7Validator.check_schema(json_schema(kind, strict=strict))


def test_samples_validate_against_their_crds() -> None:
    objects = [(where, obj) for where, obj in _sample_objects() if obj.get("apiVersion") == "tessera.dev/v1alpha1"]
    kinds = {obj["kind"] for _, obj in objects}
    assert kinds >= set(CRD_KINDS) - {"Workload"}, f"samples miss kinds: {set(CRD_KINDS) - kinds}"
    checked = 0
    for where, obj in objects:
        if obj["kind"] == "Configuration":
            continue  # a config file, not a resource: the model checks it (tests/test_samples.py)
        for strict in (False, True):
            errors = _errors(obj["kind"], obj, strict=strict)
            assert not errors, f"{where}: {obj['kind']}/{obj['metadata']['name']}: " + "; ".join(errors)
        checked += 1
    assert checked >= 10


def test_workloads_from_sample_jobs_validate() -> None:
    jobs = [obj for _, obj in _sample_objects() if obj.get("kind") == "Job"]
    assert jobs
    for raw in jobs:
        workload = workload_from_job(Job.model_validate(raw)).to_manifest()
        assert not _errors("Workload", workload), raw["metadata"]["name"]


def test_status_written_by_the_operator_validates() -> None:
    workload = {
        "apiVersion": "tessera.dev/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "job-train", "namespace": "team-a"},
        "spec": {"queueName": "training-queue", "podSets": [{"name": "main", "count": 8, "template": {"spec": {"containers": []}}}]},
        "status": {
            "conditions": [{"type": "Admitted", "status": "True", "reason": "Admitted", "lastTransitionTime": "2024-05-01T10:00:00Z"}],
            "admission": {
                "clusterQueue": "team-a",
                "podSetAssignments": [
                    {"name": "main", "flavors": {"nvidia.com/gpu": "h100-80gb"}, "resourceUsage": {"nvidia.com/gpu": "32"}, "count": 8,
                     "topologyAssignment": {"levels": ["kubernetes.io/hostname"], "domains": [{"values": ["node-1"], "count": 8}]}}
                ],
            },
        },
    }
    assert not _errors("Workload", workload)
    queue = ClusterQueue.model_validate({"metadata": {"name": "cq"}, "status": {"pendingWorkloads": 3, "flavorsUsage": []}})
    assert not _errors("ClusterQueue", queue.to_manifest())


def _cluster_queue(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "namespaceSelector": {},
        "resourceGroups": [
            {"coveredResources": ["nvidia.com/gpu"], "flavors": [{"name": "h100", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8}]}]}
        ],
    }
    base.update(spec)
    return {"apiVersion": "tessera.dev/v1alpha1", "kind": "ClusterQueue", "metadata": {"name": "cq"}, "spec": base}


def _with_quota(value: Any) -> dict[str, Any]:
    cq = _cluster_queue()
    cq["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuota"] = value
    return cq


def test_valid_cluster_queue_passes() -> None:
    assert not _errors("ClusterQueue", _cluster_queue())
    assert not _errors("ClusterQueue", _with_quota("64Gi"))
    assert not _errors("ClusterQueue", _with_quota("500m"))


@pytest.mark.parametrize(
    ("obj", "strict_only"),
    [
        pytest.param(_with_quota([1]), False, id="quota-is-a-list"),
        pytest.param(_with_quota("8 GPUs"), False, id="quota-not-a-quantity"),
        pytest.param(_with_quota(1.5), False, id="quota-is-a-float"),
        pytest.param(_cluster_queue(queueingStrategy="Fastest"), False, id="unknown-queueing-strategy"),
        pytest.param(_cluster_queue(preemption={"withinClusterQueue": "Always"}), False, id="unknown-preemption-policy"),
        pytest.param(_cluster_queue(resourceGroups=[{"coveredResources": [], "flavors": []}]), False, id="empty-groups"),
        pytest.param(_cluster_queue(cohort=7), False, id="cohort-not-a-string"),
        pytest.param(_cluster_queue(queueingstrategy="StrictFIFO"), True, id="misspelt-field"),
    ],
)
def test_broken_objects_fail(obj: dict[str, Any], strict_only: bool) -> None:
    assert _errors("ClusterQueue", obj)
    assert bool(_errors("ClusterQueue", obj, strict=False)) != strict_only


def test_broken_objects_of_other_kinds_fail() -> None:
    lq = {"apiVersion": "tessera.dev/v1alpha1", "kind": "LocalQueue", "metadata": {"name": "q", "namespace": "a"}, "spec": {}}
    assert _errors("LocalQueue", lq)  # clusterQueue is required
    wpc = {"apiVersion": "tessera.dev/v1alpha1", "kind": "WorkloadPriorityClass", "metadata": {"name": "p"}, "value": 2**31}
    assert _errors("WorkloadPriorityClass", wpc)
    topology = {"apiVersion": "tessera.dev/v1alpha1", "kind": "Topology", "metadata": {"name": "t"}, "spec": {"levels": []}}
    assert _errors("Topology", topology)


# --- `tessera crds` ---------------------------------------------------------------------------


def test_cli_check_passes_on_committed_folder() -> None:
    result = CliRunner().invoke(app, ["crds", "--check", "--output", str(CRD_DIR)])
    assert result.exit_code == 0, result.output


def test_cli_check_fails_on_a_modified_file(tmp_path: Path) -> None:
    written = write_crds(tmp_path)
    assert sorted(p.name for p in written) == sorted(render_crds())
    assert diff_crds(tmp_path) == []
    target = tmp_path / crd_file_name("ClusterQueue")
    target.write_text(target.read_text().replace("BestEffortFIFO", "StrictFIFO", 1))
    assert diff_crds(tmp_path) == [target.name]
    result = CliRunner().invoke(app, ["crds", "--check", "--output", str(tmp_path)])
    assert result.exit_code == 1
    assert target.name in result.output + (result.stderr if result.stderr_bytes is not None else "")
    (tmp_path / KUSTOMIZATION).unlink()
    assert set(diff_crds(tmp_path)) == {target.name, KUSTOMIZATION}


def test_cli_writes_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "crds"
    result = CliRunner().invoke(app, ["crds", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert diff_crds(out) == []
    assert {p.name: p.read_text() for p in out.iterdir()} == render_crds()
