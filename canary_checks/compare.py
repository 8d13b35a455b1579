"""Canary-versus-stable statistical comparisons: read counts and buckets, keep the sequential evidence, decide.

Each comparison ends in a :class:`~canary_checks.gates.GateResult` like any gate (so the plugin, the JUnit
properties, the summary table and the runner treat it the same), named ``compare_<key>`` after its key under
``statistics:`` in the config.

* ``errors`` — the anytime-valid error-ratio test (:class:`canary_checks.stats.SequentialTest`) fed with the error
  and request counts of each interval since the previous check.
* ``latency_p50/p95/p99`` — the same test on the share of requests slower than stable's quantile (a bucket bound
  fixed from stable's data *before* the evidence starts), plus time-uniform bounds on both quantiles and their
  difference from the histogram buckets accumulated since the evidence started.
* ``cpu`` (CPU seconds per request, so that a canary with 5 % of the traffic is not compared by raw CPU with a
  stable carrying 95 %) and ``memory`` (working set per pod) — the Kayenta-style Mann–Whitney classifier over the
  window's samples: a fixed-horizon test, marked as such.

The evidence (:class:`Evidence`) lives in a JSON file — the run's state — so checking at every poll and every stage
keeps accumulating the same test instead of starting a new one. The stage's comparisons share the false-alarm rate
through Holm (or Benjamini–Hochberg), stated in each result.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from canary_checks.config import CanaryConfig, ComparisonSettings, CustomComparison, Statistics
from canary_checks.errors import CanaryError, ConfigError, PrometheusError
from canary_checks.gates import GateResult, Verdict
from canary_checks.prometheus import MetricsSource, Sample
from canary_checks.stats import (
    Counts,
    ErrorEvidence,
    Histogram,
    Outcome,
    SequentialTest,
    compare_quantile,
    multiple,
)
from canary_checks.stats.kayenta import classify

__all__ = ["COMPARISONS", "Comparison", "Evidence", "comparisons_of", "evaluate_comparisons", "evidence_path"]

log = logging.getLogger(__name__)

EVIDENCE_VERSION = 2


@dataclass(frozen=True)
class Comparison:
    key: str
    """Its key under `statistics:` in the config."""
    family: str
    """Which test in suites/gate/test_compare.py runs it (test_<family>_vs_stable)."""
    variant: str
    quantile: float = 0.0
    custom: CustomComparison | None = None
    """A custom comparison's definition (under `statistics:` in the config); None for a built-in one."""

    @property
    def name(self) -> str:
        return f"compare_{self.key}"

    def settings(self, statistics: Statistics) -> ComparisonSettings:
        settings: ComparisonSettings = getattr(statistics, self.key)
        return settings


COMPARISONS: dict[str, Comparison] = {
    c.name: c
    for c in (
        Comparison("errors", "errors", "error_rate"),
        Comparison("latency_p50", "latency", "p50", 0.50),
        Comparison("latency_p95", "latency", "p95", 0.95),
        Comparison("latency_p99", "latency", "p99", 0.99),
        Comparison("cpu", "resources", "cpu"),
        Comparison("memory", "resources", "memory"),
    )
}
"""Every comparison, by its gate name (compare_<key>)."""

assert {c.key for c in COMPARISONS.values()} == {
    k for k, f in Statistics.model_fields.items() if f.annotation in (ComparisonSettings, "ComparisonSettings")
}, "every configured comparison has exactly one definition"


def comparisons_of(statistics: Statistics) -> dict[str, Comparison]:
    """Every comparison in force: the built-in ones and the custom ones under `statistics:` (family ``custom``:
    numerator and denominator per side, judged by the sequential test of ``errors``)."""
    custom = {f"compare_{key}": Comparison(key, "custom", key, custom=c) for key, c in statistics.custom().items()}
    return {**COMPARISONS, **custom}


def comparisons_in_family(family: str) -> list[Comparison]:
    found = [c for c in COMPARISONS.values() if c.family == family]
    if not found:
        raise KeyError(f"no comparison family {family!r}; families: errors, latency, resources")
    return found


# ---- the evidence: the run's state of the sequential tests ------------------------------------------------------


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
            "stable": config.workload("stable"),
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
def _locked(path: Path) -> Iterator[None]:
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


def _load(path: Path, config: CanaryConfig, now: float) -> tuple[Evidence, str]:
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


# ---- evaluation ------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    comparison: Comparison
    queries: dict[str, str]


def _buckets(samples: list[Sample]) -> Histogram:
    by_le: dict[float, float] = {}
    for s in samples:
        try:
            le = float(s.labels.get("le", "nan"))
        except ValueError:
            continue
        if not math.isnan(le):
            by_le[le] = by_le.get(le, 0.0) + s.value
    return Histogram.from_buckets(by_le)


def _total(samples: list[Sample]) -> float | None:
    return sum(s.value for s in samples) if samples else None


def _bound_at(h: Histogram, q: float) -> float | None:
    """The stable's q-quantile bucket bound: the first bound with at least a share q of requests at or under it."""
    if h.problem() or h.total == 0:
        return None
    for bound, share in zip(h.bounds, h.cdf(), strict=True):
        if share >= q:
            return bound
    return None


def evaluate_comparisons(
    config: CanaryConfig,
    source: MetricsSource,
    names: Iterable[str],
    *,
    evidence_file: Path,
    at: float | None = None,
) -> dict[str, GateResult | CanaryError]:
    """Evaluate the named comparisons now (or at ``at``), adding the interval since the last check to the evidence
    in ``evidence_file``. A comparison whose source failed maps to the error; it never passes."""
    now = source.now() if at is None else at
    known = comparisons_of(config.statistics)
    wanted = [known[n] for n in dict.fromkeys(names) if n in known]
    if not wanted:
        return {}
    stats = config.statistics
    with _locked(evidence_file):
        evidence, note = _load(evidence_file, config, now)
        step = now - evidence.last
        update = step >= 1.0
        interval = max(step, 1.0) if update else config.window
        since = max(now - evidence.started, interval)
        out, p_values = _evaluate(config, source, wanted, evidence, now=now, interval=interval, since=since,
                                  update=update)  # fmt: skip
        if update:
            evidence.last = now
            evidence.checks += 1
            tmp = evidence_file.with_name(evidence_file.name + ".tmp")
            tmp.write_text(evidence.to_json())
            tmp.replace(evidence_file)
    _correct(out, p_values, stats, note, evidence)
    return out


def _evaluate(
    config: CanaryConfig,
    source: MetricsSource,
    wanted: list[Comparison],
    evidence: Evidence,
    *,
    now: float,
    interval: float,
    since: float,
    update: bool,
) -> tuple[dict[str, GateResult | CanaryError], dict[str, float]]:
    stats = config.statistics
    plans: dict[str, _Plan] = {}
    for c in wanted:
        q: dict[str, str] = {}
        for side in ("canary", "stable"):
            if c.family == "errors":
                q[f"{side}_requests"] = source.render("requests", side=side, window=interval)
                q[f"{side}_errors"] = source.render("errors", side=side, window=interval)
            elif c.custom is not None:  # the same counts from the team's own templates
                where = f"statistics.{c.key}"
                q[f"{side}_requests"] = source.render_template(
                    c.custom.denominator, side=side, window=interval, where=f"{where}.denominator"
                )
                q[f"{side}_errors"] = source.render_template(
                    c.custom.numerator, side=side, window=interval, where=f"{where}.numerator"
                )
            elif c.family == "latency" and source.render("buckets", side=side):
                q[f"{side}_step"] = source.render("buckets", side=side, window=interval)
                q[f"{side}_since"] = source.render("buckets", side=side, window=since)
        plans[c.name] = _Plan(c, q)
    raw = source.query_many((q for p in plans.values() for q in p.queries.values()), at=now)
    # Latency comparisons fix their bucket bound from stable's data before the evidence: one earlier read.
    need_bound = [
        p for p in plans.values() if p.comparison.family == "latency" and p.comparison.key not in evidence.bounds
    ]
    earlier: dict[str, list[Sample] | PrometheusError] = {}
    before = evidence.last if update else now - since
    if need_bound and any(p.queries for p in need_bound):
        earlier_q = source.render("buckets", side="stable")
        earlier = source.query_many([earlier_q], at=before)
    out: dict[str, GateResult | CanaryError] = {}
    p_values: dict[str, float] = {}
    m = max(1, len(wanted))
    alpha_each = stats.alpha / m if stats.correction.value != "none" else stats.alpha
    for name, plan in plans.items():
        c = plan.comparison
        settings = c.settings(stats)
        failed = next((r for q in plan.queries.values() if isinstance(r := raw[q], CanaryError)), None)
        if failed is not None:
            out[name] = failed
            continue
        results = {k: r for k, q in plan.queries.items() if not isinstance(r := raw[q], CanaryError)}
        ctx = _Ctx(config, c, settings, results, tuple(plan.queries.values()), alpha_each, interval, evidence)
        try:
            if c.family in ("errors", "custom"):
                result, p = _errors(ctx, update)
            elif c.family == "latency":
                bound_source = next(iter(earlier.values()), None) if earlier else None
                if isinstance(bound_source, CanaryError):
                    out[name] = bound_source
                    continue
                result, p = _latency(ctx, update, bound_source)
            else:
                result, p = _resources(ctx, source, now)
        except CanaryError as e:
            out[name] = e
            continue
        out[name] = result
        if not math.isnan(p):
            p_values[name] = p
    return out, p_values


@dataclass(frozen=True)
class _Ctx:
    config: CanaryConfig
    comparison: Comparison
    settings: ComparisonSettings
    results: Mapping[str, list[Sample]]
    queries: tuple[str, ...]
    alpha_each: float
    interval: float
    evidence: Evidence

    def result(self, verdict: Verdict, value: float | None, summary: str, unit: str, **details: Any) -> GateResult:
        return GateResult(
            gate=self.comparison.name,
            verdict=verdict,
            value=value,
            threshold=self.settings.margin,
            unit=unit,
            severity=self.settings.severity,
            on_no_data=self.settings.on_no_data,
            window=self.interval,
            queries=self.queries,
            summary=summary,
            details=details,
        )

    def test(self) -> SequentialTest:
        key = self.comparison.key
        test = self.evidence.tests.get(key)
        delta = self.settings.margin_delta / 100
        if test is None or test.margin != self.settings.margin or test.margin_delta != delta:
            test = SequentialTest(margin=self.settings.margin, margin_delta=delta)
            self.evidence.tests[key] = test
        return test


_VERDICT = {
    Outcome.PASS: Verdict.PASS,
    Outcome.FAIL: Verdict.FAIL,
    Outcome.INCONCLUSIVE: Verdict.INCONCLUSIVE,
    Outcome.NO_DATA: Verdict.NO_DATA,
}


def _pct(x: float) -> str:
    return "∞" if math.isinf(x) else f"{100 * x:.3g} %"


def _ratio_text(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.3g}"


def _errors(ctx: _Ctx, update: bool) -> tuple[GateResult, float]:
    test = ctx.test()
    if update:
        c_req, s_req = _total(ctx.results["canary_requests"]), _total(ctx.results["stable_requests"])
        c_err = _total(ctx.results["canary_errors"]) or 0.0
        s_err = _total(ctx.results["stable_errors"]) or 0.0
        test.update(Counts(c_req or 0.0, c_err), Counts(s_req or 0.0, s_err))
    stats = ctx.config.statistics
    ev = test.evidence(ctx.alpha_each, worse_ratio=stats.worse_ratio, worse_delta=stats.worse_delta / 100)
    custom = ctx.comparison.custom
    what, failed = ("error rate", "stable requests failed") if custom is None else (
        custom.description or ctx.comparison.key, "stable (numerator of denominator)"
    )  # fmt: skip
    counts = (
        f"{ev.canary.errors:,.0f} of {ev.canary.requests:,.0f} canary vs {ev.stable.errors:,.0f} of "
        f"{ev.stable.requests:,.0f} {failed}, over {test.intervals} interval(s)"
    )
    details = _evidence_details(ev, test, ctx)
    # the statistics speak of requests and errors; a custom comparison's counts are its denominator and numerator
    reason = ev.reason if custom is None else ev.reason.replace("error rate", what).replace("requests", "events")
    if ev.outcome is Outcome.NO_DATA:
        return ctx.result(Verdict.NO_DATA, None, f"{reason}; {counts}{_rejected(ev)}", "ratio", **details), math.nan
    lo, hi = ev.interval
    summary = (
        f"canary {what} {_pct(ev.canary.rate)} vs stable {_pct(ev.stable.rate)}: ratio {_ratio_text(ev.ratio)} "
        f"(confidence sequence {_ratio_text(lo)}–{_ratio_text(hi)}), e-value {ev.e_value:.3g} against "
        f"margin {test.margin:g}; {counts}"
    )
    if ev.outcome is Outcome.INCONCLUSIVE:
        summary = f"inconclusive: {reason}; {summary}"
    return ctx.result(_VERDICT[ev.outcome], ev.ratio, summary + _rejected(ev), "ratio", **details), ev.p_value


def _rejected(ev: ErrorEvidence) -> str:
    """What the summary says about intervals that could not be used (their counts were impossible)."""
    if not ev.rejected:
        return ""
    return f"; {len(ev.rejected)} interval(s) rejected, latest: {ev.rejected[-1]}"


def _evidence_details(ev: ErrorEvidence, test: SequentialTest, ctx: _Ctx) -> dict[str, Any]:
    needed: dict[str, float] = {}
    if ev.outcome is Outcome.INCONCLUSIVE:
        # at the canary's request rate since the evidence started: how long until a decision is possible
        elapsed = max(ctx.evidence.last + ctx.interval - ctx.evidence.started, ctx.interval)
        rate = ev.canary.requests / elapsed if elapsed > 0 else 0.0
        more = ev.needed_requests()
        needed = {"needed_requests": more, "needed_seconds": more / rate if rate > 0 else math.inf}
    rejected = {"rejected_intervals": " | ".join(ev.rejected)} if ev.rejected else {}
    return {
        **needed,
        **rejected,
        "method": "anytime-valid mixture test (conditional binomial, tempered for bursts), confidence sequence",
        "margin_tested": ev.margin,
        "dispersion": ev.dispersion,
        "p_value": ev.p_value,
        "e_value": ev.e_value,
        "ratio": ev.ratio,
        "interval_low": ev.interval[0],
        "interval_high": ev.interval[1],
        "canary_requests": ev.canary.requests,
        "canary_events": ev.canary.errors,
        "stable_requests": ev.stable.requests,
        "stable_events": ev.stable.errors,
        "detectable_rate": ev.detectable_rate,
        "detectable_ratio": ev.detectable_ratio,
        "intervals": test.intervals,
    }


def _latency(ctx: _Ctx, update: bool, earlier: list[Sample] | None) -> tuple[GateResult, float]:
    c = ctx.comparison
    if "canary_step" not in ctx.results:
        return (
            ctx.result(
                Verdict.NO_DATA,
                None,
                "no latency buckets to compare: mesh: custom needs queries.buckets",
                "ratio",
            ),
            math.nan,
        )
    key = c.key
    if key not in ctx.evidence.bounds and earlier is not None:
        bound = _bound_at(_buckets(earlier), c.quantile)
        if bound is not None and math.isfinite(bound):
            ctx.evidence.bounds[key] = bound
    bound = ctx.evidence.bounds.get(key)
    test = ctx.test()
    canary_step, stable_step = _buckets(ctx.results["canary_step"]), _buckets(ctx.results["stable_step"])
    if (
        bound is not None
        and canary_step.bounds
        and stable_step.bounds
        and (bound not in canary_step.bounds or bound not in stable_step.bounds)
    ):
        why = f"the canary's or stable's histogram has no {bound:g} ms bucket (different bucket layouts)"
        return ctx.result(Verdict.NO_DATA, None, why, "ratio"), math.nan
    if update and bound is not None and bound in canary_step.bounds and bound in stable_step.bounds:
        c_slow, c_all = canary_step.over(bound)
        s_slow, s_all = stable_step.over(bound)
        test.update(Counts(c_all, c_slow), Counts(s_all, s_slow))
    canary_since, stable_since = _buckets(ctx.results["canary_since"]), _buckets(ctx.results["stable_since"])
    band = compare_quantile(canary_since, stable_since, c.quantile, alpha=ctx.alpha_each)
    pname = f"p{round(c.quantile * 100)}"
    band_text = (
        f"{pname} canary in ({band.canary[0]:g}, {band.canary[1]:g}] ms, stable in ({band.stable[0]:g}, "
        f"{band.stable[1]:g}] ms, difference in [{band.difference[0]:g}, {band.difference[1]:g}] ms "
        f"(time-uniform bounds from {band.n_canary:,} and {band.n_stable:,} requests)"
    )
    details: dict[str, Any] = {
        "canary_quantile_low": band.canary[0],
        "canary_quantile_high": band.canary[1],
        "stable_quantile_low": band.stable[0],
        "stable_quantile_high": band.stable[1],
        "difference_low": band.difference[0],
        "difference_high": band.difference[1],
        "canary_quantile_estimate": band.canary_estimate,
        "stable_quantile_estimate": band.stable_estimate,
    }
    if bound is None:
        why = "stable had no requests before the evidence started to fix its quantile's bucket"
        if _bound_at(stable_since, c.quantile) == math.inf:
            why = f"stable's {pname} lies beyond the highest finite bucket"
        return ctx.result(Verdict.NO_DATA, None, f"{why}; {band_text}", "ratio", **details), math.nan
    stats = ctx.config.statistics
    ev = test.evidence(ctx.alpha_each, worse_ratio=stats.worse_ratio, worse_delta=stats.worse_delta / 100)
    details.update(_evidence_details(ev, test, ctx))
    details["bound_ms"] = bound
    slower = (
        f"requests slower than {bound:g} ms (stable's {pname} bucket): canary {_pct(ev.canary.rate)} of "
        f"{ev.canary.requests:,.0f}, stable {_pct(ev.stable.rate)} of {ev.stable.requests:,.0f}, ratio "
        f"{_ratio_text(ev.ratio)} (confidence sequence {_ratio_text(ev.interval[0])}–{_ratio_text(ev.interval[1])}), "
        f"e-value {ev.e_value:.3g} against margin {test.margin:g}"
    )
    if ev.outcome is Outcome.NO_DATA:
        return ctx.result(Verdict.NO_DATA, None, f"{ev.reason}; {band_text}", "ratio", **details), math.nan
    summary = f"{slower}; {band_text}"
    if ev.outcome is Outcome.INCONCLUSIVE:
        summary = f"inconclusive: {ev.reason}; {summary}"
    return ctx.result(_VERDICT[ev.outcome], ev.ratio, summary + _rejected(ev), "ratio", **details), ev.p_value


def _resources(ctx: _Ctx, source: MetricsSource, now: float) -> tuple[GateResult, float]:
    c = ctx.comparison
    step = ctx.config.statistics.sample_interval
    window = min(max(now - ctx.evidence.started, ctx.config.window), 3600.0)
    samples: dict[str, list[float]] = {}
    queries = []
    for side in ("canary", "stable"):
        if c.key == "cpu":
            q = (
                f"({source.render('cpu_seconds', side=side, window=step)}) / "
                f"({source.render('requests', side=side, window=step)})"
            )
        else:
            q = source.render("memory_usage", side=side)
        queries.append(q)
        series = source.query_range(q, now - window, now, step)
        samples[side] = [v for s in series for v in s.values if math.isfinite(v)]
    ctx = _Ctx(ctx.config, c, ctx.settings, ctx.results, tuple(queries), ctx.alpha_each, window, ctx.evidence)
    if c.key == "cpu" and (uneven := _uneven_load(source, window, now)):
        return ctx.result(Verdict.INCONCLUSIVE, None, f"inconclusive: {uneven}", "ratio"), math.nan
    unit = "CPU s/request" if c.key == "cpu" else "bytes/pod"
    result = classify(
        samples["stable"],
        samples["canary"],
        direction="increase",
        confidence=1 - ctx.config.statistics.alpha,
        tolerance=0.10,
        allowed_increase=ctx.settings.margin,
    )
    n = f"{len(samples['canary'])} canary and {len(samples['stable'])} stable samples over {window:g}s"
    details = {
        "method": "Kayenta-style Mann-Whitney with Hodges-Lehmann interval (fixed horizon)",
        "p_value": result.p_value,
        "ratio": result.ratio,
        "estimate": result.estimate,
        "interval_low": result.interval[0],
        "interval_high": result.interval[1],
        "canary_samples": len(samples["canary"]),
        "stable_samples": len(samples["stable"]),
        "classification": result.classification,
    }
    what = "CPU seconds per request" if c.key == "cpu" else "working set per pod"
    if result.classification == "Nodata":
        return ctx.result(Verdict.NO_DATA, None, f"{what}: {result.reason}; {n}", "ratio", **details), math.nan
    summary = (
        f"{what}: canary/stable mean ratio {_ratio_text(result.ratio)}, shift {result.estimate:.3g} {unit} "
        f"(interval {result.interval[0]:.3g} to {result.interval[1]:.3g}), classified {result.classification}; {n}"
    )
    verdict = Verdict.FAIL if result.classification == "High" else Verdict.PASS
    # one-sided p-value for the multiplicity correction: "is the canary higher"
    p = result.p_value / 2 if result.estimate > 0 else 1.0
    return ctx.result(verdict, result.ratio, summary, "ratio", **details), p


LOAD_SPREAD = 1.5
"""CPU per request is compared only while a canary pod and a stable pod serve request rates within this factor."""


def _uneven_load(source: MetricsSource, window: float, now: float) -> str | None:
    """Why CPU cannot be compared now, or ``None``. A pod's idle CPU is spread over its requests, so a pod serving
    fewer requests uses more CPU per request: comparable only at comparable load per pod (e.g. the 50 % stage with
    equal replicas)."""
    per_pod = {}
    for side in ("canary", "stable"):
        queries = [source.render("requests", side=side, window=window), source.render("cpu_usage", side=side)]
        got = source.query_many(queries, at=now)
        requests, pods = (_raise(got[q]) for q in queries)
        if not requests or not pods:
            return f"no requests or no pods of the {side} in the window"
        per_pod[side] = sum(s.value for s in requests) / window / len(pods)
    c, s = per_pod["canary"], per_pod["stable"]
    if c <= 0 or s <= 0 or max(c, s) / min(c, s) > LOAD_SPREAD:
        return (
            f"canary pods serve {c:.3g} req/s each and stable pods {s:.3g}: CPU per request is compared only at "
            f"comparable load per pod (within {LOAD_SPREAD:g}x, e.g. the 50 % stage with equal replicas)"
        )
    return None


def _raise(result: list[Sample] | PrometheusError) -> list[Sample]:
    if isinstance(result, PrometheusError):
        raise result
    return result


def _correct(
    out: dict[str, GateResult | CanaryError],
    p_values: Mapping[str, float],
    stats: Statistics,
    note: str,
    evidence: Evidence,
) -> None:
    """Apply the stage's multiplicity correction: a failing comparison whose adjusted p-value is above alpha is
    downgraded (to pass when it had the power, else inconclusive); every result states the correction."""
    names = list(p_values)
    adjusted = dict(zip(names, multiple.adjust([p_values[n] for n in names], stats.correction.value), strict=True))
    text = multiple.describe(stats.correction.value, stats.alpha, len(out))
    for name, result in list(out.items()):
        if not isinstance(result, GateResult):
            continue
        details = dict(result.details)
        details["adjusted_p_value"] = adjusted.get(name, math.nan)
        details["correction"] = text
        details["evidence"] = f"{note}, {evidence.checks} check(s)"
        verdict, summary = result.verdict, result.summary
        if note.startswith("new evidence ("):  # started afresh for a reason: say so where people read
            summary = f"{summary} [{note}]"
        adj = adjusted.get(name, math.nan)
        if verdict is Verdict.FAIL and not adj <= stats.alpha:
            verdict = Verdict.INCONCLUSIVE
            summary = f"inconclusive after the correction (adjusted p = {adj:.3g} > {stats.alpha:g}): {summary}"
        elif verdict is Verdict.FAIL:
            summary = f"{summary}; p = {result.details.get('p_value', math.nan):.3g}, adjusted {adj:.3g}"
            if note.startswith("evidence since"):  # the counts span more than the window shown below them
                summary = (
                    f"{summary} [{note}, {evidence.checks} check(s) of this canary; if it was redeployed or fixed "
                    "since, start afresh with --fresh-evidence]"
                )
        out[name] = replace(result, verdict=verdict, summary=f"{summary} [{text}]", details=details)
