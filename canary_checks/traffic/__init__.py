"""Traffic routers behind one interface (:class:`Router`): read and set the canary's share of traffic, and the
baseline's.

A package: ``router`` the interface; ``haproxy`` the sandbox's HAProxy (its runtime API over the admin socket:
weights change with no reload and no lost request); ``kube`` the Kubernetes routing resources (Istio
VirtualService, SMI TrafficSplit, Gateway API HTTPRoute).
"""

from __future__ import annotations

from canary_checks.traffic.haproxy import HAProxyRouter
from canary_checks.traffic.kube import GatewayRouter, IstioRouter, KubeRouter, SMIRouter, kube_router
from canary_checks.traffic.router import Router

__all__ = ["GatewayRouter", "HAProxyRouter", "IstioRouter", "KubeRouter", "Router", "SMIRouter", "kube_router"]
