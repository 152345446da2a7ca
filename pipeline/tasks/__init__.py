"""The tasks uvft knows, in one ordered table: one module per task, each holding its `Task`
(pipeline/tasks/task.py): what uvft knows of it besides its text, which the format modules write
and read. Evaluation, the model card, the report, `uvft predict`, the readers' column tables
and the CLI ask this table; nothing else names a task.

The order is records.TASKS: checkpoints keep per-task loss sums by position, so a new task goes
at the end of both. Adding a task: a module here with its `Task` subclass and `TASK` instance, a
line in `_MODULES`, its name at the end of records.TASKS (and its target field in Example's
check), its render and parse in each format module, its row parsing in the readers that take it
(jsonl, hf_dataset).
"""

from __future__ import annotations

from pipeline.records import LANGUAGE_TASKS, REGION_TASKS, TASKS
from pipeline.tasks import (
    caption,
    classification,
    dense_region_caption,
    detection,
    grounding,
    ocr,
    open_vocabulary_detection,
    region_proposal,
    region_to_category,
    region_to_description,
    region_to_ocr,
    region_to_segmentation,
    segmentation,
    vqa,
)
from pipeline.tasks.task import Task, TrainColumns

_MODULES = (
    *(classification, caption, vqa, detection, grounding, segmentation, ocr),
    *(dense_region_caption, region_proposal, open_vocabulary_detection),
    *(region_to_category, region_to_description, region_to_ocr, region_to_segmentation),
)
TABLE: dict[str, Task] = {m.TASK.NAME: m.TASK for m in _MODULES}  # in records.TASKS order (a test)

# the names as symbols, for code that must name one task (a reader of one task's format)
CLASSIFICATION = classification.TASK.NAME
CAPTION = caption.TASK.NAME
VQA = vqa.TASK.NAME
DETECTION = detection.TASK.NAME
GROUNDING = grounding.TASK.NAME
SEGMENTATION = segmentation.TASK.NAME
OCR = ocr.TASK.NAME
DENSE_REGION_CAPTION = dense_region_caption.TASK.NAME
REGION_PROPOSAL = region_proposal.TASK.NAME
OPEN_VOCABULARY_DETECTION = open_vocabulary_detection.TASK.NAME
REGION_TO_CATEGORY = region_to_category.TASK.NAME
REGION_TO_DESCRIPTION = region_to_description.TASK.NAME
REGION_TO_OCR = region_to_ocr.TASK.NAME
REGION_TO_SEGMENTATION = region_to_segmentation.TASK.NAME

__all__ = [
    "CAPTION",
    "CLASSIFICATION",
    "DENSE_REGION_CAPTION",
    "DETECTION",
    "GROUNDING",
    "LANGUAGE_TASKS",
    "OCR",
    "OPEN_VOCABULARY_DETECTION",
    "REGION_PROPOSAL",
    "REGION_TASKS",
    "REGION_TO_CATEGORY",
    "REGION_TO_DESCRIPTION",
    "REGION_TO_OCR",
    "REGION_TO_SEGMENTATION",
    "SEGMENTATION",
    "TABLE",
    "TASKS",
    "VQA",
    "Task",
    "TrainColumns",
    "all_tasks",
    "get",
    "names",
    "ordered",
]


def get(name: str) -> Task:
    """The task called `name`; an unknown name raises KeyError listing the known ones."""
    try:
        return TABLE[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def names() -> tuple[str, ...]:
    return TASKS


def all_tasks() -> tuple[Task, ...]:
    """Every task, in the table's order."""
    return tuple(TABLE.values())


def ordered(present: object) -> list[str]:
    """The known task names among `present` (any container of names) in the table's order, then
    any unknown ones sorted."""
    names_ = list(present)  # type: ignore[call-overload]
    return [t for t in TASKS if t in names_] + sorted(t for t in names_ if t not in TABLE)
