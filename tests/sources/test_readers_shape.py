"""The readers stay readable: no function of pipeline/sources/ runs over 100 lines (the per-task
parts of a reader live in its per-task table, not in one long function)."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCES = Path(__file__).resolve().parents[2] / "pipeline" / "sources"
MAX_LINES = 100


def _long_functions(folder: Path, limit: int) -> list[str]:
    out = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    out.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_reader_function_is_over_a_hundred_lines() -> None:
    assert _long_functions(SOURCES, MAX_LINES) == []


def test_the_length_check_sees_long_functions(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(100))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}")
    assert _long_functions(tmp_path, MAX_LINES) == ["m.py:5 long (101 lines)"]
