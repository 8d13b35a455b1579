"""The node agent's HTTP API as the sandbox drives it: its pods and their number, their injected faults, and the alerts
Alertmanager delivered to its receiver.

Seam: the client only; the agent itself is :mod:`canary_checks.sandbox.node` (run as a process of its own).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from canary_checks.errors import SandboxError


@dataclass(frozen=True)
class NodeClient:
    """The node agent at ``url`` (``http://127.0.0.1:PORT``)."""

    url: str

    def request(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """GET ``path`` (POST ``body`` as JSON when given): the JSON answer, or a clear error when none comes."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method="POST" if data else "GET",
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise SandboxError(f"node agent refused {path}: {e.read().decode(errors='replace')}") from e
        except OSError as e:
            raise SandboxError(
                f"the sandbox node agent at {self.url} does not answer ({e})",
                fix="is the sandbox up? 'canary-checks sandbox status' shows it; 'canary-checks sandbox up' starts it",
            ) from e

    def pods(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("/pods")
        return result

    def set_faults(self, workload: str, faults: Mapping[str, float]) -> dict[str, Any]:
        """Replace the injected faults of ``workload``; keys are fields of ``demo.Faults``."""
        result: dict[str, Any] = self.request("/faults", {"workload": workload, "faults": dict(faults)})
        return result

    def scale(self, workload: str, replicas: int) -> list[dict[str, Any]]:
        """Run the first ``replicas`` pods of ``workload`` (the others stop); the pods that exist then."""
        result: list[dict[str, Any]] = self.request("/scale", {"workload": workload, "replicas": replicas})
        return result

    def faults(self) -> dict[str, dict[str, float]]:
        result: dict[str, dict[str, float]] = self.request("/faults")
        return result

    def received_alerts(self) -> list[dict[str, Any]]:
        """What Alertmanager has delivered to the sandbox's receiver (webhook payloads, oldest first)."""
        data: list[dict[str, Any]] = self.request("/alerts")
        return data
