"""The shared vocabulary of the configuration: severities, meshes, no-data policies, the :class:`Range` of each
unit, durations, Kubernetes name checks, failure codes and the base model every section extends.

Seam: everything here is a leaf; the section modules (gates, statistics, prometheus, ...) build on it and nothing
here knows of them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, GetCoreSchemaHandler
from pydantic_core import core_schema

DEFAULT_CONFIG_NAME = "canary.yaml"
CONFIG_ENV = "CANARY_CONFIG"

# Kubernetes name rules: a namespace is a DNS-1123 label, a Deployment name a DNS-1123 subdomain. Always used with
# fullmatch: `$` would also match before a trailing newline.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DEFAULT_FAILURE_CODES = "5.."
"""What a failed request is unless `failure_codes` says otherwise: a 5xx answer (Linkerd: its own classification)."""
# Prometheus regexes are RE2: no lookaround, no backreferences (Python's re would accept them).
_NOT_RE2 = re.compile(r"\(\?(?:[=!>]|<[=!])|\\[1-9]")


class Severity(StrEnum):
    CRITICAL = "critical"
    """Decides rollback: a breach fails the test."""
    WARNING = "warning"
    """Reported; fails the test only in strict mode (``--strict-gates``)."""
    INFO = "info"
    """Reported only; never fails."""


class Mesh(StrEnum):
    ISTIO = "istio"
    LINKERD = "linkerd"
    CUSTOM = "custom"


class NoDataPolicy(StrEnum):
    FAIL = "fail"
    """No data fails the gate ("the canary received no traffic in the window")."""
    SKIP = "skip"
    """No data skips the gate (it is still never a pass)."""


@dataclass(frozen=True)
class Range:
    """The values a number may take, as ``Annotated`` metadata: ``Annotated[float, Range("a percent", 0, 100)]``.

    A value outside it, NaN or infinity is one error that names the key, the value and the range:
    ``gates.error_rate.threshold: expected a percent from 0 to 100; got nan``."""

    what: str
    """What the number is, as the message names it: "a percent", "a count", "milliseconds"."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """The low end itself is outside (``> low`` rather than ``≥ low``)."""
    high_open: bool = False
    """The high end itself is outside (``< high`` rather than ``≤ high``)."""

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            if not (self.low_open or self.high_open):
                return f"{self.what} from {low} to {high}"
            return f"{self.what} {'>' if self.low_open else '≥'} {low} and {'<' if self.high_open else '≤'} {high}"
        if self.low is not None:
            return f"{self.what} {'>' if self.low_open else '≥'} {low}"
        if self.high is not None:
            return f"{self.what} {'<' if self.high_open else '≤'} {high}"
        return f"{self.what} (a finite number)"

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, value: float) -> float:
        """``value`` if it is in range, else the ValueError that says so."""
        if value not in self:
            raise ValueError(f"expected {self}; got {value!r}")
        return value

    def _validate(self, value: Any, handler: Callable[[Any], Any]) -> Any:
        # NaN and infinity (also written "nan", "inf", "1e999") get this range's message, not the parser's own
        if isinstance(value, str | float):
            try:
                number = float(value)
            except ValueError:
                number = 0.0  # not a number at all: the parser says so
            if not math.isfinite(number):
                raise ValueError(f"expected {self}; got {value!r}")
        return self.check(handler(value))

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(self._validate, handler(source))


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


PERCENT = Range("a percent", 0, 100)
COUNT = Range("a count", 0)
PODS = Range("a number of pods", 1)
RATIO = Range("a ratio", 0, low_open=True)
MILLISECONDS = Range("milliseconds", 0)
PER_SECOND = Range("requests per second", 0)
PORT = Range("a TCP port", 1, 65535)
UNIT_RANGES = {"%": PERCENT, "ms": MILLISECONDS, "req/s": PER_SECOND, "count": COUNT, "ratio": RATIO}
"""What a custom gate's threshold may be in a built-in gate's unit."""
DURATION = Range("a duration", 0, low_open=True)
"""What :data:`Duration` takes (written ``30s``, ``5m``, ``1h``, ``250ms`` or as seconds)."""


def parse_duration(value: object) -> float:
    """``30s``, ``5m``, ``1h``, ``250ms`` or a number of seconds → seconds; more than 0 and finite."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h; got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if not match:
            raise ValueError(f"expected a duration such as 30s, 5m or 1h; got {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds not in DURATION:
        raise ValueError(f"expected {DURATION}, such as 30s, 5m or 1h; got {value!r}")
    return seconds


def parse_stage(value: object) -> int:
    """A stage as written on a command line or in a webhook's metadata: ``25`` or ``25%`` → 25. Whether it is one
    of the configured stages is :meth:`CanaryConfig.check_stages`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = value.strip().removesuffix("%") if isinstance(value, str) else ""
    if not text.isdecimal():
        raise ValueError(f"expected a whole percent such as 25; got {value!r}")
    return int(text)


def check_stage_list(value: tuple[int, ...]) -> tuple[int, ...]:
    """Stages as `stages` (and ``run --traffic-steps``) take them: percents from 1 to 100, ascending, ending at 100."""
    if not value:
        raise ValueError("at least one stage is needed, e.g. [5, 25, 50, 100]")
    if any(not 0 < s <= 100 for s in value):
        raise ValueError(f"each stage is a percent from 1 to 100; got {list(value)}")
    if list(value) != sorted(set(value)):
        raise ValueError(f"stages must be strictly ascending; got {list(value)}")
    if value[-1] != 100:
        raise ValueError(f"the last stage must be 100; got {list(value)}")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds; written in YAML as ``30s``, ``5m``, ``1h`` or a plain number of seconds."""


def check_failure_codes(value: str) -> str:
    """A regex of HTTP status codes that Prometheus (RE2, matching whole label values) reads the same way."""
    example = "5.. (5xx), 5..|429 (5xx and Too Many Requests) or [45].. (4xx and 5xx)"
    try:
        pattern = re.compile(value)
    except re.error as e:
        raise ValueError(f"{value!r} is not a regular expression ({e}); write one such as {example}") from None
    if _NOT_RE2.search(value):
        raise ValueError(
            f"{value!r} uses lookaround or a backreference, which Prometheus' RE2 regexes do not support; "
            "list the codes instead, e.g. 50[0-24-9]|5[1-9]. for every 5xx but 503"
        )
    if not any(pattern.fullmatch(str(code)) for code in range(100, 600)):
        raise ValueError(
            f"{value!r} matches no HTTP status code from 100 to 599 (the regex must match the whole code); "
            f"write one such as {example}"
        )
    if pattern.fullmatch("200"):
        raise ValueError(f"{value!r} counts 200 OK as a failure; write one such as {example}")
    return value


def describe_failures(failure_codes: str) -> str:
    """How messages name failed requests: ``5xx``, or ``status <the configured regex>``."""
    return "5xx" if failure_codes == DEFAULT_FAILURE_CODES else f"status {failure_codes}"


def check_namespace(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes namespace "
            "(lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63)"
        )
    return value


def check_workload(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes name "
            "(lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)"
        )
    return value


class _Model(BaseModel):
    # No NaN or infinity in any number (a NaN threshold compares false with everything: the gate never fails).
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True, allow_inf_nan=False)


def range_of(model: type[BaseModel], name: str) -> Range | None:
    """The :class:`Range` a field of ``model`` must be in, if it has one."""
    return next((m for m in model.model_fields[name].metadata if isinstance(m, Range)), None)
