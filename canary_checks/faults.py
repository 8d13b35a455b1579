"""The faults the sandbox's demo pods can be given, by their command-line names.

Its own module, without imports, so that ``canary-checks sandbox --help`` can list them without loading the sandbox.
"""

from __future__ import annotations

__all__ = ["FAULT_EFFECTS", "FAULT_KINDS", "FAULT_RANGES"]

FAULT_KINDS: dict[str, tuple[str, str, float]] = {
    # name on the command line → (field of Faults, what the number means, default when none is given)
    "errors": ("errors", "percent of requests answered 500", 20.0),
    "latency": ("latency_ms", "milliseconds added to each request", 600.0),
    "crash": ("crash_after", "seconds after each start at which the process exits", 2.0),
    "memory": ("memory_mb_per_s", "MiB allocated and kept each second", 16.0),
    "cpu": ("cpu_cores", "cores kept busy (up to 1)", 0.45),
}
FAULT_RANGES: dict[str, tuple[float, float, bool]] = {
    # name → (lowest, highest, whether the lowest itself is out: a crash 0 s after start is no process at all)
    "errors": (0.0, 100.0, False),
    "latency": (0.0, 600_000.0, False),
    "crash": (0.0, 86_400.0, True),
    "memory": (0.0, 1024.0, False),
    "cpu": (0.0, 1.0, False),
}
FAULT_EFFECTS: dict[str, str] = {
    # name → what its number N does, as `canary-checks sandbox fault --help` lists them (with the defaults above)
    "errors": "answer N % of requests with 500",
    "latency": "add N ms to every request",
    "crash": "exit N s after each start: a restart loop",
    "memory": "allocate and keep N MiB every second",
    "cpu": "keep N cores busy, up to 1",
}
