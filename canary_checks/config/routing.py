"""How the router treats a client across requests: sticky canary sessions.

Seam: the model only; the cookie routes themselves are :mod:`canary_checks.sticky` (the plan, the Istio and
Gateway API routes) and :mod:`canary_checks.traffic` (HAProxy's runtime map, the routers' patches)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from canary_checks.config.units import _Model

_COOKIE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_cookie_name(value: str) -> str:
    if not _COOKIE_NAME.fullmatch(value):
        raise ValueError(
            "a cookie name is letters, digits, '-' and '_' (starting with a letter or digit, at most 64), "
            "e.g. canary-checks"
        )
    return value


class StickySessions(_Model):
    """A client keeps reaching the side that answered it: the router sets a cookie naming that side, and a client
    carrying it goes there again. When a stage raises the weight, clients already on the canary stay on it and just
    enough stable clients move to reach the new share; a rollback (weight 0) ends every canary cookie's effect.
    The split is then by clients, not by requests."""

    enabled: bool = False
    """Keep each client on one side (canary or stable) for the whole stage; routers: sandbox, istio, gateway-api
    (an SMI TrafficSplit cannot match a cookie)."""
    cookie: str = "canary-checks"
    """Name of the cookie the router sets (letters, digits, '-' and '_', at most 64; it must not be one your
    service uses)."""

    @field_validator("cookie")
    @classmethod
    def _cookie(cls, value: str) -> str:
        return check_cookie_name(value)


class RoutingSettings(_Model):
    """What the router does besides the weights."""

    sticky: StickySessions = Field(default_factory=StickySessions)
    """Sticky canary sessions: a cookie keeps a client on one side for the stage (docs/runner.md)."""
