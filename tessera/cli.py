"""The `tessera` command line: one entry point for admins (validate, import, CRDs), the simulator and the operator.

Exit status 0 on success, 2 on bad input (DESIGN.md). Problems go to stderr one per
line, in the `file:document: Kind/name: field: message` form, never as a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from quotas.problems import Problem, errors_in
from tessera import __version__

app = typer.Typer(
    name="tessera",
    help="GPU-aware batch job queue scheduler for Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)

BAD_INPUT = 2


def fail(message: str) -> NoReturn:
    """Stop with a one-line error and exit status 2."""
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(BAD_INPUT)


def report(problems: list[Problem]) -> int:
    """Print problems (errors and warnings) to stderr; return how many were errors."""
    for problem in problems:
        prefix = "error" if problem.is_error else "warning"
        err.print(f"{prefix}: {problem}", markup=False)
    return len(errors_in(problems))


def _version(value: bool) -> None:
    if value:
        out.print(f"tessera {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """GPU-aware batch job queue scheduler for Kubernetes."""


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or folders (YAML or JSON, multi-document, List).")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing when everything is valid.")] = False,
) -> None:
    """Check manifests: schema, quota structure and references across objects. Exit 2 on any error."""
    from quotas.bundle import load_bundle

    bundle, problems = load_bundle(paths)
    errors = report(problems)
    if errors:
        err.print(f"{errors} error(s) in {len(paths)} path(s)", markup=False)
        raise typer.Exit(BAD_INPUT)
    if not quiet:
        out.print(f"{bundle.count()} object(s) valid", markup=False)


@app.command("import-kueue")
def import_kueue(
    paths: Annotated[list[Path], typer.Argument(help="Kueue manifests (kueue.x-k8s.io v1beta1 or v1beta2) and Jobs.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the converted manifests here instead of stdout.")
    ] = None,
) -> None:
    """Convert Kueue manifests and Kueue-labelled Jobs to tessera.dev/v1alpha1; unsupported fields are warned about."""
    from quotas.kueue_import import convert_paths, dump_manifests

    converted, problems = convert_paths(paths)
    errors = report(problems)
    if errors:
        raise typer.Exit(BAD_INPUT)
    text = dump_manifests(converted)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"{output}: cannot write: {exc.strerror or exc}")
        out.print(f"wrote {len(converted)} object(s) to {output}", markup=False)


@app.command()
def crds(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the CRDs into.")] = Path("deploy/crds"),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the folder differs from what would be written.")
    ] = False,
) -> None:
    """Generate the CustomResourceDefinitions of the tessera.dev kinds from the models."""
    from quotas.crds import diff_crds, write_crds

    if check:
        stale = diff_crds(output)
        for name in stale:
            err.print(f"{output / name}: differs from the generated CRD", markup=False)
        raise typer.Exit(1 if stale else 0)
    try:
        written = write_crds(output)
    except OSError as exc:
        fail(f"{output}: cannot write: {exc.strerror or exc}")
    for path in written:
        out.print(f"wrote {path}", markup=False)


@app.command()
def usage(
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only the last DURATION (7d, 12h, 30m, 2w) or since an ISO time. Default: all."),
    ] = None,
    by: Annotated[
        str, typer.Option("--by", help="Group by queue (LocalQueue), namespace, flavor, cluster-queue or workload-type.")
    ] = "queue",
    ledger: Annotated[
        str | None,
        typer.Option(
            "--ledger",
            help="Ledger database: SQLAlchemy URL (postgresql+psycopg://...) or SQLite file.",
            show_default="sqlite:///tessera-ledger.sqlite",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout instead of a table.")] = False,
) -> None:
    """GPU-hours, other resource-hours and admissions/preemptions/evictions/completions from the usage ledger."""
    import json
    import time
    from datetime import datetime, timezone

    from rich.table import Table
    from rich.text import Text

    from quotas.duration import parse_duration
    from quotas.ledger import Ledger, LedgerError, UsageRow, ledger_url, normalize_group_by, sqlite_path

    now = time.time()
    since_at: float | None = None
    if since is not None:
        try:
            seconds = parse_duration(since.strip())
        except ValueError:
            try:
                moment = datetime.fromisoformat(since.strip())
            except ValueError:
                fail(f"--since: not a duration such as 7d, 12h or 30m, nor an ISO time: {since!r}")
            since_at = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
        else:
            if seconds < 0:
                fail(f"--since: must not be negative: {since!r}")
            since_at = now - seconds
    try:
        group = normalize_group_by(by)
    except ValueError as exc:
        fail(f"--by: {exc}")

    url = ledger_url(ledger)
    rows: list[UsageRow] = []
    try:
        path = sqlite_path(url)
        if path is None or path.exists():
            with Ledger(url) as db:
                shown = db.display_url
                rows = db.usage(since=since_at, by=group, now=now)
        else:
            shown = str(path)  # no file yet: an empty ledger, and nothing is created
    except LedgerError as exc:
        fail(f"--ledger: {exc}")
    total = UsageRow.total(rows)

    if as_json:
        document = {
            "ledger": shown,
            "by": group,
            "since": since_at,
            "now": now,
            "rows": [row.to_dict() for row in rows],
            "total": total.to_dict(),
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return

    def when(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    window = f"since {when(since_at)}" if since_at is not None else "all time"
    if not rows:
        out.print(f"no usage recorded ({window}) in {shown}", markup=False)
        return

    bytes_like = ("memory", "ephemeral-storage")
    resources = sorted({name for row in rows for name in row.resource_seconds})

    def resource_header(name: str) -> str:
        return f"{name} GiB-h" if name in bytes_like or name.startswith("hugepages-") else f"{name}-h"

    def resource_hours(name: str, seconds: float) -> str:
        hours = seconds / 3600.0
        if name in bytes_like or name.startswith("hugepages-"):
            hours /= 2**30
        return f"{hours:,.2f}"

    titles = {
        "queue": "LocalQueue",
        "namespace": "Namespace",
        "flavor": "Flavor",
        "cluster_queue": "ClusterQueue",
        "workload_type": "Type",
    }
    table = Table(title=f"Usage by {group.replace('_', ' ')}, {window}", show_footer=len(rows) > 1)
    table.add_column(titles[group], footer="total")
    table.add_column("GPU-h", justify="right", footer=f"{total.gpu_hours:,.2f}")
    table.add_column("GPU-s", justify="right", footer=f"{total.gpu_seconds:,.0f}")
    for name in resources:
        table.add_column(
            resource_header(name), justify="right", footer=resource_hours(name, total.resource_seconds.get(name, 0.0))
        )
    for header, value in (
        ("Admitted", total.admissions),
        ("Preempted", total.preemptions),
        ("Evicted", total.evictions),
        ("Finished", total.completions),
        ("Running", total.running),
    ):
        table.add_column(header, justify="right", footer=str(value))
    for row in rows:
        table.add_row(
            Text(row.key if row.key is not None else "-"),
            f"{row.gpu_hours:,.2f}",
            f"{row.gpu_seconds:,.0f}",
            *(resource_hours(name, row.resource_seconds.get(name, 0.0)) for name in resources),
            str(row.admissions),
            str(row.preemptions),
            str(row.evictions),
            str(row.completions),
            str(row.running),
        )
    # Never truncate numbers: in a terminal cells fold onto more lines; a pipe or file gets the full width.
    for column in table.columns:
        column.overflow = "fold"
    width = out.measure(table, options=out.options.update_width(100_000)).maximum
    (out if out.is_terminal or width <= out.width else Console(width=width)).print(table)


cluster_app = typer.Typer(help="Simulated clusters: generate Node manifests.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("generate")
def cluster_generate(
    nodes: Annotated[int, typer.Option("--nodes", help="Number of nodes (a multiple of --racks).")],
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", help="GPUs per node (0: CPU-only nodes).")] = 8,
    gpu_model: Annotated[
        str, typer.Option("--gpu-model", help="GPU model, the value of the nvidia.com/gpu.product label.")
    ] = "H100",
    racks: Annotated[int, typer.Option("--racks", help="Racks in all (a multiple of --blocks).")] = 1,
    blocks: Annotated[int, typer.Option("--blocks", help="Blocks (groups of racks).")] = 1,
    cpu: Annotated[str | None, typer.Option("--cpu", help="CPU per node. Default: 16 per GPU.")] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="Memory per node. Default: 128Gi per GPU.")] = None,
    pods: Annotated[int, typer.Option("--pods", help="Pods per node (allocatable pods).")] = 110,
    name_prefix: Annotated[str, typer.Option("--name-prefix", help="Node names are PREFIX-NNN.")] = "node",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Write Node manifests with block, rack and GPU-model labels, spread evenly over blocks x racks."""
    from simulator.cluster_gen import ClusterSpecError, dump_nodes, generate_nodes

    try:
        manifests = generate_nodes(nodes, gpus_per_node, gpu_model, racks, blocks, cpu, memory,
                                   pods_per_node=pods, name_prefix=name_prefix)
    except ClusterSpecError as exc:
        fail(f"--{exc.option}: {exc.message}")
    comment = (f"tessera cluster generate: {nodes} nodes x {gpus_per_node} {gpu_model} GPUs, "
               f"{blocks} block(s) x {racks // blocks} rack(s)")
    text = dump_nodes(manifests, comment)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"{output}: cannot write: {exc.strerror or exc}")
    err.print(f"wrote {len(manifests)} node(s) to {output}", markup=False)


@app.command()
def simulate(
    cluster: Annotated[str | None, typer.Option("--cluster", help="Node manifests (kubectl get nodes -o yaml, or tessera cluster generate).")] = None,
    queues: Annotated[str | None, typer.Option("--queues", help="tessera.dev queue manifests, optionally with a Configuration.")] = None,
    workload: Annotated[str | None, typer.Option("--workload", help="Job manifests, or jsonl:PATH, openb:PATH, philly:PATH, synthetic:SPEC.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="replay (default) or fill.")] = "replay",
    policy: Annotated[str, typer.Option("--policy", help="Comma-separated policies, or all.")] = "tessera,kueue",
    seed: Annotated[int, typer.Option("--seed", help="Seed for the workload generator, placement ties and the solver.")] = 42,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write results.sqlite, plots and report.html here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object (DESIGN.md format).")] = False,
    inflate: Annotated[float, typer.Option("--inflate", help="Fill mode: arrived GPU demand to reach, in multiples of the cluster's GPU capacity.")] = 1.3,
    batch: Annotated[int, typer.Option("--batch", help="Fill mode: arrivals a policy decides at once.")] = 1,
) -> None:
    """Replay a workload through scheduling policies side by side; with no inputs, the built-in default setup."""
    import json

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from quotas.problems import ManifestError
    from simulator.report import metrics_table, write_outputs
    from simulator.run import load_inputs, parse_policies, run

    if mode not in ("replay", "fill"):
        fail(f'--mode: must be replay or fill, got "{mode}"')
    if not inflate > 0 or inflate == float("inf"):
        fail(f"--inflate: must be a number greater than 0, got {inflate}")
    if batch < 1:
        fail(f"--batch: must be at least 1, got {batch}")
    try:
        names = parse_policies(policy)
    except ValueError as exc:
        fail(str(exc))
    try:
        inputs = load_inputs(cluster, queues, workload, seed)
    except ManifestError as exc:
        report(exc.problems)
        raise typer.Exit(BAD_INPUT) from None
    if mode == "fill":  # the FGD paper's packing experiment (docs/fill-mode.md)
        from simulator.fill import FillConfig, run_fill_policies

        fill_config = FillConfig(inflate=inflate, seed=seed, batch=batch)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
            console=err, transient=True, disable=not err.is_terminal,
        ) as bar:
            fill_tasks = {name: bar.add_task(f"filling with {name}", total=None) for name in names}
            try:
                results = run_fill_policies(
                    inputs.setup, names, fill_config,
                    progress=lambda name, done, total: bar.update(fill_tasks[name], completed=done, total=total))
            except ValueError as exc:
                fail(f"--mode fill: {exc}")
        arrivals = len(results[0].workloads) if results else 0
        inputs.description += f"; fill mode: {arrivals} arrivals up to {inflate:g}x GPU capacity, batch {batch}"
    else:
        horizon = max((job.submit_at for job in inputs.setup.jobs), default=0.0) or 1.0
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
            console=err, transient=True, disable=not err.is_terminal,
        ) as bar:
            tasks = {name: bar.add_task(f"simulating {name}", total=horizon) for name in names}
            results = run(inputs, names, lambda name, at: bar.update(tasks[name], completed=min(at, horizon)))
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_outputs(out_dir, results, quotas=inputs.quotas, mode=mode, seed=seed,  # type: ignore[arg-type]
                          title="Tessera simulation" + (" (fill mode)" if mode == "fill" else ""),
                          description=inputs.description)
        except OSError as exc:
            fail(f"{out_dir}: cannot write: {exc.strerror or exc}")
    if as_json:
        payload = {"results": [{"policy": r.policy, "metrics": r.metrics, "workloads": [w.as_json() for w in r.workloads]} for r in results]}
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    out.print(inputs.description, markup=False)
    out.print(metrics_table(results, mode=mode))  # type: ignore[arg-type]
    if out_dir is not None:
        out.print(f"report: {out_dir / 'report.html'}", markup=False)


@app.command()
def run(
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Watch Jobs in every namespace (the default).")] = False,
    namespace: Annotated[list[str] | None, typer.Option("--namespace", "-n", help="Watch Jobs only in this namespace (repeatable).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="File with the tessera.dev/v1alpha1 Configuration document.")] = None,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Prometheus /metrics port (0: off).")] = 8080,
    health_port: Annotated[int, typer.Option("--health-port", help="/healthz and /readyz port (0: off).")] = 8081,
    webhook_port: Annotated[int, typer.Option("--webhook-port", help="HTTPS admission webhook port (0: off).")] = 9443,
    no_webhook: Annotated[bool, typer.Option("--no-webhook", help="Serve no admission webhooks.")] = False,
    webhook_cert_dir: Annotated[Path, typer.Option("--webhook-cert-dir", help="Folder with the webhook's tls.crt and tls.key.")] = Path("/tmp/k8s-webhook-server/serving-certs"),
    ledger: Annotated[str | None, typer.Option("--ledger", help="Usage ledger: SQLAlchemy URL or SQLite file.", show_default="sqlite:///tessera-ledger.sqlite")] = None,
    policy: Annotated[str, typer.Option("--policy", help="Scheduling policy: tessera (falls back to kueue if the solver is unavailable), kueue, bestfit, fgd, random.")] = "tessera",
    log_format: Annotated[str, typer.Option("--log-format", help="Log lines as text or as one JSON object per line.")] = "text",
    log_level: Annotated[str, typer.Option("--log-level", help="Least severe level logged: debug, info, warning, error, critical.")] = "info",
) -> None:
    """Run the operator against the cluster KUBECONFIG (or the in-cluster service account) names."""
    import asyncio

    from kopf import LoginError

    from admission.logs import LOG_FORMATS, LOG_LEVELS, configure_logging
    from admission.operator import ConfigError, Operator, OperatorConfig, load_configuration
    from quotas.ledger import ledger_url
    from quotas.problems import ManifestError

    if all_namespaces and namespace:
        fail("--all-namespaces and --namespace: give one or the other")
    if log_format not in LOG_FORMATS:
        fail(f"--log-format: must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level: must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    for port, flag in ((metrics_port, "--metrics-port"), (health_port, "--health-port"), (webhook_port, "--webhook-port")):
        if not 0 <= port <= 65535:
            fail(f"{flag}: must be a port number 0-65535, got {port}")
    try:
        configuration = load_configuration(config)
    except ManifestError as exc:
        report(exc.problems)
        raise typer.Exit(BAD_INPUT) from None
    configure_logging(log_format, log_level.lower())
    try:
        operator = Operator(OperatorConfig(
            namespaces=list(namespace or []), configuration=configuration, metrics_port=metrics_port,
            health_port=health_port, webhook_port=0 if no_webhook else webhook_port,
            webhook_cert_dir=str(webhook_cert_dir), ledger_url=ledger_url(ledger), policy=policy,
        ))
        operator.api.connection  # noqa: B018 - log in now: a missing kubeconfig is a one-line error
        asyncio.run(operator.run())
    except (ConfigError, KeyError) as exc:
        fail(str(exc).strip("'\""))
    except LoginError as exc:
        err.print(f"error: cannot reach a cluster: {exc}", markup=False)
        raise typer.Exit(1) from None


@app.command()
def certs(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the operator and its webhook Service.")] = "tessera-system",
    service: Annotated[str, typer.Option("--service", help="Name of the webhook Service.")] = "tessera-webhook",
    secret_name: Annotated[str, typer.Option("--secret-name", help="Name of the TLS Secret the controller mounts.")] = "tessera-webhook-tls",
    days: Annotated[int, typer.Option("--days", help="Validity of the CA and the serving certificate, in days.")] = 365,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the certificates and manifests into.")] = Path("tessera-certs"),
    overlay: Annotated[Path | None, typer.Option("--overlay", help="Kustomize overlay the written kustomization.yaml builds on.", show_default="deploy/overlays/dev if present")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace files already in the folder.")] = False,
) -> None:
    """Write a self-signed CA, the webhook's serving certificate, its Secret and the caBundle patch (no cert-manager)."""
    from admission.certs import CertsError, generate, write

    if overlay is not None and not (overlay / "kustomization.yaml").is_file():
        fail(f"--overlay: {overlay}: no kustomization.yaml there")
    # The dev overlay deploys into tessera-system with the default names: build on it only when they are used.
    default_overlay = Path("deploy/overlays/dev")
    defaults = (namespace, service, secret_name) == ("tessera-system", "tessera-webhook", "tessera-webhook-tls")
    chosen = overlay if overlay is not None else \
        default_overlay if defaults and (default_overlay / "kustomization.yaml").is_file() else None
    try:
        made = generate(service, namespace, days=days)
        written = write(output, made, secret_name=secret_name, namespace=namespace, overlay=chosen, force=force)
    except CertsError as exc:
        fail(str(exc))
    for path in written.files:
        out.print(f"wrote {path}", markup=False, soft_wrap=True)
    out.print(f"certificate for {', '.join(made.dns_names)}, valid until {made.not_after:%Y-%m-%d}", markup=False, soft_wrap=True)
    out.print(f"caBundle: {made.ca_bundle}", markup=False, soft_wrap=True)
    if written.kustomization is not None:
        out.print(f"next: kubectl apply -k {output}", markup=False, soft_wrap=True)
    else:
        out.print(f"next: kubectl apply -f {output / 'secret.yaml'}; once the webhook configurations are applied, "
                  f"sh {output / 'patch-ca-bundle.sh'} (docs/install.md)", markup=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
