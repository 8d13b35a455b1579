"""Decision quality of ways to judge a canary, on the same simulated streams, at the shipped defaults.

    .venv/bin/python bench/decision_quality.py [--trials 1000] [--seed 1] [--only SUBSTRING] [--out DIR] [--jobs N]

A seeded simulator: Poisson request arrivals (total rate per scenario, the canary's share of it: fixed 5 %, or
staged 5 → 25 → 50 % over the 20 minutes, a third each), errors Bernoulli per request with a per-interval error
probability that is either constant (Poisson) or drawn every 10 s from Beta(2, 198) (mean 1 %, bursts) — the same
draw for both sides ("shared bursts") or one per side ("independent bursts") — and lognormal latencies counted into
Prometheus histogram buckets (multinomial per interval). Each trial is 20 minutes checked every 10 s.

Methods, all on the same streams:

(a) absolute  — thresholds as Flagger applies them: every minute, the canary's error rate (> 5 %) and p95
                (histogram_quantile, > 500 ms) over the last minute; roll back after 5 failed checks.
(b) kayenta   — Mann–Whitney with Hodges–Lehmann interval (canary_checks.stats.kayenta.classify, direction
                increase) on per-minute error rate and p95, canary against stable, once at the 20-minute horizon.
(c) kayenta-every-minute — the same test repeated at every new minute (the repeated-looks mistake).
(d) fisher    — one-sided Fisher exact test on the cumulative error counts at every check (errors only).
(e) ours      — what the runner does: canary_checks.stats.SequentialTest fed interval by interval as compare/ does,
                with the shipped defaults (statistics.errors margin and margin_delta) at the runner's poll α (the
                errors comparison is the only critical one, so α = 1 − confidence = 0.05), checked every 10 s.
(f) ours-latency — the latency comparisons (warnings by default: reported, not rolled back on): the same test on the
                share of requests slower than stable's p95 and p99 buckets (fixed from a minute of stable data before
                the canary), at their shipped margin, α split over the three comparisons as a stage suite does.

(a)–(d) run on the scenarios marked "all methods"; the others measure ours only. For the target scenario
(1 % → 2 %, 100 req/s, 5 %) it also finds the shortest fixed horizon at which a one-sided Mann–Whitney test on
per-minute error rates (α 0.05) reaches 0.9 power, and divides our median time to detect by it.

Prints per method and scenario the rate flagged (false fails for identical canaries, power for regressions) with its
95 % Wilson interval and the median time to detect with a 95 % interval (order statistics); writes the table (markdown
and JSON) under --out. Targets (issue 15): false fails ≤ 5 % (upper bound of the interval) in every identical-canary
scenario; on 1 % → 2 % at 100 req/s and 5 %: power ≥ 0.95 within 20 min and median time to detect ≤ 0.4 × the
Mann–Whitney horizon.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

from canary_checks.config import Statistics
from canary_checks.stats import Counts, Histogram, SequentialTest, interpolated_quantile
from canary_checks.stats.kayenta import classify

DURATION, STEP = 20 * 60, 10
CHECKS = DURATION // STEP
PER_MINUTE = 60 // STEP
BOUNDS = (5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, math.inf)
DEFAULTS = Statistics()
ALPHA = DEFAULTS.alpha
"""The runner's poll: the critical comparisons alone (errors), so alpha is not split."""
BURST = (2.0, 198.0)
"""Beta parameters of the per-interval error probability in the burst scenarios (mean 1 %)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    regression: bool
    rps: float = 100.0
    share: float = 0.05
    staged: bool = False
    """Canary share 5 → 25 → 50 % (a third of the time each) instead of `share` throughout."""
    stable_errors: float = 0.01
    canary_errors: float = 0.01
    bursts: str = ""
    """"" (constant rates), "shared" or "independent": per-interval Beta(2, 198) error probabilities, the canary's
    scaled by canary_errors / stable_errors."""
    median_ms: float = 60.0
    sigma: float = 0.5
    canary_scale: float = 1.0
    """Canary latency multiplied by this."""
    tail_share: float = 0.0
    """Share of canary requests that are `tail_factor` times slower (a heavy-tail regression)."""
    tail_factor: float = 1.0
    all_methods: bool = False
    latency: bool = False
    """Simulate latency buckets (and judge the latency comparisons)."""
    target: bool = False


SCENARIOS = [
    Scenario("identical, Poisson, 100 req/s", False, all_methods=True, latency=True),
    Scenario("identical, Poisson, 50 req/s", False, rps=50.0, all_methods=True),
    Scenario("identical, Poisson, 1000 req/s", False, rps=1000.0),
    Scenario("identical, Poisson, 100 req/s, staged", False, staged=True),
    Scenario("identical, Poisson, 1000 req/s, staged", False, rps=1000.0, staged=True),
    Scenario("identical, shared bursts, 100 req/s", False, bursts="shared"),
    Scenario("identical, shared bursts, 100 req/s, staged", False, bursts="shared", staged=True),
    Scenario("identical, independent bursts, 100 req/s", False, bursts="independent"),
    Scenario("identical, independent bursts, 100 req/s, staged", False, bursts="independent", staged=True),
    Scenario("identical, independent bursts, 1000 req/s", False, rps=1000.0, bursts="independent"),
    Scenario("identical, independent bursts, 1000 req/s, staged", False, rps=1000.0, bursts="independent", staged=True),
    Scenario("canary 1.05x, Poisson, 100 req/s", False, canary_errors=0.0105),
    Scenario("canary 1.05x, Poisson, 1000 req/s", False, rps=1000.0, canary_errors=0.0105),
    Scenario("canary 1.05x, Poisson, 1000 req/s, staged", False, rps=1000.0, canary_errors=0.0105, staged=True),
    Scenario("low traffic, identical (1 req/s canary)", False, rps=20.0, all_methods=True),
    Scenario("errors 1 % -> 2 %, 100 req/s", True, canary_errors=0.02, all_methods=True, target=True),
    Scenario("errors 1 % -> 2 %, 50 req/s", True, rps=50.0, canary_errors=0.02),
    Scenario("errors 1 % -> 2 %, independent bursts", True, canary_errors=0.02, bursts="independent"),
    Scenario("errors 0.5 % -> 1.5 %", True, stable_errors=0.005, canary_errors=0.015, all_methods=True),
    Scenario("low traffic, errors 1 % -> 3 %", True, rps=20.0, canary_errors=0.03, all_methods=True),
    Scenario("p95 +20 %", True, canary_scale=1.2, all_methods=True, latency=True),
    Scenario("heavy tail (3 % of requests x6)", True, tail_share=0.03, tail_factor=6.0, all_methods=True, latency=True),
]


def bucket_probs(median: float, sigma: float, scale: float = 1.0, tail: float = 0.0, factor: float = 1.0) -> np.ndarray:
    finite = np.asarray(BOUNDS[:-1])

    def cdf(m: float) -> np.ndarray:
        return np.append(sps.norm.cdf(np.log(finite / m) / sigma), 1.0)

    mixed = (1 - tail) * cdf(median * scale) + tail * cdf(median * scale * factor)
    return np.diff(mixed, prepend=0.0)


@dataclass
class Stream:
    """One trial: per 10 s interval and side, requests, errors and bucket counts (non-cumulative)."""

    requests: np.ndarray  # (CHECKS, 2): canary, stable
    errors: np.ndarray
    buckets: np.ndarray | None  # (CHECKS, 2, len(BOUNDS))
    before: np.ndarray | None  # stable's buckets in the minute before the canary


def shares(s: Scenario) -> np.ndarray:
    if not s.staged:
        return np.full(CHECKS, s.share)
    return np.repeat([0.05, 0.25, 0.50], [CHECKS // 3, CHECKS // 3, CHECKS - 2 * (CHECKS // 3)])


def simulate(s: Scenario, rng: np.random.Generator) -> Stream:
    share = shares(s)
    lam = np.stack([s.rps * share, s.rps * (1 - share)], axis=1) * STEP
    requests = rng.poisson(lam)
    ratio = s.canary_errors / s.stable_errors
    if s.bursts == "shared":
        p = rng.beta(*BURST, size=(CHECKS, 1)) * [ratio, 1.0] * s.stable_errors / 0.01
    elif s.bursts == "independent":
        p = rng.beta(*BURST, size=(CHECKS, 2)) * [ratio, 1.0] * s.stable_errors / 0.01
    else:
        p = np.broadcast_to(np.array([s.canary_errors, s.stable_errors]), (CHECKS, 2))
    errors = rng.binomial(requests, np.minimum(p, 1.0))
    if not (s.latency or s.all_methods):
        return Stream(requests, errors, None, None)
    p_canary = bucket_probs(s.median_ms, s.sigma, s.canary_scale, s.tail_share, s.tail_factor)
    p_stable = bucket_probs(s.median_ms, s.sigma)
    buckets = np.empty((CHECKS, 2, len(BOUNDS)), dtype=np.int64)
    buckets[:, 0] = rng.multinomial(requests[:, 0], p_canary)
    buckets[:, 1] = rng.multinomial(requests[:, 1], p_stable)
    before = rng.multinomial(rng.poisson(s.rps * (1 - s.share) * 60), p_stable)
    return Stream(requests, errors, buckets, before)


def hist(freq: np.ndarray) -> Histogram:
    return Histogram(BOUNDS, tuple(float(x) for x in np.cumsum(freq)))


def per_minute(stream: Stream, upto: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-minute canary and stable values of error rate and p95 for the first `upto` minutes."""
    canary: dict[str, list[float]] = {"errors": [], "p95": []}
    stable: dict[str, list[float]] = {"errors": [], "p95": []}
    for m in range(upto):
        sl = slice(m * PER_MINUTE, (m + 1) * PER_MINUTE)
        for side, out in ((0, canary), (1, stable)):
            n = stream.requests[sl, side].sum()
            out["errors"].append(stream.errors[sl, side].sum() / n if n else math.nan)
            out["p95"].append(interpolated_quantile(hist(stream.buckets[sl, side].sum(axis=0)), 0.95))
    return canary, stable


def absolute(stream: Stream) -> int | None:
    failed = 0
    for m in range(DURATION // 60):
        sl = slice(m * PER_MINUTE, (m + 1) * PER_MINUTE)
        n = stream.requests[sl, 0].sum()
        rate = 100 * stream.errors[sl, 0].sum() / n if n else math.nan
        p95 = interpolated_quantile(hist(stream.buckets[sl, 0].sum(axis=0)), 0.95)
        if (rate > 5.0) or (p95 > 500.0) or n == 0:
            failed += 1
            if failed >= 5:
                return (m + 1) * 60
    return None


def kayenta_high(stream: Stream, minutes: int) -> bool:
    canary, stable = per_minute(stream, minutes)
    return any(
        classify(stable[k], canary[k], direction="increase", confidence=0.95).classification == "High"
        for k in ("errors", "p95")
    )


def kayenta_fixed(stream: Stream) -> int | None:
    return DURATION if kayenta_high(stream, DURATION // 60) else None


def kayenta_every_minute(stream: Stream) -> int | None:
    for m in range(3, DURATION // 60 + 1):  # from 3 values per side
        if kayenta_high(stream, m):
            return m * 60
    return None


def ours(stream: Stream) -> int | None:
    """The errors comparison as the runner polls it: shipped margins, alpha = 1 − confidence."""
    settings = DEFAULTS.errors
    test = SequentialTest(margin=settings.margin, margin_delta=settings.margin_delta / 100)
    for i in range(CHECKS):
        req, err = stream.requests[i], stream.errors[i]
        if test.update(Counts(req[0], err[0]), Counts(req[1], err[1])).rejects(ALPHA):
            return (i + 1) * STEP
    return None


def ours_latency(stream: Stream) -> int | None:
    """The p95 and p99 comparisons (shipped margins), alpha split over errors, p95, p99 as in a stage suite."""
    assert stream.before is not None and stream.buckets is not None
    alpha_each = ALPHA / 3
    cdf = hist(stream.before).cdf()
    tests, bounds = [], []
    for q, settings in ((0.95, DEFAULTS.latency_p95), (0.99, DEFAULTS.latency_p99)):
        bound = next((b for b, c in zip(BOUNDS, cdf, strict=True) if c >= q and math.isfinite(b)), None)
        if bound is not None:
            bounds.append(BOUNDS.index(bound))
            tests.append(SequentialTest(margin=settings.margin, margin_delta=settings.margin_delta / 100))
    for i in range(CHECKS):
        req = stream.requests[i]
        for test, j in zip(tests, bounds, strict=True):
            slow = stream.buckets[i, :, j + 1 :].sum(axis=1)
            if test.update(Counts(req[0], slow[0]), Counts(req[1], slow[1])).rejects(alpha_each):
                return (i + 1) * STEP
    return None


def mann_whitney_horizon(streams: list[Stream], power: float = 0.9) -> tuple[int | None, list[float]]:
    """The shortest whole-minute horizon at which a one-sided Mann–Whitney test on per-minute error rates (canary
    greater, α 0.05) flags at least `power` of the streams; and the power at every horizon."""
    minutes = DURATION // 60
    rates = []
    for st in streams:
        req = st.requests.reshape(minutes, PER_MINUTE, 2).sum(axis=1)
        err = st.errors.reshape(minutes, PER_MINUTE, 2).sum(axis=1)
        rates.append(np.where(req > 0, err / np.maximum(req, 1), np.nan))
    powers = []
    for h in range(1, minutes + 1):
        flagged = 0
        for r in rates:
            c, s = r[:h, 0], r[:h, 1]
            c, s = c[~np.isnan(c)], s[~np.isnan(s)]
            if h >= 2 and c.size and s.size:
                flagged += sps.mannwhitneyu(c, s, alternative="greater").pvalue <= 0.05
        powers.append(flagged / len(rates))
    found = next((h for h, p in enumerate(powers, start=1) if p >= power), None)
    return found, powers


def fisher_every_check(stream: Stream) -> int | None:
    """The fixed-sample test the issue warns about: one-sided Fisher on the cumulative counts at every check."""
    totals = np.cumsum(stream.requests, axis=0), np.cumsum(stream.errors, axis=0)
    for i in range(CHECKS):
        (nc, ns), (ec, es) = totals[0][i], totals[1][i]
        if sps.fisher_exact([[ec, nc - ec], [es, ns - es]], alternative="greater").pvalue <= ALPHA:
            return (i + 1) * STEP
    return None


OURS = "ours (errors, as the runner polls, every 10 s)"
OURS_LATENCY = "ours, latency p95/p99 (warning comparisons)"
COMPARED = {
    "absolute (Flagger-style 5 %, p95 500 ms, 5 failed checks)": absolute,
    "Kayenta MWU, fixed 20 min horizon": kayenta_fixed,
    "Kayenta MWU, checked every minute": kayenta_every_minute,
    "Fisher exact on errors, checked every 10 s": fisher_every_check,
}


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def median_interval(times: list[float]) -> tuple[float, float, float]:
    """Median and its 95 % distribution-free interval (order statistics of a binomial(n, ½))."""
    if not times:
        return (math.nan, math.nan, math.nan)
    x = np.sort(np.asarray(times, dtype=float))
    n = len(x)
    lo = int(sps.binom.ppf(0.025, n, 0.5))
    hi = int(min(n - 1, sps.binom.isf(0.025, n, 0.5)))
    return float(np.median(x)), float(x[max(lo - 1, 0)]), float(x[hi])


def measure(name: str, scenario: Scenario, method: str, found: list[int | None]) -> dict:
    times = [t for t in found if t is not None]
    lo, hi = wilson(len(times), len(found))
    med, mlo, mhi = median_interval(times)
    row = {
        "scenario": name,
        "regression": scenario.regression,
        "method": method,
        "trials": len(found),
        "flagged": len(times) / len(found),
        "flagged_low": lo,
        "flagged_high": hi,
        "median_detect_s": None if math.isnan(med) else med,
        "median_detect_low_s": None if math.isnan(mlo) else mlo,
        "median_detect_high_s": None if math.isnan(mhi) else mhi,
    }
    what = "power" if scenario.regression else "false fails"
    detect = f", median detection {med / 60:.2f} min [{mlo / 60:.2f}, {mhi / 60:.2f}]" if times else ""
    print(f"{name:<50} {method:<56} {what} {row['flagged']:6.1%} [{lo:.1%}, {hi:.1%}]{detect}", flush=True)
    return row


def judge_all(judge: Callable[[Stream], int | None], streams: list[Stream], jobs: int) -> list[int | None]:
    """``judge`` on every stream, in ``jobs`` processes (the streams are simulated beforehand, in order: the same
    results whatever the number of processes)."""
    if jobs <= 1:
        return [judge(st) for st in streams]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return pool.map(judge, streams, chunksize=max(1, len(streams) // (4 * jobs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials per scenario (default 1000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default="", help="run only the scenarios whose name contains this")
    parser.add_argument("--ours-only", action="store_true", help="skip the other methods (faster)")
    parser.add_argument("--out", type=Path, default=Path("reports/decision-quality"))
    parser.add_argument(
        "--jobs", type=int, default=1, help="processes judging the streams (the same streams and results as with 1)"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows, summary = [], []
    started = time.perf_counter()
    print(
        f"defaults: errors margin {DEFAULTS.errors.margin:g} + {DEFAULTS.errors.margin_delta:g} pp, latency margin "
        f"{DEFAULTS.latency_p95.margin:g}; runner's poll alpha {ALPHA:g}; {args.trials} trials, seed {args.seed}"
    )
    for scenario in SCENARIOS:
        if args.only and args.only not in scenario.name:
            continue
        streams = [simulate(scenario, rng) for _ in range(args.trials)]
        found = judge_all(ours, streams, args.jobs)
        rows.append(row := measure(scenario.name, scenario, OURS, found))
        if scenario.latency:
            rows.append(measure(scenario.name, scenario, OURS_LATENCY, judge_all(ours_latency, streams, args.jobs)))
        if scenario.all_methods and not args.ours_only:
            for method, judge in COMPARED.items():
                rows.append(measure(scenario.name, scenario, method, [judge(st) for st in streams]))
        if scenario.target:
            horizon, powers = mann_whitney_horizon(streams)
            med = row["median_detect_s"]
            ratio = med / (horizon * 60) if horizon and med is not None else math.nan
            _, mlo, mhi = median_interval([t for t in found if t is not None])
            line = (
                f"target '{scenario.name}': power {row['flagged']:.1%} [{row['flagged_low']:.1%}, "
                f"{row['flagged_high']:.1%}] within 20 min; shortest Mann-Whitney horizon with power >= 0.9: "
                f"{horizon} min (power {powers[horizon - 1] if horizon else math.nan:.3f}); our median time to "
                f"detect / that horizon = {ratio:.2f} [{mlo / 60 / (horizon or math.nan):.2f}, "
                f"{mhi / 60 / (horizon or math.nan):.2f}]"
            )
            summary.append(line)
            rows.append({"scenario": scenario.name, "method": "Mann-Whitney horizon", "horizon_min": horizon,
                         "power_by_minute": powers, "ratio": ratio})  # fmt: skip
            print(line, flush=True)
    fails = [r for r in rows if not r.get("regression", True) and r["method"] == OURS]
    if fails:
        worst = max(fails, key=lambda r: r["flagged_high"])
        summary.append(
            f"worst identical-canary scenario (ours): '{worst['scenario']}' {worst['flagged']:.1%} false fails, "
            f"upper 95 % bound {worst['flagged_high']:.1%}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    write_table(rows, args.out / "results.md", args.trials, args.seed)
    print()
    for line in summary:
        print(line)
    print(f"\n{args.trials} trials per scenario, seed {args.seed}, {time.perf_counter() - started:.0f} s")
    print(f"wrote {args.out}/results.md and results.json")


def write_table(rows: list[dict], path: Path, trials: int, seed: int) -> None:
    lines = [
        "# Decision quality (bench/decision_quality.py)",
        "",
        f"{trials} simulated 20-minute canaries per scenario, checked every 10 s; seed {seed}; shipped defaults.",
        "False fails for identical canaries, power for regressions (95 % Wilson interval); median time to detect",
        "among those flagged (95 % interval).",
        "",
        "| scenario | method | false fails / power | median detection |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if "flagged" not in r:
            continue
        t = "—"
        if r["median_detect_s"] is not None:
            low, high = r["median_detect_low_s"] / 60, r["median_detect_high_s"] / 60
            t = f"{r['median_detect_s'] / 60:.2f} min [{low:.2f}, {high:.2f}]"
        flagged = f"{r['flagged']:.1%} [{r['flagged_low']:.1%}, {r['flagged_high']:.1%}]"
        lines.append(f"| {r['scenario']} | {r['method']} | {flagged} | {t} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
