"""The evidence file: the run's state of the sequential tests, its path, its lock (one reader-writer at a time), and
loading it — or starting afresh, saying why — and saving it whole.

Seam: the file and what it holds; no Prometheus, no decisions."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from canary_checks.config import CanaryConfig
from canary_checks.errors import ConfigError
from canary_checks.stats import SequentialTest

__all__ = ["EVIDENCE_VERSION", "Evidence", "evidence_path", "load", "locked", "save"]

log = logging.getLogger(__name__)

EVIDENCE_VERSION = 2


def evidence_path(config: CanaryConfig, base: Path | None) -> Path:
    """The configured evidence file, with {namespace} and {service} replaced, relative to ``base`` (the config's
    folder) when not absolute."""
    raw = str(config.statistics.evidence_file)
    path = Path(raw.replace("{namespace}", config.namespace).replace("{service}", config.service))
    return path if path.is_absolute() or base is None else base / path


@dataclass
class Evidence:
    """What the sequential comparisons have seen since the canary's evidence started."""

    key: dict[str, str]
    started: float
    """Start of the first interval (epoch seconds)."""
    last: float
    """End of the latest interval."""
    checks: int = 0
    tests: dict[str, SequentialTest] = field(default_factory=dict)
    bounds: dict[str, float] = field(default_factory=dict)
    """Per latency comparison: the bucket bound (ms) slower requests are counted above; fixed once."""

    @staticmethod
    def identity(config: CanaryConfig) -> dict[str, str]:
        return {
            "namespace": config.namespace,
            "canary": config.workload("canary"),
            "stable": config.workload(config.reference),  # what the canary is judged against: stable or baseline
            "mesh": config.mesh.value,
            "prometheus": config.prometheus.shown_url,
        }

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": EVIDENCE_VERSION,
                "key": self.key,
                "started": self.started,
                "last": self.last,
                "checks": self.checks,
                "bounds": self.bounds,
                "tests": {k: t.to_dict() for k, t in self.tests.items()},
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Evidence:
        """The saved evidence, checked (ValueError saying what is wrong: the caller starts afresh and says so)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("the evidence file does not hold an object")
        if data.get("version") != EVIDENCE_VERSION:
            raise ValueError(f"evidence version {data.get('version')!r}, expected {EVIDENCE_VERSION}")
        started, last = float(data["started"]), float(data["last"])
        bounds = {str(k): float(v) for k, v in data["bounds"].items()}
        if not (math.isfinite(started) and math.isfinite(last) and started <= last):
            raise ValueError(f"evidence times are impossible (started {started}, last {last})")
        if not all(math.isfinite(b) and b > 0 for b in bounds.values()):
            raise ValueError(f"a latency bucket bound is not a positive number ({bounds})")
        tests = {}
        for k, v in data["tests"].items():
            try:
                tests[str(k)] = SequentialTest.from_dict(v)
            except ValueError as e:
                raise ValueError(f"{k}: {e}") from e
        return cls(key=dict(data["key"]), started=started, last=last, checks=int(data["checks"]), tests=tests,
                   bounds=bounds)  # fmt: skip


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """One reader-writer of the evidence at a time (the runner's polls and a suite run may overlap)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock").open("a")
    except OSError as e:
        raise ConfigError(
            f"cannot write the evidence file {path}: {e.strerror}",
            where="statistics.evidence_file",
            fix="point statistics.evidence_file (or --canary-evidence) at a writable place",
        ) from e
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load(path: Path, config: CanaryConfig, now: float) -> tuple[Evidence, str]:
    """The evidence to continue, and a note saying whether it is new and why."""
    fresh = Evidence(Evidence.identity(config), started=now - config.window, last=now - config.window)
    if not path.exists():
        return fresh, "new evidence"
    try:
        evidence = Evidence.from_json(path.read_text())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("evidence file %s is unreadable (%s); starting afresh", path, e)
        return fresh, f"new evidence (the old file was unreadable or damaged: {e})"
    if evidence.key != fresh.key:
        return fresh, "new evidence (the file was for another canary)"
    age = now - evidence.last
    if age > config.statistics.evidence_expires:
        return fresh, f"new evidence (the last check was {age:.0f} s ago, over statistics.evidence_expires)"
    if age < 0:
        return fresh, "new evidence (the file's last check is after this one)"
    return evidence, f"evidence since {time.strftime('%H:%M:%S', time.localtime(evidence.started))}"


def save(path: Path, evidence: Evidence) -> None:
    """Write the evidence whole (a temporary file, then renamed over it): a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(evidence.to_json())
    tmp.replace(path)
