"""A custom gate and a custom comparison from canary.yaml, run by the packaged gate suite against the live sandbox
(real Prometheus, HAProxy, Locust): they pass a healthy canary and fail one answering half its requests with 5xx, and
a replay of the faulty minute (exported from the sandbox's Prometheus) fails it too. They read a metric of the team's
choosing, not the configured mesh's: the pods' Linkerd counters (`response_total`) by pod, where the config says
Istio."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from canary_checks.compare import evaluate_comparisons
from canary_checks.config import CanaryConfig, load_config
from canary_checks.gates import GateResult, Verdict, evaluate
from canary_checks.prometheus import MetricsSource
from tests.integration.conftest import Live

SELECT = 'direction="inbound", namespace="$namespace", pod=~"$pods"'
FAILED = f'sum(increase(response_total{{{SELECT}, classification="failure"}}[$window]))'
TOTAL = f"sum(increase(response_total{{{SELECT}}}[$window]))"
CUSTOM = {
    "gates": {
        "server_error_share": {
            "query": f"100 * ({FAILED} or vector(0)) / {TOTAL}",
            "threshold": 10,
            "fails": "above",
            "unit": "%",
            "description": "share of 5xx answers",
        }
    },
    "statistics": {
        "server_errors": {"numerator": FAILED, "denominator": TOTAL, "description": "5xx rate"},
    },
}


def custom_config(live: Live) -> tuple[Path, CanaryConfig]:
    raw = yaml.safe_load(live.config_path.read_text())
    path = live.runs / "canary-custom.yaml"
    path.write_text(
        yaml.safe_dump(
            {**raw, "gates": CUSTOM["gates"], "statistics": {**raw.get("statistics", {}), **CUSTOM["statistics"]}}
        )
    )
    return path, load_config(path)


def wait_for(
    config: CanaryConfig, verdict: Verdict, evidence: Path, *, share: float = 0.0, timeout: float = 60.0
) -> None:
    """Poll the custom gate and comparison until the sandbox shows ``verdict`` on both (and the gate at least
    ``share`` %: the window mostly under the new faults), as the runner polls during a stage (the comparison's
    evidence accumulating in ``evidence``); no blind sleeping."""
    source = MetricsSource(config)
    deadline = time.monotonic() + timeout
    while True:
        results = evaluate(config, source, ["server_error_share"], stage=25)
        results.update(evaluate_comparisons(config, source, ["compare_server_errors"], evidence_file=evidence))
        gate = results["server_error_share"]
        shown = all(isinstance(r, GateResult) and r.verdict is verdict for r in results.values())
        if shown and isinstance(gate, GateResult) and (gate.value or 0.0) >= share:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the custom checks did not reach {verdict.value}: {results}")
        # each check adds increase() over the time since the last one: it needs two scrapes (1 s apart) in it
        time.sleep(3)


def test_a_custom_gate_and_comparison_pass_a_healthy_canary_and_fail_a_faulty_one(live: Live) -> None:
    path, config = custom_config(live)
    try:
        healthy = live.runs / "custom-healthy.evidence.json"
        wait_for(config, Verdict.PASS, healthy)
        run, gates = live.gates(25, "-k", "test_custom", f"--canary-evidence={healthy}", config_path=path)
        assert run.passed, run.output
        assert set(gates) == {"server_error_share", "compare_server_errors"}
        assert gates["server_error_share"].verdict == "pass" and float(gates["server_error_share"].value) < 10
        assert gates["compare_server_errors"].verdict == "pass", gates["compare_server_errors"]

        live.set_faults("canary", {"errors": 50})
        faulty = live.runs / "custom-faulty.evidence.json"
        wait_for(config, Verdict.FAIL, faulty, share=40)
        run, gates = live.gates(25, "-k", "test_custom", f"--canary-evidence={faulty}", config_path=path)
        print(run.output)  # the closing note shows it (pytest -s)
        assert not run.passed
        share = gates["server_error_share"]
        assert share.outcome == "failed" and share.verdict == "fail" and 30 <= float(share.value) <= 65
        assert f"canary share of 5xx answers {float(share.value):.4g} % > 10 %" in share.message
        assert 'pod=~"auth\\\\-canary-' in share.queries[0]
        comparison = gates["compare_server_errors"]
        assert comparison.outcome == "failed" and comparison.verdict == "fail", comparison
        assert "canary 5xx rate" in comparison.message and comparison.severity == "critical"
        assert "server_error_share" in run.output and "compare_server_errors" in run.output  # the summary table

        # the faulty minute, exported and replayed: the export holds the team's series, the replay judges them
        cli = [sys.executable, "-m", "canary_checks", "--canary-config", str(path), "replay"]
        export = live.runs / "custom-incident.json"
        exported = subprocess.run([*cli, "export", "--start", "now-40s", "--step", "1s", str(export)],
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        series = [s["metric"] for s in json.loads(export.read_text())["data"]["result"]]
        teams = {(m["pod"].rsplit("-", 2)[0], m["classification"]) for m in series if m["__name__"] == "response_total"}
        assert teams == {("auth-canary", "failure"), ("auth-canary", "success"), ("auth-stable", "success")}, teams
        replayed = subprocess.run([*cli, "run", str(export), "--every", "10s"],
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)  # fmt: skip
        assert replayed.returncode == 1, replayed.stdout + replayed.stderr
        assert "server_error_share (canary share of 5xx answers" in replayed.stdout
    finally:
        live.set_faults("canary", {})
