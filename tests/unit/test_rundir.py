"""The run directory's one writer: names the report reads back, events, and a finish that never raises."""

import json
from pathlib import Path

import pytest

from canary_checks.record import IN_PROGRESS, Event, Status, can_move
from canary_checks.report import summarize
from canary_checks.rundir import RunRecord, parse_junit


@pytest.mark.parametrize("attempt", [1, 2, 5])
def test_a_stage_junit_is_named_as_the_report_reads_it(tmp_path: Path, attempt: int) -> None:
    junit = RunRecord(tmp_path).junit(25, attempt)
    assert junit.parent == tmp_path
    assert parse_junit(junit.stem) == (25, attempt)


def test_the_first_attempt_and_the_others_keep_their_file_names(tmp_path: Path) -> None:
    record = RunRecord(tmp_path)
    assert [record.junit(5, a).name for a in (1, 2)] == ["stage-5.xml", "stage-5-retry1.xml"]
    assert record.junit(None, name="smoke-canary").name == "smoke-canary.xml"
    assert [record.junit(None, a, name="fault-4").name for a in (1, 3)] == ["fault-4.xml", "fault-4-retry2.xml"]
    assert parse_junit("smoke-canary") is None and parse_junit("fault-4-retry2") is None


def test_start_and_events_write_run_json_and_events_jsonl(tmp_path: Path) -> None:
    record = RunRecord.start(tmp_path, "gate", service="auth", stage=None, started=1.0)
    assert record.run_id.startswith("gate-")
    record.event(Event.WEIGHT, weight=5, stage=5)
    meta = json.loads((record.path / "run.json").read_text())
    assert meta == {"kind": "gate", "service": "auth", "started": 1.0}
    (line,) = (record.path / "events.jsonl").read_text().splitlines()
    assert json.loads(line)["event"] == "weight"


def test_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    record = RunRecord(tmp_path / "run", dry_run=True)
    record.meta(kind="rollout")
    record.event(Event.DEPLOYING)
    assert record.finish().html is None
    assert not (tmp_path / "run").exists()


def test_a_report_that_cannot_be_written_is_said_not_raised(tmp_path: Path) -> None:
    record = RunRecord.start(tmp_path, "gate", started=1.0)
    (record.path / "summary.json").mkdir()  # build_report cannot write it
    finished = record.finish(ended=2.0, exit_status=0)
    assert finished.html is None
    assert finished.problem.startswith("the report could not be written: ")
    assert json.loads((record.path / "run.json").read_text())["ended"] == 2.0


def test_a_finished_run_has_its_report(tmp_path: Path) -> None:
    record = RunRecord.start(tmp_path, "gate", started=1.0)
    finished = record.finish(ended=2.0, exit_status=0)
    assert finished.html is not None and finished.html.exists() and not finished.problem
    assert summarize(record.path)["kind"] == "gate"


def test_a_rollout_moves_only_along_its_transitions() -> None:
    assert can_move(None, Status.DEPLOYING) and not can_move(None, Status.PROGRESSING)
    assert can_move(Status.PROGRESSING, Status.AWAITING_PROMOTION)
    assert not can_move(Status.DEPLOYING, Status.PROMOTED)
    assert all(can_move(s, Status.ROLLING_BACK) for s in IN_PROGRESS)
    assert not can_move(Status.ROLLED_BACK, Status.ROLLING_BACK)
    assert not can_move(Status.PROMOTED, Status.PROGRESSING)
    assert can_move("some-old-status", Status.ROLLING_BACK) is False
