"""Issue 16's size limits: no file under canary_checks/ over 500 lines, no function over 80 (its docstring aside).

    python .ci/sizes.py [DIR ...]        # default: canary_checks; exit 1 when anything is over

A function's length is ``end_lineno - lineno + 1`` of its ``def`` (decorators aside), less its docstring's lines.
"""

import ast
import sys
from pathlib import Path

MAX_FILE = 500
MAX_FUNCTION = 80


def function_lengths(tree: ast.AST) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length without the docstring) of every function, nested ones included."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert child.end_lineno is not None
                length = child.end_lineno - child.lineno + 1
                first = child.body[0]
                if (
                    isinstance(first, ast.Expr)
                    and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)
                ):
                    assert first.end_lineno is not None
                    length -= first.end_lineno - first.lineno + 1
                found.append((prefix + child.name, child.lineno, length))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def main(dirs: list[str]) -> int:
    over = 0
    for path in sorted(p for d in dirs for p in Path(d).rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_FILE:
            print(f"{path}: {lines} lines (over {MAX_FILE})")
            over += 1
        for name, line, length in function_lengths(ast.parse(text)):
            if length > MAX_FUNCTION:
                print(f"{path}:{line}: {name} is {length} lines (over {MAX_FUNCTION})")
                over += 1
    print(f"{over} over the limits" if over else "within the limits")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["canary_checks"]))
