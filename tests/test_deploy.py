"""The deploy manifests (kustomize base, dev overlay, component), the Dockerfile, `tessera certs` and the samples.

The manifests are checked against what the code really does, for the Configuration they
deploy: the RBAC against the API calls the operator makes (read from its source) and the
resources kopf lists and watches (read from the operator's kopf registry and settings); the
Deployment's arguments against `tessera run`'s options; the webhook configurations against the
webhooks kopf would configure for the registered handlers; the certificate `tessera certs`
writes against a TLS handshake through the operator's own webhook server settings. The
kustomizations are rendered by a small renderer here and, when kubectl is installed, compared
with `kubectl kustomize`.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import copy
import datetime
import fnmatch
import inspect
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import kopf
import kubernetes_validate
import pytest
import typer.main
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
# kopf's own resource matching and webhook construction (internal modules, pinned by kopf>=1.37 behaviour):
# the expected RBAC and webhook configurations are derived with exactly what kopf uses.
from kopf._cogs.structs import references
from kopf._core.engines.admission import build_webhooks
from kopf._core.intents.causes import WebhookType
from typer.testing import CliRunner

import admission
from admission import certs, integrations, kube
from admission.leader import DEFAULT_LEASE_NAME
from admission.operator import Operator, OperatorConfig, load_configuration
from quotas.api import Configuration
from quotas.base import QUEUE_NAME_LABEL, REQUIRED_TOPOLOGY_ANNOTATION, WORKLOAD_TYPE_LABEL
from quotas.quantity import parse_quantity
from tessera import __version__
from tessera.cli import app

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
DEV = DEPLOY / "overlays" / "dev"
SAMPLE = DEPLOY / "samples" / "training-and-inference"
NAMESPACE = "tessera-system"
K8S_VERSIONS = ("1.29.0", "1.33.0")
"""Kubernetes versions whose OpenAPI schemas (shipped with kubernetes-validate) the built-in kinds must pass."""

runner = CliRunner()


# --- loading ---------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def patch_files() -> set[Path]:
    """Files the kustomizations use as patches: not objects themselves."""
    out = set()
    for path in sorted(DEPLOY.rglob("kustomization.yaml")):
        [kustomization] = load_docs(path)
        for patch in kustomization.get("patches", []):
            if "path" in patch:
                out.add((path.parent / patch["path"]).resolve())
    return out


def object_files() -> list[Path]:
    patches = patch_files()
    return [p for p in manifest_files() if p.resolve() not in patches]


def group_of(obj: dict[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.split("/")[0] if "/" in api_version else ""


def obj_id(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (group_of(obj), obj["kind"], meta.get("namespace") or "", meta["name"])


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


JSON_PATCH_OPS = {"add", "remove", "replace", "move", "copy", "test"}


def test_every_manifest_under_deploy_parses() -> None:
    files = manifest_files()
    assert len(files) >= 20
    patches = patch_files()
    assert patches, "the overlays and components patch through files"
    for path in files:
        docs = load_docs(path)
        assert docs, f"{path.relative_to(ROOT)}: no YAML documents"
        for number, doc in enumerate(docs, 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            if path.resolve() in patches and isinstance(doc, list):  # an RFC 6902 JSON patch
                for op in doc:
                    assert op["op"] in JSON_PATCH_OPS and str(op["path"]).startswith("/"), f"{where}: {op}"
                    assert ("value" in op) == (op["op"] in ("add", "replace", "test")), f"{where}: {op}"
                continue
            assert isinstance(doc, dict), f"{where}: not a mapping"
            assert isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str), f"{where}: no apiVersion/kind"
            if doc["kind"] not in ("Kustomization", "Component", "Configuration"):
                assert (doc.get("metadata") or {}).get("name"), f"{where}: no metadata.name"


# --- schema validation -----------------------------------------------------------------------


def crd_schemas() -> dict[str, dict[str, Any]]:
    """kind -> JSON Schema of the served version, from the committed CRDs (what the API server enforces)."""
    out = {}
    for path in sorted((DEPLOY / "crds").glob("tessera.dev_*.yaml")):
        [crd] = load_docs(path)
        [version] = [v for v in crd["spec"]["versions"] if v.get("served")]
        out[crd["spec"]["names"]["kind"]] = openapi_to_json_schema(version["schema"]["openAPIV3Schema"])
    return out


def openapi_to_json_schema(node: Any) -> Any:
    """An OpenAPI v3.0 CRD schema as JSON Schema, with kubectl's strict field validation (unknown fields refused)."""
    if isinstance(node, list):
        return [openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: openapi_to_json_schema(value) for key, value in node.items()}
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(flag) is True and bound in out:
            out[flag] = out.pop(bound)
        elif out.get(flag) is False:
            del out[flag]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if isinstance(node.get("properties"), dict) and not node.get("x-kubernetes-preserve-unknown-fields") \
            and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def check_cert_manager(obj: dict[str, Any], where: str) -> None:
    """No schema ships for cert-manager: the fields Tessera relies on, by hand."""
    assert obj["apiVersion"] == "cert-manager.io/v1", where
    spec = obj.get("spec")
    assert isinstance(spec, dict), f"{where}: no spec"
    assert obj["metadata"].get("namespace"), f"{where}: Issuer and Certificate are namespaced"
    if obj["kind"] == "Issuer":
        issuers = {"selfSigned", "ca", "acme", "vault", "venafi"}
        assert len(issuers & set(spec)) == 1, f"{where}: exactly one issuer type, got {sorted(spec)}"
    elif obj["kind"] == "Certificate":
        assert isinstance(spec.get("secretName"), str) and spec["secretName"], f"{where}: spec.secretName"
        assert isinstance(spec.get("issuerRef"), dict) and spec["issuerRef"].get("name"), f"{where}: spec.issuerRef.name"
        assert spec["issuerRef"].get("kind", "Issuer") in ("Issuer", "ClusterIssuer"), where
        assert spec.get("dnsNames") or spec.get("commonName"), f"{where}: dnsNames or commonName"
        assert all(isinstance(n, str) for n in spec.get("dnsNames", [])), where
        allowed = {"secretName", "issuerRef", "dnsNames", "commonName", "duration", "renewBefore", "privateKey",
                   "usages", "ipAddresses", "uris", "subject", "secretTemplate", "isCA", "revisionHistoryLimit"}
        assert set(spec) <= allowed, f"{where}: unknown Certificate fields {sorted(set(spec) - allowed)}"
        for duration in ("duration", "renewBefore"):
            if duration in spec:
                assert re.fullmatch(r"(\d+h)?(\d+m)?(\d+s)?", spec[duration]) and spec[duration], f"{where}: {duration}"
    else:
        raise AssertionError(f"{where}: unexpected cert-manager kind {obj['kind']}")


def check_configuration(text: str, where: str, tmp_path: Path) -> None:
    """A Configuration document, read the way `tessera run --config` reads it."""
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    load_configuration(path)  # raises ManifestError with the problems


def test_every_object_validates_against_its_schema(tmp_path: Path) -> None:
    schemas = crd_schemas()
    assert set(schemas) >= {"ResourceFlavor", "ClusterQueue", "LocalQueue", "Cohort", "WorkloadPriorityClass",
                            "Topology", "Workload"}
    counts: dict[str, int] = {"builtin": 0, "tessera": 0, "cert-manager": 0}
    for path in object_files():
        for number, obj in enumerate(load_docs(path), 1):
            where = f"{path.relative_to(ROOT)}:{number} {obj['kind']}"
            group = group_of(obj)
            if group == "kustomize.config.k8s.io":
                continue  # see the kustomization tests
            if group == "tessera.dev":
                if obj["kind"] == "Configuration":
                    check_configuration(path.read_text(encoding="utf-8"), where, tmp_path)
                else:
                    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                              for e in jsonschema.Draft202012Validator(schemas[obj["kind"]]).iter_errors(obj)]
                    assert not errors, f"{where}: " + "; ".join(errors)
                counts["tessera"] += 1
            elif group == "cert-manager.io":
                check_cert_manager(obj, where)
                counts["cert-manager"] += 1
            elif group == "monitoring.coreos.com":  # the Prometheus Operator's kinds (deploy/monitoring)
                assert obj["apiVersion"] == "monitoring.coreos.com/v1" and isinstance(obj.get("spec"), dict), where
            else:
                for version in K8S_VERSIONS:
                    try:
                        kubernetes_validate.validate(obj, version, strict=True)
                    except kubernetes_validate.ValidationError as exc:
                        raise AssertionError(f"{where}: Kubernetes {version}: {exc}") from None
                    except kubernetes_validate.SchemaNotFoundError:
                        raise AssertionError(f"{where}: {obj['apiVersion']} {obj['kind']} is no Kubernetes "
                                             f"{version} kind") from None
                counts["builtin"] += 1
    assert counts["builtin"] >= 20 and counts["tessera"] >= 10 and counts["cert-manager"] == 2, counts


def test_the_validation_refuses_mistakes() -> None:
    """The checks above can fail: a misspelt field, a wrong type, an unknown tessera.dev field."""
    deployment = copy.deepcopy(find(load_docs(BASE / "controller.yaml"), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    service = copy.deepcopy(find(load_docs(BASE / "services.yaml"), "Service", "tessera-webhook"))
    service["spec"]["ports"][0]["port"] = "https"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSIONS[0], strict=True)
    queue = copy.deepcopy(find(load_docs(SAMPLE / "queues.yaml"), "ClusterQueue"))
    queue["spec"]["cohortt"] = "x"
    assert list(jsonschema.Draft202012Validator(crd_schemas()["ClusterQueue"]).iter_errors(queue))
    certificate = copy.deepcopy(find(load_docs(BASE / "certificates.yaml"), "Certificate"))
    del certificate["spec"]["secretName"]
    with pytest.raises(AssertionError):
        check_cert_manager(certificate, "test")


def test_the_embedded_configuration_is_what_the_operator_reads(tmp_path: Path) -> None:
    config_map = find(load_docs(BASE / "config.yaml"), "ConfigMap", "tessera-config")
    [(key, text)] = config_map["data"].items()
    assert key == "config.yaml"
    check_configuration(text, "deploy/base/config.yaml", tmp_path)
    configuration = load_configuration(tmp_path / "config.yaml")
    assert configuration.wait_for_pods_ready.enable and configuration.solver.workers >= 1


# --- kustomize -------------------------------------------------------------------------------

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "components", "patches", "replicas", "replacements"}
"""What `render` implements; a kustomization it renders may use nothing else."""

COMPONENT = DEPLOY / "components" / "inference-deployments"


def kustomizations() -> list[Path]:
    return sorted(DEPLOY.rglob("kustomization.yaml"))


def listed_paths(folder: Path, kustomization: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    for field in ("resources", "components", "crds"):
        for entry in kustomization.get(field, []):
            yield field, folder / entry
    for patch in kustomization.get("patches", []) + kustomization.get("patchesJson6902", []) + \
            kustomization.get("replacements", []):
        if "path" in patch:
            yield "patches", folder / patch["path"]
    for entry in kustomization.get("patchesStrategicMerge", []):
        if isinstance(entry, str) and "\n" not in entry:
            yield "patchesStrategicMerge", folder / entry
    for generator in kustomization.get("configMapGenerator", []) + kustomization.get("secretGenerator", []):
        for entry in generator.get("files", []) + generator.get("envs", []) + \
                ([generator["env"]] if "env" in generator else []):
            yield "generator", folder / entry.split("=", 1)[-1]


def test_every_kustomization_lists_only_existing_paths() -> None:
    found = kustomizations()
    assert {DEPLOY / "kustomization.yaml", BASE / "kustomization.yaml", DEV / "kustomization.yaml",
            DEPLOY / "crds" / "kustomization.yaml", COMPONENT / "kustomization.yaml"} <= set(found)
    for path in found:
        [kustomization] = load_docs(path)
        assert kustomization["kind"] in ("Kustomization", "Component"), path
        for field, target in listed_paths(path.parent, kustomization):
            assert target.exists(), f"{path.relative_to(ROOT)}: {field}: {target} does not exist"
            if target.is_dir():
                [listed] = load_docs(target / "kustomization.yaml")
                assert listed["kind"] == ("Component" if field == "components" else "Kustomization"), \
                    f"{path.relative_to(ROOT)}: {field}: {target}"


def test_no_manifest_in_the_base_is_left_out() -> None:
    for folder in (BASE, DEPLOY / "crds"):
        [kustomization] = load_docs(folder / "kustomization.yaml")
        listed = {(folder / entry).resolve() for entry in kustomization["resources"]}
        for path in folder.glob("*.yaml"):
            if path.name != "kustomization.yaml":
                assert path.resolve() in listed, f"{path.relative_to(ROOT)} is not in its kustomization"
    [top] = load_docs(DEPLOY / "kustomization.yaml")
    assert top["resources"] == ["base"]
    assert "monitoring" not in json.dumps(top) + json.dumps(load_docs(BASE / "kustomization.yaml"))


def _matches(obj: dict[str, Any], target: dict[str, Any]) -> bool:
    meta = obj["metadata"]
    version = str(obj["apiVersion"]).split("/")[-1]
    return all((
        target.get("group", group_of(obj)) == group_of(obj),
        target.get("version", version) == version,
        target.get("kind", obj["kind"]) == obj["kind"],
        target.get("name", meta["name"]) == meta["name"],
        target.get("namespace", meta.get("namespace")) == meta.get("namespace"),
    ))


def _merge(into: dict[str, Any], patch: dict[str, Any], where: str) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, where)
        elif isinstance(value, list) and key in into:
            raise AssertionError(f"{where}: the test renderer does not merge lists ({key}); use a JSON patch")
        else:
            into[key] = copy.deepcopy(value)


def _field_path(path: str) -> list[str]:
    """A kustomize field path (`data.ca\\.crt`, `webhooks.*.clientConfig.caBundle`) as its segments."""
    return [part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", path)]


def _get_field(obj: Any, path: list[str], where: str) -> Any:
    for part in path:
        assert isinstance(obj, dict) and part in obj, f"{where}: no field {part!r}"
        obj = obj[part]
    return obj


def _set_field(obj: Any, path: list[str], value: Any, create: bool, where: str) -> None:
    part, rest = path[0], path[1:]
    if part == "*":
        assert isinstance(obj, list) and obj, f"{where}: '*' needs a non-empty list"
        for item in obj:
            _set_field(item, rest, value, create, where)
        return
    assert not part.startswith("["), f"{where}: the test renderer does not implement {part}"
    assert isinstance(obj, dict), f"{where}: {part!r} is not in a mapping"
    if not rest:
        assert create or part in obj, f"{where}: no field {part!r} (options.create is off)"
        obj[part] = copy.deepcopy(value)
        return
    if part not in obj:
        assert create, f"{where}: no field {part!r} (options.create is off)"
        obj[part] = {}
    _set_field(obj[part], rest, value, create, where)


def render(folder: Path, accumulated: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """What `kustomize build folder` produces, for the features the deploy kustomizations use.

    A Component transforms `accumulated` (the resources of the kustomization using it). Fails
    on anything it does not implement, and on a patch, replica count or replacement that
    matches no object (kustomize would apply it to nothing, or fail).
    """
    [kustomization] = load_docs(folder / "kustomization.yaml")
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unknown, f"{folder}: the test renderer does not implement {sorted(unknown)}"
    assert (kustomization["kind"] == "Component") == (accumulated is not None), folder
    objects: list[dict[str, Any]] = [] if accumulated is None else accumulated
    for entry in kustomization.get("resources", []):
        path = folder / entry
        objects += render(path) if path.is_dir() else load_docs(path)
    for entry in kustomization.get("components", []):
        objects = render(folder / entry, objects)
    for item in kustomization.get("replicas", []):
        hits = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "ReplicaSet")
                and o["metadata"]["name"] == item["name"]]
        assert hits, f"{folder}: replicas: no workload named {item['name']}"
        for obj in hits:
            obj["spec"]["replicas"] = item["count"]
    for number, item in enumerate(kustomization.get("patches", []), 1):
        where = f"{folder}: patches[{number}]"
        text = item["patch"] if "patch" in item else (folder / item["path"]).read_text(encoding="utf-8")
        patch = yaml.safe_load(text)
        target = item.get("target")
        if isinstance(patch, list):  # RFC 6902 JSON patch
            assert target, f"{where}: a JSON patch needs a target"
            hits = [i for i, o in enumerate(objects) if _matches(o, target)]
            assert hits, f"{where}: target {target} matches nothing"
            for i in hits:
                objects[i] = jsonpatch.apply_patch(objects[i], patch)
            continue
        selector = target or {"group": group_of(patch), "version": str(patch["apiVersion"]).split("/")[-1],
                              "kind": patch["kind"], "name": patch["metadata"]["name"]}
        if not target and patch["metadata"].get("namespace"):
            selector["namespace"] = patch["metadata"]["namespace"]
        hits = [i for i, o in enumerate(objects) if _matches(o, selector)]
        assert hits, f"{where}: {selector} matches nothing"
        if patch.get("$patch") == "delete":
            objects = [o for i, o in enumerate(objects) if i not in hits]
        else:
            body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
            for i in hits:
                _merge(objects[i], body, where)
    for number, item in enumerate(kustomization.get("replacements", []), 1):
        where = f"{folder}: replacements[{number}]"
        source = item["source"]
        [origin] = [o for o in objects if _matches(o, {k: v for k, v in source.items() if k != "fieldPath"})]
        value = _get_field(origin, _field_path(source["fieldPath"]), where)
        for target in item["targets"]:
            hits = [o for o in objects if _matches(o, target["select"])]
            assert hits, f"{where}: {target['select']} matches nothing"
            create = bool((target.get("options") or {}).get("create"))
            for obj in hits:
                for field_path in target["fieldPaths"]:
                    _set_field(obj, _field_path(field_path), value, create, where)
    if accumulated is None:
        for obj in objects:  # kustomize drops metadata maps a patch emptied
            for field in ("annotations", "labels"):
                if obj["metadata"].get(field) == {}:
                    del obj["metadata"][field]
        ids = [obj_id(o) for o in objects]
        assert len(ids) == len(set(ids)), f"{folder}: duplicate objects"
    return objects


def kubectl_kustomize(folder: Path) -> list[dict[str, Any]] | None:
    """`kubectl kustomize folder`, or None when kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, f"kubectl kustomize {folder}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def by_id(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    return {obj_id(o): o for o in objects}


def assert_same_as_kubectl(folder: Path, rendered: list[dict[str, Any]]) -> None:
    real = kubectl_kustomize(folder)
    if real is None:
        return  # no kubectl here: the pure-Python rendering above is the check
    ours, theirs = by_id(rendered), by_id(real)
    assert set(ours) == set(theirs), f"{folder}: objects differ: {set(ours) ^ set(theirs)}"
    for key, obj in ours.items():
        assert obj == theirs[key], f"{folder}: {key} renders differently with kubectl kustomize"


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    objects = render(DEPLOY)
    assert_same_as_kubectl(DEPLOY, objects)
    return objects


@pytest.fixture(scope="module")
def dev() -> list[dict[str, Any]]:
    objects = render(DEV)
    assert_same_as_kubectl(DEV, objects)
    return objects


@pytest.fixture(scope="module")
def with_deployments(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The base with the inference-deployments component, as an overlay would use it."""
    folder = tmp_path_factory.mktemp("overlay")
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, folder)], "components": [os.path.relpath(COMPONENT, folder)]}))
    objects = render(folder)
    assert_same_as_kubectl(folder, objects)
    return objects


def test_the_base_renders_every_part(base: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in base)
    assert kinds.count("CustomResourceDefinition") == 7
    for kind in ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                 "ConfigMap", "Deployment", "PodDisruptionBudget", "MutatingWebhookConfiguration",
                 "ValidatingWebhookConfiguration", "Issuer", "Certificate"):
        assert kinds.count(kind) == 1, kind
    assert kinds.count("Service") == 2
    assert find(base, "Namespace")["metadata"]["name"] == NAMESPACE == certs.DEFAULT_NAMESPACE
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                      "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    for obj in base:
        expected = None if obj["kind"] in cluster_scoped else NAMESPACE
        assert obj["metadata"].get("namespace") == expected, obj_id(obj)
    assert not any(o["kind"] in ("ServiceMonitor", "PrometheusRule") for o in base), "monitoring is separate"


def test_the_dev_overlay_is_the_base_with_one_replica_and_no_cert_manager(
        base: list[dict[str, Any]], dev: list[dict[str, Any]]) -> None:
    assert find(dev, "Deployment")["spec"]["replicas"] == 1
    assert not [o for o in dev if group_of(o) == "cert-manager.io"]
    assert not [o for o in dev if o["kind"] == "PodDisruptionBudget"], "minAvailable 1 of 1 replica blocks drains"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        annotations = find(dev, kind)["metadata"].get("annotations") or {}
        assert "cert-manager.io/inject-ca-from" not in annotations
    dropped = {obj_id(o) for o in base} - {obj_id(o) for o in dev}
    assert {kind for _, kind, _, _ in dropped} == {"Issuer", "Certificate", "PodDisruptionBudget"}
    changed = {key for key, obj in by_id(dev).items() if obj != by_id(base)[key]}
    assert {kind for _, kind, _, _ in changed} == {"Deployment", "MutatingWebhookConfiguration",
                                                   "ValidatingWebhookConfiguration"}


def test_the_renderer_refuses_a_patch_without_target(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, tmp_path)],
        "patches": [{"patch": "- op: remove\n  path: /spec/minAvailable",
                     "target": {"kind": "PodDisruptionBudget", "name": "no-such-budget"}}],
    }))
    with pytest.raises(AssertionError, match="matches nothing"):
        render(tmp_path)


# --- RBAC: exactly the calls the operator and kopf make -----------------------------------------

Call = tuple[str, str, str]  # (API group, resource[/subresource], verb)
CLIENT_VERBS = {"get", "list", "create", "patch", "delete"}
"""`KubeApi` methods that are API calls, named after their RBAC verb (`request` is a raw call: refused)."""


def deployed_configuration(objects: list[dict[str, Any]], tmp_path: Path) -> Configuration:
    """The Configuration in the rendered ConfigMap, read as `tessera run --config` reads it."""
    text = find(objects, "ConfigMap", "tessera-config")["data"]["config.yaml"]
    path = tmp_path / "deployed-config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_configuration(path)


def _kube_names() -> tuple[dict[str, kube.Resource], dict[str, tuple[kube.Resource, ...]]]:
    single = {n: v for n, v in vars(kube).items() if isinstance(v, kube.Resource)}
    groups = {n: tuple(v) for n, v in vars(kube).items()
              if isinstance(v, tuple) and v and all(isinstance(r, kube.Resource) for r in v)}
    return single, groups


def change_fields(integration: Any) -> set[str]:
    """The `Change` fields an integration's methods (its own or inherited) ever set: what it writes."""
    fields: set[str] = set()
    for cls in type(integration).__mro__:
        if not cls.__module__.startswith("admission."):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Change":
                assert not node.args, f"{cls.__name__}: Change with positional arguments"
                fields |= {k.arg for k in node.keywords if k.arg}
    return fields


# Calls whose resource is a variable, by (module, function): what the variable can be.
DYNAMIC: dict[tuple[str, str], Any] = {
    # the initial listing: every watched resource (the base kinds and each enabled integration's kind)
    ("operator.py", "initial_sync"): lambda op: set(op.watched),
    # ClusterQueue and LocalQueue status
    ("queue_status.py", "_write"): lambda op: {kube.CLUSTER_QUEUES, kube.LOCAL_QUEUES},
    # an integration's merge patch of its object (and the re-read after a conflict): those whose Changes patch it
    ("scheduling.py", "apply_change"): lambda op: {i.resource for i in op.integrations if "patch" in change_fields(i)},
}
# Calls on a constant resource made only for some integrations, by (module, function, plural, verb).
CONDITIONAL: dict[tuple[str, str, str, str], Any] = {
    ("scheduling.py", "apply_change", "pods", "patch"):
        lambda op: any("pod_patches" in change_fields(i) for i in op.integrations),
    ("scheduling.py", "apply_change", "pods", "delete"):
        lambda op: any("pod_deletions" in change_fields(i) for i in op.integrations),
}


def api_call_sites() -> tuple[list[tuple[str, str, kube.Resource | None, str, str]], list[str]]:
    """Every `KubeApi` call in admission/ (but its emulator): (module, function, constant resource or None, verb, suffix).

    Also the calls that cannot be read (a raw request, a computed subresource).
    """
    single, _ = _kube_names()
    sites: list[tuple[str, str, kube.Resource | None, str, str]] = []
    unreadable: list[str] = []
    package = Path(admission.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if path.name == "testing.py":
            continue
        module = path.relative_to(package).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        kube_imports: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "admission.kube":
                kube_imports.update({a.asname or a.name: a.name for a in node.names})
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            if not ((isinstance(owner, ast.Attribute) and owner.attr == "api")
                    or (isinstance(owner, ast.Name) and owner.id == "api")):
                continue
            where = f"{module}:{node.lineno}"
            method = node.func.attr
            if method in ("close", "connection"):
                continue  # no API call
            if method not in CLIENT_VERBS:
                unreadable.append(f"{where}: api.{method}")
                continue
            scope: ast.AST | None = node
            while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = parents.get(scope)
            function = scope.name if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)) else "<module>"
            first = node.args[0] if node.args else None
            resource = single[kube_imports[first.id]] if isinstance(first, ast.Name) and \
                kube_imports.get(first.id) in single else None
            sub = next((k.value for k in node.keywords if k.arg == "subresource"), None)
            if sub is not None and not (isinstance(sub, ast.Constant) and isinstance(sub.value, str)):
                unreadable.append(f"{where}: subresource is not a constant")
                continue
            sites.append((module, function, resource, method, f"/{sub.value}" if sub is not None else ""))
    return sites, unreadable


def operator_calls(operator: Operator) -> set[Call]:
    """The API calls this operator (its configuration, its integrations) can make itself, from its source."""
    sites, unreadable = api_call_sites()
    assert not unreadable, unreadable
    calls: set[Call] = set()
    for module, function, resource, verb, suffix in sites:
        if resource is None:
            assert (module, function) in DYNAMIC, f"{module} {function}: api.{verb} on a computed resource: " \
                                                  "say in DYNAMIC what it can be"
            resources = DYNAMIC[(module, function)](operator)
        else:
            condition = CONDITIONAL.get((module, function, resource.plural, verb))
            resources = {resource} if condition is None or condition(operator) else set()
        calls |= {(r.group, r.plural + suffix, verb) for r in resources}
    return calls


def _kopf_resource(resource: kube.Resource) -> references.Resource:
    return references.Resource(group=resource.group, version=resource.version, plural=resource.plural,
                               kind=resource.kind, namespaced=resource.namespaced, preferred=True,
                               verbs=frozenset({"list", "watch", "get", "patch"}))


def kopf_resources() -> list[references.Resource]:
    return [_kopf_resource(r) for r in _kube_names()[0].values()]


def write_certs(folder: Path) -> certs.WebhookCerts:
    made = certs.generate()
    certs.write(folder, made)
    return made


def kopf_run(config: OperatorConfig, monkeypatch: pytest.MonkeyPatch) -> tuple[Operator, dict[str, Any]]:
    """The operator, and the arguments it starts kopf with (kopf.operator is replaced; nothing connects)."""
    captured: dict[str, Any] = {}

    async def fake_operator(**kwargs: Any) -> None:
        captured.update(kwargs)

    operator = Operator(config)
    monkeypatch.setattr(kopf, "operator", fake_operator)
    asyncio.run(operator._run_kopf(operator.kopf_settings()))
    assert captured["registry"] is operator.registry
    return operator, captured


def kopf_calls(captured: dict[str, Any]) -> set[Call]:
    """The API calls kopf makes for this registry and these settings (kopf 1.3x's reactor)."""
    registry: kopf.OperatorRegistry = captured["registry"]
    settings: kopf.OperatorSettings = captured["settings"]
    resources = kopf_resources()
    calls: set[Call] = set()
    for handlers, writes in ((registry._watching, False), (registry._indexing, False),
                             (registry._changing, True), (registry._spawning, True)):
        for handler in handlers.get_all_handlers():
            matched = [r for r in resources if handler.selector is not None and handler.selector.check(r)]
            assert matched, f"kopf handler {handler.id} watches a resource admission.kube does not know"
            for r in matched:
                calls |= {(r.group, r.plural, "list"), (r.group, r.plural, "watch")}
                if writes:  # finalizers, progress and diff-base annotations
                    calls.add((r.group, r.plural, "patch"))
    if not settings.scanning.disabled:
        calls |= {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
        if not captured.get("clusterwide"):
            calls |= {("", "namespaces", v) for v in ("list", "watch")}
    if not captured.get("standalone"):
        calls |= {("kopf.dev", "clusterkopfpeerings", v) for v in ("list", "watch", "patch")}
    if settings.posting.enabled:
        calls.add(("", "events", "create"))
    if settings.admission.managed:
        calls |= {("admissionregistration.k8s.io", p, v) for p in ("mutatingwebhookconfigurations",
                                                                   "validatingwebhookconfigurations")
                  for v in ("get", "create", "patch")}
    return calls


def needed_calls(configuration: Configuration, cert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> set[Call]:
    """What the operator with this Configuration needs, run with -A (as deployed) or with --namespace."""
    needed: set[Call] = set()
    for namespaces in ([], ["team-a"]):  # kopf lists and watches namespaces only with --namespace
        operator, captured = kopf_run(OperatorConfig(namespaces=namespaces, configuration=configuration,
                                                     policy="kueue", webhook_cert_dir=str(cert_dir)), monkeypatch)
        assert captured.get("standalone") is True and not captured["settings"].posting.enabled
        assert captured["settings"].admission.managed is None
        needed |= operator_calls(operator) | kopf_calls(captured)
    return needed


def granted(rules: list[dict[str, Any]]) -> set[Call]:
    out = set()
    for rule in rules:
        for value in (*rule.get("apiGroups", []), *rule.get("resources", []), *rule["verbs"]):
            assert value != "*" and "*" not in value, f"wildcard in {rule}"
        assert "nonResourceURLs" not in rule, rule
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def granted_to(objects: list[dict[str, Any]], account: str, kind: str) -> set[Call]:
    """What the bindings of this kind (ClusterRoleBinding or RoleBinding) give the ServiceAccount."""
    role_kind = kind.removesuffix("Binding")
    out: set[Call] = set()
    for binding in (o for o in objects if o["kind"] == kind):
        if {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in binding["subjects"]:
            assert binding["roleRef"]["kind"] == role_kind
            out |= granted(find(objects, role_kind, binding["roleRef"]["name"])["rules"])
    return out


def test_the_source_scan_finds_the_operators_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sites, unreadable = api_call_sites()
    assert not unreadable, unreadable
    keys = {(m, f) for m, f, r, _, _ in sites if r is None}
    assert keys == set(DYNAMIC), f"computed resources at {sorted(keys)}; DYNAMIC describes {sorted(DYNAMIC)}"
    conditional = {(m, f, r.plural, v) for m, f, r, v, _ in sites if r is not None}
    assert set(CONDITIONAL) <= conditional, "CONDITIONAL names calls the source no longer makes"
    write_certs(tmp_path)
    operator, _ = kopf_run(OperatorConfig(policy="kueue", webhook_cert_dir=str(tmp_path)), monkeypatch)
    calls = operator_calls(operator)
    # constants, a subresource, the computed initial listing, the Lease, Events, a queued kind's patch
    assert {("tessera.dev", "workloads", "create"), ("tessera.dev", "workloads/status", "patch"),
            ("batch", "jobs", "list"), ("", "nodes", "list"), ("tessera.dev", "topologies", "list"),
            ("coordination.k8s.io", "leases", "create"), ("", "events", "create"), ("batch", "jobs", "patch")} <= calls
    assert not {c for c in calls if c[2] == "update"}
    assert "patch" in change_fields(integrations.BATCH_JOB)


@pytest.mark.parametrize("variant", ["base", "with inference deployments"])
def test_rbac_is_exactly_what_the_operator_and_kopf_call(
        variant: str, base: list[dict[str, Any]], with_deployments: list[dict[str, Any]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    objects = base if variant == "base" else with_deployments
    write_certs(tmp_path)
    configuration = deployed_configuration(objects, tmp_path)
    needed = needed_calls(configuration, tmp_path, monkeypatch)

    declared = {(g, r, v) for g, r, verbs in kube.API_CALLS for v in verbs}
    assert needed <= declared, f"calls missing from admission.kube.API_CALLS: {sorted(needed - declared)}"

    account = find(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    cluster_wide = granted_to(objects, account, "ClusterRoleBinding")
    namespaced = granted_to(objects, account, "RoleBinding")
    lease_calls = {c for c in needed if c[1] == "leases"}
    assert namespaced == lease_calls, "the Role is leader election only"
    assert cluster_wide == needed - lease_calls, (
        f"the ClusterRoles miss {sorted(needed - lease_calls - cluster_wide)}, "
        f"grant unused {sorted(cluster_wide - needed)}")
    for rule in find(objects, "Role")["rules"]:
        if set(rule["verbs"]) & {"get", "patch"}:
            assert rule.get("resourceNames") == [DEFAULT_LEASE_NAME]
    assert not any("resourceNames" in rule for o in objects if o["kind"] == "ClusterRole" for rule in o["rules"])


def test_the_component_turns_on_deployments_and_changes_nothing_else(
        base: list[dict[str, Any]], with_deployments: list[dict[str, Any]], tmp_path: Path) -> None:
    before = deployed_configuration(base, tmp_path)
    after = deployed_configuration(with_deployments, tmp_path)
    assert after.integrations.frameworks == [*before.integrations.frameworks, "deployment"]
    assert after.model_dump(exclude={"integrations"}) == before.model_dump(exclude={"integrations"})
    added = {obj_id(o) for o in with_deployments} - {obj_id(o) for o in base}
    assert {kind for _, kind, _, _ in added} == {"ClusterRole", "ClusterRoleBinding"}
    changed = {key for key, obj in by_id(base).items() if obj != by_id(with_deployments)[key]}
    assert {kind for _, kind, _, _ in changed} == {"ConfigMap", "MutatingWebhookConfiguration"}


def test_the_bindings_give_the_roles_to_the_controllers_service_account(base: list[dict[str, Any]]) -> None:
    account = find(base, "ServiceAccount")
    pod = find(base, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    for binding_kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = find(base, binding_kind)
        assert binding["subjects"] == [subject]
        assert binding["roleRef"]["kind"] == role_kind
        find(base, role_kind, binding["roleRef"]["name"])
    role = find(base, "Role")
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    # The Lease lives in POD_NAMESPACE, the Role's namespace.
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert role["metadata"]["namespace"] == find(base, "Deployment")["metadata"]["namespace"]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


# --- the controller Deployment ---------------------------------------------------------------


def run_command() -> Any:
    command = typer.main.get_command(app)
    return command.commands["run"]  # type: ignore[attr-defined]


def run_params(args: list[str]) -> dict[str, Any]:
    """`tessera run ARGS` parsed by the real command (an unknown or malformed flag fails here)."""
    command = run_command()
    ctx = command.make_context("run", list(args))
    return dict(ctx.params)


def container_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_run_params_refuses_unknown_flags() -> None:
    with pytest.raises(Exception, match="no-such-flag"):
        run_params(["--no-such-flag"])


def test_the_deployment_runs_the_operator_with_its_real_flags(base: list[dict[str, Any]]) -> None:
    deployment = find(base, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = container_of(base)
    assert "command" not in container, "the image's ENTRYPOINT is tessera run"
    params = run_params(container["args"])
    assert not params["no_webhook"] and params["webhook_port"] > 0
    assert not params["namespace"]  # all namespaces: pods everywhere occupy node capacity
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"webhook": params["webhook_port"], "metrics": params["metrics_port"],
                     "health": params["health_port"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def volume_at(path: Path | str) -> dict[str, Any]:
        mount = mounts[str(path)]
        return volumes[mount["name"]]

    # --config: a key of the ConfigMap, mounted read-only
    config = Path(params["config"])
    config_volume = volume_at(config.parent)
    config_map = find(base, "ConfigMap", config_volume["configMap"]["name"])
    assert config.name in config_map["data"]
    assert mounts[str(config.parent)].get("readOnly") is True
    # --webhook-cert-dir: the Secret cert-manager (or tessera certs) writes
    cert_volume = volume_at(params["webhook_cert_dir"])
    secret = cert_volume["secret"]["secretName"]
    assert secret == find(base, "Certificate")["spec"]["secretName"] == certs.DEFAULT_SECRET
    # the root filesystem is read-only: /tmp and the SQLite ledger's folder are emptyDirs
    assert "emptyDir" in volume_at("/tmp")
    ledger = params["ledger"]
    assert ledger and "://" not in ledger
    assert "emptyDir" in volume_at(Path(ledger).parent)
    # the leader-election identity and namespace come from the downward API
    assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
    assert deployment["spec"]["replicas"] == 2
    assert container["image"].rsplit(":", 1)[1] == __version__


def test_the_install_guides_ledger_patch_points_the_ledger_at_postgresql(base: list[dict[str, Any]]) -> None:
    guide = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", guide, re.S) if "TESSERA_LEDGER_URL" in b]
    [item] = yaml.safe_load(block)["patches"]
    deployment = find(base, "Deployment")
    assert _matches(deployment, item["target"])
    patched = jsonpatch.apply_patch(deployment, yaml.safe_load(item["patch"]))
    container = patched["spec"]["template"]["spec"]["containers"][0]
    before, after = run_params(container_of(base)["args"]), run_params(container["args"])
    assert after["ledger"] == "$(TESSERA_LEDGER_URL)" and before["ledger"] != after["ledger"]
    assert {k: v for k, v in after.items() if k != "ledger"} == {k: v for k, v in before.items() if k != "ledger"}
    env = {e["name"]: e for e in container["env"]}
    assert env["TESSERA_LEDGER_URL"]["valueFrom"]["secretKeyRef"] == {"name": "tessera-ledger", "key": "url"}


def test_only_the_crds_lack_the_label_uninstalling_keeps_them_by(base: list[dict[str, Any]]) -> None:
    for obj in base:
        labelled = (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "tessera"
        assert labelled != (obj["kind"] == "CustomResourceDefinition"), obj_id(obj)


def test_the_probes_use_the_health_endpoints(base: list[dict[str, Any]]) -> None:
    container = container_of(base)
    params = run_params(container["args"])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        port = named.get(get["port"], get["port"])
        assert port == params["health_port"]
    assert container["readinessProbe"]["periodSeconds"] <= 10


def test_the_pod_is_locked_down(base: list[dict[str, Any]]) -> None:
    pod = find(base, "Deployment")["spec"]["template"]["spec"]
    container = container_of(base)
    pod_security, security = pod["securityContext"], container["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert (security.get("seccompProfile") or pod_security.get("seccompProfile")) == {"type": "RuntimeDefault"}
    resources = container["resources"]
    for name in ("cpu", "memory"):
        assert parse_quantity(resources["requests"][name]) <= parse_quantity(resources["limits"][name]), name
    uid, gid = dockerfile_user()
    assert pod_security["runAsUser"] == security.get("runAsUser", uid) == uid
    assert pod_security["runAsGroup"] == gid


def test_the_disruption_budget_keeps_one_replica(base: list[dict[str, Any]]) -> None:
    budget = find(base, "PodDisruptionBudget")
    deployment = find(base, "Deployment")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_services_reach_the_controller_ports(base: list[dict[str, Any]]) -> None:
    labels = find(base, "Deployment")["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in container_of(base)["ports"]}
    webhook = find(base, "Service", certs.DEFAULT_SERVICE)
    metrics = find(base, "Service", "tessera-metrics")
    for service in (webhook, metrics):
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    assert [(p["port"], p["targetPort"]) for p in webhook["spec"]["ports"]] == [(443, "webhook")]
    assert [(p["name"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [("metrics", "metrics")]
    # deploy/monitoring's ServiceMonitor contract: these labels and a port named metrics, on this Service only
    contract = {"app.kubernetes.io/name": "tessera", "app.kubernetes.io/component": "controller"}
    assert contract.items() <= metrics["metadata"]["labels"].items()
    assert not contract.items() <= webhook["metadata"]["labels"].items()
    for path in sorted((DEPLOY / "monitoring").glob("*.yaml")):
        for monitor in (d for d in load_docs(path) if d.get("kind") == "ServiceMonitor"):
            selector = monitor["spec"]["selector"]["matchLabels"]
            assert selector.items() <= metrics["metadata"]["labels"].items()
            assert not selector.items() <= webhook["metadata"]["labels"].items()
            assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in metrics["spec"]["ports"]}


# --- webhooks --------------------------------------------------------------------------------


def expected_webhooks(configuration: Configuration, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> dict[WebhookType, list[dict[str, Any]]]:
    """The webhooks kopf itself would configure for the handlers of the operator with this Configuration."""
    write_certs(tmp_path)
    operator, _ = kopf_run(OperatorConfig(policy="kueue", configuration=configuration,
                                          webhook_cert_dir=str(tmp_path)), monkeypatch)
    client = {"service": {"name": certs.DEFAULT_SERVICE, "namespace": NAMESPACE, "path": ""}}
    handlers = list(operator.registry._webhooks.get_all_handlers())
    assert handlers
    out: dict[WebhookType, list[dict[str, Any]]] = {}
    for handler in handlers:
        [webhook] = build_webhooks([handler], resources=kopf_resources(), name_suffix="tessera.dev",
                                   client_config=client)  # type: ignore[arg-type]
        out.setdefault(handler.reason, []).append(webhook)
    return out


def flat_rules(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {(g, v, r, op) for rule in rules for g in rule["apiGroups"] for v in rule["apiVersions"]
            for r in rule["resources"] for op in rule["operations"]}


@pytest.mark.parametrize("variant", ["base", "dev", "with inference deployments"])
def test_webhook_configurations_match_the_handlers_the_operator_serves(
        variant: str, base: list[dict[str, Any]], dev: list[dict[str, Any]],
        with_deployments: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = {"base": base, "dev": dev, "with inference deployments": with_deployments}[variant]
    expected = expected_webhooks(deployed_configuration(objects, tmp_path), tmp_path, monkeypatch)
    service = find(objects, "Service", certs.DEFAULT_SERVICE)
    [service_port] = service["spec"]["ports"]
    for reason, kind in ((WebhookType.MUTATING, "MutatingWebhookConfiguration"),
                         (WebhookType.VALIDATING, "ValidatingWebhookConfiguration")):
        configuration = find(objects, kind)
        ours = {w["clientConfig"]["service"]["path"]: w for w in configuration["webhooks"]}
        theirs = {w["clientConfig"]["service"]["path"]: w for w in expected[reason]}
        assert len(ours) == len(configuration["webhooks"]), f"{kind}: a path twice"
        assert set(ours) == set(theirs), f"{kind}: paths {sorted(ours)}, the operator serves {sorted(theirs)}"
        for path, webhook in ours.items():
            kopf_webhook = theirs[path]
            assert webhook["name"] == f"{path.lstrip('/')}.tessera.dev"
            assert flat_rules(webhook["rules"]) == flat_rules(kopf_webhook["rules"]), path
            assert webhook.get("objectSelector") == kopf_webhook["objectSelector"], path
            assert webhook["sideEffects"] == "None"
            assert set(webhook["admissionReviewVersions"]) <= set(kopf_webhook["admissionReviewVersions"])
            ref = webhook["clientConfig"]["service"]
            assert (ref["name"], ref["namespace"], ref["port"]) == (service["metadata"]["name"], NAMESPACE,
                                                                    service_port["port"])
            assert webhook["failurePolicy"] == "Fail"  # nothing queued starts unheld, nothing invalid is stored
            assert webhook["timeoutSeconds"] <= 30
    mutating = {w["clientConfig"]["service"]["path"]: w for w in find(objects, "MutatingWebhookConfiguration")["webhooks"]}
    # Unlabelled Jobs never pass through the webhook.
    assert mutating["/mutate-job"]["objectSelector"] == \
        {"matchExpressions": [{"key": QUEUE_NAME_LABEL, "operator": "Exists"}]}
    assert flat_rules(mutating["/mutate-job"]["rules"]) == {("batch", "v1", "jobs", "CREATE")}
    [validating] = find(objects, "ValidatingWebhookConfiguration")["webhooks"]
    assert validating["clientConfig"]["service"]["path"] == "/validate-tessera"
    assert {r for _, _, r, _ in flat_rules(validating["rules"])} == {r.plural for r in kube.TESSERA_RESOURCES}


def test_cert_manager_issues_the_webhook_certificate_and_injects_its_ca(base: list[dict[str, Any]]) -> None:
    certificate = find(base, "Certificate")
    issuer = find(base, "Issuer")
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"] and "selfSigned" in issuer["spec"]
    names = certs.dns_names(certs.DEFAULT_SERVICE, NAMESPACE)
    assert {f"{certs.DEFAULT_SERVICE}.{NAMESPACE}.svc", f"{certs.DEFAULT_SERVICE}.{NAMESPACE}.svc.cluster.local"} \
        <= set(certificate["spec"]["dnsNames"]) <= set(names)
    reference = f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"
    for kind, name in certs.WEBHOOK_CONFIGURATIONS:
        configuration = find(base, kind, name)
        assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == reference


# --- tessera certs ---------------------------------------------------------------------------


def test_generated_certificates_chain_to_the_ca() -> None:
    made = certs.generate("svc", "ns", days=30)
    ca = x509.load_pem_x509_certificate(made.ca_crt)
    cert = x509.load_pem_x509_certificate(made.tls_crt)
    key = serialization.load_pem_private_key(made.tls_key, password=None)
    cert.verify_directly_issued_by(ca)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sans == ["svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=30)
    assert cert.not_valid_before_utc < datetime.datetime.now(datetime.timezone.utc)
    assert base64.b64decode(made.ca_bundle) == made.ca_crt
    other = certs.generate("svc", "ns")
    assert other.ca_crt != made.ca_crt and other.tls_key != made.tls_key


@pytest.mark.parametrize("kwargs, option", [
    ({"service": "Bad_Name"}, "--service"), ({"namespace": "-x"}, "--namespace"), ({"days": 0}, "--days"),
])
def test_generate_refuses_bad_input(kwargs: dict[str, Any], option: str) -> None:
    with pytest.raises(certs.CertsError) as caught:
        certs.generate(**kwargs)
    assert caught.value.option == option


def _handshake(folder: Path, server_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TLS handshake against the context the operator's webhook server builds from `folder`."""
    operator, _ = kopf_run(OperatorConfig(policy="kueue", webhook_cert_dir=str(folder)), monkeypatch)
    server = operator.kopf_settings().admission.server
    _, server_context = server._build_ssl()  # type: ignore[union-attr]
    assert server_context is not None
    client_context = ssl.create_default_context(cafile=str(folder / certs.CA_FILE))

    async def run() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
        port = listener.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context,
                                                           server_hostname=server_name)
            writer.write(b"ping\n")
            assert await reader.readline() == b"ping\n"
            writer.close()
        finally:
            listener.close()
            await listener.wait_closed()

    asyncio.run(run())


def test_the_operator_serves_the_certificate_and_the_api_server_trusts_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_certs(tmp_path)
    _handshake(tmp_path, f"{certs.DEFAULT_SERVICE}.{NAMESPACE}.svc", monkeypatch)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tmp_path, "tessera-webhook.other-namespace.svc", monkeypatch)


def test_cli_certs_writes_files_secret_and_patch(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = runner.invoke(app, ["certs", "--namespace", "ml-ops", "--service", "hook", "--secret-name", "hook-tls",
                                 "--days", "10", "-o", str(out), "--overlay", str(DEV)])
    assert result.exit_code == 0, result.output
    for name in certs.OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert (out / certs.KEY_FILE).stat().st_mode & 0o077 == 0
    assert (out / certs.SECRET_FILE).stat().st_mode & 0o077 == 0
    ca = (out / certs.CA_FILE).read_bytes()
    assert f"caBundle: {base64.b64encode(ca).decode()}" in result.output
    [secret] = load_docs(out / certs.SECRET_FILE)
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"], secret["type"]) == \
        ("hook-tls", "ml-ops", "kubernetes.io/tls")
    for name in (certs.CA_FILE, certs.CERT_FILE, certs.KEY_FILE):
        assert base64.b64decode(secret["data"][name]) == (out / name).read_bytes()
    cert = x509.load_pem_x509_certificate((out / certs.CERT_FILE).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "hook.ml-ops.svc" in sans and "hook.ml-ops.svc.cluster.local" in sans
    assert os.access(out / certs.PATCH_SCRIPT, os.X_OK)
    [kustomization] = load_docs(out / certs.KUSTOMIZATION_FILE)
    assert kustomization["resources"] == [os.path.relpath(DEV, out), certs.SECRET_FILE]
    assert kustomization["replacements"][0]["source"]["name"] == "hook-tls"

    again = runner.invoke(app, ["certs", "-o", str(out), "--overlay", str(DEV)])
    assert again.exit_code == 2 and "--force" in again.output
    assert (out / certs.CA_FILE).read_bytes() == ca, "nothing is replaced without --force"
    forced = runner.invoke(app, ["certs", "-o", str(out), "--overlay", str(DEV), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (out / certs.CA_FILE).read_bytes() != ca


@pytest.mark.parametrize("args, message", [
    (["--days", "0"], "--days"),
    (["--namespace", "Team_A"], "--namespace"),
    (["--overlay", "no/such/overlay"], "--overlay"),
])
def test_cli_certs_refuses_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["certs", "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {message}"), result.output
    assert not (tmp_path / "out" / certs.KEY_FILE).exists()


@pytest.mark.parametrize("with_component", [False, True], ids=["dev", "dev with inference deployments"])
def test_the_certs_folder_installs_the_dev_overlay_with_the_certificate(
        with_component: bool, dev: list[dict[str, Any]], tmp_path: Path) -> None:
    overlay = DEV
    if with_component:  # more webhooks: every one gets the caBundle
        overlay = tmp_path / "overlay"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(DEV, overlay)], "components": [os.path.relpath(COMPONENT, overlay)]}))
    out = tmp_path / "tessera-certs"
    result = runner.invoke(app, ["certs", "-o", str(out), "--overlay", str(overlay)])
    assert result.exit_code == 0, result.output
    assert f"kubectl apply -k {out}" in result.output
    ca = (out / certs.CA_FILE).read_bytes()
    installed = render(out)
    assert_same_as_kubectl(out, installed)
    secret_id = ("", "Secret", NAMESPACE, certs.DEFAULT_SECRET)
    assert {obj_id(o) for o in installed} - {obj_id(o) for o in render(overlay)} == {secret_id}
    if not with_component:
        assert {obj_id(o) for o in installed} == {obj_id(o) for o in dev} | {secret_id}
    webhooks = [w for kind, name in certs.WEBHOOK_CONFIGURATIONS for w in find(installed, kind, name)["webhooks"]]
    assert len(webhooks) == (6 if with_component else 4)
    for webhook in webhooks:
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca
    pod = find(installed, "Deployment")["spec"]["template"]["spec"]
    secret_names = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secret_names == {find(installed, "Secret")["metadata"]["name"]}


FAKE_KUBECTL = """#!{python}
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] == "get":
    print("\\n".join(json.loads({webhooks!r})[args[1]]))
"""


def test_the_patch_script_sets_the_ca_bundle_in_every_webhook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without kustomize: the script asks kubectl how many webhooks each configuration has and patches each."""
    made = write_certs(tmp_path / "certs")
    names = {"mutatingwebhookconfiguration/tessera-mutating-webhook": ["a.tessera.dev", "b.tessera.dev", "c.x"],
             "validatingwebhookconfiguration/tessera-validating-webhook": ["v.tessera.dev"]}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "kubectl.log"
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL.format(python=sys.executable, log=str(log),
                                                         webhooks=json.dumps(names)))
    (bin_dir / "kubectl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["sh", str(tmp_path / "certs" / certs.PATCH_SCRIPT)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    patched: dict[str, list[int]] = {}
    for call in calls:
        if call[0] != "patch":
            continue
        assert call[2:4] == ["--type=json", "-p"]
        [op] = json.loads(call[4])
        assert op["op"] == "add" and op["value"] == made.ca_bundle
        index = int(re.fullmatch(r"/webhooks/(\d+)/clientConfig/caBundle", op["path"]).group(1))  # type: ignore[union-attr]
        patched.setdefault(call[1], []).append(index)
    assert patched == {config: list(range(len(webhooks))) for config, webhooks in names.items()}


# --- the image -------------------------------------------------------------------------------


def dockerfile_instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "Dockerfile ends inside an instruction"
    out = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last:]


def dockerfile_user() -> tuple[int, int]:
    [user] = [rest for keyword, rest in final_stage() if keyword == "USER"]
    uid, gid = user.split(":")
    return int(uid), int(gid)


def dockerignored(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        hit = any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_the_dockerfile_builds_the_operator_image(base: list[dict[str, Any]]) -> None:
    instructions = dockerfile_instructions()
    assert instructions[0][0] in ("ARG", "FROM")
    for keyword, rest in instructions:
        if keyword == "FROM":
            assert re.match(r"python:\S*slim", rest.replace("${PYTHON_VERSION}", "3.11")), rest
    stage = final_stage()
    [entrypoint] = [rest for keyword, rest in stage if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["tessera", "run"]
    uid, gid = dockerfile_user()
    assert uid > 0 and gid > 0
    exposed = {int(p.split("/")[0]) for keyword, rest in stage if keyword == "EXPOSE" for p in rest.split()}
    defaults = {p.name: p.default for p in run_command().params}
    assert exposed == {defaults["webhook_port"], defaults["metrics_port"], defaults["health_port"]}
    ports = {p["containerPort"] for p in container_of(base)["ports"]}
    assert exposed == ports
    installs = [rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest]
    assert any(re.search(r"pip install (\"?\.(\[[a-z,]+\])?\"?)(\s|$)", rest) for rest in installs), installs

    copied: set[str] = set()
    for keyword, rest in instructions:
        if keyword != "COPY" or "--from=" in rest:
            continue
        *sources, _destination = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            copied.add(source.rstrip("/"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {"pyproject.toml", pyproject["project"]["readme"], *packages} <= copied

    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.startswith("#")]
    for source in sorted(copied):
        assert not dockerignored(source, ignore), f".dockerignore drops {source}, which the Dockerfile copies"
        for path in (ROOT / source).rglob("*.py") if (ROOT / source).is_dir() else []:
            relative = path.relative_to(ROOT).as_posix()
            if "__pycache__" not in relative:
                assert not dockerignored(relative, ignore), relative
    for heavy in (".venv", ".git", "tests", "benchmarks/results"):
        assert dockerignored(heavy, ignore), heavy


# --- samples ---------------------------------------------------------------------------------


def sample_jobs() -> list[dict[str, Any]]:
    return [d for path in sorted(SAMPLE.glob("*.yaml")) for d in load_docs(path) if d["kind"] == "Job"]


def test_the_sample_jobs_are_queued_suspended_gpu_jobs() -> None:
    jobs = {job["metadata"]["name"]: job for job in sample_jobs()}
    [topology] = [d for d in load_docs(SAMPLE / "queues.yaml") if d["kind"] == "Topology"]
    rack = topology["spec"]["levels"][1]["nodeLabel"]
    for job in jobs.values():
        assert job["apiVersion"] == "batch/v1" and job["spec"]["suspend"] is True
        assert job["metadata"]["labels"][QUEUE_NAME_LABEL]
        for container in job["spec"]["template"]["spec"]["containers"]:
            assert int(container["resources"]["requests"]["nvidia.com/gpu"]) >= 1
    single = [j for j in jobs.values() if j["spec"].get("parallelism", 1) == 1 and j["spec"].get("completions", 1) == 1]
    gangs = [j for j in jobs.values() if j["spec"].get("parallelism", 1) > 1
             and j["spec"].get("parallelism") == j["spec"].get("completions")]
    required = [j for j in jobs.values()
                if (j["spec"]["template"].get("metadata") or {}).get("annotations", {}).get(REQUIRED_TOPOLOGY_ANNOTATION)
                == rack]
    inference = [j for j in jobs.values() if j["metadata"]["labels"].get(WORKLOAD_TYPE_LABEL) == "inference"]
    assert single and len(gangs) >= 2 and required and inference
    assert all(j["metadata"]["labels"].get(WORKLOAD_TYPE_LABEL) == "training" for j in single + gangs)


def test_the_samples_validate_with_the_cli() -> None:
    result = runner.invoke(app, ["validate", str(SAMPLE)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output and "object(s) valid" in result.output


def readme_simulation_commands() -> list[list[str]]:
    text = (DEPLOY / "samples" / "README.md").read_text(encoding="utf-8")
    section = text.split("### Simulating a sample", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    assert [c[:2] for c in commands] == [["tessera", "cluster"], ["tessera", "simulate"]]
    return [c[1:] for c in commands]


def test_the_sample_simulates_as_the_readme_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    generate, simulate = readme_simulation_commands()
    local = str(tmp_path / "nodes.yaml")  # the README writes the nodes where simulate reads them
    assert generate[generate.index("-o") + 1] == simulate[simulate.index("--cluster") + 1]
    generate[generate.index("-o") + 1] = local
    simulate[simulate.index("--cluster") + 1] = local
    result = runner.invoke(app, generate)
    assert result.exit_code == 0, result.output
    racks = {n["metadata"]["name"]: n["metadata"]["labels"]["tessera.dev/rack"] for n in load_docs(Path(local))}
    result = runner.invoke(app, [*simulate, "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)["results"]
    assert {r["policy"] for r in results} == {"tessera", "kueue"}
    jobs = {j["metadata"]["name"]: j for j in sample_jobs()}
    for run in results:
        workloads = {w["name"]: w for w in run["workloads"]}
        assert set(workloads) == {f"job-{name}" for name in jobs}
        assert run["metrics"]["admitted"] == len(jobs), run["policy"]
        rack_local = workloads["job-moe-rack-local"]
        assert len(rack_local["nodes"]) == 4 and len({racks[n] for n in rack_local["nodes"]}) == 1
        assert len(workloads["job-llama-pretrain"]["nodes"]) == 4
        assert workloads["job-llm-chat-service"]["finished_at"] is None  # a service runs until the end
        assert workloads["job-bert-finetune"]["finished_at"] is not None
