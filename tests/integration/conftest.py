"""The real sandbox for integration tests: Prometheus, HAProxy, demo pods and Locust on free loopback ports."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import CanaryConfig, load_config
from canary_checks.prometheus import MetricsSource
from canary_checks.report import GateRecord
from canary_checks.sandbox import Sandbox, free_port_settings
from canary_checks.suite import SuiteRun, decide_stage, packaged, run_suite
from tests.conftest import write_config

REPO = Path(__file__).parents[2]
OWN_STATE = pytest.mark.own_state
"""The test sets the live sandbox's state it needs and waits for it itself: `healthy` restores, without the window."""
WINDOW = 10
DEFAULT_WEIGHT = 25
ALL_GATES = {  # the gates the live sandbox's suite runs (COMPARISONS: its comparisons with stable)
    "error_rate", "success_rate", "latency_p95", "latency_p99", "traffic_received", "traffic_split", "pods_ready",
    "restarts", "crash_loop", "cpu", "memory", "error_rate_vs_stable", "latency_vs_stable", "memory_vs_stable",
    "firing_alerts",
}  # fmt: skip
COMPARISONS = {"compare_errors", "compare_latency_p50", "compare_latency_p95", "compare_latency_p99", "compare_cpu",
               "compare_memory"}  # fmt: skip


@dataclass
class Live:
    box: Sandbox
    config: CanaryConfig
    config_path: Path
    runs: Path
    changed: float = field(default_factory=time.monotonic)
    """When a test last changed the sandbox (a fault or the weight) through this object."""
    settled: float = 0.0
    """When the last `settle` ended."""

    def set_faults(self, side: str, faults: Mapping[str, float]) -> None:
        """Replace ``side``'s faults; a change only when they differ (then the next settle waits a window)."""
        if self.box.faults().get(self.config.workload(side), {}) != dict(faults):
            self.box.set_faults(side, faults)
            self.changed = time.monotonic()

    def set_weight(self, percent: int) -> int:
        """Send ``percent`` of the traffic to the canary (no baseline); a change only when it differs."""
        weights = self.box.router.weights()
        if (weights["canary"], weights.get("baseline", 0)) != (percent, 0):
            self.box.set_weight(percent)
            self.changed = time.monotonic()
        return self.box.router.get_weight()

    def restore(self) -> bool:
        """Undo what an earlier test on this sandbox left, changing only what differs: every component running, no
        fault on any side, the pods ready and UP in HAProxy (a crashing canary restarts), DEFAULT_WEIGHT to the
        canary. True when a component had to be started (the traffic stopped between two workers' uses, or a test
        stopped Prometheus): a while without traffic or data."""
        # faults set or cleared out of this object's sight (by a demo, a runner, the CLI) are a change as well: the
        # node agent keeps them in faults.json, whoever asked
        kept = self.box.state_dir / "faults.json"
        if kept.exists():
            self.changed = max(self.changed, time.monotonic() - (time.time() - kept.stat().st_mtime))
        stopped = [name for name, up in self.box.running().items() if not up]
        for name in stopped:
            self.box.start_component(name)
            self.changed = time.monotonic()
        for workload, faults in self.box.faults().items():
            if faults:
                self.box.node.set_faults(workload, {})
                self.changed = time.monotonic()
        self.box.wait_ready(60)
        self.set_weight(DEFAULT_WEIGHT)
        return bool(stopped)

    def _wait_window_after(self, since: float) -> None:
        remaining = since + WINDOW + 3 * self.config.sandbox.scrape_interval - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def settle_after_change(self) -> None:
        """A full window of traffic since the last change (nothing to wait for when it has passed)."""
        self._wait_window_after(self.changed)

    def settle(self) -> None:
        """Let one full analysis window of traffic pass under the current state: since the last change and since the
        last settle (each call is a window of fresh data). Time the test spent in between counts."""
        self._wait_window_after(max(self.changed, self.settled))
        self.settled = time.monotonic()

    def calm(self, timeout: float = 120.0) -> None:
        """Wait until no critical canary alert fires or is about to (pending): an earlier test's fault keeps them up
        for a while, and one still pending fires a little later, in the middle of the test."""
        source = MetricsSource(self.config)
        deadline = time.monotonic() + timeout
        alerts = 'ALERTS{alertname=~"Canary.+", severity="critical"}'
        fresh = 3 * max(1.0, self.config.sandbox.scrape_interval)  # the sandbox evaluates its rules every scrape
        # a fault cleared a moment ago may not have made its alert pending yet: its requests are scraped and the
        # rules evaluated over them first (else the alert turns pending, then fires, in the middle of the test)
        if (young := self.changed + fresh - time.monotonic()) > 0:
            time.sleep(young)
        # as the gates see it: at their instant, query_offset before the clock (an alert resolved since is not)
        while source.query(f"{alerts} and (time() - timestamp({alerts}) <= {fresh:g})", at=source.now()):
            if time.monotonic() > deadline:
                raise AssertionError("critical canary alerts still fire (or are pending) after the faults were cleared")
            time.sleep(0.5)

    def gates(
        self, stage: int = 25, *extra: str, config_path: Path | None = None, looks: int = 1
    ) -> tuple[SuiteRun, dict[str, GateRecord]]:
        """The stage's gate suite: one run, or with ``looks`` as the runner decides a stage (``decide_stage``) — a
        comparison without enough requests yet holds for another window of evidence (on a busy machine Locust sends
        fewer than its rate), up to ``looks`` runs, and a failing gate decides at once. The last run and its gates."""
        name = f"run-{time.monotonic_ns()}"
        settle = WINDOW + 3 * self.config.sandbox.scrape_interval
        # each check judges the sandbox as it is now: its own comparison evidence, not the earlier tests' faults
        decision = decide_stage(
            packaged("gate"), stage, lambda attempt: self.runs / f"{name}-{attempt}.xml",
            deadline=time.monotonic() + (looks - 1) * settle, poll=settle,
            config_path=config_path or self.config_path,
            extra_args=(f"--canary-evidence={self.runs / name}.evidence.json", *extra),
        )  # fmt: skip
        return decision.run, {r.gate: r for r in decision.run.records}

    def demo(self, *flags: str) -> subprocess.CompletedProcess[str]:
        """``canary-checks demo FLAGS`` against this sandbox, as a user runs it (a scene's refusal returns at once)."""
        command = [sys.executable, "-m", "canary_checks", "--canary-config", str(self.config_path), "demo", *flags]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def smoke(self, *extra: str, config_path: Path | None = None) -> SuiteRun:
        """``pytest suites/smoke`` against the sandbox, as CI runs it before any traffic moves."""
        junit = self.runs / f"smoke-{time.monotonic_ns()}.xml"
        return run_suite(packaged("smoke"), None, junit, config_path=config_path or self.config_path,
                         extra_args=extra)  # fmt: skip


def sandbox_settings(state_dir: Path) -> dict[str, Any]:
    return free_port_settings(state_dir, rps=200)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("live")
    sandbox = sandbox_settings(root / "state")
    path = write_config(
        root / "canary.yaml",
        service="auth",
        namespace="orion",
        window=f"{WINDOW}s",
        min_requests=20,
        kubernetes={"enabled": False},
        statistics={"sample_interval": "2s", "worse_delta": 2},  # as canary.yaml: the sandbox's short windows
        prometheus={"url": f"http://127.0.0.1:{sandbox['prometheus_port']}"},
        sandbox=sandbox,
        smoke={
            "served_by_header": "x-served-by",
            "requests": [{"name": "item", "path": "/api/items/7", "json_fields": {"path": "/api/items/7"}}],
        },
    )
    config = load_config(path)
    box = Sandbox(config)
    box.up(weight=DEFAULT_WEIGHT)
    try:
        box.wait_for_data()
        (root / "runs").mkdir()
        request.config.stash[LIVE] = live = Live(box, config, path, root / "runs")
        yield live
    finally:
        if LIVE in request.config.stash:
            del request.config.stash[LIVE]
        box.down()


@pytest.fixture(autouse=True)
def healthy(request: pytest.FixtureRequest) -> None:
    """A test on the shared sandbox starts from one state, whatever the tests before it on this worker did or left
    (a fault, another weight, a stopped Prometheus, an alert still firing): every component running, a healthy
    canary at DEFAULT_WEIGHT, a full window of that state (waited only for what is left of it since the last change)
    and no critical canary alert firing or pending. A test (or a module, in ``pytestmark``) that sets the state it
    needs and waits for it itself, or judges nothing a window of traffic shows (a route, an error, a refusal), is
    marked ``@OWN_STATE``: it gets the restored state without the window (an alert an earlier fault left still
    fires into any rollout it runs: that wait stays)."""
    if "live" not in request.fixturenames:
        return
    live: Live = request.getfixturevalue("live")
    # a component started again (the traffic stopped while the worker ran other tests): no traffic or data for a
    # while, so a test that sets its own state needs a window of it as well
    if live.restore() or not request.node.get_closest_marker("own_state"):
        live.settle_after_change()
    live.calm()


LIVE = pytest.StashKey[Live]()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The worker's next test does not use its live sandbox (tests/conftest.py orders them together, but a worker
    takes other tests before and after): stop its traffic — Locust, and so the pods' and HAProxy's work, a tenth of a
    core for nothing — until a test uses it again (`Live.restore` starts it)."""
    live = item.config.stash.get(LIVE, None)
    uses = "live" in getattr(item, "fixturenames", ())
    if live and uses and nextitem is not None and "live" not in getattr(nextitem, "fixturenames", ()):
        live.box.stop_component("locust")
