"""False alarms of canary-vs-stable and canary-vs-baseline when stable's pods are old and new pods err more.

    .venv/bin/python bench/baseline.py [--trials 10] [--trial-seconds 90] [--stable-errors 0.5] [--new-errors 3.0]

Starts its own sandbox on free ports (real Prometheus, HAProxy, demo pods and Locust at 200 req/s) with a baseline
pod (baseline.enabled). The canary runs stable's own build: the only difference is that its pod is new, and new
pods — the canary and the baseline alike — answer --new-errors % of requests with 500 (cold caches, connection
pools still filling), stable's long-running pod --stable-errors %. Whatever flags the canary here is a false alarm.
(The defaults put the new pods' excess well past what the comparison treats as a regression that matters —
statistics.worse_ratio 2× or worse_delta +1 point, whichever is larger — so against stable it is flagged.)

Each trial is a new canary: fresh evidence, the stage at 25 % (canary 25 %, baseline 25 %, stable 50 %), and for
--trial-seconds the runner's poll every --poll seconds — the critical comparison (compare_errors, the sequential
test at the shipped defaults) evaluated as `canary-checks run` polls it, in this process, on the same Prometheus at
the same instant twice: against stable, and against the baseline (`baseline.enabled`). A trial is a false alarm for
a reference when any poll failed the comparison (the runner would have rolled back). Prints each rate with its 95 %
Wilson interval, and how many trials ended undecided.
"""

from __future__ import annotations

import argparse
import math
import signal
import tempfile
import time
from pathlib import Path

import yaml

from canary_checks.compare import evaluate_comparisons
from canary_checks.config import CanaryConfig, baseline_share, load_config
from canary_checks.gates import GateResult, Verdict
from canary_checks.prometheus import MetricsSource
from canary_checks.sandbox import Sandbox, free_port_settings

STAGE = 25
WINDOW = 10
REFERENCES = ("stable", "baseline")


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def trial(configs: dict[str, CanaryConfig], root: Path, number: int, seconds: float, poll: float) -> dict[str, str]:
    """One new canary's evidence for ``seconds``, polled as the runner polls: per reference, ``false alarm`` if a
    poll failed the comparison, else the last poll's verdict."""
    evidence = {ref: root / f"evidence-{ref}-{number}.json" for ref in REFERENCES}
    outcome: dict[str, str] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(poll, max(0.0, end - time.monotonic())))
        at = time.time()  # both references judged at the same instant, on the same data
        for ref in REFERENCES:
            if outcome.get(ref) == "false alarm":
                continue  # the runner would have rolled back at that poll
            config = configs[ref]
            found = evaluate_comparisons(config, MetricsSource(config), ["compare_errors"], evidence_file=evidence[ref],
                                         at=at)["compare_errors"]  # fmt: skip
            verdict = found.verdict.value if isinstance(found, GateResult) else f"error: {found}"
            outcome[ref] = "false alarm" if verdict == Verdict.FAIL.value else verdict
    return outcome


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # killed: the sandbox is stopped, as on Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--trial-seconds", type=float, default=90.0)
    parser.add_argument("--poll", type=float, default=5.0)
    parser.add_argument("--stable-errors", type=float, default=0.5, help="percent of stable's requests answered 500")
    parser.add_argument("--new-errors", type=float, default=3.0, help="percent of the new pods' requests answered 500")
    args = parser.parse_args()
    outcomes: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sandbox = free_port_settings(root / "state", rps=200)
        path = root / "canary.yaml"
        path.write_text(yaml.safe_dump({
            "window": f"{WINDOW}s", "kubernetes": {"enabled": False}, "sandbox": sandbox,
            "prometheus": {"url": f"http://127.0.0.1:{sandbox['prometheus_port']}"}, "baseline": {"enabled": True},
        }))  # fmt: skip
        with_baseline = load_config(path)
        configs = {"stable": with_baseline.with_baseline(False), "baseline": with_baseline}
        box = Sandbox(with_baseline)
        box.up(weight=0)
        try:
            box.set_faults("stable", {"errors": args.stable_errors})
            for side in ("canary", "baseline"):
                box.set_faults(side, {"errors": args.new_errors})
            share = baseline_share(STAGE)
            box.set_weight(STAGE, share)
            box.wait_for_data()
            time.sleep(WINDOW + 3)  # a window of traffic at the split before the first canary's evidence starts
            print(f"stable {args.stable_errors:g} % errors (old pod); canary and baseline {args.new_errors:g} % (new "
                  f"pods, stable's build); canary {STAGE} %, baseline {share} %; {args.trials} trials of "
                  f"{args.trial_seconds:g} s, a poll every {args.poll:g} s", flush=True)  # fmt: skip
            for number in range(1, args.trials + 1):
                outcomes.append(trial(configs, root, number, args.trial_seconds, args.poll))
                got = outcomes[-1]
                print(f"trial {number:2d}: against stable {got['stable']:<13} against the baseline {got['baseline']}",
                      flush=True)  # fmt: skip
        finally:
            box.down()
    print()
    for ref in REFERENCES:
        alarms = sum(o[ref] == "false alarm" for o in outcomes)
        undecided = sum(o[ref] == Verdict.INCONCLUSIVE.value for o in outcomes)
        low, high = wilson(alarms, len(outcomes))
        print(f"against {ref:<8}: false alarms {alarms}/{len(outcomes)} = {alarms / len(outcomes):.0%} "
              f"[95 % CI {low:.0%}–{high:.0%}]; undecided at the end {undecided}/{len(outcomes)}")  # fmt: skip


if __name__ == "__main__":
    main()
