"""The gate suite: what a stage must pass.

    pytest suites/gate --stage 25 [--junitxml reports/stage-25.xml] [--strict-gates]

One parametrized test per gate family; thresholds, severities and the window come from canary.yaml.
"""

import pytest

from canary_checks import GateCheck, gate_params


@pytest.mark.parametrize("gate", gate_params("error_rate"), indirect=True)
def test_error_rate(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", gate_params("success_rate"), indirect=True)
def test_success_rate(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", gate_params("latency"), indirect=True)
def test_latency(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", gate_params("traffic"), indirect=True)
def test_traffic(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", gate_params("pods"), indirect=True)
def test_pods(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", gate_params("restarts"), indirect=True)
def test_restarts(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", gate_params("cpu"), indirect=True)
def test_cpu(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", gate_params("memory"), indirect=True)
def test_memory(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", gate_params("vs_stable"), indirect=True)
def test_vs_stable(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", gate_params("kubernetes"), indirect=True)
def test_kubernetes(gate: GateCheck) -> None:
    gate.verify()


@pytest.mark.parametrize("gate", gate_params("alerts"), indirect=True)
def test_alerts(gate: GateCheck) -> None:
    gate.verify()


def test_custom(custom_gate: GateCheck) -> None:
    """One test per custom gate under `gates:` in canary.yaml (the plugin parametrizes it; none: deselected)."""
    custom_gate.verify()
