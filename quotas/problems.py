"""Problems found in manifests, each naming where (file:document), what (Kind/name) and which field.

Every reader of user input (loader, validation, Kueue import, trace readers) reports
through this one type, so the CLI prints them the same way and exits 2 on errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding; `str()` gives `queues.yaml:3: ClusterQueue/team-a: spec.cohort: message`."""

    where: str
    obj: str
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return ": ".join(part for part in (self.where, self.obj, self.path, self.message) if part)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


def errors_in(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.is_error]


class ManifestError(ValueError):
    """Raised by APIs that must refuse input outright; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
