"""The `Task` protocol: what uvft knows of one task, in one module per task (pipeline/tasks/<name>.py).

A task module says which record fields the task uses and under which reader columns they come,
how its generations are scored (`score`, the headline metric, its trivial baseline), how it is
published (the hub's task type and the card's metrics), what a prompt needs at prediction time,
and the shape of a prediction (`parsed` in generations.jsonl, `result` of `uvft predict`, how it
reads as text and as rows of the report). The text itself (prompt and target) is the format
modules' (pipeline/formats/): a task module never writes a family's text.

Metric functions are imported inside `score` and `baseline`: `evaluate` is heavy, and readers and
the build ask the table for columns without scoring anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from pipeline.errors import UvftError
from pipeline.records import LANGUAGE_TASKS, Example

Row = dict[str, Any]  # one generations.jsonl row: id, source, task, parsed, references, image_size...


class Headline(NamedTuple):
    """The task's headline number: its key in the task's metrics and its name in tables."""

    key: str
    name: str


class Baseline(NamedTuple):
    """The trivial baseline a model must beat: its key in the task's metrics and its name."""

    key: str
    name: str


class Extra(NamedTuple):
    """A number shown beside the headline in `uvft eval`'s table (and tracked over training as
    `<task>/<tracked>` when `tracked` is set)."""

    key: str  # dotted, in the task's metrics
    name: str
    tracked: str | None = None


class CardMetric(NamedTuple):
    """One metric of the model card's model-index: metrics.json key (dotted), hub type, name."""

    key: str
    type: str
    name: str


@runtime_checkable
class Task(Protocol):
    """What a task module provides; `tasks.get(name)` returns the module typed as this."""

    NAME: str
    # the Example / Record fields the task fills (besides id, source, image, prompt and target)
    FIELDS: tuple[str, ...]
    # reader columns: Example field -> the default column (hf_dataset) or key (JSONL) holding it
    COLUMNS: Mapping[str, str]
    HEADLINE: Headline
    LOWER_IS_BETTER: bool  # the headline: lower is better (the mean counts it as 1 - value)
    UNIT_LABEL: str  # how the headline is written on the 0-1 scale: "{}", "{} / 10", "1 - {}"
    BASELINE: Baseline | None
    EXTRAS: tuple[Extra, ...]
    HUB_TASK: tuple[str, str]  # the hub's task type and task name
    CARD_METRICS: tuple[CardMetric, ...]
    VOCABULARY: str | None  # what the task's class list is called on the card ("classes"), if any
    CLOSED_SET: bool  # scored by likelihood over a class list as well as generated
    ANSWER_IN_TEXT: bool  # the answer is words (not location tokens): parsed["text"] holds it
    LABELS_DRAWN: bool  # a drawing of a prediction shows its whole answer (boxes and labels)
    EXAMPLE_INPUTS: Mapping[str, str]  # what the card's snippet passes to `prompt` (a question...)

    def unit_score(self, value: float) -> float:
        """The headline on the 0-1, higher-is-better scale the mean averages."""
        ...

    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """What scoring needs of a record (generations.jsonl's `references`)."""
        ...

    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The task's metrics from its generations; sets each row's per-example `score`."""
        ...

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any] | None:
        """The trivial baseline's metrics on `rows` (None when the training split gives none)."""
        ...

    def prompt_example(
        self,
        *,
        question: str | None,
        classes: Sequence[str],
        phrase: str | None,
        language: str | None,
    ) -> Example | None:
        """An Example whose rendered prompt is the one to predict with (None: the trained prompt
        as it is); a missing input is a UvftError naming the option."""
        ...

    def template_example(self, language: str | None) -> Example | None:
        """An Example that renders the task's prompt template for uvft.json (VQA's `{question}`);
        None: the first training record's prompt is the template."""
        ...

    def parsed(self, pred: Any, scores: Sequence[float]) -> dict[str, Any]:
        """generations.jsonl's `parsed` from a format's Prediction and one score per box."""
        ...

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        """The task's fields of a `uvft predict` result (closed: the closed-set choice, if any)."""
        ...

    def describe(self, result: Mapping[str, Any]) -> str:
        """A prediction as a person reads it (its first line is drawn on images)."""
        ...

    def card_rows(self, parsed: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The rows of the prediction in a report card, after the generated text."""
        ...


class TrainColumns:
    """The training split's values of a column for one task's records, each column read once
    (a Dataset column is a read of the whole column): what majority baselines count."""

    def __init__(self, train: Any) -> None:
        self.train = train
        self._columns: dict[str, Any] = {}

    def values(self, task: str, column: str) -> list[Any]:
        if "task" not in self._columns:
            self._columns["task"] = self.train["task"]
        if column not in self._columns:
            self._columns[column] = self.train[column]
        tasks, values = self._columns["task"], self._columns[column]
        return [v for k, v in zip(tasks, values, strict=True) if k == task and v is not None]


def majority(values: Sequence[Any]) -> Any | None:
    """The most frequent value, ties to the first seen; None for no values."""
    from collections import Counter

    return Counter(values).most_common(1)[0][0] if values else None


def identity(value: float) -> float:
    return value


def parsed_fields(pred: Any, scores: Sequence[float], *, text: bool) -> dict[str, Any]:
    """The `parsed` entry every task has: text (empty for answers in location tokens), boxes with
    their scores, and the count of what could not be parsed."""
    return {
        "text": pred.text if text else "",
        "objects": [
            {"bbox": list(o.bbox), "category": o.category, "score": s}
            for o, s in zip(pred.objects, scores, strict=True)
        ],
        "errors": pred.errors,
    }


def text_rows(parsed: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A report card's rows of a prediction: its parsed text, objects and polygons when present."""
    rows = []
    if parsed.get("text"):
        rows.append(("parsed", str(parsed["text"])))
    rows += object_rows(parsed)
    return rows


def object_rows(parsed: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if parsed.get("objects"):
        rows.append(("predicted", ", ".join(str(o.get("category", "")) for o in parsed["objects"])))
    if parsed.get("polygons"):
        rows.append(("predicted", f"{len(parsed['polygons'])} polygon(s)"))
    return rows


def predicted_objects(parsed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`uvft predict`'s objects: [{"bbox", "label", "score"}]."""
    return [{"bbox": o["bbox"], "label": o["category"], "score": o["score"]} for o in parsed["objects"]]


def describe_objects(result: Mapping[str, Any]) -> str:
    objects = result["objects"]
    lines = [f"{len(objects)} object{'s' if len(objects) != 1 else ''}:"]
    for o in objects:
        box = ", ".join(f"{v:.1f}" for v in o["bbox"])
        lines.append(f"  {o['label']:<20} score {o['score']:.2f}  box [{box}] (x1, y1, x2, y2 in pixels)")
    return "\n".join(lines)


def with_language(refs: dict[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """A caption's or question's references, with its language when it names one."""
    if record.get("language"):
        refs["language"] = record["language"]
    return refs


def no_language(task: str, language: str | None) -> None:
    """Refuse a language for a task whose prompts carry none."""
    if language is not None:
        raise UvftError(f"a language is only for {' and '.join(LANGUAGE_TASKS)} (task {task})")


def need_phrase(task: str, phrase: str | None) -> str:
    if not (phrase and phrase.strip()):
        raise UvftError(f"task {task} needs a phrase (--phrase), the expression to locate")
    return phrase.strip()


def blank_example(task: str, **fields: Any) -> Example:
    """An Example with no image, for rendering a prompt."""
    return Example(id="predict", task=task, image="", image_size=(1, 1), **fields)


def per_example(rows: list[Row], values: Sequence[Any], convert: Callable[[Any], float]) -> None:
    """Set each row's per-example `score` (the report ranks examples by it)."""
    for r, v in zip(rows, values, strict=True):
        r["score"] = convert(v)
