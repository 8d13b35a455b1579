"""The outcome every statistical comparison ends in."""

from __future__ import annotations

import math
import numbers
from enum import StrEnum

__all__ = ["Outcome", "bad_number"]


class Outcome(StrEnum):
    PASS = "pass"
    """No regression, and enough data that one of the size that matters would have shown."""
    FAIL = "fail"
    """A regression beyond the margin, at the configured confidence."""
    INCONCLUSIVE = "inconclusive"
    """Not failing, but too few samples to rule out a regression that matters: hold, gather more."""
    NO_DATA = "no data"
    """Nothing to compare (a side empty, or unusable numbers). Never a pass."""


def bad_number(value: float, name: str) -> str | None:
    """Why ``value`` cannot be a count, or ``None``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return f"{name} is not a number ({value!r})"
    if math.isnan(value):
        return f"{name} is NaN"
    if math.isinf(value):
        return f"{name} is infinite"
    if value < 0:
        return f"{name} is negative ({value:g})"
    return None
