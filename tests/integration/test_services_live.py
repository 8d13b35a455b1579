"""A canary.yaml of two services against the live sandbox: `--service` chooses the one the sandbox serves, and the
gate suite judges it on the shared settings with its own section over them."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.integration.conftest import Live


def test_a_two_service_config_gates_the_service_the_sandbox_serves(live: Live, tmp_path: Path) -> None:
    shared = {k: v for k, v in yaml.safe_load(live.config_path.read_text()).items() if k != "service"}
    shared["gates"] = {"error_rate": {"threshold": 3}}
    services = {
        # the sandbox's service; its p95 threshold (a thousandth of a millisecond, critical) no real answer meets
        "auth": {"gates": {"latency_p95": {"threshold": 0.001, "severity": "critical"}}},
        "gateway": {"namespace": "edge", "gates": {"error_rate": {"threshold": 1}}},
    }
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump({**shared, "services": services}))
    run, gates = live.gates(25, "--service", "auth", config_path=path)
    # the fixed gates (a fresh comparison may still be undecided, which run_suite counts as failed)
    failed = {name for name, record in gates.items() if record.outcome == "failed" and not name.startswith("compare")}
    assert failed == {"latency_p95"}, run.output
    assert (gates["latency_p95"].threshold, gates["latency_p95"].severity) == ("0.001", "critical")
    assert float(gates["latency_p95"].value) > 0.001
    # the shared error-rate threshold (not gateway's, not the default), and a healthy canary under it
    assert (gates["error_rate"].threshold, gates["error_rate"].verdict) == ("3", "pass")
    assert gates["traffic_received"].verdict == "pass"  # the sandbox's real traffic, read for auth
