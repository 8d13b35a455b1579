"""The demo's capacity scene (``canary-checks demo --scaling``): the canary's pods follow its weight, ready before
the weight moves, the split holds however many pods each side has, a canary of one pod at 50 % is overloaded (the
load_per_pod gate says so), and a rollback takes the weight to 0, then the pods.

Seam: drives a running :class:`~canary_checks.sandbox.Sandbox` through its platform and router, and reads what the
pods counted from Prometheus; the scene's pieces are the runner's (:class:`SandboxPlatform`, the gate)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console

from canary_checks.config import CanaryConfig, ScalingMode
from canary_checks.gates import GateResult, Verdict, evaluate
from canary_checks.prometheus import MetricsSource
from canary_checks.record import Event
from canary_checks.rundir import RunRecord
from canary_checks.sandbox import Sandbox, SandboxPlatform

__all__ = ["SCENE_SECONDS", "capacity_scene", "requests_between", "scaling_config"]

SCENE_SECONDS = 10.0
"""How long the scene lets each stage's traffic run before it counts who answered what."""
DEMO_STABLE = 4
"""Stable's pods in the scene's sandbox (at least): with one, every canary size is one pod too."""


def scaling_config(config: CanaryConfig) -> CanaryConfig:
    """``config`` with proportional scaling and at least :data:`DEMO_STABLE` stable pods (the sandbox it starts)."""
    scaling = config.rollout.scaling.model_copy(update={"mode": ScalingMode.PROPORTIONAL})
    sandbox = config.sandbox.model_copy(update={"stable_replicas": max(DEMO_STABLE, config.sandbox.stable_replicas)})
    return config.model_copy(update={"rollout": config.rollout.model_copy(update={"scaling": scaling}),
                                     "sandbox": sandbox})  # fmt: skip


def requests_between(box: Sandbox, start: float, end: float) -> dict[str, dict[str, float]]:
    """Requests each pod answered from ``start`` to ``end`` (epoch seconds), by workload then pod, as Prometheus
    counted them from the pods' own counters."""
    query = (f'sum by (destination_workload, pod) (increase(istio_requests_total{{reporter="destination", '
             f'destination_workload_namespace="{box.config.namespace}"}}[{max(1, round(end - start))}s]))')  # fmt: skip
    found: dict[str, dict[str, float]] = {}
    for sample in MetricsSource(box.config).query(query, at=end):
        found.setdefault(sample.labels.get("destination_workload", ""), {})[sample.labels.get("pod", "")] = sample.value
    return found


def _load(box: Sandbox, seconds: float) -> GateResult:
    """The load_per_pod gate over the last ``seconds``."""
    config = box.config.model_copy(update={"window": seconds})
    result = evaluate(config, MetricsSource(config), ["load_per_pod"])["load_per_pod"]
    if not isinstance(result, GateResult):
        raise result
    return result


def _stage(box: Sandbox, platform: SandboxPlatform, weight: int, replicas: int, wait: Callable[[str], None]) -> str:
    """Scale, wait until ready, move the weight, let traffic run; what happened, as a line (``ok`` first)."""
    platform.scale_canary(replicas)
    platform.wait_canary_ready(60, lambda message: None)
    ready = time.time()
    box.set_weight(weight)
    wait(f"stage {weight} %: {replicas} canary pods ready, then the weight")
    counted = requests_between(box, ready + 2, time.time())  # skip what was in flight at the change
    canary, stable = (counted.get(box.config.workload(side), {}) for side in ("canary", "stable"))
    total = sum(canary.values()) + sum(stable.values())
    share = 100 * sum(canary.values()) / total if total else 0.0
    load = _load(box, SCENE_SECONDS - 3)
    busy = sum(1 for v in canary.values() if v > 0)
    fine = abs(share - weight) <= 2 and busy == replicas and load.verdict is Verdict.PASS
    return (f"{'ok' if fine else 'not as expected'}: stage {weight} %: {replicas} canary pods (stable "
            f"{len(stable)}) ready before the weight moved; canary {share:.1f} % of {total:.0f} requests, answered "
            f"by {busy} canary pods; load_per_pod {load.verdict.value}: {load.summary}")  # fmt: skip


def capacity_scene(box: Sandbox, record: RunRecord, console: Console, wait: Callable[[str], None]) -> bool:
    """The scene; True when every stage's split held with the canary at its size, one pod at 50 % was called
    overloaded, and a rollback left no canary pod."""
    config = box.config
    platform = SandboxPlatform(box, config.service)
    stable = platform.stable_replicas()
    console.rule(f"[bold]5. capacity follows weight (rollout.scaling: proportional, {stable} stable pods)")
    ok = True
    for weight in config.stages:
        replicas = config.rollout.scaling.canary_replicas(stable, weight)
        said = _stage(box, platform, weight, replicas, wait)
        record.event(Event.SCALED, stage=weight, replicas=replicas, stable_replicas=stable)
        ok &= said.startswith("ok")
        console.print(said, style="green" if said.startswith("ok") else "red", markup=False, highlight=False)
    platform.scale_canary(1)  # what a fixed canary of one pod would be at 50 %
    box.set_weight(50)
    record.event(Event.WEIGHT, weight=50, stage=50)
    wait("one canary pod at 50 %, as without scaling")
    over = _load(box, SCENE_SECONDS - 3)
    ok &= over.verdict is Verdict.FAIL
    console.print(f"one canary pod at 50 %: load_per_pod {over.verdict.value}: {over.summary} — its latency says "
                  "nothing about the release", markup=False, highlight=False)  # fmt: skip
    box.set_weight(0)  # a rollback: the weight first, then the pods
    platform.scale_canary(0)
    record.event(Event.WEIGHT, weight=0)
    left = [p["pod"] for p in box.pods() if p["workload"] == config.workload("canary")]
    ok &= not left and box.router.get_weight() == 0
    console.print(f"rolled back: weight {box.router.get_weight()} %, then {len(left)} canary pods", highlight=False)
    platform.scale_canary(1)
    platform.wait_canary_ready(60, lambda message: None)
    box.set_weight(config.stages[0])
    record.event(Event.WEIGHT, weight=config.stages[0], stage=config.stages[0])
    return ok
