"""Smoke checks: real requests to the canary (or stable) through the route that reaches only it.

The canary is reached through the ``x-canary: true`` header route before it gets any weighted traffic; stable through
a route of its own or its own URL (``smoke.targets``). Each request's answer is checked for its status, its body and,
when the service names the pod that answered (``smoke.served_by_header``), that the target answered and not the other
side. :mod:`suites/smoke` turns each check into a test; the problems here become its failure message.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from canary_checks.config import CanaryConfig, SmokeRequest

__all__ = ["Answer", "SmokeClient", "reachable_request"]

TARGETS = ("canary", "stable")
_MISSING = object()


@dataclass(frozen=True)
class Answer:
    """What one request got back (``status`` 0 when nothing answered)."""

    method: str
    url: str
    status: int
    elapsed: float
    """Seconds until the whole answer arrived."""
    served_by: str | None = None
    body: str = ""
    error: str = ""
    """Why nothing answered (connection refused, timeout)."""
    problems: tuple[str, ...] = field(default_factory=tuple)

    def describe(self, target: str, headers: dict[str, str]) -> str:
        """The failure message: what was sent, what came back, each problem."""
        routed = ", ".join(f"{k}: {v}" for k, v in headers.items()) or "no routing header"
        lines = [f"{self.method} {self.url} (target {target}, {routed})"]
        if self.error:
            lines.append(f"  no answer: {self.error}")
        else:
            lines.append(
                f"  answered {self.status} in {self.elapsed * 1000:.0f} ms"
                + (f" by {self.served_by}" if self.served_by else "")
            )
        lines.extend(f"  - {p}" for p in self.problems)
        if self.body and self.problems and not self.error:
            lines.append(f"  body: {self.body[:300]}")
        return "\n".join(lines)


def reachable_request() -> SmokeRequest:
    """The first check: the service answers at all through the target's route (any status but a 5xx)."""
    return SmokeRequest(name="reachable", path="/", status=tuple(range(100, 500)))


def _field(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


class SmokeClient:
    """Sends smoke requests to one target (``canary`` or ``stable``) and judges the answers."""

    def __init__(self, config: CanaryConfig, target: str) -> None:
        if target not in TARGETS:
            raise ValueError(f"target is canary or stable; got {target!r}")
        self.config, self.target = config, target
        settings = config.smoke
        self.url = settings.target_url(target, config.sandbox)
        self.headers = dict(settings.targets[target].headers)
        self.workload = config.workload(target)
        self.session = requests.Session()

    def send(self, request: SmokeRequest) -> Answer:
        settings = self.config.smoke
        url = self.url + request.path
        body: dict[str, Any] = {}
        if isinstance(request.body, str):
            body["data"] = request.body.encode()
        elif request.body is not None:
            body["json"] = request.body
        start = time.monotonic()
        try:
            answer = self.session.request(
                request.method,
                url,
                headers={**self.headers, **request.headers},
                timeout=settings.timeout,
                allow_redirects=False,
                **body,
            )
        except requests.RequestException as e:
            reason = e.__class__.__name__ + (f": {e.args[0]}" if e.args else "")
            return Answer(request.method, url, 0, time.monotonic() - start, error=reason,
                          problems=(f"the {self.target} could not be reached at {self.url}",))  # fmt: skip
        elapsed = time.monotonic() - start
        served_by = answer.headers.get(settings.served_by_header) if settings.served_by_header else None
        text = answer.text
        problems = self._judge(request, answer.status_code, elapsed, served_by, text)
        return Answer(request.method, url, answer.status_code, elapsed, served_by, text, "", tuple(problems))

    def _judge(self, request: SmokeRequest, status: int, elapsed: float, served_by: str | None, text: str) -> list[str]:
        settings = self.config.smoke
        problems = []
        if status not in request.status:
            expected = "any status below 500" if request.name == "reachable" else " or ".join(map(str, request.status))
            problems.append(f"status {status}, expected {expected}")
        if settings.served_by_header:
            if served_by is None:
                problems.append(f"no {settings.served_by_header} header in the answer, so who answered is unknown")
            elif self.workload not in served_by:
                problems.append(
                    f"answered by {served_by}, not by the {self.target} ({self.workload}): the route "
                    f"({', '.join(f'{k}: {v}' for k, v in self.headers.items()) or 'no header'}) reaches the wrong side"
                )
        if request.max_latency is not None and elapsed > request.max_latency:
            problems.append(f"took {elapsed * 1000:.0f} ms > {request.max_latency * 1000:.0f} ms (max_latency)")
        problems.extend(f"the body does not contain {needle!r}" for needle in request.contains if needle not in text)
        if request.json_fields:
            try:
                data = json.loads(text)
            except ValueError:
                problems.append("the body is not JSON, so json_fields cannot be checked")
            else:
                for path, expected in request.json_fields.items():
                    got = _field(data, path)
                    if got is _MISSING:
                        problems.append(f"the JSON answer has no field {path}")
                    elif got != expected:
                        problems.append(f"{path} is {got!r}, expected {expected!r}")
        return problems
