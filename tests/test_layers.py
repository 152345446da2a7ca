"""The package's layers import one way (see the design notes): every `import` inside pipeline/,
function-local ones included, goes to the same layer or a lower one; no modules import each other,
in a pair or around a longer circle; and the prediction and scoring rooms load without anything of
training."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# lowest first; a module belongs to the longest prefix that names it
LAYERS = [
    ("pipeline.errors", "pipeline.records", "pipeline.registry", "pipeline.failpoints", "pipeline.families",
     "pipeline.folders", "pipeline.runfolder", "pipeline.safe_yaml",  # how commands write and read folders
     "pipeline.masks"),  # polygons and COCO RLEs, as every layer meets them
    ("pipeline.metrics",),  # the fields' reference metrics: functions of plain values
    ("pipeline.tasks",),  # the table of tasks: a task's `score` calls its metric
    # a recipe checks its sources' options; the demo set makes files in the formats the sources read
    ("pipeline.sources", "pipeline.formats", "pipeline.recipe", "pipeline.demo"),
    ("pipeline.models", "pipeline.runtime"),
    ("pipeline.data",),
    ("pipeline.evaluation.predict", "pipeline.evaluation.score", "pipeline.evaluation.evaluator",
     "pipeline.evaluation.report", "pipeline.loader"),  # loader: the one way a trained model loads
    ("pipeline.train",),
    ("pipeline.evaluation.run", "pipeline.inference", "pipeline.hub", "pipeline.check",
     "pipeline.init_recipe", "pipeline.cli"),
]  # fmt: skip


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    if module == "pipeline":  # the package itself: __version__ and a lazy façade
        return 0
    best, found = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, found = len(p), i
    assert found is not None, f"{module} is in no layer: add it to LAYERS"
    return found


def _imports(path: Path) -> set[str]:
    """Every pipeline module `path` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("pipeline")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            for a in node.names:  # `from pipeline import models` imports the module pipeline.models
                sub = f"{node.module}.{a.name}"
                is_module = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    PACKAGE.parent / sub.replace(".", "/") / "__init__.py"
                ).is_file()
                out.add(sub if is_module else node.module)
    return out


def test_imports_go_one_way():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _module(path)
        if me == "pipeline":  # the package's lazy façade (`from pipeline import load_model`)
            continue
        for other in sorted(_imports(path)):
            if _layer(other) > _layer(me):
                upward.append(f"{me} (layer {_layer(me)}) imports {other} (layer {_layer(other)})")
    assert upward == []


def _graph() -> dict[str, set[str]]:
    """module -> the pipeline modules it imports. The package root is left out: modules import it
    for `__version__` alone, and it imports `load_model` lazily as the package's façade."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        me = _module(path)
        if me != "pipeline":
            graph[me] = {m for m in _imports(path) if m != "pipeline" and m != me}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_modules_import_each_other():
    """Two modules that import each other (even inside a function) are one module in two files:
    what both need moves down to a module both import."""
    assert _circles(_graph()) == []


def test_no_circle_involves_the_readers():
    """sources/__init__ (the registry) and the readers' helpers once imported each other for
    SourceContext: it lives in sources/context.py, below both."""
    assert [c for c in _circles(_graph()) if any(m.startswith("pipeline.sources") for m in c)] == []


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}}
    assert sorted(_circles(graph)) == [["a", "b", "c"], ["e", "f"]]


MAX_LINES = 100
LONG_ALLOWED = {"cli.py:build_parser"}  # argparse's declarations: one flat list of options


def _long_functions(package: Path, limit: int) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit and f"{rel}:{node.name}" not in LONG_ALLOWED:
                    out.append(f"{rel}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_function_is_over_a_hundred_lines():
    """A function a reader cannot hold in view is several functions (a reader's per-task parts live
    in its per-task table, the demo's writers one per format, the loop's set-up in setup.py)."""
    assert _long_functions(PACKAGE, MAX_LINES) == []


def test_the_length_check_sees_long_functions(tmp_path: Path):
    body = "".join(f"    x{i} = {i}\n" for i in range(100))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}")
    (tmp_path / "cli.py").write_text(f"def build_parser():\n{body}")
    assert _long_functions(tmp_path, MAX_LINES) == ["m.py:5 long (101 lines)"]


def test_prediction_and_scoring_load_without_training():
    code = (
        "import sys, pipeline.evaluation.score, pipeline.evaluation.predict; "
        "print(sorted(m for m in sys.modules if m.startswith('pipeline.train')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
