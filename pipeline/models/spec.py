"""What a trained model must carry to reproduce its outputs anywhere: `uvft.json`.

Written into every run folder at the end of training, into merged exports and into what `uvft push`
uploads. It records the model family (which format module renders prompts and parses outputs),
the base model, the adapter method, the location-token convention, and per task the prompt the
model was trained on with one example target, plus the vocabularies prompts depend on (PaliGemma's
`detect a ; b` lists the source's categories in order; closed-set classification scores the
class list). `uvft predict` and `load_model` render prompts from it through the format module,
so inference writes exactly the prompts training wrote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline import formats, tasks
from pipeline.errors import UvftError
from pipeline.formats import reserved
from pipeline.records import TASKS
from pipeline.tasks.task import PromptInputs

SPEC_FILE = "uvft.json"


@dataclass
class TaskSpec:
    """One task as the model was trained on it: its prompt (with `{question}` for VQA), one
    training target, the sources it came from, and the class / category list prompts use."""

    prompt: str
    example_target: str
    sources: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # classification classes, detection categories


@dataclass
class ModelSpec:
    family: str
    base_model: str
    method: str  # lora | full | merged
    tasks: dict[str, TaskSpec]
    location_tokens: dict[str, Any]
    uvft_version: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    def save(self, folder: Path) -> Path:
        path = Path(folder) / SPEC_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    def task(self, task: str) -> TaskSpec:
        if task not in self.tasks:
            raise UvftError(
                f"this model was not trained on task {task!r}; it knows: {', '.join(sorted(self.tasks))}"
            )
        return self.tasks[task]

    def prompt(
        self,
        task: str,
        *,
        question: str | None = None,
        classes: Sequence[str] | None = None,
        phrase: str | None = None,
        language: str | None = None,
        level: str | None = None,
        region: Sequence[float] | None = None,
        image_size: tuple[int, int] = (1, 1),
    ) -> str:
        """The exact prompt training wrote for `task`, rendered by the family's format module.

        PaliGemma's detection prompt lists categories: `classes` (open vocabulary) or the
        training vocabulary. A VQA prompt needs `question`; grounding and segmentation need
        `phrase`; caption and VQA take a `language` (PaliGemma's prompts name it; default "en"),
        caption a `level` (brief, detailed, paragraph); the region_to_* tasks need `region` (x1, y1,
        x2, y2 in pixels of an image of `image_size`, which its location tokens depend on).
        A question, phrase or class holding a special token of the family is a DataError.
        OCR uses the prompt it was trained with (Florence-2: `<OCR>` or `<OCR_WITH_REGION>`).
        """
        spec = self.task(task)
        if level is not None and task != tasks.CAPTION:
            raise UvftError(f"a level is only for captions (task {task})")
        given = PromptInputs(
            question,
            list(classes) if classes else list(spec.classes),
            phrase,
            language,
            level,
            region,
            (int(image_size[0]), int(image_size[1])),
        )
        example = tasks.get(task).prompt_example(given)
        if example is None:  # the task predicts with the prompt it was trained with
            return spec.prompt
        fmt = formats.get(self.family)
        # what a person asks is checked as training text was (line breaks as spaces), and refused
        # with one line naming the field when it holds one of the family's special tokens
        return fmt.render(reserved.checked(example, fmt.RESERVED, self.family))[0]


def weights_folder(folder: Path) -> Path:
    """Where a run folder keeps its weights: <run>/model for a full fine-tune (adapter.method:
    full), else the folder itself (an adapter, a merged export, any model folder)."""
    folder = Path(folder)
    full_run = not (folder / "config.json").is_file() and (folder / "model" / "config.json").is_file()
    return folder / "model" if full_run else folder


def load_spec(folder: Path) -> ModelSpec | None:
    """The folder's uvft.json, or None when it has none."""
    path = Path(folder) / SPEC_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["tasks"] = {k: TaskSpec(**v) for k, v in raw["tasks"].items()}
        return ModelSpec(**raw)
    except (ValueError, TypeError, KeyError) as e:
        raise UvftError(f"{path}: not a valid uvft.json ({e})") from None


def spec_from_records(
    family: str, base_model: str, method: str, train: Mapping[str, Sequence[Any]] | Any
) -> ModelSpec:
    """A ModelSpec from the training split: per task the first record's prompt and target, the
    sources in order of first appearance, and the first record's class / category list (the one
    prompts were rendered with). `train` is a datasets.Dataset (or a dict of its columns)."""
    from pipeline import __version__

    tasks_col, sources_col = list(train["task"]), list(train["source"])
    first: dict[str, int] = {}
    sources: dict[str, list[str]] = {}
    for i, (task, source) in enumerate(zip(tasks_col, sources_col, strict=True)):
        first.setdefault(task, i)
        if source not in sources.setdefault(task, []):
            sources[task].append(source)
    specs: dict[str, TaskSpec] = {}
    for task in (t for t in TASKS if t in first):
        row = train[first[task]]
        template = tasks.get(task).template_example(row.get("language"))
        specs[task] = TaskSpec(
            prompt=formats.get(family).render(template)[0] if template is not None else row["prompt"],
            example_target=row["target"],
            sources=sources[task],
            classes=list(row["categories"] or []) if tasks.get(task).VOCABULARY else [],
        )
    return ModelSpec(
        family=family,
        base_model=str(base_model),
        method=method,
        tasks=specs,
        location_tokens=formats.get(family).LOCATIONS.describe(),
        uvft_version=__version__,
    )
