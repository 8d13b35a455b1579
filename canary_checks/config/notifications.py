"""Where decisions are sent: the notifier kinds, the decisions they may subscribe to, targets and their settings.

Seam: the models only; the payloads and sending are :mod:`canary_checks.notify`."""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import field_validator, model_validator

from canary_checks.config.units import Duration, Range, _Model
from canary_checks.errors import ConfigError
from canary_checks.record import Event


class NotificationKind(StrEnum):
    SLACK = "slack"
    """A Slack-compatible incoming webhook (also Mattermost, Rocket.Chat)."""
    TEAMS = "teams"
    """A Microsoft Teams incoming webhook (MessageCard)."""
    WEBHOOK = "webhook"
    """Any endpoint taking a JSON POST: event, service, stage, why, failing gates."""
    ALERTMANAGER = "alertmanager"
    """Alertmanager's alert API (/api/v2/alerts): its routes reach PagerDuty, email, and the rest."""
    GRAFANA = "grafana"
    """Grafana's annotation API (/api/annotations): decisions appear on the canary dashboard (token_env)."""


DECISIONS = {
    Event.DEPLOYED: "canary deployed",
    Event.STAGE_PASSED: "stage advanced",
    Event.HELD: "stage held",
    Event.AWAITING_DECISION: "awaiting a decision",
    Event.OUTSIDE_WINDOW: "outside the release windows",
    Event.ROLLED_BACK: "rolled back",
    Event.PROMOTED: "promoted",
}
"""Runner events that are decisions people hear about, and how a message (and `notifications.events`) names them."""
DECISION_NAMES = tuple(DECISIONS.values())


class NotificationTarget(_Model):
    kind: NotificationKind
    """slack, teams, webhook, alertmanager or grafana."""
    url_env: str | None = None
    """Environment variable holding the URL (webhook URLs are secrets: never written in the file, never logged)."""
    url_file: Path | None = None
    """A file holding the URL (a mounted Secret)."""
    token_env: str | None = None
    """Environment variable holding a bearer token sent with each request (Grafana service-account token)."""

    @model_validator(mode="after")
    def _one_source(self) -> NotificationTarget:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("give exactly one of url_env (an environment variable) or url_file")
        return self

    def describe(self) -> str:
        return f"{self.kind.value} (${self.url_env})" if self.url_env else f"{self.kind.value} ({self.url_file})"

    def resolve_url(self) -> str:
        """The URL, read now; a ConfigError when it is missing."""
        if self.url_env:
            url = os.environ.get(self.url_env, "").strip()
            if not url:
                raise ConfigError(
                    f"environment variable {self.url_env} is empty or unset",
                    where=f"notifications ({self.describe()})",
                    fix=f"export {self.url_env}=<webhook URL>",
                )
        else:
            assert self.url_file is not None
            try:
                url = self.url_file.read_text().strip()
            except OSError as e:
                raise ConfigError(
                    f"cannot read {self.url_file}: {e.strerror}", where=f"notifications ({self.describe()})"
                ) from e
        if not re.match(r"^https?://", url):
            raise ConfigError(
                "the configured URL does not start with http:// or https://",
                where=f"notifications ({self.describe()})",
            )
        return url


class NotificationSettings(_Model):
    targets: tuple[NotificationTarget, ...] = ()
    """Where the runner sends each decision."""
    events: tuple[str, ...] = DECISION_NAMES
    """Which decisions to send (default: every one of them, as listed)."""
    timeout: Duration = 5.0
    """Per attempt, seconds."""
    retries: Annotated[int, Range("a number of retries", 0, 5)] = 2
    """Further attempts after a failure (timeouts, errors, non-2xx answers)."""
    backoff: Duration = 0.5
    """Seconds before the first retry; doubled before each next one."""

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [e for e in value if e not in DECISION_NAMES]
        if unknown:
            raise ValueError(f"unknown decision {unknown[0]!r}; use any of: {', '.join(DECISION_NAMES)}")
        return value
