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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
