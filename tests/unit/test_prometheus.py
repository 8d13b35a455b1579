"""Query building (escaping), and the four outcomes of a query against a server speaking the Prometheus API."""

import re
import time

import pytest

from canary_checks.config import CanaryConfig, load_config
from canary_checks.errors import ConfigError, InvalidLabelValue, PrometheusQueryError, PrometheusUnreachable
from canary_checks.prometheus import ISTIO, LINKERD, MetricsSource, escape_label, pod_regex, selectors_in
from tests.conftest import PromStub, free_port


def test_istio_and_linkerd_profiles_select_the_workload_and_window() -> None:
    istio = ISTIO.render("errors", namespace="orion", workload="auth-canary", window=60)
    assert istio == (
        'sum(increase(istio_requests_total{reporter="destination", destination_workload_namespace="orion", '
        'destination_workload="auth-canary", response_code=~"5.."}[60s]))'
    )
    linkerd = LINKERD.render("latency", namespace="orion", workload="auth-canary", window=30, quantile=0.99)
    assert linkerd.startswith("histogram_quantile(0.99, sum by (le) (increase(response_latency_ms_bucket{")
    assert 'direction="inbound", namespace="orion", deployment="auth-canary"' in linkerd


def test_configured_failure_codes_reach_the_query_escaped_anchors_and_all() -> None:
    config = CanaryConfig(failure_codes=r"^(5\d\d|429)$")
    source = MetricsSource(config)
    assert source.render("errors", side="canary").endswith(r'response_code=~"^(5\\d\\d|429)$"}[60s]))')
    assert source.render("successes", side="canary").endswith(r'response_code!~"^(5\\d\\d|429)$"}[60s]))')


def test_pod_regex_matches_only_the_deployments_pods() -> None:
    pattern = re.compile(pod_regex("auth-canary"))
    assert pattern.fullmatch("auth-canary-6d5f8c7b9-x2k9p")
    assert not pattern.fullmatch("auth-canary-v2-6d5f8c7b9-x2k9p")
    assert not pattern.fullmatch("auth-stable-6d5f8c7b9-x2k9p")


@pytest.mark.parametrize("value", ['a"b', "a\\b", 'x"} or vector(1) or {a="', "line\nbreak"])
def test_escaped_values_stay_inside_their_string(value: str) -> None:
    escaped = escape_label(value)
    # Unescaped quote would end the literal early: every quote must be preceded by an odd run of backslashes.
    for match in re.finditer(r'(\\*)"', escaped):
        assert len(match.group(1)) % 2 == 1
    assert "\n" not in escaped


@pytest.mark.parametrize("workload", ['auth"}', "auth-canary) or up", "AUTH", "auth canary", ""])
def test_hostile_workload_names_never_reach_a_query(workload: str) -> None:
    with pytest.raises(ValueError, match="not a valid Kubernetes name"):
        ISTIO.render("requests", namespace="orion", workload=workload, window=60)


def test_custom_templates_are_filled_with_escaped_values(prom: PromStub) -> None:
    config = CanaryConfig.model_validate(
        {
            "mesh": "custom",
            "prometheus": {"url": prom.url},
            "queries": {
                "requests": 'sum(increase(http_requests_total{app="$workload", ns="$namespace"}[$window]))',
                "errors": 'sum(increase(http_requests_total{app="$workload", code=~"5.."}[$window]))',
                "successes": 'sum(increase(http_requests_total{app="$workload", code=~"2.."}[$window]))',
                "latency": 'histogram_quantile($quantile, sum by (le) (rate(x_bucket{app="$workload"}[$window])))',
            },
        }
    )
    source = MetricsSource(config)
    assert source.render("requests", side="canary") == (
        'sum(increase(http_requests_total{app="auth-canary", ns="orion"}[60s]))'
    )
    assert source.render("latency", side="stable", quantile=0.95).startswith("histogram_quantile(0.95,")


def test_the_selectors_a_query_reads_are_listed_once_each_as_valid_promql() -> None:
    query = (
        'sum(increase(checkouts_total{namespace="orion", pod=~"auth\\\\-canary-[a-z0-9]{5}", note!~"say \\"hi\\""}[5m])'
        ")"
        ' / on() group_left sum(rate(checkouts_total{namespace="orion"}[1m] offset 5m))'
        ' + max_over_time(up[10m:1m]) + count({__name__=~"kafka_.+", job="lag"}) + up'
    )
    found = selectors_in(query, where="gates.checkouts.query")
    assert found == [
        'checkouts_total{namespace="orion",pod=~"auth\\\\-canary-[a-z0-9]{5}",note!~"say \\"hi\\""}',
        'checkouts_total{namespace="orion"}',  # no range, no offset: the series themselves
        "up",  # once, though read twice
        '{__name__=~"kafka_.+",job="lag"}',
    ]
    # each is PromQL that selects what the query's own selector does: the values survive their escaping
    assert selectors_in(" + ".join(found), where="again") == found


def test_a_query_the_parser_cannot_read_is_one_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="not a PromQL query the export can read") as raised:
        selectors_in("sum(rate(x[5m])", where="gates.checkouts.query")
    assert raised.value.where == "gates.checkouts.query"


def test_custom_template_with_an_unknown_placeholder(prom: PromStub) -> None:
    config = CanaryConfig.model_validate(
        {"mesh": "custom", "queries": {"requests": 'up{app="$app"}', "errors": "0", "successes": "0", "latency": "0"}}
    )
    with pytest.raises(InvalidLabelValue, match=r"unknown placeholder \$app"):
        MetricsSource(config).render("requests", side="canary")


def test_value_no_data_and_nan(prom: PromStub) -> None:
    source = MetricsSource(load_config(None, {"prometheus.url": prom.url}))
    prom.answer("value_query", [({"pod": "a"}, 1.5), ({"pod": "b"}, "NaN")])
    prom.answer("nan_query", "NaN")
    samples = source.query("value_query")
    assert [(s.labels["pod"], s.value) for s in samples] == [("a", 1.5)]
    assert source.query("nan_query") == []
    assert source.query("nothing_matches") == []


def test_prometheus_error_is_not_no_data(prom: PromStub) -> None:
    source = MetricsSource(load_config(None, {"prometheus.url": prom.url}))
    prom.answer("bad", ("error", 400, 'parse error: unexpected "}"'))
    with pytest.raises(PrometheusQueryError) as caught:
        source.query("bad{")
    assert caught.value.status == 400
    assert 'parse error: unexpected "}"' in caught.value.message
    assert prom.url in caught.value.message and "bad{" in caught.value.message


def test_unreachable_names_the_url_and_how_to_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    source = MetricsSource(load_config(None, {"prometheus.url": url}))
    with pytest.raises(PrometheusUnreachable) as caught:
        source.query("up")
    assert url in caught.value.message
    assert "--prometheus-url / prometheus.url" in caught.value.message


def test_queries_run_concurrently_at_one_instant(prom: PromStub) -> None:
    source = MetricsSource(load_config(None, {"prometheus.url": prom.url}))
    prom.delay = 0.05
    results = source.query_many([f"q{i}" for i in range(20)] + ["q0"], at=1_700_000_000.0)
    assert len(results) == 20  # duplicates are sent once
    assert sorted(prom.queries) == sorted(f"q{i}" for i in range(20))
    assert prom.peak_in_flight > 1, "queries were sent one after another"
    assert set(prom.times) == {"1700000000.000"}, "canary and stable must be read at the same instant"


@pytest.mark.parametrize("offset", ["1s", "30s"])
def test_checks_read_query_offset_in_the_past_so_a_scrape_in_flight_is_seen_by_all_or_none(
    prom: PromStub, offset: str
) -> None:
    source = MetricsSource(load_config(None, {"prometheus.url": prom.url, "prometheus.query_offset": offset}))
    before = time.time()
    source.query_many(["requests", "successes"])
    after = time.time()
    (sent,) = set(prom.times)  # one instant for both
    lag = float(offset.rstrip("s"))
    assert before - lag - 0.001 <= float(sent) <= after - lag  # sent to the millisecond
