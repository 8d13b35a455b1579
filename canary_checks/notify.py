"""Notifications of the runner's decisions: Slack-compatible and Microsoft Teams incoming webhooks, generic JSON
webhooks, Alertmanager's alert API (so existing routing to PagerDuty or email applies) and Grafana annotations (the
decisions on the canary dashboard).

Sending never holds up a decision: notifications go out on background threads, one per target, so each target gets
them in the order they were decided (a ``promoted`` never before the last ``stage passed``) and a slow target holds up
no other. Each is bounded by a per-attempt timeout and a few retries with backoff, after the decision has been carried
out. A notification that cannot be delivered is reported through ``on_failure`` (the runner writes it to its event
log). Target URLs come from environment variables or files and are never logged: a target is shown as
``slack ($SLACK_WEBHOOK_URL)``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from canary_checks.config import DECISIONS, NotificationSettings, NotificationTarget
from canary_checks.record import Event

__all__ = ["DECISIONS", "Decision", "Notifier", "payload"]

log = logging.getLogger(__name__)

_COLORS: dict[str, str] = {Event.DEPLOYED: "439FE0", Event.STAGE_PASSED: "2EB886", Event.HELD: "DAA038",
                           Event.AWAITING_DECISION: "DAA038", Event.OUTSIDE_WINDOW: "DAA038",
                           Event.ROLLED_BACK: "A30200", Event.PROMOTED: "2EB886"}  # fmt: skip


@dataclass(frozen=True)
class Decision:
    event: Event
    """The runner's event (a key of DECISIONS)."""
    service: str
    namespace: str
    image: str
    stage: int | None
    why: str
    failing: tuple[Mapping[str, str], ...]
    """Failing gates: gate, verdict, value, threshold, unit, summary."""
    time: float
    run_id: str

    @property
    def title(self) -> str:
        stage = f" at stage {self.stage} %" if self.stage is not None else ""
        return f"{self.service}: {DECISIONS[self.event]}{stage} ({self.image})"

    def lines(self) -> list[str]:
        out = [self.why] if self.why else []
        out += [f"{g.get('gate')}: {g.get('summary') or g.get('verdict')}" for g in self.failing]
        return out


def payload(kind: str, d: Decision) -> Any:
    """The JSON body one kind of target receives."""
    text = "\n".join([d.title, *d.lines()])
    if kind == "slack":
        fields = [{"title": "service", "value": f"{d.service} in {d.namespace}", "short": True},
                  {"title": "image", "value": d.image, "short": True}]  # fmt: skip
        fields += [{"title": g.get("gate", "?"), "value": g.get("summary", ""), "short": False} for g in d.failing]
        attachment = {"color": f"#{_COLORS[d.event]}", "title": d.title, "text": d.why, "fields": fields,
                      "ts": int(d.time)}  # fmt: skip
        return {"text": text, "attachments": [attachment]}
    if kind == "teams":
        facts = [{"name": "service", "value": f"{d.service} in {d.namespace}"}, {"name": "image", "value": d.image},
                 *({"name": g.get("gate", "?"), "value": g.get("summary", "")} for g in d.failing)]  # fmt: skip
        return {"@type": "MessageCard", "@context": "https://schema.org/extensions", "summary": d.title,
                "themeColor": _COLORS[d.event], "title": d.title, "text": d.why or d.title,
                "sections": [{"facts": facts}]}  # fmt: skip
    if kind == "alertmanager":
        at = datetime.fromtimestamp(d.time, tz=UTC)
        waiting = d.event in ("held", "awaiting decision", "outside window")
        severity = "critical" if d.event == "rolled back" else "warning" if waiting else "info"
        alert = {
            "labels": {"alertname": "CanaryDecision", "decision": d.event.replace(" ", "-"), "service": d.service,
                       "namespace": d.namespace, "severity": severity},
            "annotations": {"summary": d.title, "description": "\n".join(d.lines()),
                            "failing_gates": ", ".join(g.get("gate", "") for g in d.failing)},
            "startsAt": at.isoformat(),
            # a decision is an event, not a state: it resolves by itself after a while
            "endsAt": datetime.fromtimestamp(d.time + 3600, tz=UTC).isoformat(),
        }  # fmt: skip
        return [alert]
    if kind == "grafana":
        return {"time": int(d.time * 1000), "tags": ["canary-checks", d.service, d.event.replace(" ", "-")],
                "text": "\n".join([d.title, *d.lines()])}  # fmt: skip
    return {"event": d.event, "decision": DECISIONS[d.event], "title": d.title, "service": d.service,
            "namespace": d.namespace, "image": d.image, "stage": d.stage, "why": d.why,
            "failing_gates": list(d.failing), "time": d.time, "run_id": d.run_id}  # fmt: skip


class _Redact(logging.Filter):
    """Keeps webhook URLs (their paths carry the secret) out of urllib3's debug lines."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "<redacted>")
            record.msg, record.args = message, ()
        return True


_REDACT = _Redact()
logging.getLogger("urllib3.connectionpool").addFilter(_REDACT)


class Notifier:
    """Sends decisions to the configured targets without ever blocking the caller."""

    def __init__(self, settings: NotificationSettings, on_failure: Callable[[str, str], None]) -> None:
        self.settings = settings
        self.on_failure = on_failure
        # one thread per target: its notifications in order, whatever another target answers
        self._pools = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"notify-{i}") for i in range(len(settings.targets))
        ]
        self._pending: list[list[Future[None]]] = [[] for _ in settings.targets]
        self._lock = threading.Lock()
        self._session = requests.Session()

    @property
    def bound(self) -> float:
        """The longest one notification can take: every attempt times out and every backoff is waited."""
        s = self.settings
        return float((s.retries + 1) * s.timeout + sum(s.backoff * 2**i for i in range(s.retries)))

    def wants(self, event: Event) -> bool:
        return bool(self.settings.targets) and event in DECISIONS and DECISIONS[event] in self.settings.events

    def notify(self, decision: Decision) -> None:
        if not self.wants(decision.event):
            return
        for pool, pending, target in zip(self._pools, self._pending, self.settings.targets, strict=True):
            with self._lock:
                pending[:] = [f for f in pending if not f.done()]  # a long rollout's delivered ones are forgotten
                pending.append(pool.submit(self._deliver, target, decision))

    def _deliver(self, target: NotificationTarget, decision: Decision) -> None:
        name = target.describe()
        try:
            url = target.resolve_url()
        except Exception as e:  # a missing variable or unreadable file: report, never raise into the rollout
            self.on_failure(name, str(e))
            return
        api = {"alertmanager": "/api/v2/alerts", "grafana": "/api/annotations"}.get(target.kind.value)
        if api and not url.rstrip("/").endswith(api):
            url = url.rstrip("/") + api
        headers = {}
        if target.token_env:
            token = os.environ.get(target.token_env, "").strip()
            if not token:
                self.on_failure(name, f"environment variable {target.token_env} (the token) is empty or unset")
                return
            headers["Authorization"] = f"Bearer {token}"
        parts = urlsplit(url)
        _REDACT.secrets.add(parts.path + (f"?{parts.query}" if parts.query else "") if len(parts.path) > 1 else url)
        body = payload(target.kind, decision)
        s = self.settings
        problem = ""
        for attempt in range(1, s.retries + 2):
            try:
                answer = self._session.post(url, json=body, headers=headers, timeout=s.timeout)
                if answer.status_code < 300:
                    log.info("notified %s of %s", name, decision.event)
                    return
                problem = f"HTTP {answer.status_code}"
            except requests.RequestException as e:
                problem = type(e).__name__ + (" (timed out)" if isinstance(e, requests.Timeout) else "")
            if attempt <= s.retries:
                pause = s.backoff * 2 ** (attempt - 1)
                log.info("notify %s attempt %d/%d failed (%s); retrying in %.1f s", name, attempt, s.retries + 1,
                         problem, pause)  # fmt: skip
                time.sleep(pause)
        self.on_failure(name, f"{decision.event}: {problem} after {s.retries + 1} attempts")

    def flush(self, timeout: float | None = None) -> None:
        """Wait for the notifications still in flight: at most ``timeout``, by default the bound for each one still
        queued for the busiest target, and a second (a target that answers takes milliseconds a notification)."""
        with self._lock:
            pending = [[f for f in queue if not f.done()] for queue in self._pending]
            self._pending = [[] for _ in self._pending]
        if any(pending):
            longest = max(len(queue) for queue in pending)
            wait(
                [f for queue in pending for f in queue],
                timeout=self.bound * longest + 1.0 if timeout is None else timeout,
            )
        for pool in self._pools:
            pool.shutdown(wait=False, cancel_futures=True)
