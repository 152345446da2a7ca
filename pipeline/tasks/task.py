"""The `Task` protocol: what uvft knows of one task, one module per task (pipeline/tasks/<name>.py),
each holding one `Task` subclass and its instance `TASK`.

A task says which record fields it uses and under which reader columns they come, how its
generations are scored (`score`, the headline metric, its trivial baseline), how it is published
(the hub's task type and the card's metrics), what a prompt needs at prediction time, and the shape
of a prediction (`parsed` in generations.jsonl, `result` of `uvft predict`, how it reads as text
and as rows of the report). The text itself (prompt and target) is the format modules'
(pipeline/formats/): a task never writes a family's text. What most tasks share is the default
here; a task module states what is its own.

Metric functions are imported inside `score` and `baseline`: `evaluate` is heavy, and readers and
the build ask the table for columns without scoring anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from pipeline.errors import UvftError
from pipeline.records import LANGUAGE_TASKS, Box, Example, ImageSize

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


@dataclass(frozen=True)
class PromptInputs:
    """What `uvft predict` / `Model.predict` was given to write a prompt with."""

    question: str | None = None
    classes: Sequence[str] = ()  # the given classes, else the training vocabulary
    phrase: str | None = None
    language: str | None = None
    level: str | None = None  # a caption's level of detail (records.CAPTION_LEVELS)
    region: Sequence[float] | None = None  # region_to_*: x1, y1, x2, y2 in pixels of the image
    image_size: ImageSize = (1, 1)  # the image predicted on (a region's tokens depend on it)

    def phrase_for(self, task: str) -> str:
        if not (self.phrase and self.phrase.strip()):
            raise UvftError(f"task {task} needs a phrase (--phrase), the expression to locate")
        return self.phrase.strip()

    def region_for(self, task: str) -> Box:
        """The given region, inside the image and with an area, as a box."""
        if self.region is None:
            raise UvftError(f"task {task} needs a region (--region x1,y1,x2,y2 in pixels)")
        if len(self.region) != 4:
            raise UvftError(f"a region is 4 numbers, x1,y1,x2,y2 in pixels, not {len(self.region)}")
        x1, y1, x2, y2 = (float(v) for v in self.region)
        w, h = self.image_size
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise UvftError(
                f"region {x1:g},{y1:g},{x2:g},{y2:g} is not a box inside the {w} x {h} image "
                "(x1 < x2, y1 < y2, in pixels)"
            )
        return (x1, y1, x2, y2)

    def no_language(self, task: str) -> None:
        """Refuse a language for a task whose prompts carry none."""
        if self.language is not None:
            raise UvftError(f"a language is only for {' and '.join(LANGUAGE_TASKS)} (task {task})")


class Task(ABC):
    """What uvft knows of a task besides its text; `tasks.get(name)` returns the task's instance."""

    NAME: ClassVar[str]
    # the Example / Record fields the task fills (besides id, source, image, prompt and target)
    FIELDS: ClassVar[tuple[str, ...]]
    # reader columns: Example field -> the default column (hf_dataset) or key (JSONL) holding it
    COLUMNS: ClassVar[Mapping[str, str]]
    HEADLINE: ClassVar[Headline]
    LOWER_IS_BETTER: ClassVar[bool] = False  # the headline mean counts such a headline as 1 - value
    UNIT_LABEL: ClassVar[str] = "{}"  # the headline on the 0-1 scale, written: "{} / 10", "1 - {}"
    BASELINE: ClassVar[Baseline | None] = None
    EXTRAS: ClassVar[tuple[Extra, ...]] = ()
    HUB_TASK: ClassVar[tuple[str, str]]  # the hub's task type and task name
    CARD_METRICS: ClassVar[tuple[CardMetric, ...]]
    VOCABULARY: ClassVar[str | None] = None  # what the task's class list is called ("classes"), if any
    CLOSED_SET: ClassVar[bool] = False  # also scored by likelihood over a class list
    STRATUM_FIELD: ClassVar[str | None] = None  # a sample of the task's records spreads over its values
    ANSWER_IN_TEXT: ClassVar[bool] = True  # the answer is words, not location tokens
    LABELS_DRAWN: ClassVar[bool] = False  # a drawing of a prediction shows its whole answer
    EXAMPLE_INPUTS: ClassVar[Mapping[str, str]] = {}  # what the card's snippet gives `prompt`

    def unit_score(self, value: float) -> float:
        """The headline on the 0-1, higher-is-better scale the mean averages."""
        return value

    @abstractmethod
    def references(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """What scoring needs of a record (generations.jsonl's `references`)."""

    @abstractmethod
    def score(self, rows: list[Row], records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The task's metrics from its generations; sets each row's per-example `score`."""

    def baseline(self, rows: list[Row], train: TrainColumns) -> dict[str, Any] | None:
        """The trivial baseline's metrics on `rows` (None: the task has none, or the training
        split gives none)."""
        return None

    @abstractmethod
    def prompt_example(self, given: PromptInputs) -> Example | None:
        """An Example whose rendered prompt is the one to predict with (None: the trained prompt
        as it is); a missing input is a UvftError naming the option."""

    def template_example(self, language: str | None) -> Example | None:
        """An Example that renders the task's prompt template for uvft.json (VQA's `{question}`);
        None: the first training record's prompt is the template."""
        return None

    def parsed(self, pred: Any, scores: Sequence[float]) -> dict[str, Any]:
        """generations.jsonl's `parsed` from a format's Prediction and one score per box: the text
        (empty for answers in location tokens), the boxes with their scores, the parse errors."""
        return {
            "text": pred.text if self.ANSWER_IN_TEXT else "",
            "objects": [
                {"bbox": list(o.bbox), "category": o.category, "score": s}
                for o, s in zip(pred.objects, scores, strict=True)
            ],
            "errors": pred.errors,
        }

    @abstractmethod
    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        """The task's fields of a `uvft predict` result (closed: the closed-set choice, if any)."""

    @abstractmethod
    def describe(self, result: Mapping[str, Any]) -> str:
        """A prediction as a person reads it (its first line is drawn on images)."""

    def card_rows(self, parsed: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The rows of a prediction in a report card, after the generated text."""
        return text_rows(parsed)

    def example(self, image_size: ImageSize = (1, 1), **fields: Any) -> Example:
        """An Example of this task with no image, for rendering a prompt."""
        return Example(id="predict", task=self.NAME, image="", image_size=image_size, **fields)


class BoxTask(Task):
    """A task answered with labelled boxes in location tokens (detection, grounding)."""

    ANSWER_IN_TEXT = False
    LABELS_DRAWN = True

    def result(self, parsed: Mapping[str, Any], closed: Mapping[str, Any] | None) -> dict[str, Any]:
        return {
            "objects": [
                {"bbox": o["bbox"], "label": o["category"], "score": o["score"]} for o in parsed["objects"]
            ]
        }

    def describe(self, result: Mapping[str, Any]) -> str:
        objects = result["objects"]
        lines = [f"{len(objects)} object{'s' if len(objects) != 1 else ''}:"]
        for o in objects:
            box = ", ".join(f"{v:.1f}" for v in o["bbox"])
            lines.append(f"  {o['label']:<20} score {o['score']:.2f}  box [{box}] (x1, y1, x2, y2 in pixels)")
        dropped = result.get("dropped") or []
        if dropped:
            shown = ", ".join(f"{o['label']} score {o['score']:.2f} ({o['reason']})" for o in dropped)
            lines.append(f"dropped {len(dropped)}: {shown}")
        return "\n".join(lines)

    def keep(
        self, result: Mapping[str, Any], *, classes: Sequence[str] = (), threshold: float | None = None
    ) -> dict[str, Any]:
        """A `uvft predict` result with its objects filtered: those not among the given `classes`
        (a task with a class vocabulary: the model may write a class it was not asked for) and those
        scoring below `threshold`. Each dropped object is kept in `dropped` with its reason, present
        whenever a filter applied, so that nothing is removed unseen."""
        by_class = bool(classes) and self.VOCABULARY is not None
        if not by_class and threshold is None:
            return dict(result)
        wanted = {_class_key(c) for c in classes}
        kept, dropped = [], []
        for o in result["objects"]:
            if by_class and _class_key(o["label"]) not in wanted:
                dropped.append({**o, "reason": "not a given class"})
            elif threshold is not None and o["score"] < threshold:
                dropped.append({**o, "reason": f"score below {threshold:g}"})
            else:
                kept.append(o)
        return {**result, "objects": kept, "dropped": dropped}


def _class_key(name: str) -> str:
    # a model may write a class in another case or spacing than it was given
    return " ".join(name.casefold().split())


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


def text_rows(parsed: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A report card's rows of a prediction: its parsed text when there is one, its objects and
    polygons."""
    rows = [("parsed", str(parsed["text"]))] if parsed.get("text") else []
    return rows + object_rows(parsed)


def object_rows(parsed: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if parsed.get("objects"):
        rows.append(("predicted", ", ".join(str(o.get("category", "")) for o in parsed["objects"])))
    if parsed.get("polygons"):
        rows.append(("predicted", f"{len(parsed['polygons'])} polygon(s)"))
    return rows


def with_language(refs: dict[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """A caption's or question's references, with its language when it names one."""
    if record.get("language"):
        refs["language"] = record["language"]
    return refs
