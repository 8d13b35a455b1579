"""Traffic for the service under release.

Alone:   locust -f canary_checks/sandbox/locustfile.py --headless -u 40 -r 40 --host http://127.0.0.1:18080 ServiceUser
Sandbox: started by 'canary-checks sandbox up' at sandbox.rps requests per second (this file, from the package).
Stages:  add shapes.py beside it (locust -f .../locustfile.py,.../shapes.py ...), CANARY_STAGE=5|25|50|100.

Rate: each user sends CANARY_RPS / CANARY_USERS requests per second (default 5), so users x that is the total.
"""

import os

from locust import FastHttpUser, constant_throughput, tag, task

PER_USER_RPS = float(os.environ.get("CANARY_RPS", "0") or 0) / max(1, int(os.environ.get("CANARY_USERS", "1"))) or 5.0


class ServiceUser(FastHttpUser):
    """A client of the service: reads most, writes some, all through the router's weighted split."""

    wait_time = constant_throughput(PER_USER_RPS)
    weight = 9

    @tag("read")
    @task(8)
    def get_item(self) -> None:
        self.client.get("/api/items/42", name="/api/items/[id]")

    @tag("write")
    @task(2)
    def post_item(self) -> None:
        self.client.post("/api/items", json={"name": "canary"}, name="/api/items")


class CanaryHeaderUser(FastHttpUser):
    """Smoke traffic sent straight to the canary through the header route (x-canary: true)."""

    wait_time = constant_throughput(PER_USER_RPS)
    weight = 1

    @task
    def get_item(self) -> None:
        with self.client.get(
            "/api/items/42", headers={"x-canary": "true"}, name="canary /api/items/[id]", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"canary answered {response.status_code}")
