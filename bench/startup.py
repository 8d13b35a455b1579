"""Start-up cost: `canary-checks --help`, and what loading the pytest plugin adds to an unrelated pytest run.

    .venv/bin/python bench/startup.py [--runs 7] [--top 15]

Runs from any directory with the interpreter that runs it and the `canary-checks` script next to it, each command
a fresh process, --runs each (after one warm-up run each, not counted):
- `canary-checks --help`, wall time, the median; target <= 0.4 s;
- a one-test pytest run in an empty temporary directory (`python -m pytest -q -p no:cacheprovider test_x.py`) as
  installed, against the same run with `-p no:canary_checks`, the runs interleaved; target: the plugin adds
  <= 0.1 s of CPU time, the fastest run of each (issue 12; wall time is shown too; medians of two identical
  commands differ by a tenth of a second from run to run on this class of machine).
A missed target prints the largest import costs (`python -X importtime`) of the module behind it; the exit status
is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELP_TARGET = 0.4
"""Seconds `canary-checks --help` may take."""
PLUGIN_TARGET = 0.1
"""Seconds loading the plugin may add to an unrelated pytest run."""
UNRELATED_TEST = "def test_x():\n    assert 1 + 1 == 2\n"
PYTEST = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:locust", "test_x.py")
"""Locust's own plugin is kept out of both runs: it imports gevent, which is not ours to measure."""


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode} in {cwd}:\n{done.stdout}{done.stderr}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def import_costs(module: str, after: str, top: int, cwd: Path, env: dict[str, str]) -> list[tuple[int, int, str]]:
    """The ``top`` largest (cumulative µs, self µs, name) of importing ``module`` once ``after`` is imported (what
    the process has loaded anyway: pytest for the plugin)."""
    code = f"import {after}\nimport {module}" if after else f"import {module}"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    rows: list[tuple[int, int, str]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if after and name == after:  # everything before is the baseline's own imports
            rows = []
            continue
        rows.append((int(cumulative), int(own), name))
    return sorted(rows, reverse=True)[:top]


def show_costs(title: str, rows: list[tuple[int, int, str]]) -> None:
    print(f"  {title} (cumulative includes the imports below it):")
    for cumulative, own, name in rows:
        print(f"    {cumulative / 1000:7.1f} ms  (self {own / 1000:5.1f} ms)  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        type=int,
        default=9,
        help="Runs of each command: the median of --help counts, the fastest pytest run of each.",
    )
    parser.add_argument("--top", type=int, default=15, help="Import costs shown for a missed target.")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1; got {args.runs}")

    script = Path(sys.executable).parent / "canary-checks"
    if not script.exists():
        raise SystemExit(f"no {script}: install canary-checks into this interpreter's environment (pip install -e .)")
    if "canary_checks" not in {e.name for e in importlib.metadata.entry_points(group="pytest11")}:
        raise SystemExit("no pytest11 entry point canary_checks for this interpreter: pip install -e .")
    spec = importlib.util.find_spec("canary_checks")
    where = Path(spec.origin).parent if spec and spec.origin else "?"
    # as a user's installed copy runs: no inherited pytest options, plugins autoloaded, and bytecode cached (the
    # warm-up writes it) instead of every module compiled again in every process
    dropped = ("PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}

    help_times: list[float] = []
    loaded: list[tuple[float, float]] = []
    without: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="canary-startup-") as tmp:
        cwd = Path(tmp)
        (cwd / "test_x.py").write_text(UNRELATED_TEST)
        help_cmd = [str(script), "--help"]
        with_cmd = [sys.executable, *PYTEST]
        without_cmd = [*with_cmd, "-p", "no:canary_checks"]
        for cmd in (help_cmd, with_cmd, without_cmd):  # warm-up: the file cache, .pyc files
            timed(cmd, cwd, env)
        for _ in range(args.runs):
            help_times.append(timed(help_cmd, cwd, env)[0])
            loaded.append(timed(with_cmd, cwd, env))
            without.append(timed(without_cmd, cwd, env))

        help_median = statistics.median(help_times)
        # the overhead on the fastest run of each (timeit's rule: noise only ever adds) and on CPU time: on this
        # class of machine the medians of two identical commands differ by a tenth of a second from run to run
        with_wall, without_wall = (min(w for w, _ in runs) for runs in (loaded, without))
        with_cpu, without_cpu = (min(c for _, c in runs) for runs in (loaded, without))
        overhead = with_cpu - without_cpu
        print(f"canary_checks from {where}; {sys.executable}; {args.runs} runs, a fresh process each")
        print(f"canary-checks --help, median                : {help_median:.3f} s "
              f"= {help_median / HELP_TARGET:.2f} x the target ({HELP_TARGET} s)")  # fmt: skip
        print(f"pytest, one unrelated test, plugin loaded, fastest: {with_wall:.3f} s wall, {with_cpu:.3f} s CPU")
        print(f"pytest, same, -p no:canary_checks, fastest        : {without_wall:.3f} s wall, {without_cpu:.3f} s CPU")
        print(f"plugin overhead, CPU time: {overhead:.3f} s = {overhead / PLUGIN_TARGET:.2f} x the target "
              f"({PLUGIN_TARGET} s; wall: {with_wall - without_wall:.3f} s)")  # fmt: skip

        missed = []
        if help_median > HELP_TARGET:
            missed.append("canary-checks --help")
            show_costs("import canary_checks.cli", import_costs("canary_checks.cli", "", args.top, cwd, env))
        if overhead > PLUGIN_TARGET:
            missed.append("plugin overhead")
            costs = import_costs("canary_checks.plugin", "pytest", args.top, cwd, env)
            show_costs("import canary_checks.plugin, after pytest", costs)
            imported = max((c for c, _, name in costs if name == "canary_checks.plugin"), default=0) / 1e6
            print(f"  importing it alone, after pytest: {imported:.3f} s (in the pytest run: {overhead:.3f} s)")
    if missed:
        print(f"missed: {', '.join(missed)}")
        sys.exit(1)
    print("both targets met")


if __name__ == "__main__":
    main()
