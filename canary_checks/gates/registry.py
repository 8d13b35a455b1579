"""Which gates a config has and their evaluation: the built-in registry (:data:`GATES`), custom gates judged
against their own threshold, and :func:`evaluate`, the one entry point (all queries of a run at one instant).

Seam: the top of the package; the plugin, the monitor, the runner and replay call :func:`evaluate`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from canary_checks.config import CanaryConfig, CustomGate, Fails, Gates, ValueGate
from canary_checks.errors import CanaryError
from canary_checks.prometheus import MetricsSource

if TYPE_CHECKING:
    # the Kubernetes client costs 0.15 s to import; the kube gates only read the facts the caller gathered with it
    from canary_checks.kube import CanaryHealth

from canary_checks.gates.core import Decide, Gate, GateResult, Needs, Verdict, _Ctx, _fmt, _other_mesh, _traffic_queries
from canary_checks.gates.health import (
    _decide_crash_loop,
    _decide_firing_alerts,
    _decide_kube_pods_ready,
    _decide_kube_restarts,
    _decide_kube_waiting,
    _decide_pods_ready,
    _decide_restarts,
    _needs_alerts,
    _needs_pods,
    _no_queries,
    _pods_and,
    _probe_gate,
    _resource_gate,
)
from canary_checks.gates.requests import (
    _decide_error_rate,
    _decide_error_rate_vs_stable,
    _decide_latency_vs_stable,
    _decide_load_per_pod,
    _decide_memory_vs_stable,
    _decide_success_rate,
    _decide_traffic_received,
    _decide_traffic_split,
    _latency_gate,
    _needs_error_rate_vs_stable,
    _needs_latency_vs_stable,
    _needs_load_per_pod,
    _needs_memory_vs_stable,
    _needs_traffic_split,
)

# ---- custom gates (any other key under `gates:`) --------------------------------------------------------------


def judge_value(
    name: str,
    settings: ValueGate,
    value: float | None,
    *,
    window: float,
    queries: tuple[str, ...] = (),
    what: str = "",
    **details: Any,
) -> GateResult:
    """A custom gate's verdict on one value (``None``: no data) against its threshold, on the side it fails. The
    YAML custom gates and the ``canary_gate`` fixture's own values are judged here alike."""
    label = settings.description or name
    unit = f" {settings.unit}" if settings.unit else ""
    if value is None:
        verdict, summary = (
            Verdict.NO_DATA,
            f"no data for the canary's {label}: {what or 'the query returned no series'}",
        )
    else:
        below = settings.fails is Fails.BELOW
        fails = value < settings.threshold if below else value > settings.threshold
        sign = ("<" if below else ">") if fails else (">=" if below else "<=")
        verdict = Verdict.FAIL if fails else Verdict.PASS
        summary = f"canary {label} {_fmt(value)}{unit} {sign} {_fmt(settings.threshold)}{unit}"
        summary += f" ({what})" if what else ""
    return GateResult(
        gate=name,
        verdict=verdict,
        value=value,
        threshold=settings.threshold,
        unit=settings.unit,
        severity=settings.severity,
        on_no_data=settings.on_no_data,
        window=window,
        queries=queries,
        summary=summary,
        details={"fails": settings.fails.value, **details},
    )


def _decide_custom(ctx: _Ctx, gate: Gate) -> GateResult:
    assert isinstance(ctx.settings, ValueGate)
    samples = ctx.samples("value")
    workload = f"{ctx.config.workload('canary')} in {ctx.config.namespace}"
    if not samples:
        return judge_value(gate.name, ctx.settings, None, window=ctx.config.window, queries=tuple(ctx.q.values()),
                           what=f"the query returned no series for {workload}")  # fmt: skip
    below = ctx.settings.fails is Fails.BELOW
    worst = (min if below else max)(samples, key=lambda s: s.value)
    what = ""
    if len(samples) > 1:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(worst.labels.items()))
        what = f"the {'lowest' if below else 'highest'} of {len(samples)} series: {{{labels}}}"
    return judge_value(gate.name, ctx.settings, worst.value, window=ctx.config.window, queries=tuple(ctx.q.values()),
                       what=what, series=len(samples))  # fmt: skip


def custom_gate(name: str, settings: CustomGate) -> Gate:
    """The gate of a custom entry under `gates:`: its query rendered for the canary by the built-in gates' renderer
    (the same placeholders, checks and escaping), judged by :func:`judge_value`."""

    def needs(source: MetricsSource) -> dict[str, str]:
        return {"value": source.render_template(settings.query, side="canary", where=f"gates.{name}.query")}

    return Gate(name, "custom", name, needs, _decide_custom, custom=settings)


def gates_of(thresholds: Gates) -> dict[str, Gate]:
    """Every gate in force: the built-in ones and the custom ones of ``thresholds`` (the config's `gates:` with a
    stage's and the command line's overrides)."""
    return {**GATES, **{name: custom_gate(name, settings) for name, settings in thresholds.custom().items()}}


# ---- the registry --------------------------------------------------------------------------------------------


def _registry() -> dict[str, Gate]:
    def traffic(sides: tuple[str, ...]) -> Needs:
        return lambda source: _traffic_queries(source, sides)

    def requests_only(sides: tuple[str, ...]) -> Needs:
        return lambda source: {f"{side}_requests": source.render("requests", side=side) for side in sides}

    p95, p99 = _latency_gate(0.95), _latency_gate(0.99)
    cpu, memory = _resource_gate("cpu"), _resource_gate("memory")
    gates = [
        Gate("error_rate", "error_rate", "error_rate", traffic(("canary",)), _decide_error_rate),
        Gate("success_rate", "success_rate", "success_rate", traffic(("canary",)), _decide_success_rate),
        Gate("latency_p95", "latency", "p95", *p95),
        Gate("latency_p99", "latency", "p99", *p99),
        Gate(
            "traffic_received",
            "traffic",
            "received",
            requests_only(("canary",)),
            _decide_traffic_received,
        ),
        Gate(
            "traffic_split",
            "traffic",
            "split",
            _needs_traffic_split,
            _decide_traffic_split,
        ),
        Gate("pods_ready", "pods", "ready", _needs_pods, _decide_pods_ready),
        Gate("restarts", "restarts", "restarts", _pods_and("restarts"), _decide_restarts),
        Gate("crash_loop", "restarts", "crash_loop", _pods_and("waiting"), _decide_crash_loop),
        Gate("cpu", "cpu", "cpu", *cpu),
        Gate("memory", "memory", "memory", *memory),
        Gate(
            "error_rate_vs_stable",
            "vs_stable",
            "error_rate",
            _needs_error_rate_vs_stable,
            _decide_error_rate_vs_stable,
        ),
        Gate(
            "latency_vs_stable",
            "vs_stable",
            "latency",
            _needs_latency_vs_stable,
            _decide_latency_vs_stable,
        ),
        Gate(
            "memory_vs_stable",
            "vs_stable",
            "memory",
            _needs_memory_vs_stable,
            _decide_memory_vs_stable,
        ),
        Gate("load_per_pod", "vs_stable", "load", _needs_load_per_pod, _decide_load_per_pod),
    ]
    gates.append(Gate("firing_alerts", "alerts", "firing", _needs_alerts, _decide_firing_alerts))
    kube: list[tuple[str, str, Decide]] = [
        ("kube_pods_ready", "pods_ready", _decide_kube_pods_ready),
        ("kube_restarts", "restarts", _decide_kube_restarts),
        ("kube_waiting", "waiting", _decide_kube_waiting),
        ("kube_readiness_probes", "readiness_probes", _probe_gate("Readiness")),
        ("kube_liveness_probes", "liveness_probes", _probe_gate("Liveness")),
    ]
    gates += [Gate(name, "kubernetes", variant, _no_queries, decide, "kubernetes") for name, variant, decide in kube]
    return {g.name: g for g in gates}


GATES: dict[str, Gate] = _registry()
"""Every built-in gate, by its config name (:func:`gates_of` adds a config's custom gates)."""

assert set(GATES) == set(Gates.model_fields), "every configured threshold has exactly one gate"


def gates_in_family(family: str) -> list[Gate]:
    found = [g for g in GATES.values() if g.family == family]
    if not found:
        families = sorted({g.family for g in GATES.values()})
        raise KeyError(f"no gate family {family!r}; families: {', '.join(families)}")
    return found


def evaluate(
    config: CanaryConfig,
    source: MetricsSource,
    names: Iterable[str],
    *,
    stage: int | None = None,
    gates: Gates | None = None,
    at: float | None = None,
    kube: Callable[[], CanaryHealth] | None = None,
) -> dict[str, GateResult | CanaryError]:
    """Evaluate the named gates; all their queries run concurrently at one instant, and the Kubernetes API is read
    once (``kube``) for the kube_* gates.

    A gate whose source failed maps to the error (a PrometheusError or KubeError): it errors, it never passes."""
    thresholds = gates or config.gates_for(stage)
    known = gates_of(thresholds)
    wanted = [known[n] for n in dict.fromkeys(names)]
    plans = {g.name: g.needs(source) for g in wanted}
    raw = source.query_many((q for plan in plans.values() for q in plan.values()), at=at)
    health: CanaryHealth | CanaryError | None = None
    if any(g.source == "kubernetes" for g in wanted):
        if kube is None:
            health = CanaryError(
                "the kube_* gates need the Kubernetes API",
                where="kubernetes.enabled",
                fix="set kubernetes.api_url or a kubeconfig, or disable the kube_* gates",
            )
        else:
            try:
                health = kube()
            except CanaryError as e:
                health = e
    out: dict[str, GateResult | CanaryError] = {}
    for gate in wanted:
        if gate.source == "kubernetes" and isinstance(health, CanaryError):
            out[gate.name] = health
            continue
        plan = plans[gate.name]
        failed = next((r for q in plan.values() if isinstance(r := raw[q], CanaryError)), None)
        if failed is not None:
            out[gate.name] = failed
            continue
        results = {q: r for q in plan.values() if not isinstance(r := raw[q], CanaryError)}
        ctx = _Ctx(
            config=config,
            settings=gate.settings(thresholds),
            stage=stage,
            q=plan if gate.source == "prometheus" else _kube_reads(config),
            results=results,
            health=None if isinstance(health, CanaryError) else health,
        )
        out[gate.name] = gate.decide(ctx, gate)
    _other_mesh(config, source, out, at)
    return out


def _kube_reads(config: CanaryConfig) -> dict[str, str]:
    """What the kube_* gates read, shown where a query would be."""
    ns, name = config.namespace, config.workload("canary")
    return {
        "deployment": f"GET /apis/apps/v1/namespaces/{ns}/deployments/{name}",
        "pods": f"GET /api/v1/namespaces/{ns}/pods?labelSelector=<{name} selector>",
        "events": f"GET /api/v1/namespaces/{ns}/events?fieldSelector=reason=Unhealthy",
    }
