"""Running the gate suite for a stage, as the runner and the demo do: pytest in a subprocess, JUnit read back.

The library never imports ``suites/``; it runs them through pytest, exactly as a person or a pipeline would.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from canary_checks.report import GateRecord, read_junit

__all__ = ["SuiteRun", "run_suite"]


@dataclass(frozen=True)
class SuiteRun:
    stage: int
    exit_code: int
    """pytest's exit code: 0 all gates passed, 1 a gate failed or errored, others: the suite could not run."""
    junit: Path
    records: list[GateRecord]
    output: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    @property
    def failing(self) -> list[GateRecord]:
        return [r for r in self.records if r.outcome in ("failed", "error")]


def run_suite(
    suite: Path,
    stage: int,
    junit: Path,
    *,
    config_path: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 300.0,
) -> SuiteRun:
    """``pytest SUITE --stage N --junitxml JUNIT`` in a subprocess; the JUnit file is read back."""
    junit.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", str(suite), "--stage", str(stage), "--junitxml", str(junit)]
    cmd += ["-p", "no:locust", "-p", "no:cacheprovider", "-q", "--no-header", "-rN"]
    if config_path is not None:
        cmd += ["--canary-config", str(config_path)]
    cmd += list(extra_args)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    records = read_junit(junit) if junit.exists() else []
    return SuiteRun(stage, done.returncode, junit, records, done.stdout + done.stderr)
