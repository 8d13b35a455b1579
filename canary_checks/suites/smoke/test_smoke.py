"""The smoke suite: real requests to the canary through its header route, before any traffic moves.

    pytest suites/smoke [--target canary|stable] [--junitxml reports/smoke.xml]

What is requested and what must come back is the `smoke:` section of canary.yaml: the health paths, and a list of
requests with their statuses, body text and JSON fields. With `smoke.served_by_header` every answer must also come
from the target's own pods.
"""

from canary_checks import SmokeCheck
from canary_checks.config import SmokeRequest


def test_reachable(smoke: SmokeCheck, reachable: SmokeRequest) -> None:
    smoke.check(reachable)


def test_health(smoke: SmokeCheck, health_request: SmokeRequest) -> None:
    smoke.check(health_request)


def test_request(smoke: SmokeCheck, smoke_request: SmokeRequest) -> None:
    smoke.check(smoke_request)
