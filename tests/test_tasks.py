"""The task table is the one home of task knowledge: every task module satisfies the Task protocol,
the table follows records.TASKS (the checkpoints' loss positions), and no module outside the task
table, the format modules, the recipe and the record types names a task, but for a handful of
places where a name is clearer than a symbol, each saying why in a comment on its line."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from pipeline import tasks
from pipeline.records import LANGUAGE_TASKS, TASKS
from pipeline.tasks.task import Task

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
ALLOWED = ("tasks/", "formats/", "recipe.py", "records.py")
MAX_NAMED = 10


def test_the_table_is_records_tasks_in_order():
    assert tasks.names() == TASKS
    assert tuple(tasks.TABLE) == TASKS
    assert [t.NAME for t in tasks.all_tasks()] == list(TASKS)
    # new tasks go at the end: checkpoints keep per-task loss sums by position
    assert TASKS[:7] == ("classification", "caption", "vqa", "detection", "grounding", "segmentation", "ocr")
    assert TASKS[-1] == tasks.REGION_TO_SEGMENTATION
    with pytest.raises(KeyError, match="unknown task 'ocr2'; known: classification, caption, vqa"):
        tasks.get("ocr2")
    assert tasks.ordered({"ocr", "zeta", "caption", "alpha"}) == ["caption", "ocr", "alpha", "zeta"]


@pytest.mark.parametrize("name", TASKS)
def test_each_task_module_holds_its_task(name):
    module = importlib.import_module(f"pipeline.tasks.{name}")
    task = module.TASK
    assert isinstance(task, Task) and tasks.get(name) is task
    assert name == task.NAME
    # every fact without a default is stated (abstract methods are enforced by Task being an ABC)
    stated = [n for n in Task.__annotations__ if not hasattr(Task, n)]
    assert set(stated) == {"NAME", "FIELDS", "COLUMNS", "HEADLINE", "HUB_TASK", "CARD_METRICS"}
    for member in stated:
        assert hasattr(task, member), f"{name} does not state {member}"


@pytest.mark.parametrize("name", TASKS)
def test_task_facts_agree(name):
    task = tasks.get(name)
    # a task's fields are Example fields; its columns name fields a reader fills
    from pipeline.records import Example

    assert set(task.FIELDS) <= set(Example.__dataclass_fields__)
    assert ("language" in task.FIELDS) == (name in LANGUAGE_TASKS)
    assert task.HEADLINE.key in {m.key for m in task.CARD_METRICS} | {"cider", "map_50"}
    assert task.UNIT_LABEL.format("x").count("x") == 1
    assert 0.0 <= task.unit_score(0.25) <= 1.0
    assert (task.unit_score(0.0) > task.unit_score(0.5)) == task.LOWER_IS_BETTER


def test_unit_scores_are_what_the_mean_counts():
    assert tasks.get("caption").unit_score(4.5) == pytest.approx(0.45)
    assert tasks.get("ocr").unit_score(0.25) == 0.75
    assert tasks.get("ocr").unit_score(1.5) == 0.0  # CER may pass 1
    assert tasks.get("vqa").unit_score(0.8) == 0.8


def _named(package: Path = PACKAGE) -> list[tuple[str, int, str]]:
    """(file, line, source line) of every string constant that is a task name, outside the allowed
    places (a docstring is one whole string: it counts only if it is nothing but a name)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel.startswith(ALLOWED):
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in TASKS:
                found.append((rel, node.lineno, lines[node.lineno - 1]))
    return found


def test_no_task_names_outside_the_table():
    """Evaluation, the card, the report, predict and the readers ask the task table; the few names
    left (a COCO field called "caption", a demo set called "ocr") say why on their line."""
    named = _named()
    assert len(named) <= MAX_NAMED, "\n".join(f"{f}:{n}: {line.strip()}" for f, n, line in named)
    unexplained = [f"{f}:{n}: {line.strip()}" for f, n, line in named if "#" not in line]
    assert unexplained == []


def test_the_literal_scan_sees_names(tmp_path):
    """The scan above finds a task name as a string (so it can fail), outside the allowed places."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.py").write_text('A = "vqa"\n')
    source = '"""The caption reader."""\nA = "vqa"\nB = "vqa x"\nC = {"ocr": 1}  # why\n'
    (tmp_path / "x.py").write_text(source)
    assert [(f, n) for f, n, _ in _named(tmp_path)] == [("x.py", 2), ("x.py", 4)]
