"""kmock's KubernetesEmulator — a real HTTP server speaking the Kubernetes API — with the semantics our tests rely
on and it leaves out (its docstring invites subclassing): resourceVersion with 409 Conflict on a stale write,
label selectors on lists, injected server errors. It runs in a thread of its own, so the official (synchronous)
client can talk to it as to any API server."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import enums

_STATUS_REASON = {409: "Conflict", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def _status(code: int, message: str) -> aiohttp.web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
    return aiohttp.web.json_response({**body, "reason": _STATUS_REASON.get(code, "Unknown"), "code": code}, status=code)


class Cluster(kmock.KubernetesEmulator):  # type: ignore[misc]
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.versions = itertools.count(1000)
        self.fail_next: list[int] = []
        """Status codes to answer the next requests with, one each (server errors on demand)."""
        self.interfere: set[str] = set()
        """Object names someone else changes right before our next write to them (provokes one 409)."""
        self.writes: list[tuple[str, str, Any]] = []
        """(method, path, body) of every write that reached the store."""
        self.stuck: set[str] = set()
        """Deployments whose rollout never completes (for timeouts); others are rolled out at once."""

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if self.fail_next:
            return _status(self.fail_next.pop(0), "injected by the test")
        if request.resource is not None and request.action in (enums.action.CREATE, enums.action.UPDATE):
            data = request.data
            if request.action == enums.action.CREATE and isinstance(data, dict):
                data.setdefault("metadata", {})["resourceVersion"] = str(next(self.versions))
            elif request.action == enums.action.UPDATE:
                key = (request.resource, request.namespace, request.name)
                if key in self._objects and not self._objects[key].deleted:
                    stored = self._objects[key]
                    if request.name in self.interfere:
                        self.interfere.discard(request.name)
                        stored.patch({"metadata": {"resourceVersion": str(next(self.versions))}})
                    current = stored.get("metadata", {}).get("resourceVersion")
                    given = _given_version(data)
                    if given is not None and given != current:
                        return _status(409, f"the object has been modified; resourceVersion {given} != {current}")
                    new = str(next(self.versions))
                    if isinstance(data, list):
                        data.append({"op": "add", "path": "/metadata/resourceVersion", "value": new})
                    elif isinstance(data, dict):
                        data.setdefault("metadata", {})["resourceVersion"] = new
            self.writes.append((str(request.method), str(request.url.path), data))
        response = await super()._handle(request)
        if getattr(request.resource, "plural", None) == "deployments" and request.action in (
            enums.action.CREATE,
            enums.action.UPDATE,
        ):
            await self._roll_out(request)
        return response

    async def _roll_out(self, request: Any) -> None:
        """What the API server and the Deployment controller would do: every change of a Deployment bumps its
        generation; the controller then (at once, unless it is stuck) has every replica updated and ready."""
        name = request.name or (request.data or {}).get("metadata", {}).get("name")
        key = (request.resource, request.namespace or (request.data or {}).get("metadata", {}).get("namespace"), name)
        if key not in self._objects:
            return
        async with self._lock:
            obj = self._objects[key]
            replicas = obj.get("spec", {}).get("replicas", 1)
            generation = int(obj.get("metadata", {}).get("generation", 0)) + 1
            obj.patch({"metadata": {"generation": generation}})
            if name in self.stuck:
                return
            obj.patch(
                {
                    "status": {
                        "observedGeneration": generation,
                        "replicas": replicas,
                        "updatedReplicas": replicas,
                        "readyReplicas": replicas,
                        "availableReplicas": replicas,
                    },
                }
            )

    async def _serve_list(self, request: Any) -> Any:
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            wanted = dict(part.split("=", 1) for part in selector.split(","))
            result["items"] = [
                item
                for item in result["items"]
                if all(item.get("metadata", {}).get("labels", {}).get(k) == v for k, v in wanted.items())
            ]
        return result


def _given_version(data: Any) -> str | None:
    if isinstance(data, list):
        for op in data:
            if op.get("path") == "/metadata/resourceVersion" and op.get("op") in ("replace", "test", "add"):
                return str(op.get("value"))
        return None
    if isinstance(data, dict):
        version = data.get("metadata", {}).get("resourceVersion")
        return str(version) if version is not None else None
    return None


@contextmanager
def running_cluster(*resources: str) -> Iterator[tuple[Cluster, str]]:
    """Start a Cluster on a free loopback port; yields it and its URL. ``resources`` are declared up front
    (e.g. ``"v1/pods"``, ``"networking.istio.io/v1/virtualservices"``)."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with Cluster() as cluster, kmock.Server(cluster) as server:
            for resource in resources:
                cluster.resources[resource] = {}
            stop = asyncio.Event()
            box.update(cluster=cluster, url=str(server.url).rstrip("/"), stop=stop, loop=asyncio.get_running_loop())
            started.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True, name="kube-emulator")
    thread.start()
    assert started.wait(15), "the Kubernetes emulator did not start"
    try:
        yield box["cluster"], box["url"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=10)
