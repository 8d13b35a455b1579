"""Evaluating a stage's comparisons: under the evidence file's lock, read the interval since the last check, decide
each comparison, save the evidence, then apply the stage's multiplicity correction to every result.

Seam: the order of things and the correction; the reads, the results and the file are the sibling modules."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from canary_checks.compare.evidence import Evidence, load, locked, save
from canary_checks.compare.reads import plan_of, read_before
from canary_checks.compare.registry import Comparison, comparisons_of
from canary_checks.compare.resources import resources_result
from canary_checks.compare.results import Ctx, errors_result, latency_result
from canary_checks.config import CanaryConfig, Statistics
from canary_checks.errors import CanaryError
from canary_checks.gates import GateResult, Verdict
from canary_checks.prometheus import MetricsSource
from canary_checks.stats import multiple

__all__ = ["correct", "evaluate_comparisons"]


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
    with locked(evidence_file):
        evidence, note = load(evidence_file, config, now)
        step = now - evidence.last
        update = step >= 1.0
        interval = max(step, 1.0) if update else config.window
        since = max(now - evidence.started, interval)
        out, p_values = _evaluate(config, source, wanted, evidence, now=now, interval=interval, since=since,
                                  update=update)  # fmt: skip
        if update:
            evidence.last = now
            evidence.checks += 1
            save(evidence_file, evidence)
    correct(out, p_values, stats, note, evidence)
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
    plans = {c.name: plan_of(source, c, interval=interval, since=since) for c in wanted}
    raw = source.query_many((q for p in plans.values() for q in p.queries.values()), at=now)
    earlier = read_before(source, plans.values(), evidence, before=evidence.last if update else now - since)
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
        ctx = Ctx(config, c, settings, results, tuple(plan.queries.values()), alpha_each, interval, evidence)
        try:
            if c.family in ("errors", "custom"):
                result, p = errors_result(ctx, update)
            elif c.family == "latency":
                bound_source = next(iter(earlier.values()), None) if earlier else None
                if isinstance(bound_source, CanaryError):
                    out[name] = bound_source
                    continue
                result, p = latency_result(ctx, update, bound_source)
            else:
                result, p = resources_result(ctx, source, now)
        except CanaryError as e:
            out[name] = e
            continue
        out[name] = result
        if not math.isnan(p):
            p_values[name] = p
    return out, p_values


def correct(
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
