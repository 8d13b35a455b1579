"""Gate definitions and their evaluation.

A gate reads a few PromQL queries (canary and stable side by side, same window, same instant) and ends in a
:class:`GateResult` with one :class:`Verdict`. Thresholds come from :class:`canary_checks.config.Gates`, whose
field types also say each gate's unit (and so the values its threshold may take); which side of the threshold
fails is the gate's own.

The package's seams: ``core`` is what a gate is made of (its result, verdict and context), ``requests`` and
``health`` are the built-in gates (the service's requests; the pods, resources, alerts and Kubernetes facts),
``registry`` names them, adds a config's custom gates and evaluates them. Import from here.
"""

from canary_checks.gates.core import Decide as Decide
from canary_checks.gates.core import Gate, GateResult, Verdict
from canary_checks.gates.core import Needs as Needs
from canary_checks.gates.health import BAD_WAITING as BAD_WAITING
from canary_checks.gates.registry import GATES, custom_gate, evaluate, gates_in_family, gates_of, judge_value

__all__ = [
    "GATES",
    "Gate",
    "GateResult",
    "Verdict",
    "custom_gate",
    "evaluate",
    "gates_in_family",
    "gates_of",
    "judge_value",
]
