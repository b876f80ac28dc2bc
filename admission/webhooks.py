"""Admission webhooks: hold new queued Jobs, refuse invalid tessera.dev objects, refuse malformed reviews cleanly.

* Mutating, on Job CREATE: a Job carrying `tessera.dev/queue-name` gets `spec.suspend: true`,
  so it starts only when the operator admits it (`job_mutation`). Every other integration
  (`admission.integrations`) has its own path, scoped to its kind: `/mutate-jobset` and
  `/mutate-pytorchjob` suspend, `/mutate-deployment` copies the queue labels into the pod
  template and `/mutate-pod` gates the pods of queued inference Deployments.
* Validating, on CREATE and UPDATE of every tessera.dev kind: the object is parsed and
  checked with the foundation's `quotas.bundle.parse_object` and
  `quotas.validation.check_object`, so an admin sees the same `Kind/name: field: message`
  that `tessera validate` prints (`validation_errors`). References to other objects
  (an unknown flavor, ...) are only warnings: `kubectl apply -f dir/` creates objects in
  any order, and Kueue accepts such objects too (they stay inactive until the reference exists).
* `SafeWebhookServer`: kopf's server, except that a request that is not a well-formed
  AdmissionReview gets a clean answer (HTTP 400 with a Status, or a refusing AdmissionReview
  when its uid is known) instead of a traceback and a 500; so does any unexpected error.

kopf does the routing (`/<handler id>`, or any path for all handlers) and the JSON patch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp.web
import kopf
from pydantic import BaseModel

from admission import integrations as ig
from admission.integrations import Integration
from admission.integrations.deployment import DeploymentIntegration, pod_mutation
from quotas.base import API_GROUP, GROUP_VERSION, QUEUE_NAME_LABEL
from quotas.bundle import build_bundle, object_key, parse_object, without_nulls
from quotas.loader import RawObject, Source
from quotas.problems import Problem
from quotas.validation import check_object

logger = logging.getLogger("tessera.webhooks")

try:  # kopf's "the review itself is wrong" errors (not public API: fall back to none)
    from kopf._core.engines.admission import WebhookError as _KopfWebhookError

    _WEBHOOK_ERRORS: tuple[type[Exception], ...] = (_KopfWebhookError,)
except ImportError:  # pragma: no cover
    _WEBHOOK_ERRORS = ()

MUTATE_JOB_ID = "mutate-job"
VALIDATE_ID = "validate-tessera"
WEBHOOK_SOURCE = Source("admission", 0)


def job_mutation(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec fields to set on a new Job: `{"suspend": True}` for a queued Job not yet suspended, else None
    (also for a Job of a JobSet: the JobSet is queued, not its Jobs)."""
    patch = ig.BATCH_JOB.mutation(job)
    return dict(patch["spec"]) if patch else None


def _problem_text(problem: Problem) -> str:
    # `tessera validate` prints "file:doc: Kind/name: field: message"; there is no file here.
    return ": ".join(part for part in (problem.obj, problem.path, problem.message) if part)


def validation_errors(obj: Mapping[str, Any], known: Iterable[BaseModel] | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) for one tessera.dev object, in `tessera validate`'s words.

    `known` (the operator's parsed tessera.dev objects) adds reference checks, as warnings.
    """
    raw = RawObject(WEBHOOK_SOURCE, without_nulls(dict(obj)))
    model, problems = parse_object(raw)
    errors = [_problem_text(p) for p in problems if p.is_error]
    warnings = [_problem_text(p) for p in problems if not p.is_error]
    if model is None:
        return errors, warnings
    errors += [_problem_text(Problem("", raw.label, path, message)) for path, message in check_object(model)]
    if errors or known is None:
        return errors, warnings
    raws = [RawObject(Source("cluster", 0), m.to_manifest()) for m in known if object_key(m) != object_key(model)]
    _bundle, found = build_bundle([*raws, raw])
    for problem in found:
        if problem.is_error and problem.obj == raw.label:
            warnings.append(_problem_text(problem))
    return errors, warnings


# --- the kopf handlers ------------------------------------------------------------------------


def register(registry: kopf.OperatorRegistry, known: Callable[[], Iterable[BaseModel]] | None = None,
             integrations: Iterable[Integration] | None = None) -> None:
    """Register the admission handlers on `registry`: one mutating handler per integration (default: Jobs
    only) and the validating one; `known()` returns the current tessera.dev objects."""

    def mutating(integration: Integration) -> None:
        resource = integration.resource

        def mutate(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
            patch.update(integration.mutation(body) or {})

        kopf.on.mutate(resource.group, resource.version, resource.plural, id=integration.webhook_id,
                       operations=list(integration.webhook_operations), labels={QUEUE_NAME_LABEL: kopf.PRESENT},
                       registry=registry)(mutate)
        if isinstance(integration, DeploymentIntegration):

            def mutate_pod(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
                patch.update(pod_mutation(body) or {})

            kopf.on.mutate("", "v1", "pods", id=integration.pod_webhook_id, operations=["CREATE"],
                           labels={QUEUE_NAME_LABEL: kopf.PRESENT}, registry=registry)(mutate_pod)

    for integration in (integrations if integrations is not None else [ig.BATCH_JOB]):
        mutating(integration)

    @kopf.on.validate(API_GROUP, GROUP_VERSION.split("/")[1], kopf.EVERYTHING, id=VALIDATE_ID,
                      operations=["CREATE", "UPDATE"], registry=registry)
    def validate_tessera(body: kopf.Body, warnings: list[str], **_: Any) -> None:
        errors, found = validation_errors(dict(body), known() if known is not None else None)
        warnings.extend(found)
        if errors:
            raise kopf.AdmissionError("; ".join(errors), code=422)


# --- the server -------------------------------------------------------------------------------

REQUIRED = (("request", dict), ("request.uid", str), ("request.resource", dict), ("request.operation", str),
            ("request.userInfo", dict))


def review_problem(review: Any) -> str | None:
    """Why `review` is not an AdmissionReview kopf can serve, or None when it is."""
    if not isinstance(review, dict):
        return "the body must be a JSON object (an AdmissionReview)"
    if review.get("kind") not in (None, "AdmissionReview"):
        return f'kind must be AdmissionReview, got "{review.get("kind")}"'
    for path, kind in REQUIRED:
        value: Any = review
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, kind):
            return f"{path} is missing or not a {'mapping' if kind is dict else 'string'}"
    request = review["request"]
    for part in ("group", "version", "resource"):
        if not isinstance(request["resource"].get(part), str):
            return f"request.resource.{part} is missing or not a string"
    if not isinstance(request.get("object"), dict) and not isinstance(request.get("oldObject"), dict):
        return "request.object or request.oldObject must be an object"
    return None


def refusal(review: Any, message: str, code: int = 400) -> dict[str, Any]:
    """An AdmissionReview answer that denies the request with `message`."""
    uid = review["request"]["uid"] if isinstance(review, dict) and isinstance(review.get("request"), dict) else ""
    api_version = review.get("apiVersion", "admission.k8s.io/v1") if isinstance(review, dict) else "admission.k8s.io/v1"
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": False, "status": {"code": code, "message": message}},
    }


def _status(code: int, message: str) -> aiohttp.web.Response:
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "message": message}
    return aiohttp.web.json_response(body, status=code)


class SafeWebhookServer(kopf.WebhookServer):
    """kopf's `WebhookServer` with clean refusals for malformed requests (see the module docstring)."""

    @staticmethod
    async def _serve(fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:
        try:
            text = await request.text()
            review = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            return _status(400, f"malformed AdmissionReview: not JSON: {exc}")
        problem = review_problem(review)
        if problem is not None:
            if isinstance(review, dict) and isinstance(review.get("request"), dict) \
                    and isinstance(review["request"].get("uid"), str):
                return aiohttp.web.json_response(refusal(review, f"malformed AdmissionReview: {problem}"))
            return _status(400, f"malformed AdmissionReview: {problem}")
        webhook = request.match_info.get("id") or None
        headers = dict(request.headers)
        sslpeer = request.transport.get_extra_info("peercert") if request.transport else None
        try:
            response = await fn(review, webhook=webhook, sslpeer=sslpeer, headers=headers)
        except _WEBHOOK_ERRORS as exc:  # e.g. a resource no handler serves
            return aiohttp.web.json_response(refusal(review, f"malformed AdmissionReview: {exc}"))
        except Exception as exc:  # a clean refusal, never a crash
            logger.exception("admission request %s failed", review["request"]["uid"])
            return aiohttp.web.json_response(refusal(review, f"internal error: {type(exc).__name__}: {exc}", 500))
        return aiohttp.web.json_response(response)


def make_server(port: int, *, addr: str = "0.0.0.0", certfile: str | None = None, pkeyfile: str | None = None,
                insecure: bool = False) -> SafeWebhookServer:
    """The webhook server: HTTPS with the given certificate, or plain HTTP when `insecure` (tests, local runs)."""
    if insecure:
        return SafeWebhookServer(addr=addr, port=port, insecure=True)
    return SafeWebhookServer(addr=addr, port=port, certfile=certfile, pkeyfile=pkeyfile)
