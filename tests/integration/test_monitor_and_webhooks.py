"""What people watch and what other controllers call, against the live sandbox: the monitor's dashboard in a real
terminal (tmux), its CSV, and ``canary-checks serve`` answering Flagger's webhooks over real HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import free_port
from tests.integration.conftest import REPO, WINDOW, Live

pytestmark = pytest.mark.xdist_group("webhooks")  # one webhook server for the module, on one worker

SGR = re.compile(r"\x1b\[([0-9;]*)m")


class Pane:
    """A tmux session of its own (private server socket) running one command in a 150x100 terminal
    (tall enough for the whole dashboard: a check whose message wraps must not push the recommendation off)."""

    def __init__(self, command: list[str], tmp: Path) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is needed (./dev test installs it)", pytrace=False)
        self.socket = f"canary-checks-test-{os.getpid()}"
        shell = " ".join(f"'{c}'" for c in command) + f" 2> {tmp / 'stderr.txt'}; sleep 60"
        # the size in the environment too: a test process may carry COLUMNS/LINES of its own (80x24 was seen)
        size = {"TERM": "xterm-256color", "COLUMNS": "150", "LINES": "100"}
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-s", "t", "-x", "150", "-y", "100",
                        f"cd {REPO} && {shell}"], check=True, env={**os.environ, **size})  # fmt: skip

    def capture(self) -> str:
        """The screen with its colours as SGR escapes (tmux capture-pane -e)."""
        done = subprocess.run(["tmux", "-L", self.socket, "capture-pane", "-p", "-e", "-t", "t"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if re.search(pattern, SGR.sub("", screen)):
                return screen
            time.sleep(0.5)
        raise AssertionError(f"{pattern!r} never appeared on the dashboard:\n{SGR.sub('', screen)}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def row(screen: str, label: str) -> str:
    return next(line for line in screen.splitlines() if SGR.sub("", line).lstrip("│┃ ").startswith(label))


def colour_of(line: str, word: str) -> set[str]:
    """The SGR codes in force where ``word`` is printed on ``line``."""
    codes: set[str] = set()
    position = 0
    for match in SGR.finditer(line):
        if word in SGR.sub("", line[position : match.start()]):
            return codes
        params = match.group(1).split(";") if match.group(1) else ["0"]
        codes = set() if "0" in params or params == [""] else codes | set(params)
        position = match.end()
    return codes if word in SGR.sub("", line[position:]) else set()


def cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"[│┃]", SGR.sub("", line)) if c.strip()]


def test_the_dashboard_in_a_terminal_turns_red_and_says_roll_back_for_a_failing_canary(
    live: Live, tmp_path: Path
) -> None:
    csv = tmp_path / "samples.csv"
    pane = Pane([sys.executable, "-m", "canary_checks", "--canary-config", str(live.config_path), "monitor",
                 "--interval", "2", "--no-compare", "--export-metrics", str(csv)], tmp_path)  # fmt: skip
    try:
        screen = pane.wait_for(r"RECOMMENDATION: PROMOTE", 120)
        error = row(screen, "error rate")
        stable, canary = cells(error)[1:3]
        assert re.fullmatch(r"\d+\.\d+ % OK", stable) and re.fullmatch(r"\d+\.\d+ % OK", canary), cells(error)
        assert "32" in colour_of(error, "OK")  # green
        split = cells(row(screen, "traffic split"))
        assert split[0] == "traffic split" and split[3] == "stage 25 % ± 10"
        assert 15 <= float(split[2].split()[0]) <= 35  # the canary's share at weight 25
        assert "stage 25 % (nearest to the split)" in SGR.sub("", screen)
        live.set_faults("canary", {"errors": 50})
        pane.wait_for(r"RECOMMENDATION: ROLL BACK — error_rate: canary error rate", 90)
        time.sleep(WINDOW + 4)  # a whole window of the fault: the dashboard shows the injected rate
        screen = pane.wait_for(r"RECOMMENDATION: ROLL BACK", 10)
        error = row(screen, "error rate")
        stable, canary = cells(error)[1:3]
        assert canary.endswith("CRITICAL") and 30 <= float(canary.split()[0]) <= 70, cells(error)
        assert stable.endswith("OK")
        assert "31" in colour_of(error, "CRITICAL")  # red
        assert "31" in colour_of(row(screen, "RECOMMENDATION"), "ROLL BACK")
    finally:
        live.set_faults("canary", {})
        pane.close()
    # every sample the dashboard showed is in the CSV, both sides, the fault visible in the canary's rows
    frame = pd.read_csv(csv)
    assert set(frame["side"]) == {"stable", "canary"} and len(frame) % 2 == 0
    canary_rows = frame[frame["side"] == "canary"]
    assert canary_rows["error_rate_pct"].max() > 30 and frame[frame["side"] == "stable"]["error_rate_pct"].max() < 5
    assert {"promote", "roll back"} <= set(canary_rows["recommendation"])
    assert (canary_rows["error_rate_pct_status"] == "CRITICAL").any()


def test_the_monitor_piped_prints_one_line_per_sample(live: Live) -> None:
    done = subprocess.run([sys.executable, "-m", "canary_checks", "--canary-config", str(live.config_path), "monitor",
                           "--interval", "1", "--duration", "3s", "--no-compare"],
                          capture_output=True, text=True, cwd=REPO, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert 2 <= len(lines) <= 4, lines
    assert all(re.match(r"^\S+Z sample \d+ stage 25 \(stable / canary\): error rate ", line) for line in lines)
    assert "\x1b[" not in done.stdout
    assert re.search(r"monitor: \d sample\(s\)", done.stderr)


# ---- canary-checks serve ------------------------------------------------------------------------------------------

TOKEN = "t0k3n-for-the-test"


@pytest.fixture(scope="module")
def webhooks(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    reports = tmp_path_factory.mktemp("webhook-reports")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "canary_checks", "--canary-config", str(live.config_path), "serve", "--port", str(port),
         "--reports", str(reports), "--suite-timeout", "60s"],
        cwd=REPO, env={**os.environ, "CANARY_WEBHOOK_TOKEN": TOKEN}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise AssertionError(f"serve did not start: {process.communicate()}") from None
            time.sleep(0.2)
    try:
        yield url, reports
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "serve: stopped" in err


def call(url: str, hook: str, body: dict[str, Any], token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/flagger/{hook}", json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=90) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


FLAGGER = {"name": "auth", "namespace": "orion", "phase": "Progressing", "checksum": "abc"}


def test_webhooks_refuse_a_call_without_the_token(webhooks: tuple[str, Path]) -> None:
    url, _ = webhooks
    assert call(url, "confirm-traffic-increase", FLAGGER, token=None)[0] == 401
    assert call(url, "confirm-traffic-increase", FLAGGER, token="wrong")[0] == 401
    status, body = call(url, "confirm-traffic-increase", {**FLAGGER, "metadata": {"token": "nope"}}, token=None)
    assert status == 401 and "metadata.token" in body["fix"]
    assert call(url, "no-such-hook", FLAGGER)[0] == 404


def test_a_healthy_canary_passes_pre_rollout_and_traffic_increase(live: Live, webhooks: tuple[str, Path]) -> None:
    url, reports = webhooks
    status, body = call(url, "pre-rollout", FLAGGER)
    assert (status, body["outcome"], body["failing"]) == (200, "passed", []), body
    assert body["checks"] == 4  # reachable, two health paths, one request
    # Flagger's own metadata.token works as well as the header; a comparison not decided yet on one window of a
    # loaded machine holds (412), and Flagger asks again at its next interval, on more traffic
    for _ in range(4):
        status, body = call(url, "confirm-traffic-increase", {**FLAGGER, "metadata": {"token": TOKEN}}, token=None)
        if status != 412:
            break
        assert body["outcome"] == "held" and all(f["verdict"] == "inconclusive" for f in body["failing"]), body
        live.settle()
    assert (status, body["outcome"], body["stage"]) == (200, "passed", 25), body
    assert body["checks"] >= 15
    run = reports / body["run_id"]
    deadline = time.monotonic() + 30  # the report is written after the answer
    while not (run / "report.html").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "webhook" and summary["decision"]["outcome"] == "passed"


def test_a_failing_canary_is_refused_with_its_failing_gates(live: Live, webhooks: tuple[str, Path]) -> None:
    url, _ = webhooks
    live.set_faults("canary", {"errors": 50})
    try:
        live.settle()
        status, body = call(url, "confirm-promotion", {**FLAGGER, "metadata": {"stage": "25"}})
        live.set_faults("canary", {"errors": 100})  # every API answer fails: the smoke requests cannot pass
        smoke_status, smoke = call(url, "pre-rollout", FLAGGER)
    finally:
        live.set_faults("canary", {})
    assert status == 412 and body["outcome"] == "failed", body
    failing = {f["gate"]: f for f in body["failing"]}
    assert failing["error_rate"]["verdict"] == "fail" and float(failing["error_rate"]["value"]) > 30
    assert "canary error rate" in failing["error_rate"]["summary"]
    assert smoke_status == 412 and "test_request[item]" in {f["gate"] for f in smoke["failing"]}


def test_one_suite_at_a_time_per_service(live: Live, webhooks: tuple[str, Path]) -> None:
    url, _ = webhooks
    answers: list[int] = []

    def one() -> None:
        answers.append(call(url, "rollout", FLAGGER)[0])

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers)[-1] == 429 and sorted(answers)[0] in (200, 412), answers


# ---- Argo Rollouts ------------------------------------------------------------------------------------------------


def argo_command(stage: int, reports: Path) -> list[str]:
    """The AnalysisTemplate's Job command with Argo's arguments filled in, paths moved from the image to here."""
    import yaml

    template = yaml.safe_load((REPO / "manifests" / "argo" / "analysis-template.yaml").read_text())
    (container,) = template["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]["containers"]
    args = {"{{args.stage}}": str(stage), "{{args.service}}": "auth", "{{args.namespace}}": "orion"}
    command = [args.get(word, word).replace("/tmp/", f"{reports}/") for word in container["command"]]
    assert command[0] == "canary-checks"
    return [sys.executable, "-m", "canary_checks", *command[1:]]


def test_the_argo_job_command_passes_a_healthy_canary_and_fails_a_faulty_one(live: Live, tmp_path: Path) -> None:
    env = {**os.environ, "CANARY_CONFIG": str(live.config_path)}  # the image's /config/canary.yaml

    def job() -> subprocess.CompletedProcess[str]:
        return subprocess.run(argo_command(25, tmp_path), cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip

    healthy = job()
    # the Job succeeds: the analysis passes (a first look with too few requests holds and looks again)
    assert healthy.returncode == 0, healthy.stdout[-3000:] + healthy.stderr[-3000:]
    assert "stage 25 %: every gate passed" in healthy.stdout
    live.set_faults("canary", {"errors": 50})
    try:
        live.settle()
        faulty = job()
    finally:
        live.set_faults("canary", {})
    assert faulty.returncode == 1, faulty.stdout[-3000:]  # the Job fails: Argo aborts the Rollout
    assert "failing gates at stage 25 %: " in " ".join(faulty.stdout.split())
    assert "error_rate (canary error rate" in " ".join(faulty.stdout.split())
    assert len(list((tmp_path / "reports").glob("gate-*/report.html"))) == 2
