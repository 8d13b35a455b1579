"""What every gate is made of: :class:`Verdict`, :class:`GateResult`, :class:`Gate` (its queries and its
decision), the context a decision reads, and the shared steps of the request gates (counts, too little traffic,
the other mesh's metrics).

Seam: a leaf of the package; the gates themselves are in ``requests`` and ``health``, the registry and the
evaluation in ``registry``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from canary_checks.config import CanaryConfig, CustomGate, Fails, Gates, GateSettings, Mesh, NoDataPolicy, Severity
from canary_checks.errors import CanaryError
from canary_checks.prometheus import MESH_METRICS, MetricsSource, Sample

if TYPE_CHECKING:
    # the Kubernetes client costs 0.15 s to import; the kube gates only read the facts the caller gathered with it
    from canary_checks.kube import CanaryHealth


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no data"
    """No series, or only NaN, or no traffic: never a pass."""
    INCONCLUSIVE = "inconclusive"
    """Too few requests in the window to tell; the runner holds the stage."""


@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: Verdict
    value: float | None
    threshold: float
    unit: str
    severity: Severity
    on_no_data: NoDataPolicy
    window: float
    """Seconds."""
    queries: tuple[str, ...]
    summary: str
    """One line a person reads: what was measured against what."""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def breached(self) -> bool:
        """The gate did not pass (fail, no data or inconclusive)."""
        return self.verdict is not Verdict.PASS

    def fails(self, *, strict: bool = False) -> bool:
        """Whether this result fails the stage: critical always, warning in strict mode, info never."""
        if not self.breached:
            return False
        if self.verdict is Verdict.NO_DATA and self.on_no_data is NoDataPolicy.SKIP:
            return False
        if self.severity is Severity.CRITICAL:
            return True
        return strict and self.severity is Severity.WARNING

    def describe(self) -> str:
        """The full message: summary, window and every query."""
        lines = [f"{self.gate}: {self.verdict.value.upper()} ({self.severity.value}) — {self.summary}"]
        lines.append(f"  window: last {_fmt(self.window)}s")
        lines.extend(f"  query: {q}" for q in self.queries)
        return "\n".join(lines)


@dataclass(frozen=True)
class _Ctx:
    config: CanaryConfig
    settings: GateSettings
    stage: int | None
    q: Mapping[str, str]
    results: Mapping[str, list[Sample]]
    health: CanaryHealth | None = None

    def samples(self, key: str) -> list[Sample]:
        return self.results[self.q[key]]

    def total(self, key: str) -> float | None:
        """Sum of a vector; ``None`` when it is empty (no data)."""
        samples = self.samples(key)
        return sum(s.value for s in samples) if samples else None


Decide = Callable[[_Ctx, "Gate"], GateResult]
Needs = Callable[[MetricsSource], dict[str, str]]


FAILS_BELOW = frozenset({"success_rate", "pods_ready", "kube_pods_ready"})
"""The built-in gates that fail below their threshold; every other fails above it (a custom gate says its side)."""


@dataclass(frozen=True)
class Gate:
    name: str
    """Config key under `gates:` (and the --threshold name)."""
    family: str
    """Which test in suites/gate runs it (test_<family>)."""
    variant: str
    """The test id inside its family: test_latency[p95]."""
    needs: Needs
    decide: Decide
    source: str = "prometheus"
    """Where the gate reads: prometheus, or kubernetes (the API, through canary_checks.kube)."""
    custom: CustomGate | None = None
    """A custom gate's definition (under `gates:` in the config); None for a built-in gate."""

    @property
    def unit(self) -> str:
        """The unit of the gate's value and threshold (%, ms, req/s, count or ratio): its settings' type in
        :class:`~canary_checks.config.Gates` says it, and so the values its threshold may take; a custom gate's
        own `unit`."""
        return self.custom.unit if self.custom is not None else Gates.unit_of(self.name)

    @property
    def fails_below(self) -> bool:
        """The failing side of the threshold: below it (a success rate, a share of ready pods), else above it."""
        if self.custom is not None:
            return self.custom.fails is Fails.BELOW
        return self.name in FAILS_BELOW

    def settings(self, gates: Gates) -> GateSettings:
        settings: GateSettings = getattr(gates, self.name)
        return settings

    def result(self, ctx: _Ctx, verdict: Verdict, value: float | None, summary: str, **details: Any) -> GateResult:
        return GateResult(
            gate=self.name,
            verdict=verdict,
            value=value,
            threshold=ctx.settings.threshold,
            unit=self.unit,
            severity=ctx.settings.severity,
            on_no_data=ctx.settings.on_no_data,
            window=ctx.config.window,
            queries=tuple(ctx.q.values()),
            summary=summary,
            details=details,
        )


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _judge(ctx: _Ctx, value: float, *, fails_below: bool = False) -> tuple[Verdict, str]:
    """The verdict of ``value`` against the gate's threshold, and the sign to print between them."""
    limit = ctx.settings.threshold
    if value < limit if fails_below else value > limit:
        return Verdict.FAIL, "<" if fails_below else ">"
    return Verdict.PASS, ">=" if fails_below else "<="


def _no_traffic(ctx: _Ctx, gate: Gate, side: str = "canary") -> GateResult:
    return gate.result(
        ctx,
        Verdict.NO_DATA,
        None,
        f"the {side} received no traffic in the {_fmt(ctx.config.window)}s window "
        f"({ctx.config.workload(side)} in {ctx.config.namespace})",
        no_traffic=side,
    )


_MESH_NAMES = {Mesh.ISTIO: "Istio", Mesh.LINKERD: "Linkerd"}


def _other_mesh(
    config: CanaryConfig, source: MetricsSource, out: dict[str, GateResult | CanaryError], at: float | None
) -> None:
    """Where a gate saw no traffic and the configured mesh's request counter has no series for the workload, but
    another mesh's has: say which, and the setting that fixes it (``--mesh linkerd`` on Istio metrics)."""
    if config.mesh is Mesh.CUSTOM:
        return
    sides = {r.details["no_traffic"] for r in out.values() if isinstance(r, GateResult) and "no_traffic" in r.details}
    for side in sorted(sides):
        present = source.meshes_with_series(side, at)
        if not present or config.mesh in present:
            continue
        mine, theirs = MESH_METRICS[config.mesh].requests, MESH_METRICS[present[0]].requests
        hint = (
            f"; no {mine} series for {config.workload(side)} in {config.namespace}, but {theirs} "
            f"({_MESH_NAMES[present[0]]}) has some: set mesh: {present[0].value} (or --mesh {present[0].value})"
        )
        for name, result in out.items():
            if isinstance(result, GateResult) and result.details.get("no_traffic") == side:
                out[name] = replace(result, summary=result.summary + hint)


def _counts(ctx: _Ctx, side: str) -> tuple[float, float, float] | None:
    """requests, errors, successes of one side; ``None`` when it received nothing."""
    requests = ctx.total(f"{side}_requests")
    if not requests:
        return None
    errors = ctx.total(f"{side}_errors") or 0.0
    successes = ctx.total(f"{side}_successes") or 0.0
    return requests, errors, successes


def _too_few(ctx: _Ctx, gate: Gate, requests: float, side: str = "canary") -> GateResult | None:
    need = ctx.config.min_requests
    if requests >= need:
        return None
    return gate.result(
        ctx,
        Verdict.INCONCLUSIVE,
        None,
        f"inconclusive: only {requests:.0f} {side} requests in the {_fmt(ctx.config.window)}s window "
        f"(need at least {need}, min_requests)",
        requests=requests,
        needed_requests=need - requests,
    )


def _traffic_queries(source: MetricsSource, sides: Iterable[str] = ("canary",)) -> dict[str, str]:
    q = {}
    for side in sides:
        for name in ("requests", "errors", "successes"):
            q[f"{side}_{name}"] = source.render(name, side=side)
    return q
