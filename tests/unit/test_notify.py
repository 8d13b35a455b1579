"""Notifications against a real local HTTP receiver: bodies per kind, retries, bounds, failures reported."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pytest

from canary_checks.config import CanaryConfig, NotificationSettings
from canary_checks.errors import ConfigError
from canary_checks.notify import Decision, Notifier
from canary_checks.record import Event
from tests.conftest import Receiver, serving

ROLLED_BACK = Decision(
    event=Event.ROLLED_BACK,
    service="auth",
    namespace="orion",
    image="ghcr.io/orion/auth:1.9.0",
    stage=25,
    why="failing gates at stage 25 %: error_rate (canary error rate 19.9 % > 5 %)",
    failing=(
        {
            "gate": "error_rate",
            "verdict": "fail",
            "value": "19.9",
            "threshold": "5",
            "unit": "%",
            "summary": "canary error rate 19.9 % > 5 % (298 of 1500 requests 5xx)",
        },
    ),
    time=1_800_000_000.0,
    run_id="20270115-080000-abcdef",
)


def notifier(
    kind: str, monkeypatch: pytest.MonkeyPatch, url: str, token_env: str | None = None, **settings: object
) -> tuple[Notifier, list]:
    monkeypatch.setenv("HOOK_URL", url)
    failures: list[tuple[str, str]] = []
    target = {"kind": kind, "url_env": "HOOK_URL", **({"token_env": token_env} if token_env else {})}
    config = NotificationSettings.model_validate({"targets": [target], "timeout": "1s", "backoff": "0.1s", **settings})
    return Notifier(config, on_failure=lambda target, error: failures.append((target, error))), failures


@pytest.mark.parametrize("kind", ["slack", "teams", "webhook", "alertmanager", "grafana"])
def test_each_kind_receives_the_decision_with_the_failing_gates(
    kind: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_t0ken")
    extra = {"token_env": "GRAFANA_TOKEN"} if kind == "grafana" else {}
    n, failures = notifier(kind, monkeypatch, receiver.url, **extra)
    n.notify(ROLLED_BACK)
    n.flush()
    assert failures == []
    ((path, body),) = receiver.received
    title = "auth: rolled back at stage 25 % (ghcr.io/orion/auth:1.9.0)"
    if kind == "slack":
        assert body["text"].startswith(title) and "error_rate: canary error rate 19.9 % > 5 %" in body["text"]
        assert body["attachments"][0]["fields"][-1]["title"] == "error_rate"
    elif kind == "teams":
        assert body["@type"] == "MessageCard" and body["title"] == title
        assert {"name": "error_rate", "value": ROLLED_BACK.failing[0]["summary"]} in body["sections"][0]["facts"]
    elif kind == "alertmanager":
        assert path == "/api/v2/alerts"
        (alert,) = body
        assert alert["labels"] == {"alertname": "CanaryDecision", "decision": "rolled-back", "service": "auth",
                                   "namespace": "orion", "severity": "critical"}  # fmt: skip
        assert alert["annotations"]["failing_gates"] == "error_rate"
        assert alert["startsAt"].startswith("2027-01-15T08:00:00")
    elif kind == "grafana":
        assert path == "/api/annotations"
        assert receiver.headers[0]["Authorization"] == "Bearer glsa_t0ken"
        assert body["tags"] == ["canary-checks", "auth", "rolled-back"]  # what the dashboard's annotation query asks
        assert body["time"] == 1_800_000_000_000 and body["text"].startswith("auth: rolled back at stage 25 %")
    else:
        assert body["event"] == "rolled back" and body["stage"] == 25
        assert body["failing_gates"][0]["gate"] == "error_rate" and body["failing_gates"][0]["value"] == "19.9"


def test_a_failing_receiver_is_retried_then_reported(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.status = [500, 503, 200]
    n, failures = notifier("webhook", monkeypatch, receiver.url)
    n.notify(ROLLED_BACK)
    n.flush()
    assert failures == [] and receiver.attempts == 3 and len(receiver.received) == 1
    receiver.status = 500
    n, failures = notifier("webhook", monkeypatch, receiver.url)
    n.notify(ROLLED_BACK)
    n.flush()
    assert failures == [("webhook ($HOOK_URL)", "rolled back: HTTP 500 after 3 attempts")]


def test_a_slow_receiver_never_blocks_and_gives_up_within_the_bound(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.delay = 5.0
    n, failures = notifier("slack", monkeypatch, receiver.url, retries=1, timeout="0.3s")
    started = time.monotonic()
    n.notify(ROLLED_BACK)
    assert time.monotonic() - started < 0.1  # the caller goes on at once
    assert n.bound == pytest.approx(2 * 0.3 + 0.1)
    n.flush()
    assert time.monotonic() - started < n.bound + 1.5
    assert failures and "timed out" in failures[0][1]


def test_each_target_gets_the_decisions_in_order_and_a_slow_one_holds_up_no_other(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = Receiver()
    slow.delay = 0.2
    receiver.delay = [0.3, 0.0]  # the quick target's first answer is not: no later decision may overtake it
    monkeypatch.setenv("HOOK_URL", receiver.url)
    monkeypatch.setenv("SLOW_URL", slow.url)
    targets = [{"kind": "webhook", "url_env": "SLOW_URL"}, {"kind": "webhook", "url_env": "HOOK_URL"}]
    n = Notifier(NotificationSettings.model_validate({"targets": targets}), on_failure=lambda *failure: None)
    decided = [(Event.DEPLOYED, 5), *((Event.STAGE_PASSED, s) for s in (5, 25, 50, 100)), (Event.PROMOTED, 100)]
    with serving(slow.server):
        for event, stage in decided:  # as a rollout's last stage and its promotion: milliseconds apart
            n.notify(dataclasses.replace(ROLLED_BACK, event=event, stage=stage))
        deadline = time.monotonic() + 5
        while len(receiver.received) < len(decided) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(body["event"], body["stage"]) for _, body in receiver.received] == decided
        assert len(slow.received) < len(decided), "the quick target waited for the slow one"
        n.flush()
        assert [(body["event"], body["stage"]) for _, body in slow.received] == decided


def test_the_url_is_never_logged_and_a_missing_one_is_reported(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.status = [500, 200]
    n, failures = notifier("slack", monkeypatch, receiver.url + "/services/T0/B0/s3cr3t")
    n.notify(ROLLED_BACK)
    n.flush()
    assert receiver.received and receiver.received[0][0] == "/services/T0/B0/s3cr3t"
    assert "s3cr3t" not in caplog.text  # not even in urllib3's debug lines
    assert "notify slack ($HOOK_URL) attempt 1/3 failed (HTTP 500); retrying in 0.1 s" in caplog.text
    monkeypatch.delenv("HOOK_URL")
    n = Notifier(n.settings, on_failure=lambda target, error: failures.append((target, error)))
    n.notify(ROLLED_BACK)
    n.flush()
    assert failures and failures[0][0] == "slack ($HOOK_URL)" and "HOOK_URL is empty or unset" in failures[0][1]


def test_only_the_configured_decisions_are_sent(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    n, failures = notifier("webhook", monkeypatch, receiver.url, events=["rolled back"])
    n.notify(dataclasses.replace(ROLLED_BACK, event=Event.STAGE_PASSED, why="every gate passed"))
    n.notify(ROLLED_BACK)
    n.flush()
    assert [body["event"] for _, body in receiver.received] == ["rolled back"] and not failures


def test_notification_config_mistakes_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of url_env"):
        from canary_checks.config import load_config

        path = tmp_path / "canary.yaml"
        path.write_text("notifications:\n  targets: [{kind: slack}]\n")
        load_config(path)
    with pytest.raises(ConfigError, match="unknown decision 'rollback'"):
        path.write_text("notifications:\n  events: [rollback]\n")
        load_config(path)
    assert CanaryConfig().notifications.targets == ()
