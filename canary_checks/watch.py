"""``canary-checks watch``: the watchdog for a runner that died.

A runner renews its lease on the rollout's record every third of its TTL (``run --lease-ttl``). A rollout still in
progress (deploying, progressing, rolling back) whose lease has expired has nobody checking it: its runner was
killed, its node lost, or it cannot reach the record any more. The watchdog rolls such a rollout back — weight 0
first — exactly as ``run --rollback`` does, recording and announcing why. Rollouts waiting for a person (held on
undecided comparisons, or awaiting promotion) are left alone: waiting is what they were told to do.

It runs beside the runners: in the cluster as a Deployment (``manifests/checks/watch.yaml``), in the sandbox as a
process. Every ``interval`` it reads the records (the annotated canary Deployments of the namespace; the sandbox's
state files) and acts on the expired ones.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canary_checks.config import CanaryConfig, load_config
from canary_checks.errors import CanaryError
from canary_checks.record import Lease, Status, holder_id
from canary_checks.runner import Platform, Rollout, RolloutOptions
from canary_checks.traffic import Router

__all__ = ["WATCHED", "Candidate", "Watchdog", "expired", "kube_candidates", "sandbox_candidates"]

log = logging.getLogger(__name__)

WATCHED = (Status.DEPLOYING, Status.PROGRESSING, Status.ROLLING_BACK)
"""Statuses in which a runner must be alive; a held or awaiting-promotion rollout waits for a person."""


@dataclass(frozen=True)
class Candidate:
    """A rollout's record, and how to reach its canary and its traffic."""

    service: str
    state: dict[str, Any]
    platform: Platform
    router: Callable[[], Router]


def expired(state: dict[str, Any], now: float) -> Lease | bool | None:
    """False when the rollout is looked after (or over); else its expired lease (None: it never had one)."""
    if state.get("status") not in WATCHED:
        return False
    lease = Lease.of(state)
    if lease is not None and not lease.expired(now):
        return False
    return lease


class Watchdog:
    def __init__(
        self,
        config: CanaryConfig,
        config_path: Path | None,
        scan: Callable[[], Iterable[Candidate]],
        *,
        echo: Callable[[str], None] = print,
        reports: Path = Path("reports"),
    ) -> None:
        self.config, self.config_path, self.scan, self.echo, self.reports = config, config_path, scan, echo, reports
        self.holder = holder_id("watchdog")

    def once(self, now: float | None = None) -> list[str]:
        """One look: the services whose rollouts it rolled back."""
        now = time.time() if now is None else now
        rolled = []
        for candidate in self.scan():
            lease = expired(candidate.state, now)
            if lease is False:
                continue
            if isinstance(lease, Lease):
                why = (f"the runner went silent: {lease.holder} was last heard {now - lease.renewed:.0f} s ago "
                       f"(lease {lease.ttl:g} s)")  # fmt: skip
            else:
                why = "the rollout has no runner (no lease on its record)"
            self.echo(f"watch: {candidate.service}: rolling back run {candidate.state.get('run_id')} of "
                      f"{candidate.state.get('image')}: {why}")  # fmt: skip
            try:
                self._roll_back(candidate, why)
                rolled.append(candidate.service)
            except CanaryError as e:  # the next look tries again; the others are not held up
                self.echo(f"watch: {candidate.service}: the rollback failed: {e.message}")
        return rolled

    def _roll_back(self, candidate: Candidate, why: str) -> None:
        config = self.config
        if candidate.service != config.service:
            config = load_config(self.config_path, {"service": candidate.service})
        options = RolloutOptions(service=candidate.service, image=str(candidate.state.get("image", "")),
                                 rollback=True, rollback_if_silent=True, reports=self.reports, holder=self.holder,
                                 rollback_why=f"watchdog: {why}", handle_signals=False)  # fmt: skip
        Rollout(config, candidate.platform, candidate.router(), options, echo=self.echo).run()

    def run(self, interval: float, stop: threading.Event, *, once: bool = False) -> None:
        self.echo(f"watch: looking every {interval:g} s for rollouts whose runner went silent ({self.holder})")
        while True:
            try:
                self.once()
            except CanaryError as e:  # the API or the state directory could not be read: say so, look again
                self.echo(f"watch: could not read the rollouts: {e.message}")
            if once or stop.wait(interval):
                return


def sandbox_candidates(box: Any) -> Callable[[], list[Candidate]]:
    """The sandbox's rollouts: a record file per service in its state directory."""
    from canary_checks.sandbox import SandboxPlatform

    def scan() -> list[Candidate]:
        found = []
        for path in sorted(Path(box.state_dir).glob("rollout-*.json")):
            service = path.stem.removeprefix("rollout-")
            platform = SandboxPlatform(box, service)
            state = platform.read_record()
            if state is not None:
                found.append(Candidate(service, state, platform, lambda: box.router))
        return found

    return scan


def kube_candidates(api: Any, config: CanaryConfig, config_path: Path | None) -> Callable[[], list[Candidate]]:
    """The namespace's rollouts: every Deployment carrying a rollout record (the canaries)."""
    from kubernetes import client

    from canary_checks.kube import STATE_ANNOTATION, KubePlatform, call
    from canary_checks.traffic import kube_router

    apps, namespace = client.AppsV1Api(api), config.namespace

    def scan() -> list[Candidate]:
        found = []
        listed = call(f"LIST deployments in {namespace}", lambda: apps.list_namespaced_deployment(namespace))
        for dep in listed.items:
            meta = dep.metadata
            if meta is None or STATE_ANNOTATION not in (meta.annotations or {}):
                continue
            state = KubePlatform(api, namespace, "", str(meta.name)).read_record()
            if state is None or not state.get("service"):
                continue
            service = str(state["service"])
            own = config if service == config.service else load_config(config_path, {"service": service})
            platform = KubePlatform(api, namespace, own.workload("stable"), own.workload("canary"),
                                    baseline=own.workload("baseline"))  # fmt: skip
            router = functools.partial(kube_router, str(state.get("router") or "istio"), api, namespace, service)
            found.append(Candidate(service, state, platform, router))
        return found

    return scan
