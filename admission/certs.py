"""`tessera certs`: a self-signed CA and the webhook's serving certificate, for clusters without cert-manager.

The API server calls the admission webhooks over HTTPS at `https://<service>.<namespace>.svc`
and trusts the CA given as `caBundle` in each webhook configuration. With cert-manager the
base (`deploy/base/certificates.yaml`) issues the certificate and injects the CA; without it
(`deploy/overlays/dev`) the admin runs `tessera certs`, which writes into one folder:

* `ca.crt`, `tls.crt`, `tls.key` — the CA and the serving certificate (ECDSA P-256, SANs
  `<service>`, `<service>.<namespace>`, `<service>.<namespace>.svc` and
  `<service>.<namespace>.svc.cluster.local`);
* `secret.yaml` — the `kubernetes.io/tls` Secret the controller Deployment mounts at
  `--webhook-cert-dir` (same name as cert-manager's Secret in the base);
* `kustomization.yaml` (when the overlay is found) — the dev overlay plus the Secret, and a
  kustomize replacement copying the Secret's `ca.crt` into `clientConfig.caBundle` of every
  webhook of both webhook configurations (however many webhooks the enabled integrations
  add), so `kubectl apply -k <folder>` installs everything in one step;
* `patch-ca-bundle.sh` — the same caBundle patch without kustomize: `kubectl patch` (JSON
  patch) of every webhook of both configurations, for an installation applied otherwise
  (`kubectl apply -f secret.yaml` first).

The folder holds a private key: keep it out of version control.
"""

from __future__ import annotations

import base64
import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMESPACE = "tessera-system"
DEFAULT_SERVICE = "tessera-webhook"
DEFAULT_SECRET = "tessera-webhook-tls"
"""The Secret the controller mounts (cert-manager's Certificate writes the same name in the base)."""
DEFAULT_DAYS = 365
MUTATING_WEBHOOK_CONFIGURATION = "tessera-mutating-webhook"
VALIDATING_WEBHOOK_CONFIGURATION = "tessera-validating-webhook"
WEBHOOK_CONFIGURATIONS = (
    ("MutatingWebhookConfiguration", MUTATING_WEBHOOK_CONFIGURATION),
    ("ValidatingWebhookConfiguration", VALIDATING_WEBHOOK_CONFIGURATION),
)
"""(kind, name) of the webhook configurations whose webhooks all get the caBundle."""

CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"
SECRET_FILE, PATCH_SCRIPT, KUSTOMIZATION_FILE = "secret.yaml", "patch-ca-bundle.sh", "kustomization.yaml"
OUTPUT_FILES = (CA_FILE, CERT_FILE, KEY_FILE, SECRET_FILE, PATCH_SCRIPT, KUSTOMIZATION_FILE)

CLOCK_SKEW = datetime.timedelta(minutes=5)
"""Certificates are valid from a little before now, so nodes with a slow clock accept them at once."""


class CertsError(ValueError):
    """Bad `tessera certs` input (exit status 2): `option` names the flag."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


@dataclass(frozen=True)
class WebhookCerts:
    """PEM-encoded CA certificate, serving certificate and serving key (PKCS#8)."""

    ca_crt: bytes
    tls_crt: bytes
    tls_key: bytes
    dns_names: tuple[str, ...]
    not_after: datetime.datetime

    @property
    def ca_bundle(self) -> str:
        """The `caBundle` value of a webhook configuration: the CA certificate, PEM, base64-encoded."""
        return base64.b64encode(self.ca_crt).decode("ascii")


def dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """The names the API server (and anything in the cluster) may use to reach the Service."""
    return (service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local")


def _check_label(option: str, value: str) -> None:
    # Service and namespace names are DNS-1123 labels.
    ok = 0 < len(value) <= 63 and value[0].isalnum() and value[-1].isalnum() and all(
        c.islower() or c.isdigit() or c == "-" for c in value)
    if not ok or not value.isascii():
        raise CertsError(option, f"must be a DNS-1123 label (lower-case letters, digits, '-'), got {value!r}")


def generate(service: str = DEFAULT_SERVICE, namespace: str = DEFAULT_NAMESPACE, *, days: int = DEFAULT_DAYS,
             now: datetime.datetime | None = None) -> WebhookCerts:
    """A new CA and a serving certificate for `<service>.<namespace>.svc`, both valid for `days` days."""
    _check_label("--service", service)
    _check_label("--namespace", namespace)
    if days < 1:
        raise CertsError("--days", f"must be at least 1, got {days}")
    start = (now or datetime.datetime.now(datetime.timezone.utc)) - CLOCK_SKEW
    end = start + CLOCK_SKEW + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tessera-webhook-ca.{namespace}")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    names = dns_names(service, namespace)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[2])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return WebhookCerts(
        ca_crt=ca_cert.public_bytes(serialization.Encoding.PEM),
        tls_crt=cert.public_bytes(serialization.Encoding.PEM),
        tls_key=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
        dns_names=names,
        not_after=end,
    )


# --- manifests ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def secret_manifest(certs: WebhookCerts, *, name: str = DEFAULT_SECRET,
                    namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """The `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and `ca.crt`, as cert-manager writes it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "tessera", "app.kubernetes.io/component": "webhook"},
        },
        "type": "kubernetes.io/tls",
        "data": {CERT_FILE: _b64(certs.tls_crt), KEY_FILE: _b64(certs.tls_key), CA_FILE: _b64(certs.ca_crt)},
    }


def ca_bundle_replacement(secret_name: str = DEFAULT_SECRET) -> dict[str, Any]:
    """A kustomize replacement: the Secret's `ca.crt` (base64 PEM, exactly a caBundle) into every webhook."""
    return {
        "source": {"version": "v1", "kind": "Secret", "name": secret_name, "fieldPath": "data.ca\\.crt"},
        "targets": [
            {"select": {"group": "admissionregistration.k8s.io", "version": "v1", "kind": kind, "name": name},
             "fieldPaths": ["webhooks.*.clientConfig.caBundle"], "options": {"create": True}}
            for kind, name in WEBHOOK_CONFIGURATIONS
        ],
    }


def kustomization(overlay: str, secret_name: str = DEFAULT_SECRET) -> dict[str, Any]:
    """A kustomization adding the Secret and the caBundle to `overlay` (a path relative to it)."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [overlay, SECRET_FILE],
        "replacements": [ca_bundle_replacement(secret_name)],
    }


def patch_script(certs: WebhookCerts) -> str:
    """A POSIX shell script setting `caBundle` in every webhook of both configurations with `kubectl patch`.

    The number of webhooks depends on the enabled integrations, so the script asks the API
    server for it and patches each index (`/webhooks/<i>/clientConfig/caBundle`).
    """
    configurations = " ".join(f"{kind.lower()}/{name}" for kind, name in WEBHOOK_CONFIGURATIONS)
    return f"""#!/bin/sh
# Written by `tessera certs`: sets the webhook CA (caBundle) in every webhook of Tessera's webhook
# configurations with kubectl patch. Not needed after `kubectl apply -k` of this folder.
set -eu
CA_BUNDLE='{certs.ca_bundle}'
for config in {configurations}; do
  count=$(kubectl get "$config" -o jsonpath='{{range .webhooks[*]}}{{.name}}{{"\\n"}}{{end}}' | wc -l)
  i=0
  while [ "$i" -lt "$count" ]; do
    kubectl patch "$config" --type=json \\
      -p "[{{\\"op\\":\\"add\\",\\"path\\":\\"/webhooks/$i/clientConfig/caBundle\\",\\"value\\":\\"$CA_BUNDLE\\"}}]"
    i=$((i + 1))
  done
done
"""


def _dump(header: str, documents: Iterable[Any]) -> str:
    body = yaml.safe_dump_all(list(documents), sort_keys=False, default_flow_style=False, width=1 << 16)
    return header + body


@dataclass(frozen=True)
class Written:
    folder: Path
    files: tuple[Path, ...]
    kustomization: Path | None


def write(folder: Path, certs: WebhookCerts, *, secret_name: str = DEFAULT_SECRET,
          namespace: str = DEFAULT_NAMESPACE, overlay: Path | None = None, force: bool = False) -> Written:
    """Write the certificate files and manifests into `folder` (see the module docstring).

    `overlay` is the kustomize overlay the generated kustomization builds on (None: no
    kustomization). Existing files are kept unless `force`: overwriting a key by accident
    would break a running installation.
    """
    if not force:
        existing = [name for name in OUTPUT_FILES if (folder / name).exists()]
        if existing:
            raise CertsError("--output", f"{folder} already holds {', '.join(existing)} (pass --force to replace them)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []

        def put(name: str, data: bytes, mode: int = 0o644) -> None:
            path = folder / name
            # Created with its final mode, so the key is never readable by others, not even briefly.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(path, mode)
            files.append(path)

        put(CA_FILE, certs.ca_crt)
        put(CERT_FILE, certs.tls_crt)
        put(KEY_FILE, certs.tls_key, 0o600)
        header = "# Written by `tessera certs`. Holds a private key: keep it out of version control.\n"
        put(SECRET_FILE, _dump(header, [secret_manifest(certs, name=secret_name, namespace=namespace)]).encode(),
            0o600)
        put(PATCH_SCRIPT, patch_script(certs).encode(), 0o755)
        written_kustomization = None
        if overlay is not None:
            relative = os.path.relpath(overlay.resolve(), folder.resolve())
            put(KUSTOMIZATION_FILE, _dump(
                "# Written by `tessera certs`: the dev overlay with this webhook certificate.\n"
                f"#   kubectl apply -k {folder}\n", [kustomization(Path(relative).as_posix(), secret_name)]).encode())
            written_kustomization = folder / KUSTOMIZATION_FILE
    except OSError as exc:
        raise CertsError("--output", f"{folder}: cannot write: {exc.strerror or exc}") from None
    return Written(folder, tuple(files), written_kustomization)
