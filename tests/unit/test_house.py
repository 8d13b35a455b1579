"""Issue 16's limits on the house, kept by a test: no module under canary_checks/ over 500 lines and no function over
80 (its docstring aside), so that a newcomer reads one concept per file. Declarative tables are the exception, named
here with the reason."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "canary_checks"
MAX_FILE = 500
MAX_FUNCTION = 80
TABLES = {"manifests/alerts.py:_alerting_rules": "one _alert(...) row per alert rule, sharing expression fragments"}


def function_lengths(tree: ast.AST) -> list[tuple[str, int]]:
    """(qualified name, length without the docstring) of every function, nested ones and methods included."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                first = child.body[0]
                if (
                    isinstance(first, ast.Expr)
                    and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)
                ):
                    length -= (first.end_lineno or first.lineno) - first.lineno + 1
                found.append((prefix + child.name, length))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def test_no_module_over_500_lines_and_no_function_over_80() -> None:
    over = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(PACKAGE).as_posix()
        if (lines := len(text.splitlines())) > MAX_FILE:
            over.append(f"{where}: {lines} lines")
        for name, length in function_lengths(ast.parse(text)):
            if length > MAX_FUNCTION and f"{where}:{name}" not in TABLES:
                over.append(f"{where}: {name} is {length} lines")
    assert not over, "over issue 16's limits (split along a seam):\n" + "\n".join(over)


def test_the_checker_measures_functions_without_their_docstrings() -> None:
    source = 'def f():\n    """Doc\n    more."""\n' + "    x = 1\n" * 81 + "class C:\n    def g(self):\n        pass\n"
    assert function_lengths(ast.parse(source)) == [("f", 82), ("C.g", 2)]
