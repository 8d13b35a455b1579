"""The baseline (issue 17): a fresh copy of stable beside the canary, given the canary's share, that every
comparison judges the canary against — its config, its share, the gates and comparisons that read it, the runner's
order of steps (started before any weight moves, stopped on promotion and on every rollback, kept by a resumed
run), the sandbox's files and the monitor's third column.

The Prometheus answers come from the stand-in (tests/conftest.PromStub); the runner's platform and router are the
in-memory ones of test_runner_undecided, its stage suites real pytest subprocesses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from canary_checks.compare import evaluate_comparisons
from canary_checks.config import CanaryConfig, baseline_share, load_config
from canary_checks.errors import ConfigError
from canary_checks.gates import GateResult, Verdict, evaluate
from canary_checks.monitor import Monitor, plain_line
from canary_checks.prometheus import MetricsSource
from canary_checks.runner import SUPERSEDED_EXIT, Rollout, RolloutOptions
from canary_checks.sandbox.files import pods, write_files
from canary_checks.sandbox.processes import free_port_settings
from tests.conftest import PromStub, healthy, write_config
from tests.unit.test_runner_undecided import UNDECIDED_SUITE, Memory

# A suite that passes, and says whether the runner asked it to judge against the baseline.
SUITE = """
def test_error_rate(record_property, pytestconfig):
    record_property("gate", "error_rate")
    record_property("verdict", "pass")
    with open("{log}", "a") as f:
        f.write(f"baseline={{pytestconfig.getoption('baseline')}}\\n")
"""


def config_at(tmp_path: Path, prom: PromStub | None = None, **settings: Any) -> CanaryConfig:
    where = {"prometheus": {"url": prom.url}} if prom is not None else {}
    path = write_config(tmp_path / "canary.yaml", service="auth", namespace="orion", window="30s", **where, **settings)
    return load_config(path)


# ---- config ------------------------------------------------------------------------------------------------------


def test_the_baseline_is_off_by_default_and_names_its_own_deployment(tmp_path: Path) -> None:
    off = config_at(tmp_path)
    assert not off.baseline.enabled and off.reference == "stable"
    on = config_at(tmp_path, baseline={"enabled": True, "replicas": 2})
    assert on.reference == "baseline" and on.workload("baseline") == "auth-baseline" and on.baseline.replicas == 2


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"baseline": {"enabled": True}, "routing": {"sticky": {"enabled": True}}}, "routing.sticky.enabled"),
        ({"baseline": {"enabled": True, "replicas": 0}}, "a number of pods ≥ 1"),
        ({"workloads": {"baseline": "{service}-stable"}}, "three different Deployments"),
    ],
    ids=["with sticky sessions", "no pods", "stable's name"],
)
def test_a_baseline_that_cannot_work_is_refused_saying_why(tmp_path: Path, settings: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_at(tmp_path, **settings)
    assert said in caught.value.message


def test_the_baseline_gets_the_canarys_share_as_long_as_stable_keeps_as_much() -> None:
    assert [baseline_share(w) for w in (0, 5, 25, 50, 100)] == [0, 5, 25, 50, 0]
    assert baseline_share(60) == 40  # a stage past half: the baseline takes what stable had left


# ---- gates and comparisons ----------------------------------------------------------------------------------------


def old_stable_new_pods(prom: PromStub) -> None:
    """Stable's long-running pods answer 0.1 % errors; the new pods — the canary and the baseline, the same
    build as stable — 3 % (cold caches): against stable the canary looks 30 times worse, against the baseline not."""
    healthy(prom, baseline=1000)
    prom.answer(r'istio_requests_total\{[^}]*"auth-stable", response_code=~"5..', 3)
    for side in ("canary", "baseline"):
        prom.answer(rf'istio_requests_total\{{[^}}]*"auth-{side}", response_code=~"5..', 30)


def test_the_vs_stable_gates_judge_the_canary_against_the_baseline(tmp_path: Path, prom: PromStub) -> None:
    old_stable_new_pods(prom)
    names = ["error_rate_vs_stable", "traffic_split"]
    against_stable = evaluate(config_at(tmp_path, prom), MetricsSource(config_at(tmp_path, prom)), names, stage=25)
    with_baseline = config_at(tmp_path, prom, baseline={"enabled": True})
    against_baseline = evaluate(with_baseline, MetricsSource(with_baseline), names, stage=25)
    vs_stable, vs_baseline = against_stable["error_rate_vs_stable"], against_baseline["error_rate_vs_stable"]
    assert isinstance(vs_stable, GateResult) and isinstance(vs_baseline, GateResult)
    assert vs_stable.verdict is Verdict.FAIL and vs_stable.value == pytest.approx(30)
    assert vs_baseline.verdict is Verdict.PASS and vs_baseline.value == pytest.approx(1)
    assert "baseline's" in vs_baseline.summary and "stable" not in vs_baseline.summary
    assert all("auth-baseline" in q or "auth-canary" in q for q in vs_baseline.queries)
    # the split counts the baseline's requests: 1000 of 5000 is the canary's 20 %
    split = against_baseline["traffic_split"]
    assert isinstance(split, GateResult) and split.value == pytest.approx(20) and "baseline 1000" in split.summary


def test_the_comparisons_read_the_baseline_and_keep_evidence_for_it(tmp_path: Path, prom: PromStub) -> None:
    old_stable_new_pods(prom)
    config = config_at(tmp_path, prom, baseline={"enabled": True})
    evidence = tmp_path / "evidence.json"
    result = evaluate_comparisons(config, MetricsSource(config), ["compare_errors"], evidence_file=evidence)
    errors = result["compare_errors"]
    assert isinstance(errors, GateResult) and errors.verdict is not Verdict.FAIL
    assert "vs baseline 3 %" in errors.summary and "stable" not in errors.summary
    assert any("auth-baseline" in q for q in errors.queries) and not any("auth-stable" in q for q in errors.queries)
    assert json.loads(evidence.read_text())["key"]["stable"] == "auth-baseline"  # not continued as stable's


# ---- the runner --------------------------------------------------------------------------------------------------


def baseline_rollout(tmp_path: Path, memory: Memory, suite_text: str, **options: Any) -> int:
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / "test_stage.py").write_text(suite_text)
    config = config_at(tmp_path, **options.pop("settings", {"baseline": {"enabled": True, "replicas": 2}}))
    opts = RolloutOptions(service="auth", image="shop/auth:2", steps=(25, 100), step_duration=0.1,
                          poll_interval=0.1, suite=suite, reports=tmp_path / "reports", auto_promote=True,
                          max_extension=0.1, **options)  # fmt: skip
    return Rollout(config, memory, memory, opts, echo=lambda _: None, on_wait=lambda *a: None).run()


def test_the_baseline_starts_before_any_weight_moves_takes_each_stages_share_and_stops_on_promotion(
    tmp_path: Path,
) -> None:
    memory, log = Memory(), tmp_path / "suite.log"
    assert baseline_rollout(tmp_path, memory, SUITE.format(log=log)) == 0
    assert memory.steps == ["baseline 2", "weight 25/25", "weight 100/0", "weight 0/0", "baseline 0"]
    assert memory.stable == "shop/auth:2"
    assert log.read_text().splitlines() == ["baseline=True"] * 2  # every stage's suite judged against it


def test_a_rollback_takes_the_baseline_share_away_with_the_canarys_then_stops_it(tmp_path: Path) -> None:
    memory = Memory()
    failing = "def test_error_rate(record_property):\n    record_property('verdict', 'fail')\n    assert False\n"
    assert baseline_rollout(tmp_path, memory, failing) == 1
    assert memory.steps == ["baseline 2", "weight 25/25", "weight 0/0", "baseline 0"]
    assert memory.replicas == 0 and memory.baseline_replicas == 0


def test_a_resumed_rollout_keeps_the_baseline_it_started_with(tmp_path: Path) -> None:
    memory, log = Memory(), tmp_path / "suite.log"
    assert baseline_rollout(tmp_path, memory, UNDECIDED_SUITE) == 3  # held at 25 %, the baseline beside it
    assert memory.steps == ["baseline 2", "weight 25/25"]
    # run again with a canary.yaml that says nothing of a baseline: the record does
    code = baseline_rollout(tmp_path, memory, SUITE.format(log=log), settings={}, proceed=True)
    assert code == 0
    assert memory.steps[2:] == ["weight 100/0", "weight 0/0", "baseline 0"]
    assert set(log.read_text().splitlines()) == {"baseline=True"}


def test_a_rollback_while_the_canary_gets_ready_wins_and_no_baseline_is_started(tmp_path: Path) -> None:
    class RolledBackMeanwhile(Memory):
        def wait_canary_ready(self, timeout: float, progress: Any) -> None:  # an operator's --rollback meanwhile
            (tmp_path / "operator").mkdir()
            config = config_at(tmp_path / "operator")
            opts = RolloutOptions(service="auth", image="shop/auth:2", reports=tmp_path / "ops", rollback=True)
            assert Rollout(config, self, self, opts, echo=lambda _: None).run() == 0

    memory = RolledBackMeanwhile()
    assert baseline_rollout(tmp_path, memory, SUITE.format(log=tmp_path / "suite.log")) == SUPERSEDED_EXIT
    assert "baseline 2" not in memory.steps and memory.baseline_replicas == 0
    assert memory.weight == 0 and memory.replicas == 0
    assert memory.state is not None and memory.state["status"] == "rolled-back"


def test_without_a_baseline_none_gets_traffic_and_the_suites_read_the_config(tmp_path: Path) -> None:
    memory, log = Memory(), tmp_path / "suite.log"
    assert baseline_rollout(tmp_path, memory, SUITE.format(log=log), settings={}) == 0
    assert memory.steps == ["weight 25/0", "weight 100/0", "weight 0/0", "baseline 0"]
    assert set(log.read_text().splitlines()) == {"baseline=None"}  # no --baseline: canary.yaml decides


# ---- the sandbox's files and the monitor -------------------------------------------------------------------------


def test_the_sandbox_runs_a_baseline_pod_behind_haproxy_at_weight_0_only_when_enabled(tmp_path: Path) -> None:
    sandbox = free_port_settings(tmp_path / "state")
    off, on = config_at(tmp_path, sandbox=sandbox), config_at(tmp_path, sandbox=sandbox, baseline={"enabled": True})
    assert [p["workload"] for p in pods(off)] == ["auth-stable", "auth-canary"]
    baseline = pods(on)[-1]
    assert (baseline["workload"], baseline["version"], baseline["port"]) == (
        "auth-baseline",
        "v1",
        sandbox["baseline_port"],
    )
    for config, d in ((off, tmp_path / "off"), (on, tmp_path / "on")):
        write_files(config, d, 5, {})
    assert "server baseline" not in (tmp_path / "off" / "haproxy.cfg").read_text()
    assert (
        f"server baseline 127.0.0.1:{sandbox['baseline_port']} weight 0 check"
        in (tmp_path / "on" / "haproxy.cfg").read_text()
    )
    scraped = (tmp_path / "on" / "prometheus.yml").read_text()
    assert f"127.0.0.1:{sandbox['baseline_port']}" in scraped and "auth-baseline" in scraped


def test_the_monitor_shows_the_baseline_between_stable_and_canary(tmp_path: Path, prom: PromStub) -> None:
    old_stable_new_pods(prom)
    config = config_at(tmp_path, prom, baseline={"enabled": True})
    snap = Monitor(config, stage=25).sample()
    line = plain_line(snap)
    assert "(stable / baseline / canary)" in line
    shares = {side: snap.readings[side]["traffic_share_pct"].value for side in snap.sides}
    assert shares == {"stable": pytest.approx(60), "baseline": pytest.approx(20), "canary": pytest.approx(20)}
    assert "error rate 0.10% OK / 3.00% OK / 3.00% OK" in line
    assert snap.checks["error_rate_vs_stable"].verdict is Verdict.PASS  # type: ignore[union-attr]
