"""The sandbox as the runner's platform: its pods are processes, the rollout's record a file in its state directory,
its images a file beside it.

Seam: the :class:`~canary_checks.runner` platform interface over a running :class:`~canary_checks.sandbox.Sandbox`;
the Kubernetes one is :mod:`canary_checks.kube`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from canary_checks.errors import SandboxError
from canary_checks.record import RecordConflict, version_of

log = logging.getLogger(__name__)


class SandboxPlatform:
    """The local sandbox: its pods are processes; the record is a file in its state directory.

    There is no image to pull: "deploying" records the image and waits for the canary pod to be ready."""

    def __init__(self, box: Any, service: str) -> None:
        self.box = box
        self.file = Path(box.state_dir) / f"rollout-{service}.json"
        self.images = Path(box.state_dir) / f"images-{service}.json"

    def describe(self) -> str:
        return f"the sandbox in {self.box.state_dir}"

    def validate(self) -> list[str]:
        if not self.box.is_up():
            return [f"the sandbox in {self.box.state_dir} is not running (canary-checks sandbox up)"]
        state = self.box._load_state()
        serves = (state.get("service"), state.get("namespace"))
        wanted = (self.box.config.service, self.box.config.namespace)
        if serves[0] is not None and serves != wanted:
            return [
                f"the sandbox in {self.box.state_dir} serves {serves[0]} in {serves[1]}, not {wanted[0]} in "
                f"{wanted[1]}: roll out {serves[0]} there, or 'canary-checks sandbox down' and 'sandbox up' with "
                f"a canary.yaml for {wanted[0]}"
            ]
        if self.box.config.baseline.enabled and not self.has_baseline_pod():
            return [
                f"baseline.enabled is true (or run --baseline), but the sandbox in {self.box.state_dir} was started "
                "without a baseline pod: 'canary-checks sandbox down', then 'canary-checks sandbox up' with "
                "baseline: {enabled: true} in canary.yaml"
            ]
        scaling = self.box.config.rollout.scaling
        largest = scaling.canary_replicas(self.stable_replicas(), 100) if scaling.proportional else 0
        if largest > self.canary_slots():
            return [
                f"rollout.scaling asks for up to {largest} canary pods, but the sandbox in {self.box.state_dir} "
                f"was started with {self.canary_slots()}: 'canary-checks sandbox down', then 'canary-checks "
                "sandbox up' with this canary.yaml"
            ]
        if self.box.config.routing.sticky.enabled and self.box.router.sticky_map() is None:
            return [
                f"routing.sticky.enabled is true, but the sandbox in {self.box.state_dir} was started without "
                "sticky sessions: 'canary-checks sandbox down', then 'canary-checks sandbox up' with this canary.yaml"
            ]
        return []

    def read_record(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.file.read_text())
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    def write_record(self, state: dict[str, Any], expected: int) -> int:
        """Compare-and-swap on the record's version, under an exclusive lock on a file beside it (the contract of
        the Kubernetes annotation's resourceVersion, for processes on this machine)."""
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with self.file.with_name(self.file.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read_record()
            if version_of(current) != expected:
                raise RecordConflict(
                    f"the rollout record changed (version {version_of(current)}, expected {expected})",
                    current, where=str(self.file),
                )  # fmt: skip
            state["version"] = expected + 1
            tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
            tmp.replace(self.file)
        return expected + 1

    def _images(self) -> dict[str, str]:
        return (
            json.loads(self.images.read_text()) if self.images.exists() else {"stable": "demo:v1", "canary": "demo:v2"}
        )

    def _set_image(self, side: str, image: str) -> None:
        self.images.write_text(json.dumps({**self._images(), side: image}))

    def stable_image(self) -> str:
        return self._images()["stable"]

    def deploy_canary(self, image: str) -> None:
        self._set_image("canary", image)
        if self.scales:  # as a Deployment is applied: one replica to start with (a rollback left none)
            self.scale_canary(1)

    def wait_canary_ready(self, timeout: float, progress: Callable[[str], None]) -> None:
        if not self.scales:
            progress("waiting for the canary pod to be ready and UP in HAProxy")
            self.box.wait_ready(timeout)
            return
        deadline, said, told = time.monotonic() + timeout, "", 0.0
        while (state := self._canary_state())[0] is None:
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"the canary was not ready within {timeout:g} s: {state[1]}", where=self.describe(),
                    fix="see 'canary-checks sandbox status' and the canary pods' logs in the state directory",
                )  # fmt: skip
            if state[1] != said or time.monotonic() - told >= 1:
                said, told = state[1], time.monotonic()
                progress(said)
            time.sleep(0.2)
        self.box.router.respread()  # the shares as they were, over every pod now ready

    def _canary_state(self) -> tuple[int | None, str]:
        """The canary's pods when every one is ready and UP in HAProxy (else None), and what is still missing."""
        workload = self.box.config.workload("canary")
        pods = [p for p in self.box.pods() if p["workload"] == workload]
        up = [ok for server, ok in self.box.router.servers_up().items() if server.startswith("svc/canary")]
        ready = sum(bool(p["ready"]) for p in pods)
        said = f"canary: {ready}/{len(pods)} pods ready, {sum(up)}/{len(up)} UP in HAProxy"
        return (len(pods) if ready == len(pods) == len(up) == sum(up) else None), said

    @property
    def scales(self) -> bool:
        """Whether the canary's pods follow its weight (rollout.scaling proportional); else the one canary pod
        stays running, as before scaling existed, and only its weight matters."""
        return bool(self.box.config.rollout.scaling.proportional)

    def scale_canary(self, replicas: int) -> None:
        """The canary's first ``replicas`` pods run. Pods that go have their share spread over the others first
        (one HAProxy request); pods that come are put in service at weight 0 — :meth:`wait_canary_ready` waits for
        them and spreads the share over them, so the canary's share stays its weight however many pods it has."""
        if not self.scales:
            log.info("sandbox: the canary pod stays running (rollout.scaling is fixed); its weight is what matters")
            return
        servers = self._canary_servers()
        if not 0 <= replicas <= len(servers):
            raise SandboxError(
                f"the sandbox runs 0 to {len(servers)} canary pods; asked for {replicas}", where=self.describe(),
                fix="raise sandbox.stable_replicas (or rollout.scaling.max) and start the sandbox again",
            )  # fmt: skip
        router = self.box.router
        serving = router.in_service()
        if leaving := [s for s in servers[replicas:] if s in serving]:
            router.respread(retiring=leaving)
        self.box.node.scale(self.box.config.workload("canary"), replicas)
        router.enter_service([s for s in servers[:replicas] if s not in serving])

    def has_baseline_pod(self) -> bool:
        """Whether this sandbox was started with a baseline pod (node.json, written at 'sandbox up')."""
        spec = json.loads((Path(self.box.state_dir) / "node.json").read_text())
        return any(p["workload"] == self.box.config.workload("baseline") for p in spec["pods"])

    def start_baseline(self, replicas: int, timeout: float, progress: Callable[[str], None]) -> None:
        """The sandbox's baseline pod (stable's version, on its own port) running, in service in HAProxy at weight
        0, ready and UP. One pod whatever ``replicas`` says."""
        if not self.has_baseline_pod():
            raise SandboxError(
                f"the sandbox in {self.box.state_dir} has no baseline pod",
                fix="'canary-checks sandbox down', then 'canary-checks sandbox up' with baseline: {enabled: true} "
                "in canary.yaml",
            )
        self.box.node.scale(self.box.config.workload("baseline"), 1)
        self.box.router.enter_service(["baseline"])
        progress("waiting for the baseline pod to be ready and UP in HAProxy")
        self.box.wait_ready(timeout)

    def stop_baseline(self) -> None:
        """The baseline pod gone, as a Deployment scaled to 0: its server out of service first (its share, 0 once
        the weight went to 0, spread over the others in the same request), then the pod stopped."""
        if not self.has_baseline_pod():
            return
        if self.box.router.has_baseline():
            self.box.router.respread(retiring=["baseline"])
        self.box.node.scale(self.box.config.workload("baseline"), 0)

    def _canary_servers(self) -> list[str]:
        """The canary's pods this sandbox can run, by their HAProxy servers (node.json, written at 'sandbox up')."""
        spec = json.loads((Path(self.box.state_dir) / "node.json").read_text())
        workload = self.box.config.workload("canary")
        return [str(p["server"]) for p in spec["pods"] if p["workload"] == workload]

    def canary_slots(self) -> int:
        """How many canary pods this sandbox can run."""
        return len(self._canary_servers())

    def stable_replicas(self) -> int:
        return sum(p["workload"] == self.box.config.workload("stable") for p in self.box.pods())

    def promote(
        self, image: str, timeout: float, progress: Callable[[str], None], *, replicas: int | None = None
    ) -> None:
        """Stable runs ``image``; its pods were never scaled, so it has its size (``replicas``) already."""
        self._set_image("stable", image)
