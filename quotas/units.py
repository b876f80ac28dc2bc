"""Quota amounts as integer milli-units, the one number type of the quota engine.

Why integers: the scheduler's CP-SAT model only takes integers, and the simulator
adds and subtracts usage thousands of times per run, where Decimal is slow and
float drifts. Kubernetes quantities are exact decimals; multiplying by 1000 and
rounding *up* (as Kubernetes does when it reads a quantity with
``MilliValue()``) keeps fractional GPU shares (``"500m"`` -> 500) and whole GPUs
(``"1"`` -> 1000) exact, and never lets a request look smaller than it is.

A quota key is a ``FlavorResource``: the pair ``(flavor, resource)``, e.g.
``("a100", "nvidia.com/gpu")``, exactly like Kueue's ``resources.FlavorResource``.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from functools import lru_cache

__all__ = ["FlavorResource", "MILLI", "format_amount", "from_milli", "milli"]

FlavorResource = tuple[str, str]
"""``(flavor name, resource name)``: the unit in which quota and usage are counted."""

MILLI = 1000
"""Milli-units per unit: 1 GPU = 1000, ``"250m"`` CPU = 250."""


def milli(quantity: Decimal | int) -> int:
    """``quantity`` in milli-units, rounded up (so a request is never under-counted)."""
    if isinstance(quantity, bool):
        raise TypeError("milli() needs a Decimal or int, got bool")
    if isinstance(quantity, int):
        return quantity * MILLI
    return int((quantity * MILLI).to_integral_value(rounding=ROUND_CEILING))


def from_milli(amount: int) -> Decimal:
    """The quantity that ``amount`` milli-units stand for (exact)."""
    return Decimal(amount).scaleb(-3)


@lru_cache(maxsize=8192)
def format_amount(amount: int, resource: str = "") -> str:
    """``amount`` milli-units as a Kubernetes quantity for messages: ``4000`` -> ``"4"``.

    Memory-like resources (``memory``, ``ephemeral-storage``, hugepages) are written
    with binary suffixes (``"64Gi"``) because that is how admins write their quotas.
    Cached: scheduling cycles word the same few amounts in thousands of pending reasons.
    """
    from quotas.quantity import format_quantity  # local: keep this module import-light

    binary = "memory" in resource or "storage" in resource or resource.startswith("hugepages-")
    return format_quantity(from_milli(amount), "BinarySI" if binary else "DecimalSI")
