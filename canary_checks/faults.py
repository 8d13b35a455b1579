"""The faults the sandbox's demo pods can be given, by their command-line names.

Its own module, without imports, so that ``canary-checks sandbox --help`` can list them without loading the sandbox.
"""

from __future__ import annotations

__all__ = ["FAULT_KINDS"]

FAULT_KINDS: dict[str, tuple[str, str, float]] = {
    # name on the command line → (field of Faults, what the number means, default when none is given)
    "errors": ("errors", "percent of requests answered 500", 20.0),
    "latency": ("latency_ms", "milliseconds added to each request", 600.0),
    "crash": ("crash_after", "seconds after each start at which the process exits", 2.0),
    "memory": ("memory_mb_per_s", "MiB allocated and kept each second", 16.0),
    "cpu": ("cpu_cores", "cores kept busy (up to 1)", 0.45),
}
