"""The command line's parameter types. A value is parsed once, where click reads it, and a mistake names its option
(``Invalid value for '--hold-for': expected a duration such as 30s, 5m or 1h; got '5parsecs'``). The parsing is
the config's (durations, stages) or the webhook server's (sizes), so a value reads the same on the command line, in
canary.yaml, to the pytest plugin and in a webhook's metadata.

Help texts of options whose default is a key of the config read that default from the config models, when help is
shown (:class:`Configured`): the models load pydantic, and ``--help`` stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from canary_checks.cli.common import FC

if TYPE_CHECKING:
    from canary_checks.config import CanaryConfig


T = TypeVar("T")


class _Parsed(click.ParamType[T]):
    """A type whose parser raises ValueError with the message to show; a value already parsed passes through."""

    parsed: type | tuple[type, ...] = ()

    def parse(self, value: Any) -> T:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> T:
        if isinstance(value, self.parsed) and not isinstance(value, bool):
            return value  # type: ignore[return-value]
        try:
            return self.parse(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class Duration(_Parsed[float]):
    """Seconds, written 30s, 5m, 1h, 250ms or as a number of seconds (as in canary.yaml)."""

    name = "duration"
    parsed = float

    def parse(self, value: Any) -> float:
        from canary_checks.config import parse_duration

        return parse_duration(value)


class Stage(_Parsed[int]):
    """A stage, 25 or 25%; whether the config has it is :func:`check_stages`, once the config is known."""

    name = "stage"
    parsed = int

    def parse(self, value: Any) -> int:
        from canary_checks.config import parse_stage

        return parse_stage(value)


class Steps(_Parsed[tuple[int, ...]]):
    """Stages separated by commas, 5,25,50,100: ascending, ending at 100, as `stages` in the config."""

    name = "steps"
    parsed = tuple

    def parse(self, value: Any) -> tuple[int, ...]:
        from canary_checks.config import check_stage_list, parse_stage

        return check_stage_list(tuple(parse_stage(v) for v in str(value).replace(" ", "").split(",") if v))


class Size(_Parsed[int]):
    """Bytes, or with Ki, Mi, Gi."""

    name = "size"
    parsed = int

    def parse(self, value: Any) -> int:
        from canary_checks.serve import parse_size

        return parse_size(str(value))


class Instant(_Parsed[float]):
    """An instant: epoch seconds, an ISO 8601 time (UTC unless it says), 'now', or 'now-10m'."""

    name = "instant"
    parsed = float

    def parse(self, value: Any) -> float:
        from canary_checks.config import parse_duration

        text = str(value).strip()
        try:
            if text == "now" or text.startswith("now-"):
                return time.time() - (parse_duration(text[4:]) if text != "now" else 0.0)
            try:
                return float(text)
            except ValueError:
                moment = datetime.fromisoformat(text)
                return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        except ValueError:
            raise ValueError(
                f"expected epoch seconds, an ISO time such as 2026-11-27T10:00:00Z, 'now' or 'now-30m'; got {value!r}"
            ) from None


DURATION, STAGE, STEPS, SIZE, INSTANT = Duration(), Stage(), Steps(), Size(), Instant()


def check_stages(ctx: click.Context, config: CanaryConfig, name: str, *stages: int, fix: str = "") -> None:
    """Refuse stages the config does not have, naming the option ``name`` (its parameter name) they came from; the
    check and its words are the config's (:meth:`CanaryConfig.check_stages`)."""
    try:
        config.check_stages(*stages)
    except ValueError as e:
        fail(ctx, name, f"{e}; {fix}" if fix else str(e))


def fail(ctx: click.Context, name: str, message: str) -> NoReturn:
    """A bad value of the parameter ``name``, said as click says it: ``Invalid value for '--stage': ...``."""
    param = next((p for p in ctx.command.params if p.name == name), None)
    raise click.BadParameter(message, ctx=ctx, param=param)


def shown(value: Any) -> str:
    """A default as the command line writes it."""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class Configured(click.Option):
    """An option whose default is the config's ``key``: its help ends with the key and its built-in default, read
    from the models when help is shown (``unset`` says what no value means, for a key unset by default)."""

    def __init__(self, *args: Any, key: str, unset: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key, self.unset, self.completed = key, unset, False

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if not self.completed:
            from canary_checks.config import default_of

            value = default_of(self.key)
            built_in = self.unset if value is None else shown(value)
            self.help, self.completed = f"{self.help or ''} (default: {self.key} in the config; {built_in}).", True
        return super().get_help_record(ctx)


def configured(*decls: str, key: str, unset: str = "", **attrs: Any) -> Callable[[FC], FC]:
    """``click.option`` of a :class:`Configured` option."""
    return click.option(*decls, cls=Configured, key=key, unset=unset, **attrs)
