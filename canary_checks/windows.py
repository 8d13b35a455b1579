"""Release windows: whether a rollout may move forward now, and when it next may.

A minute is inside the windows when it matches one of the ``allowed`` cron expressions (all of them when none are
given) and its date, in the windows' time zone, is not blacked out. Moving forward is deploying a canary, raising
its weight and promoting it; a rollback is never held (the runner does not ask).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

if TYPE_CHECKING:  # config calls this module's parsers when it validates; this one needs config only as a type
    from canary_checks.config import ReleaseWindows

__all__ = ["WindowState", "blackout_range", "check", "check_cron", "zone"]

SEARCH_DAYS = 400
"""How far ahead the next opening is looked for; none within it is a configuration that never opens."""
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class WindowState:
    open: bool
    why: str
    """What closes it now ('blacked out on 2026-12-24', 'outside the allowed windows'), empty when open."""
    opens: datetime | None = None
    """When it next opens, in the windows' time zone (None when open, or never within SEARCH_DAYS)."""

    def until(self) -> str:
        """'Mon 30 Nov 09:00 Europe/Berlin', as messages say when the rollout goes on."""
        if self.opens is None:
            return f"no window opens within {SEARCH_DAYS} days (check rollout.release_windows)"
        return f"{self.opens:%a %d %b %Y %H:%M} {self.opens.tzinfo}"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin") from None


def check_cron(expression: str) -> None:
    if len(expression.split()) != 5:
        raise ValueError(
            f"{expression!r} is not a 5-field cron expression: write minute hour day-of-month month day-of-week, "
            "e.g. '* 9-16 * * mon-thu'"
        )
    try:
        CronSim(expression, datetime.now(UTC))
    except CronSimError as e:
        raise ValueError(f"{expression!r} is not a cron expression ({e}); e.g. '* 9-16 * * mon-thu'") from None


def blackout_range(text: str) -> tuple[date, date]:
    """``2026-12-24`` or ``2026-12-20..2027-01-03`` (inclusive) as (first, last)."""
    first, _, last = str(text).partition("..")
    try:
        start = date.fromisoformat(first.strip())
        end = date.fromisoformat(last.strip()) if last else start
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date or a range of dates: write 2026-12-24 or 2026-12-20..2027-01-03"
        ) from None
    if end < start:
        raise ValueError(f"{text!r} ends before it starts: write the earlier date first")
    return start, end


def _blacked_out(windows: ReleaseWindows, day: date) -> tuple[date, date] | None:
    for text in windows.blackout:
        start, end = blackout_range(text)
        if start <= day <= end:
            return start, end
    return None


def _allowed(windows: ReleaseWindows, minute: datetime) -> bool:
    return not windows.allowed or any(next(CronSim(e, minute - MINUTE)) == minute for e in windows.allowed)


def check(windows: ReleaseWindows, at: float) -> WindowState:
    """Whether the minute of ``at`` (a Unix time) is inside the windows, and if not, when they next open."""
    tz = zone(windows.timezone)
    minute = datetime.fromtimestamp(at, tz).replace(second=0, microsecond=0)
    blackout = _blacked_out(windows, minute.date())
    if blackout is None and _allowed(windows, minute):
        return WindowState(True, "")
    if blackout is not None:
        first, last = blackout
        why = f"blacked out on {first}" if first == last else f"blacked out from {first} to {last}"
    else:
        why = f"outside the allowed windows ({'; '.join(windows.allowed or ())})"
    return WindowState(False, why, _next_open(windows, minute, tz))


def _next_open(windows: ReleaseWindows, minute: datetime, tz: ZoneInfo) -> datetime | None:
    horizon = minute + timedelta(days=SEARCH_DAYS)
    t = minute
    while t < horizon:
        blackout = _blacked_out(windows, t.date())
        if blackout is not None:  # on to the first minute after the blackout's last day
            t = datetime.combine(blackout[1] + timedelta(days=1), datetime.min.time(), tz)
            continue
        if t != minute and _allowed(windows, t):
            return t
        if not windows.allowed:  # `minute` was closed by a blackout only, so t != minute here
            return t
        t = min(next(CronSim(e, t)) for e in windows.allowed)
    return None
