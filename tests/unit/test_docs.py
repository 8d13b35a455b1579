"""The docs are written from, or checked against, the code they describe."""

from pathlib import Path

from canary_checks.config import Gates, reference_markdown
from canary_checks.gates import GATES

DOCS = Path(__file__).parents[2] / "docs"


def test_configuration_reference_is_current() -> None:
    assert (DOCS / "configuration.md").read_text() == reference_markdown(), (
        "docs/configuration.md is stale: canary-checks config reference > docs/configuration.md"
    )


def test_every_gate_is_documented_with_its_test_id() -> None:
    text = (DOCS / "gates.md").read_text()
    for gate in GATES.values():
        assert f"`{gate.name}`" in text, gate.name
        assert f"test_{gate.family}[{gate.variant}]" in text, gate.name
    assert set(GATES) == set(Gates.model_fields)
