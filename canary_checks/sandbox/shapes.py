"""Load shapes per rollout stage, as data. Use beside the locustfile:

    CANARY_STAGE=25 locust -f canary_checks/sandbox/locustfile.py,canary_checks/sandbox/shapes.py \
        --headless --host http://127.0.0.1:18080

(the files are in the installed package: ``python -c 'import canary_checks.sandbox as s; print(s.LOCUSTFILE)'``).

Each stage is a list of steps run one after another; the run ends after the last step (a shape ignores -t).
CANARY_SHAPE_SCALE=0.1 runs every step ten times shorter, for a quick try.
"""

import os

from locust import LoadTestShape

STAGES: dict[int, list[dict[str, float]]] = {
    # A small canary share needs a longer, steadier load for the canary to see enough requests.
    5: [{"duration": 30, "users": 20, "spawn_rate": 10}, {"duration": 300, "users": 40, "spawn_rate": 10}],
    25: [{"duration": 30, "users": 20, "spawn_rate": 10}, {"duration": 240, "users": 40, "spawn_rate": 10}],
    50: [{"duration": 30, "users": 40, "spawn_rate": 20}, {"duration": 180, "users": 80, "spawn_rate": 20}],
    100: [{"duration": 60, "users": 80, "spawn_rate": 20}, {"duration": 240, "users": 160, "spawn_rate": 40}],
}


class RolloutStageShape(LoadTestShape):
    """Follows STAGES[$CANARY_STAGE] (default 25), step by step, then stops."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # locust's shape is untyped
        stage = int(os.environ.get("CANARY_STAGE", "25"))
        if stage not in STAGES:
            raise SystemExit(f"CANARY_STAGE must be one of {sorted(STAGES)}; got {stage}")
        scale = float(os.environ.get("CANARY_SHAPE_SCALE", "1"))
        if scale <= 0:
            raise SystemExit(f"CANARY_SHAPE_SCALE must be a positive number; got {scale}")
        self.steps = [{**step, "duration": step["duration"] * scale} for step in STAGES[stage]]

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()  # type: ignore[no-untyped-call]
        for step in self.steps:
            if elapsed < step["duration"]:
                return int(step["users"]), step["spawn_rate"]
            elapsed -= step["duration"]
        return None
