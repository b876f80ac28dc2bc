"""Shared pydantic configuration and name syntax for every manifest model.

Manifests are written in camelCase (the Kubernetes convention) while Python code
uses snake_case; one alias generator keeps the two in step for every kind.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

API_GROUP = "tessera.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

# The label and annotation keys users put on their Jobs (DESIGN.md, "On a user's Job").
QUEUE_NAME_LABEL = f"{API_GROUP}/queue-name"
PRIORITY_CLASS_LABEL = f"{API_GROUP}/priority-class"
WORKLOAD_TYPE_LABEL = f"{API_GROUP}/workload-type"
REQUIRED_TOPOLOGY_ANNOTATION = f"{API_GROUP}/podset-required-topology"
PREFERRED_TOPOLOGY_ANNOTATION = f"{API_GROUP}/podset-preferred-topology"
MIN_PARALLELISM_ANNOTATION = f"{API_GROUP}/job-min-parallelism"
SIM_SUBMIT_AT_ANNOTATION = f"{API_GROUP}/sim-submit-at"
SIM_DURATION_ANNOTATION = f"{API_GROUP}/sim-duration"
WORKLOAD_TYPES = ("training", "inference")


class ApiModel(BaseModel):
    """Strict model for Tessera's own kinds: an unknown field is a typo, so it is an error."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=False,
    )

    def to_manifest(self) -> dict[str, Any]:
        """The object as a user would write it: camelCase, defaults left out, apiVersion and kind first."""
        body = self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")
        head = {key: getattr(self, attr) for key, attr in (("apiVersion", "api_version"), ("kind", "kind")) if hasattr(self, attr)}
        return {**head, **body}


class KubeModel(BaseModel):
    """Lenient model for built-in Kubernetes kinds: keep what we do not read, so objects round-trip."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def dns1123_label_problem(value: str) -> str | None:
    """Why `value` is not a DNS-1123 label (namespaces, podset names), or None."""
    if len(value) > 63:
        return f"must be at most 63 characters, got {len(value)}"
    if not _DNS1123_LABEL.match(value):
        return "must be a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
    return None


def dns1123_subdomain_problem(value: str) -> str | None:
    """Why `value` is not a DNS-1123 subdomain (most object names), or None."""
    if len(value) > 253:
        return f"must be at most 253 characters, got {len(value)}"
    if not _DNS1123_SUBDOMAIN.match(value):
        return "must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)"
    return None


def qualified_name_problem(value: str) -> str | None:
    """Why `value` is not a qualified name (label keys, resource names such as nvidia.com/gpu), or None."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        if not prefix:
            return "prefix before '/' must not be empty"
        problem = dns1123_subdomain_problem(prefix)
        if problem:
            return f"prefix {prefix!r} {problem}"
    if not name:
        return "name part must not be empty"
    if len(name) > 63:
        return f"name part must be at most 63 characters, got {len(name)}"
    if not _QUALIFIED_NAME.match(name):
        return "must be a qualified name (letters, digits, '-', '_' and '.', starting and ending with a letter or digit, with an optional DNS subdomain prefix and '/')"
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None."""
    if len(value) > 63:
        return f"must be at most 63 characters, got {len(value)}"
    if not _LABEL_VALUE.match(value):
        return "must be empty or letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    return None


def _checked(kind: str, check: Any) -> Any:
    def validate(value: str) -> str:
        problem = check(value)
        if problem:
            raise PydanticCustomError(kind, '{problem}, got "{value}"', {"problem": problem, "value": value})
        return value

    return AfterValidator(validate)


ObjectName = Annotated[str, _checked("object_name", dns1123_subdomain_problem)]
LabelName = Annotated[str, _checked("dns_label", dns1123_label_problem)]
QualifiedName = Annotated[str, _checked("qualified_name", qualified_name_problem)]
LabelValue = Annotated[str, _checked("label_value", label_value_problem)]
ResourceName = QualifiedName


def _labels_ok(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        problem = qualified_name_problem(key)
        if problem:
            raise PydanticCustomError("label_key", 'label key "{key}" {problem}', {"key": key, "problem": problem})
        problem = label_value_problem(value)
        if problem:
            raise PydanticCustomError(
                "label_value", 'label "{key}" value "{value}" {problem}', {"key": key, "value": value, "problem": problem}
            )
    return labels


Labels = Annotated[dict[str, str], AfterValidator(_labels_ok)]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
