"""Canary against stable, statistically: is the canary *worse than stable*, not just under a fixed threshold?

    pytest suites/gate/test_compare.py [--stage 25] [--canary-evidence PATH] [--fresh-evidence]

Each check adds the interval since the previous one to the sequential evidence (statistics.evidence_file, or the
runner's per-rollout file), so the tests stay valid when checked at every interval and every stage. A failure
names the p-value, the effect with its interval, and the counts; the JUnit properties carry them too. Margins,
severities, confidence and the multiplicity correction are under `statistics:` in canary.yaml.
"""

import pytest

from canary_checks import GateCheck, compare_params


@pytest.mark.parametrize("gate", compare_params("errors"), indirect=True)
def test_errors_vs_stable(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", compare_params("latency"), indirect=True)
def test_latency_vs_stable(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", compare_params("resources"), indirect=True)
def test_resources_vs_stable(gate: GateCheck) -> None:
    gate.verify()


def test_custom_vs_stable(custom_comparison: GateCheck) -> None:
    """One test per custom comparison under `statistics:` in canary.yaml (none: deselected)."""
    custom_comparison.verify()
