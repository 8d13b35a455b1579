"""The smoke suite against the live sandbox: real requests through HAProxy's x-canary routes."""

from __future__ import annotations

import yaml

from tests.integration.conftest import OWN_STATE, Live


@OWN_STATE  # requests of its own, no window
def test_healthy_canary_and_stable_pass_every_smoke_check(live: Live) -> None:
    for target, workload in (("canary", "auth-canary"), ("stable", "auth-stable")):
        run = live.smoke(f"--target={target}")
        assert run.passed, run.output
        cases = {r.test.rpartition("::")[2]: r for r in run.records}
        assert set(cases) == {"test_reachable", "test_health[healthz]", "test_health[readyz]", "test_request[item]"}
        assert all(r.outcome == "passed" for r in cases.values()), cases
        # the JUnit file says who answered each: the target's own pod, reached through its header route
        for record in cases.values():
            assert record.properties["target"] == target
            assert record.properties["served_by"].startswith(workload + "-"), record.properties


@OWN_STATE  # requests of its own, no window
def test_a_canary_answering_500_fails_smoke_while_stable_passes(live: Live) -> None:
    live.set_faults("canary", {"errors": 100})
    try:
        canary = live.smoke("--target=canary")
        stable = live.smoke("--target=stable")
    finally:
        live.set_faults("canary", {})
    assert canary.exit_code == 1
    failed = {r.test.rpartition("::")[2] for r in canary.failing}
    # health endpoints still answer (the fault is in the API), the API requests do not
    assert failed == {"test_reachable", "test_request[item]"}, canary.output
    assert "status 500, expected 200" in canary.output
    assert stable.passed, stable.output


@OWN_STATE  # requests of its own, no window
def test_a_route_that_reaches_the_wrong_side_fails_with_who_answered(live: Live) -> None:
    config = yaml.safe_load(live.config_path.read_text())
    # stable's checks sent with the canary's header: every answer comes from the canary
    config["smoke"]["targets"] = {"stable": {"headers": {"x-canary": "true"}}}
    wrong = live.runs / "wrong-route.yaml"
    wrong.write_text(yaml.safe_dump(config))
    run = live.smoke("--target=stable", config_path=wrong)
    assert run.exit_code == 1
    assert len(run.failing) == len(run.records) == 4
    assert "not by the stable (auth-stable)" in run.output
    assert "answered by auth-canary" in run.output
