"""The docs are written from, or checked against, the code they describe."""

import re
from pathlib import Path

import pytest

from canary_checks.config import reference_markdown
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


def test_every_comparison_is_documented_with_its_test_id() -> None:
    from canary_checks.compare import COMPARISONS

    text = (DOCS / "statistics.md").read_text()
    for c in COMPARISONS.values():
        assert f"`{c.name}`" in text, c.name
        assert f"test_{c.family}_vs_stable[{c.variant}]" in text, c.name
    suite = (Path(__file__).parents[2] / "canary_checks" / "suites" / "gate" / "test_compare.py").read_text()
    for family in {c.family for c in COMPARISONS.values()}:
        assert f"def test_{family}_vs_stable(" in suite


def test_every_alert_has_a_runbook_heading() -> None:
    from canary_checks.manifests import render_alerts

    text = (DOCS / "deployment" / "canary-strategy.md").read_text()
    headings = {line[4:].strip().lower() for line in text.splitlines() if line.startswith("### ")}
    for rule in render_alerts()["spec"]["groups"][1]["rules"]:
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor in headings, rule["alert"]


def _commands(*paths: Path) -> list[str]:
    """Shell commands shown in the docs' ```sh blocks, with continuation lines joined."""
    commands = []
    for path in paths:
        block = False
        for line in path.read_text().replace("\\\n", " ").splitlines():
            if line.startswith("```"):
                block = line.strip() == "```sh"
            elif block and line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.split("  #")[0].strip())
    return commands


SHOWN = (
    Path(__file__).parents[2] / "README.md",
    Path(__file__).parents[2] / "manifests" / "README.md",
    DOCS / "deployment" / "canary-strategy.md",
    DOCS / "sandbox.md",
    DOCS / "statistics.md",
    DOCS / "integrations.md",
    DOCS / "monitor-and-reports.md",
)


def test_every_canary_checks_command_shown_exists() -> None:
    import click

    from canary_checks.cli import cli

    shown = [c for c in _commands(*SHOWN) if c.startswith("canary-checks ")]
    assert shown
    for command in shown:
        group: click.Command = cli
        for word in command.split()[1:]:
            if word.startswith("-") or not isinstance(group, click.Group):
                break
            sub = group.get_command(click.Context(group), word)
            if sub is None:  # an argument, not a subcommand
                break
            group = sub
        assert group is not cli, command


def test_every_pytest_flag_shown_is_an_option_of_the_plugin(pytestconfig: pytest.Config) -> None:
    shown = [c for c in _commands(*SHOWN) if c.startswith("pytest suites/")]
    assert {"suites/gate", "suites/smoke"} <= {c.split()[1] for c in shown}
    known = {"--stage", "--service", "--namespace", "--prometheus-url", "--mesh", "--canary-config", "--window",
             "--threshold", "--strict-gates", "--junitxml", "--canary-evidence", "--fresh-evidence", "--target",
             "--canary-reports", "--no-canary-report"}  # fmt: skip
    for command in shown:
        for word in command.split():
            if word.startswith("--"):
                assert word in known, (word, command)
                if word != "--junitxml":
                    assert pytestconfig.getoption(word.lstrip("-").replace("-", "_"), default="absent") != "absent"


def test_the_kubectl_patches_shown_move_exactly_our_weights() -> None:
    """Apply each JSON patch from manifests/README.md to the rendered object it names."""
    import json
    import re

    import yaml

    manifests = Path(__file__).parents[2] / "manifests"
    patches = [c for c in _commands(manifests / "README.md") if c.startswith("kubectl -n orion patch")]
    assert len(patches) == 2
    for command in patches:
        kind, name = command.split()[4:6]
        routing = {"virtualservice": "istio.yaml", "trafficsplit": "linkerd.yaml", "httproute": "gateway-api.yaml"}
        obj = next(
            o for o in yaml.safe_load_all((manifests / name / routing[kind]).read_text()) if o["kind"].lower() == kind
        )
        operations = json.loads(re.search(r"'(\[.*\])'", command).group(1))  # type: ignore[union-attr]
        for op in operations:
            assert op["op"] == "replace"
            *parents, leaf = op["path"].strip("/").split("/")
            node = obj
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            key = int(leaf) if isinstance(node, list) else leaf
            assert key in (range(len(node)) if isinstance(node, list) else node), op["path"]
            node[key] = op["value"]
        weights = [r["weight"] for r in obj["spec"]["http"][1]["route"]]
        assert sum(weights) == 100 and weights[1] in (0, 25)


def test_the_architecture_names_every_module_of_the_package_and_no_other() -> None:
    import pkgutil

    import canary_checks

    text = (Path(__file__).parents[2] / "ARCHITECTURE.md").read_text()
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))
    modules = {m.name for m in pkgutil.iter_modules(canary_checks.__path__) if not m.name.startswith("_")}
    assert named == modules, f"ARCHITECTURE.md lacks {sorted(modules - named)}, names gone {sorted(named - modules)}"
