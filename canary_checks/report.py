"""Reading what a gate run recorded: JUnit XML with one test case per gate and its properties."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["GateRecord", "read_junit"]


@dataclass(frozen=True)
class GateRecord:
    """One gate test case as the JUnit file has it."""

    test: str
    outcome: str
    """passed, failed, error or skipped (pytest's outcome)."""
    gate: str = ""
    verdict: str = ""
    value: str = ""
    threshold: str = ""
    unit: str = ""
    severity: str = ""
    summary: str = ""
    message: str = ""
    queries: tuple[str, ...] = field(default_factory=tuple)
    properties: dict[str, str] = field(default_factory=dict)
    """Every other property recorded (a comparison's p_value and interval, a smoke check's status and served_by)."""


def read_junit(path: Path) -> list[GateRecord]:
    """Every test case of a pytest JUnit file, with the gate properties the plugin records."""
    root = ET.parse(path).getroot()
    records = []
    for case in root.iter("testcase"):
        props: dict[str, str] = {}
        queries = []
        for prop in case.iter("property"):
            name, value = prop.get("name", ""), prop.get("value", "")
            if name == "query":
                queries.append(value)
            else:
                props[name] = value
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = element.get("message", "") or (element.text or "")
                break
        records.append(
            GateRecord(
                test=f"{case.get('classname', '')}::{case.get('name', '')}",
                outcome=outcome,
                gate=props.get("gate", ""),
                verdict=props.get("verdict", "error" if outcome == "error" else ""),
                value=props.get("value", ""),
                threshold=props.get("threshold", ""),
                unit=props.get("unit", ""),
                severity=props.get("severity", ""),
                summary=props.get("summary", props.get("error", "")),
                message=message,
                queries=tuple(queries),
                properties=props,
            )
        )
    return records
