"""Configuration: seed defaults, overrides, and one clear error per mistake."""

from pathlib import Path

import pytest

from canary_checks.config import (
    CanaryConfig,
    Severity,
    check_namespace,
    check_workload,
    find_config,
    load_config,
    parse_duration,
    parse_gate_flags,
)
from canary_checks.errors import ConfigError
from canary_checks.gates import GATES

# The original system's thresholds, as the issue lists them: (gate, threshold, severity).
ORIGINAL = [
    ("error_rate", 5.0, Severity.CRITICAL),
    ("success_rate", 95.0, Severity.CRITICAL),
    ("latency_p95", 500.0, Severity.WARNING),
    ("latency_p99", 1000.0, Severity.CRITICAL),
    ("cpu", 80.0, Severity.WARNING),
    ("memory", 80.0, Severity.WARNING),
    ("error_rate_vs_stable", 2.0, Severity.WARNING),
    ("latency_vs_stable", 1.5, Severity.WARNING),
    ("memory_vs_stable", 1.5, Severity.INFO),
    ("traffic_received", 0.0, Severity.WARNING),
    ("pods_ready", 100.0, Severity.CRITICAL),
    ("restarts", 0.0, Severity.CRITICAL),
]


@pytest.mark.parametrize(("gate", "threshold", "severity"), ORIGINAL)
def test_defaults_are_the_original_systems(gate: str, threshold: float, severity: Severity) -> None:
    settings = getattr(CanaryConfig().gates, gate)
    assert (settings.threshold, settings.severity) == (threshold, severity)


def test_a_gate_written_in_part_keeps_its_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("gates:\n  error_rate: {threshold: 3}\n  latency_p95: {severity: critical}\n")
    gates = load_config(path).gates
    assert gates.error_rate.threshold == 3 and gates.error_rate.severity is Severity.CRITICAL
    assert gates.latency_p95.threshold == 500 and gates.latency_p95.severity is Severity.CRITICAL


def test_stage_overrides_then_command_line_win(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("gates:\n  error_rate: {threshold: 3}\nstage_gates:\n  5:\n    error_rate: {threshold: 8}\n")
    config = load_config(path)
    assert config.gates_for(5).error_rate.threshold == 8
    assert config.gates_for(25).error_rate.threshold == 3
    flags = parse_gate_flags(["error_rate=1.5", "latency_p95.severity=info"])
    at_5 = config.gates_for(5, flags)
    assert at_5.error_rate.threshold == 1.5 and at_5.latency_p95.severity is Severity.INFO


def test_durations_and_workload_names(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("service: user\nwindow: 5m\nworkloads: {canary: '{service}-v2'}\n")
    config = load_config(path)
    assert config.window == 300
    assert (config.workload("stable"), config.workload("canary")) == ("user-stable", "user-v2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gates:\n  error_rate: {threshold: lots}\n", "gates.error_rate.threshold"),
        (
            "gates:\n  eror_rate: {threshold: 3}\n",
            "gates: 'eror_rate' is not a built-in gate (did you mean error_rate?)",
        ),
        ("stages: [5, 50, 25, 100]\n", "stages must be strictly ascending"),
        ("stages: [5, 25]\n", "the last stage must be 100"),
        ("window: soon\n", "expected a duration such as 30s"),
        ("mesh: consul\n", "mesh: Input should be 'istio', 'linkerd' or 'custom'"),
        ("mesh: custom\n", "mesh: custom needs `queries`"),
        ("prometheus: {url: 'localhost:9090'}\n", "expected an http:// or https:// URL"),
        ("stage_gates:\n  30:\n    error_rate: {threshold: 3}\n", "names stage 30"),
        ("- just\n- a list\n", "expected a mapping of settings at the top level"),
    ],
)
def test_a_mistake_names_file_key_and_value(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = caught.value.message
    assert str(path) in message
    assert expected in message
    assert "Traceback" not in message


FIVE_XX = "write one such as 5.. (5xx)"


@pytest.mark.parametrize(
    ("text", "expected", "fix"),
    [
        ("failure_codes: '5..('\n", "failure_codes: '5..(' is not a regular expression (missing )", FIVE_XX),
        ("failure_codes: 5xx\n", "failure_codes: '5xx' matches no HTTP status code from 100 to 599", FIVE_XX),
        ("failure_codes: '...'\n", "failure_codes: '...' counts 200 OK as a failure", FIVE_XX),
        ("failure_codes: '5(?!03)..'\n", "failure_codes: '5(?!03)..' uses lookaround or a backreference",
         "e.g. 50[0-24-9]|5[1-9]. for every 5xx but 503"),
        ("failure_codes: [500, 503]\n", "failure_codes: expected one regex of status codes", "e.g. 5.. or 500|503"),
        ("mesh: custom\nfailure_codes: '[45]..'\nqueries: {requests: r, errors: e, successes: s, latency: l}\n",
         "failure_codes ('[45]..') applies to mesh istio and linkerd",
         "with mesh: custom, write which answers fail into queries.errors and queries.successes"),
    ],
)  # fmt: skip
def test_bad_failure_codes_name_the_key_the_value_and_the_fix(
    tmp_path: Path, text: str, expected: str, fix: str
) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = caught.value.message
    assert str(path) in message and expected in message and fix in message


def test_failure_codes_default_to_5xx_and_take_one_code_as_a_number(tmp_path: Path) -> None:
    assert CanaryConfig().failure_codes == "5.."
    path = tmp_path / "canary.yaml"
    path.write_text("failure_codes: 503\n")
    assert load_config(path).failure_codes == "503"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("service: auth\ngates:\n  error_rate: {threshold: 3\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+"):
        load_config(path)


@pytest.mark.parametrize(
    "hostile",
    ['auth"} or vector(1) #', "auth-canary\n", "Auth", "a" * 254, "auth canary", 'x",namespace!="'],
)
def test_hostile_service_names_are_refused(hostile: str) -> None:
    with pytest.raises(ConfigError, match="not a valid Kubernetes name") as caught:
        load_config(None, {"service": hostile})
    assert "--service" in caught.value.message


def test_hostile_namespace_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a valid Kubernetes namespace"):
        load_config(None, {"namespace": 'orion"}'})


def test_unknown_gate_on_the_command_line() -> None:
    with pytest.raises(ConfigError, match="unknown gate 'latency_p50'"):
        CanaryConfig().gates_for(None, parse_gate_flags(["latency_p50=3"]))
    with pytest.raises(ConfigError, match="expected GATE=THRESHOLD"):
        parse_gate_flags(["error_rate"])


def test_config_file_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CANARY_CONFIG", raising=False)
    assert find_config(None, search=(tmp_path,)) is None
    (tmp_path / "canary.yaml").write_text("service: user\n")
    assert find_config(None, search=(tmp_path,)) == tmp_path / "canary.yaml"
    monkeypatch.setenv("CANARY_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"CANARY_CONFIG: config file .* does not exist"):
        find_config(None, search=(tmp_path,))


def test_token_from_an_unset_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROM_TOKEN", raising=False)
    config = load_config(None, {"prometheus.bearer_token_env": "PROM_TOKEN"})
    with pytest.raises(ConfigError, match="PROM_TOKEN is empty or unset"):
        config.prometheus.bearer_token()
    monkeypatch.setenv("PROM_TOKEN", "s3cret\n")
    assert config.prometheus.bearer_token() == "s3cret"


# ---- ranges: a NaN, an infinity or a number outside its range is one error naming key, value and range ----------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        # a NaN threshold compares false with everything: the gate could never fail
        ("gates: {error_rate: {threshold: .nan}}",
         "gates.error_rate.threshold: expected a percent from 0 to 100; got nan"),
        ("gates: {success_rate: {threshold: -1}}",
         "gates.success_rate.threshold: expected a percent from 0 to 100; got -1.0"),
        ("gates: {pods_ready: {threshold: 101}}",
         "gates.pods_ready.threshold: expected a percent from 0 to 100; got 101.0"),
        ("gates: {latency_p99: {threshold: .inf}}", "gates.latency_p99.threshold: expected milliseconds ≥ 0; got inf"),
        ("gates: {latency_p95: {threshold: -.inf}}",
         "gates.latency_p95.threshold: expected milliseconds ≥ 0; got -inf"),
        ("gates: {restarts: {threshold: -1}}", "gates.restarts.threshold: expected a count ≥ 0; got -1.0"),
        ("gates: {traffic_received: {threshold: .nan}}",
         "gates.traffic_received.threshold: expected requests per second ≥ 0; got nan"),
        ("gates: {latency_vs_stable: {threshold: 0}}",
         "gates.latency_vs_stable.threshold: expected a ratio > 0; got 0.0"),
        ("gates: {error_rate_vs_stable: {threshold: .inf}}",
         "gates.error_rate_vs_stable.threshold: expected a ratio > 0; got inf"),
        ("window: .nan", "window: expected a duration > 0, such as 30s, 5m or 1h; got nan"),
        ("prometheus: {timeout: .inf}", "prometheus.timeout: expected a duration > 0, such as 30s, 5m or 1h; got inf"),
        ("notifications: {timeout: -1}",
         "notifications.timeout: expected a duration > 0, such as 30s, 5m or 1h; got -1"),
        ("notifications: {retries: .nan}", "notifications.retries: expected a number of retries from 0 to 5; got nan"),
        ("rollout: {max_extension: .inf}",
         "rollout.max_extension: expected a duration > 0, such as 30s, 5m or 1h; got inf"),
        ("statistics: {confidence: .nan}", "statistics.confidence: expected a confidence > 0.5 and < 1; got nan"),
        ("statistics: {confidence: 1}", "statistics.confidence: expected a confidence > 0.5 and < 1; got 1.0"),
        ("statistics: {errors: {margin: .inf}}", "statistics.errors.margin: expected a ratio > 0; got inf"),
        ("statistics: {sample_interval: .nan}",
         "statistics.sample_interval: expected a duration > 0, such as 30s, 5m or 1h; got nan"),
        ("min_requests: -1", "min_requests: expected a count ≥ 0; got -1"),
        ("smoke: {timeout: .nan}", "smoke.timeout: expected a duration > 0, such as 30s, 5m or 1h; got nan"),
        ("sandbox: {rps: .inf}", "sandbox.rps: expected requests per second > 0 and ≤ 20000; got inf"),
    ],
)  # fmt: skip
def test_a_number_out_of_range_is_one_error_naming_key_value_and_range(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.where == str(path)
    assert caught.value.what == error  # the whole message: one error, nothing else


@pytest.mark.parametrize("gate", list(GATES))
def test_every_gates_threshold_range_follows_its_unit(gate: str) -> None:
    """Percent gates take 0 to 100, counts, milliseconds and rates 0 or more, ratios more than 0; both ends
    checked, for stage overrides and the command line alike."""
    unit = GATES[gate].unit
    low, high = {"%": (0, 100), "count": (0, None), "ms": (0, None), "req/s": (0, None), "ratio": (0, None)}[unit]
    config = CanaryConfig()
    refused = ["nan", "inf", "-inf", str(low - 1)] + ([str(high + 0.5)] if high is not None else [])
    refused += [str(low)] if unit == "ratio" else []
    for value in refused:
        with pytest.raises(ConfigError) as caught:
            config.gates_for(None, parse_gate_flags([f"{gate}={value}"]))
        assert caught.value.message.startswith(f"--threshold: {gate}.threshold: expected "), caught.value.message
        assert caught.value.message.endswith((f"; got {value!r}", f"; got {float(value)!r}")), caught.value.message
    accepted = [0.001 if unit == "ratio" else low, *([high] if high is not None else [1e6])]
    for value in accepted:
        assert config.gates_for(None, parse_gate_flags([f"{gate}={value}"])).model_dump()[gate]["threshold"] == value


def test_a_stage_override_out_of_range_names_the_stage(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("stage_gates:\n  25:\n    success_rate: {threshold: .nan}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message == "stage_gates.25: success_rate.threshold: expected a percent from 0 to 100; got nan"


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "0", "1e999"])
def test_durations_refuse_nan_infinity_and_nothing(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected a duration > 0, such as 30s, 5m or 1h; got"):
        parse_duration(float(text))
    with pytest.raises(ValueError, match=r"expected a duration"):
        parse_duration(text)
    assert parse_duration("250ms") == 0.25


@pytest.mark.parametrize("name", ["auth\n", "auth\r\n", "\nauth"])
def test_a_name_with_a_newline_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid Kubernetes name"):
        check_workload(name)
    with pytest.raises(ValueError, match="not a valid Kubernetes namespace"):
        check_namespace(name)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("widnow: 1m\n", "widnow: unknown key (did you mean window?)"),
        ("prometheus: {urll: http://p:9090}\n", "prometheus.urll: unknown key (did you mean url?)"),
        ("stages: fast\n", "stages: expected a list ([a, b] or one '- item' per line) (got 'fast')"),
        ("prometheus: 3\n", "prometheus: expected a mapping (key: value) (got 3)"),
        ("kubernetes: {enabled: maybe}\n", "kubernetes.enabled: expected true or false (got 'maybe')"),
    ],
)
def test_mistakes_read_in_the_words_of_the_yaml_file(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert says in caught.value.message and "Input should be" not in caught.value.message
    assert caught.value.fix == "'canary-checks config reference' lists every key"
