"""The configuration: one YAML file (default ``canary.yaml``), validated by pydantic.

Every threshold's default lives here and only here; gates, docs and alert rules read it from :data:`Gates`.
A mistake gives one :class:`~canary_checks.errors.ConfigError` naming the file, the key path, the bad value and
what is expected.

A package along the file's sections (each module's docstring says its seam):

- ``units``: severities, meshes, ranges, durations, name checks, the base model (a leaf);
- ``gates``, ``statistics``, ``prometheus``, ``notifications``, ``rollout``, ``routing``, ``environment``
  (Kubernetes, sandbox, smoke): the sections' models;
- ``model``: :class:`CanaryConfig`, where the sections meet, and validation errors in a YAML file's words;
- ``loading``: finding and reading the file, several services in one file, command-line overrides;
- ``reference``: docs/configuration.md, written from the models.

Import from here (``from canary_checks.config import CanaryConfig``); the modules are the package's own layout.
"""

from canary_checks.config.environment import KubernetesSettings, SandboxSettings
from canary_checks.config.environment import SmokeRequest as SmokeRequest
from canary_checks.config.environment import SmokeSettings as SmokeSettings
from canary_checks.config.environment import SmokeTarget as SmokeTarget
from canary_checks.config.gates import CUSTOM_PLACEHOLDERS as CUSTOM_PLACEHOLDERS
from canary_checks.config.gates import (
    BuiltinGate,
    CountGate,
    CustomGate,
    Fails,
    Gates,
    GateSettings,
    MillisecondsGate,
    PercentGate,
    RateGate,
    RatioGate,
    ValueGate,
)
from canary_checks.config.gates import check_custom_name as check_custom_name
from canary_checks.config.gates import check_template as check_template
from canary_checks.config.loading import (
    SERVICES_KEY,
    config_from,
    deep_merge,
    default_of,
    find_config,
    flag_overrides,
    load_config,
    parse_gate_flags,
    read_yaml,
    require_config,
    select_service,
    service_sections,
)
from canary_checks.config.model import CanaryConfig, define_gate
from canary_checks.config.model import nearest_stage as nearest_stage
from canary_checks.config.notifications import DECISION_NAMES as DECISION_NAMES
from canary_checks.config.notifications import DECISIONS as DECISIONS
from canary_checks.config.notifications import NotificationKind as NotificationKind
from canary_checks.config.notifications import NotificationSettings, NotificationTarget
from canary_checks.config.prometheus import BasicAuth, PrometheusSettings, Secret
from canary_checks.config.prometheus import CustomQueries as CustomQueries
from canary_checks.config.prometheus import HeaderValue as HeaderValue
from canary_checks.config.prometheus import Workloads as Workloads
from canary_checks.config.reference import reference_markdown
from canary_checks.config.rollout import Baseline as Baseline
from canary_checks.config.rollout import OutsideWindow as OutsideWindow
from canary_checks.config.rollout import ReleaseWindows as ReleaseWindows
from canary_checks.config.rollout import RolloutSettings, UndecidedPolicy
from canary_checks.config.rollout import Scaling as Scaling
from canary_checks.config.rollout import ScalingMode as ScalingMode
from canary_checks.config.rollout import baseline_share as baseline_share
from canary_checks.config.routing import RoutingSettings, StickySessions
from canary_checks.config.routing import check_cookie_name as check_cookie_name
from canary_checks.config.statistics import ComparisonSettings, Correction, CustomComparison, Statistics
from canary_checks.config.units import (
    CONFIG_ENV,
    DEFAULT_CONFIG_NAME,
    DEFAULT_FAILURE_CODES,
    Mesh,
    NoDataPolicy,
    Range,
    Severity,
    check_stage_list,
    describe_failures,
    parse_duration,
    parse_stage,
    range_of,
)
from canary_checks.config.units import COUNT as COUNT
from canary_checks.config.units import DURATION as DURATION
from canary_checks.config.units import MILLISECONDS as MILLISECONDS
from canary_checks.config.units import PER_SECOND as PER_SECOND
from canary_checks.config.units import PERCENT as PERCENT
from canary_checks.config.units import PORT as PORT
from canary_checks.config.units import RATIO as RATIO
from canary_checks.config.units import UNIT_RANGES as UNIT_RANGES
from canary_checks.config.units import Duration as Duration
from canary_checks.config.units import check_failure_codes as check_failure_codes
from canary_checks.config.units import check_namespace as check_namespace
from canary_checks.config.units import check_workload as check_workload

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_FAILURE_CODES",
    "SERVICES_KEY",
    "BasicAuth",
    "BuiltinGate",
    "CanaryConfig",
    "ComparisonSettings",
    "Correction",
    "CountGate",
    "CustomComparison",
    "CustomGate",
    "Fails",
    "GateSettings",
    "Gates",
    "KubernetesSettings",
    "Mesh",
    "MillisecondsGate",
    "NoDataPolicy",
    "NotificationSettings",
    "NotificationTarget",
    "PercentGate",
    "PrometheusSettings",
    "Range",
    "RateGate",
    "RatioGate",
    "RolloutSettings",
    "RoutingSettings",
    "SandboxSettings",
    "Secret",
    "Severity",
    "Statistics",
    "StickySessions",
    "UndecidedPolicy",
    "ValueGate",
    "check_stage_list",
    "config_from",
    "deep_merge",
    "default_of",
    "define_gate",
    "describe_failures",
    "find_config",
    "flag_overrides",
    "load_config",
    "parse_duration",
    "parse_gate_flags",
    "parse_stage",
    "range_of",
    "read_yaml",
    "reference_markdown",
    "require_config",
    "select_service",
    "service_sections",
]
