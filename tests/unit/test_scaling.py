"""Capacity follows weight, the parts without a cluster or a sandbox: the setting and its mistakes, the canary's
replicas at each stage, the weights that keep the split whatever the pods, the sandbox's HAProxy servers, the
load-per-pod gate on what Prometheus answers, and the runner's order (ready at the new size, then the weight)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import CanaryConfig, load_config
from canary_checks.errors import CanaryError, ConfigError
from canary_checks.gates import GateResult, Verdict, evaluate
from canary_checks.prometheus import MetricsSource
from canary_checks.runner import Rollout, RolloutOptions
from canary_checks.sandbox.files import extra_ports, pods, write_files
from canary_checks.weights import MAX_WEIGHT, servers_of, share, spread, spread_shares
from tests.conftest import PromStub, healthy, write_config
from tests.unit.test_runner_undecided import Memory


def config_of(tmp_path: Path, text: str) -> CanaryConfig:
    path = tmp_path / "canary.yaml"
    path.write_text(text)
    return load_config(path)


@pytest.mark.parametrize(
    ("stable", "weight", "bounds", "replicas"),
    [
        (4, 5, {}, 1),  # ceil(0.2): any traffic gets a pod
        (4, 25, {}, 1),
        (4, 50, {}, 2),
        (4, 100, {}, 4),
        (10, 30, {}, 3),  # 10 x 0.3 is 3.0000000000000004 in floats: whole numbers, not 4
        (3, 50, {}, 2),
        (6, 5, {"min": 2}, 2),
        (10, 100, {"max": 4}, 4),
        (2, 100, {"min": 3}, 3),  # min wins over stable's size
        (4, 0, {"min": 2}, 0),  # no traffic: no canary (a rollback)
    ],
)  # fmt: skip
def test_the_canary_gets_ceil_of_stable_times_the_weight_within_min_and_max(
    tmp_path: Path, stable: int, weight: int, bounds: dict[str, int], replicas: int
) -> None:
    config = config_of(tmp_path, f"rollout: {{scaling: {json.dumps({'mode': 'proportional', **bounds})}}}\n")
    assert config.rollout.scaling.canary_replicas(stable, weight) == replicas


def test_scaling_is_fixed_unless_asked_and_the_load_gate_follows_it(tmp_path: Path) -> None:
    fixed = config_of(tmp_path, "service: auth\n")
    assert not fixed.rollout.scaling.proportional and not fixed.gates.load_per_pod.enabled
    assert fixed.sandbox.stable_replicas == 1 and extra_ports(fixed) == 0
    proportional = config_of(tmp_path, "rollout: {scaling: {mode: proportional}}\n")
    assert proportional.gates.load_per_pod.enabled and proportional.gates.load_per_pod.threshold == 1.5
    scaled = "rollout: {scaling: {mode: proportional}}\n"
    said_off = config_of(tmp_path, scaled + "gates: {load_per_pod: {enabled: false}}\n")
    assert not said_off.gates.load_per_pod.enabled
    tighter = config_of(tmp_path, scaled + "gates: {load_per_pod: {threshold: 1.2}}\n")
    assert tighter.gates.load_per_pod.enabled and tighter.gates.load_per_pod.threshold == 1.2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rollout: {scaling: {mode: proportional, min: 3, max: 2}}\n",
         "rollout.scaling: min (3) is more than max (2): no canary size is within both"),
        ("rollout: {scaling: {mode: proportional, min: 0}}\n",
         "rollout.scaling: min: expected a count of replicas ≥ 1 (a canary with traffic needs a pod); got 0"),
        ("rollout: {scaling: {mode: proportional, max: -2}}\n",
         "rollout.scaling: max: expected a count of replicas ≥ 1 (a canary with traffic needs a pod); got -2"),
        ("rollout: {scaling: {max: 3}}\n",
         "rollout.scaling: max applies to mode: proportional (with mode: fixed the canary keeps its replicas)"),
        ("rollout: {scaling: {mode: matching}}\n", "rollout.scaling.mode: Input should be 'fixed' or 'proportional'"),
        ("rollout: {scaling: {mode: proportional, min: two}}\n", "rollout.scaling.min: expected a whole number"),
        ("rollout: {scaling: {mode: proportional, maximum: 3}}\n",
         "rollout.scaling.maximum: unknown key (did you mean max?)"),
        ("sandbox: {stable_replicas: 0}\n", "sandbox.stable_replicas: expected a count of pods from 1 to 16; got 0"),
    ],
)  # fmt: skip
def test_a_scaling_mistake_is_one_error_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_of(tmp_path, text)
    assert expected in caught.value.message


@pytest.mark.parametrize("percent", [0, 1, 5, 25, 33, 50, 75, 97, 100])
@pytest.mark.parametrize(("stable", "canary"), [(1, 1), (4, 1), (4, 2), (4, 4), (7, 3), (16, 16), (3, 5)])
def test_the_weights_give_the_canary_its_share_however_many_servers_each_side_has(
    percent: int, stable: int, canary: int
) -> None:
    servers = [f"stable-{i}" for i in range(stable)] + [f"canary-{i}" for i in range(canary)]
    weights = spread(percent, servers)
    assert set(weights) == set(servers) and all(0 <= w <= MAX_WEIGHT for w in weights.values())
    canary_sum = sum(w for s, w in weights.items() if s.startswith("canary"))
    exact = 100 * canary_sum / sum(weights.values())
    assert abs(exact - percent) < 0.5 and share(weights) == percent
    assert len({w for s, w in weights.items() if s.startswith("canary")}) == 1  # even within a side


def test_one_server_a_side_keeps_the_weight_as_a_percent_as_before() -> None:
    assert spread(5, ["stable", "canary"]) == {"stable": 95, "canary": 5}
    assert spread(0, ["stable", "canary"]) == {"stable": 100, "canary": 0}
    assert spread(50, ["stable", "stable-2", "stable-3", "stable-4", "canary", "canary-2"]) == {
        "stable": 1, "stable-2": 1, "stable-3": 1, "stable-4": 1, "canary": 2, "canary-2": 2}  # fmt: skip
    assert share(spread(25, ["stable"])) == 0  # no canary server in service: no share to give it


STAT = """# pxname,svname,qcur,status,weight,other
svc,FRONTEND,,OPEN,,
svc,stable,0,UP,95,
svc,canary,0,UP 1/2,5,
svc,canary-2,0,MAINT,0,
svc,BACKEND,0,UP,100,
canary_only,canary,0,DOWN,1,
"""


def test_show_stat_is_read_as_servers_in_service_or_in_maintenance() -> None:
    servers = {(s.backend, s.name): s for s in servers_of(STAT)}
    assert set(servers) == {("svc", "stable"), ("svc", "canary"), ("svc", "canary-2"), ("canary_only", "canary")}
    assert servers["svc", "canary"].up and servers["svc", "canary"].in_service
    assert not servers["svc", "canary-2"].in_service and not servers["canary_only", "canary"].up
    assert share({s.name: s.weight for s in servers.values() if s.backend == "svc" and s.in_service}) == 5


def test_the_sandbox_without_scaling_renders_one_pod_a_side_as_before(tmp_path: Path) -> None:
    config = config_of(tmp_path, "service: auth\n")
    write_files(config, tmp_path / "state", 5, {})
    text = (tmp_path / "state" / "haproxy.cfg").read_text()
    svc = text.split("\nbackend svc\n", 1)[1].split("\nbackend canary_only\n", 1)[0]
    assert "server stable 127.0.0.1:18081 weight 95 check\n" in svc
    assert "server canary 127.0.0.1:18082 weight 5 check\n" in svc
    assert svc.count("    server ") == 2 and "disabled" not in text
    assert [p["server"] for p in pods(config)] == ["stable", "canary"]


def test_the_sandbox_with_scaling_declares_a_server_per_pod_slot_the_extra_ones_in_maintenance(tmp_path: Path) -> None:
    config = config_of(tmp_path, "rollout: {scaling: {mode: proportional, max: 3}}\nsandbox: {stable_replicas: 4}\n")
    assert extra_ports(config) == 3 + 2
    write_files(config, tmp_path / "state", 5, {}, [31001, 31002, 31003, 31004, 31005])
    text = (tmp_path / "state" / "haproxy.cfg").read_text()
    svc = text.split("\nbackend svc\n", 1)[1].split("\nbackend canary_only\n", 1)[0]
    lines = [line.split() for line in svc.splitlines() if line.strip().startswith("server ")]
    weights = {line[1]: int(line[line.index("weight") + 1]) for line in lines}
    disabled = {line[1] for line in lines if "disabled" in line}
    assert list(weights) == ["stable", "stable-2", "stable-3", "stable-4", "canary", "canary-2", "canary-3"]
    assert disabled == {"canary-2", "canary-3"}
    assert share({s: w for s, w in weights.items() if s not in disabled}) == 5  # the split of the stage, at once
    only = text.split("\nbackend canary_only\n", 1)[1].split("\nbackend stable_only\n", 1)[0]
    assert "server canary-3 127.0.0.1:31005 check disabled" in only  # the header route reaches every canary pod
    node = json.loads((tmp_path / "state" / "node.json").read_text())
    assert [(p["server"], p["running"]) for p in node["pods"]][3:] == [
        ("stable-4", True), ("canary", True), ("canary-2", False), ("canary-3", False)]  # fmt: skip
    assert len({p["name"] for p in node["pods"]}) == 7 and len({p["port"] for p in node["pods"]}) == 7
    targets = (tmp_path / "state" / "prometheus.yml").read_text()
    assert all(f"127.0.0.1:{p['port']}" in targets for p in node["pods"])


# ---- the load-per-pod gate on what Prometheus answers --------------------------------------------------------


def ready(prom: PromStub, side: str, count: int) -> None:
    pods = [({"pod": f"auth-{side}-abcdefghij-kl{i:03d}"}, 1) for i in range(count)]
    prom.answer(rf"kube_pod_status_ready.*auth\\\\-{side}", pods)


def load_gate(config: CanaryConfig) -> GateResult:
    result = evaluate(config, MetricsSource(config), ["load_per_pod"], stage=25)["load_per_pod"]
    assert isinstance(result, GateResult), result
    return result


def test_the_load_gate_passes_a_canary_sized_for_its_share_and_fails_an_overloaded_one(
    prom: PromStub, stub_config: CanaryConfig
) -> None:
    healthy(prom)  # 1000 canary and 3000 stable requests in the window
    ready(prom, "stable", 4)
    ready(prom, "canary", 1)  # 25 % of 4 pods: one pod, as loaded as a stable pod with all the traffic
    sized = load_gate(stub_config)
    assert sized.verdict is Verdict.PASS and sized.value == pytest.approx(1.0)
    assert "a ready canary pod serves" in sized.summary and "(1 ready canary pods, 4 stable)" in sized.summary
    prom.answer(r'istio_requests_total\{[^}]*"auth-canary"\}', 3000)  # 3000 of 6000 on that one pod (a 50 % stage)
    over = load_gate(stub_config)
    assert over.verdict is Verdict.FAIL and over.value == pytest.approx(2.0)
    assert over.summary.startswith("overloaded: ") and "2x the" in over.summary and "> 1.5x" in over.summary


def test_the_load_gate_counts_a_baselines_share_as_traffic(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom, baseline=1000)  # canary 1000, baseline 1000, stable 3000: a 20 % stage with a baseline beside it
    ready(prom, "stable", 4)
    ready(prom, "canary", 1)
    sized = load_gate(stub_config)  # a stable pod's normal load is all 5000 requests over 4 pods: 1250
    assert sized.verdict is Verdict.PASS and sized.value == pytest.approx(1000 / 1250)


def test_the_load_gate_without_ready_pods_or_traffic_is_no_data_never_a_pass(
    prom: PromStub, stub_config: CanaryConfig
) -> None:
    healthy(prom)
    ready(prom, "stable", 4)
    prom.answer(r"kube_pod_status_ready.*auth\\\\-canary", [({"pod": "auth-canary-abcdefghij-kl000"}, 0)])
    result = load_gate(stub_config)
    assert result.verdict is Verdict.NO_DATA and "no ready canary pods of auth-canary in orion" in result.summary
    ready(prom, "canary", 1)
    prom.answer(r'istio_requests_total\{[^}]*"auth-canary"\}', 0)
    assert load_gate(stub_config).verdict is Verdict.NO_DATA


# ---- the runner's order ----------------------------------------------------------------------------------------

PASSING_SUITE = "def test_gates(record_property):\n    record_property('verdict', 'pass')\n"


class Scaled(Memory):
    """The in-memory platform with a stable size and the order of what happens to the canary and the weight."""

    def __init__(self, stable: int, never_ready_at: int | None = None) -> None:
        super().__init__()
        self.size, self.never_ready_at = stable, never_ready_at
        self.calls: list[tuple[str, int]] = []
        self.promoted_with: Any = "not promoted"

    def stable_replicas(self) -> int:
        return self.size

    def scale_canary(self, replicas: int) -> None:
        self.calls.append(("scale", replicas))
        super().scale_canary(replicas)

    def wait_canary_ready(self, timeout: float, progress: Any) -> None:
        if self.never_ready_at is not None and self.replicas >= self.never_ready_at:
            raise CanaryError(f"auth-canary did not become ready within {timeout:g}s (1/{self.replicas} ready)")
        self.calls.append(("ready", self.replicas))

    def set_weight(self, percent: int, baseline: int = 0) -> int:
        self.calls.append(("weight", percent))
        return super().set_weight(percent, baseline)

    def start_baseline(self, replicas: int, timeout: float, progress: Any) -> None:
        self.calls.append(("baseline", replicas))

    def promote(self, image: str, timeout: float, progress: Any, *, replicas: int | None = None) -> None:
        self.calls.append(("promote", replicas or 0))
        self.promoted_with = replicas
        super().promote(image, timeout, progress)


def run_scaled(tmp_path: Path, memory: Scaled, scaling: str, prom: PromStub | None = None,
               steps: tuple[int, ...] = (5, 25, 50, 100), **settings: Any) -> tuple[int, list[str]]:  # fmt: skip
    """A rollout of passing stage suites on ``memory``; with ``prom``, of auth in orion, its critical gates polled
    on that Prometheus (every 0.1 s, steps of 0.3 s)."""
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / "test_stage.py").write_text(PASSING_SUITE)
    service, namespace = ("auth", "orion") if prom else ("cart", "shop")
    where = {"prometheus": {"url": prom.url}} if prom else {}
    path = write_config(tmp_path / "canary.yaml", service=service, namespace=namespace,
                        rollout={"scaling": json.loads(scaling)}, **where, **settings)  # fmt: skip
    config = load_config(path)
    lines: list[str] = []
    opts = RolloutOptions(service=service, image=f"{namespace}/{service}:2", steps=steps,
                          step_duration=0.3 if prom else 0.1, poll_interval=0.1, suite=suite,
                          reports=tmp_path / "reports", auto_promote=True)  # fmt: skip
    code = Rollout(config, memory, memory, opts, source=MetricsSource(config) if prom else None, echo=lines.append,
                   on_wait=lambda *a: None).run()  # fmt: skip
    return code, lines


def test_the_canary_is_ready_at_its_size_before_each_weight_and_stable_keeps_its_size(tmp_path: Path) -> None:
    memory = Scaled(stable=4)
    code, lines = run_scaled(tmp_path, memory, '{"mode": "proportional"}')
    assert code == 0, lines
    moves = [c for c in memory.calls if c[0] != "promote"]
    assert moves.pop(0) == ("ready", 1)  # deployed (one replica) and rolled out
    assert moves[:6] == [("scale", 1), ("ready", 1), ("weight", 5), ("scale", 1), ("ready", 1), ("weight", 25)]
    assert moves[6:9] == [("scale", 2), ("ready", 2), ("weight", 50)]
    assert moves[9:12] == [("scale", 4), ("ready", 4), ("weight", 100)]
    # promoted: stable at its size of before the rollout, then the traffic back to it, then the canary gone
    assert memory.calls[-3:] == [("promote", 4), ("weight", 0), ("scale", 0)] and memory.promoted_with == 4
    assert "stage 50 %: the canary is ready at 2 replicas (stable 4)" in lines
    assert memory.state is not None and memory.state["stable_replicas"] == 4
    from canary_checks.report import summarize

    (run,) = (tmp_path / "reports").iterdir()
    timeline = [(e["event"], e.get("stage"), e.get("why", "")) for e in summarize(run)["timeline"]]
    scaled = [(stage, why) for event, stage, why in timeline if event == "scaled"]
    assert scaled[2] == (50, "the canary is ready at 2 replicas (stable 4)")  # the report shows each size
    assert timeline.index(("scaled", 50, scaled[2][1])) < [t[:2] for t in timeline].index(("weight", 50))


def test_a_baseline_is_the_canarys_size_before_each_weight_moves(tmp_path: Path) -> None:
    memory = Scaled(stable=4)
    code, lines = run_scaled(tmp_path, memory, '{"mode": "proportional"}', baseline={"enabled": True})
    assert code == 0, lines
    moves = [c for c in memory.calls if c[0] in ("scale", "baseline", "weight")]
    assert moves[:4] == [("baseline", 1), ("scale", 1), ("baseline", 1), ("weight", 5)]  # deployed, then stage 5
    at_50 = moves.index(("weight", 50))
    assert moves[at_50 - 2 : at_50] == [("scale", 2), ("baseline", 2)]  # both at 2 pods before the weight
    assert "weight 50/50" in memory.steps and memory.steps[-1] == "baseline 0"  # stopped on promotion


def test_a_canary_not_ready_at_its_new_size_rolls_back_without_moving_the_weight(tmp_path: Path) -> None:
    memory = Scaled(stable=4, never_ready_at=2)
    code, lines = run_scaled(tmp_path, memory, '{"mode": "proportional", "min": 2}')
    assert code == 1
    assert memory.weights == [0]  # only the rollback's weight 0: the weight never moved to 5 %
    assert memory.calls[-3:] == [("scale", 2), ("weight", 0), ("scale", 0)]  # weight 0 first, then the canary gone
    said = "\n".join(lines)
    assert "stage 5 %: the canary was not ready at 2 replicas (auth-canary did not become ready within" in said
    assert "the weight stayed at 0 % and never moved to 5 %" in said


def test_fixed_scaling_leaves_the_canary_as_deployed(tmp_path: Path) -> None:
    memory = Scaled(stable=4)
    code, _ = run_scaled(tmp_path, memory, '{"mode": "fixed"}')
    assert code == 0
    # deployed and ready (one replica, as before), never scaled, and gone after promotion
    assert [c for c in memory.calls if c[0] in ("scale", "ready")] == [("ready", 1), ("scale", 0)]
    assert memory.promoted_with is None and math.isclose(memory.weight, 0)


@pytest.mark.parametrize(("canary", "baseline"), [(5, 5), (25, 25), (33, 33), (0, 0), (50, 0)])
@pytest.mark.parametrize("pods", [(1, 1, 1), (4, 1, 1), (4, 2, 2), (3, 3, 1)])
def test_the_weights_give_any_number_of_sides_their_shares(canary: int, baseline: int, pods: tuple[int, ...]) -> None:
    shares = {"stable": 100 - canary - baseline, "canary": canary, "baseline": baseline}
    servers = [f"{side}-{i}" for side, n in zip(shares, pods, strict=True) for i in range(n)]
    weights = spread_shares(shares, servers)
    assert all(0 <= w <= MAX_WEIGHT for w in weights.values()) and next(iter(weights)).startswith("stable")
    for side, wanted in shares.items():
        assert share(weights, side) == wanted, (side, weights)
    if pods == (1, 1, 1):
        assert list(weights.values()) == list(shares.values())  # one server a side: the percents themselves


class Starting(Scaled):
    """New canary pods that take a few polls to start; ``ready_after`` False: the second is never ready again
    once up."""

    def __init__(self, prom: PromStub, ready_after: bool) -> None:
        super().__init__(stable=4)
        self.starting, self.ready_after = False, ready_after
        prom.answer(r"kube_pod_status_ready.*auth\\\\-canary", self.ready_pods)
        prom.answer(r'kube_deployment_spec_replicas.*"auth-canary"', lambda: self.replicas)

    def ready_pods(self) -> list[tuple[dict[str, str], int]]:
        newest_unready = self.starting or (self.replicas > 1 and not self.ready_after)
        return [({"pod": f"auth-canary-abcdefghij-{i}"}, 0 if newest_unready and i == self.replicas - 1 else 1)
                for i in range(self.replicas)]  # fmt: skip

    def wait_canary_ready(self, timeout: float, progress: Any) -> None:
        self.starting = True
        for _ in range(5):  # 0.3 s of progress, about three polls (poll_interval 0.1 s), while the newest pod starts
            time.sleep(0.06)
            progress(f"canary: {self.replicas - 1}/{self.replicas} pods ready")
        self.starting = False
        super().wait_canary_ready(timeout, progress)


@pytest.mark.parametrize("ready_after", [True, False], ids=["ready-once-started", "never-ready-again"])
def test_pods_still_starting_while_the_canary_scales_do_not_fail_pods_ready_but_a_pod_unready_after_does(
    tmp_path: Path, prom: PromStub, ready_after: bool
) -> None:
    healthy(prom)
    memory = Starting(prom, ready_after)
    code, lines = run_scaled(tmp_path, memory, '{"mode": "proportional"}', prom, steps=(25, 50))
    said = "\n".join(lines)
    if ready_after:  # stage 50 scales to 2 pods: one starting for five polls, and the rollout goes on
        assert code == 0 and "stage 50 %: the canary is ready at 2 replicas (stable 4)" in lines, said
        assert "pods_ready" not in said
    else:  # the same pod not ready in the step after the wait: pods_ready fails and rolls back at once
        assert code == 1 and memory.weights[-1] == 0, said
        assert "critical gates failed during stage 50 %: pods_ready (1 of 2 desired canary pods ready (50 %)" in said
