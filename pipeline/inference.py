"""Use a trained model: `load_model(run folder | merged export | hub id)` and `Model.predict`.

Shared by `uvft predict` and the Python API (`from pipeline import load_model`). Everything that
decides an output is what `uvft eval` uses: the family's format module renders the prompt (from
the model's `uvft.json`, see pipeline.models.spec) and parses the generation, the generation config
is the one pinned in the folder (greedy, `no_repeat_ngram_size=0`), images go through the same
`load_image` (EXIF orientation, grayscale / RGBA / 16-bit to RGB), and records are generated in
the same batches (pipeline.evaluation.predict). So `predict` reproduces `uvft eval`'s generations.

What `load_model` accepts:

- a run folder of a LoRA run (`adapter_config.json`; the base named in it or in `uvft.json`), or
  of a full fine-tune (`adapter.method: full` keeps the model in `<run>/model`), or `<run>/best`;
- a merged export (`uvft export RUN --merged OUT`: `config.json` + safetensors, no peft);
- a hub id (`me/demo`, with `revision`): downloaded with `snapshot_download`, then as above.

Weights are read from safetensors only (a folder holding only `adapter_model.bin` is refused) and
remote code never runs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import models, tasks
from pipeline.errors import UvftError
from pipeline.families import FAMILIES
from pipeline.models.spec import ModelSpec, load_spec, spec_from_records, weights_folder

logger = logging.getLogger(__name__)

ImageLike = Any  # a path (str / Path) or a PIL.Image.Image
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CHUNK = 256  # images held in memory at once by predict_many


@dataclass
class Model:
    """A loaded model with what it needs to reproduce its outputs (see the module doc)."""

    model: Any
    processor: Any
    spec: ModelSpec
    generation_config: Any
    folder: Path  # where the weights were read from
    is_adapter: bool

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def tasks(self) -> list[str]:
        return list(self.spec.tasks)

    def predict(
        self,
        image: ImageLike,
        task: str,
        *,
        question: str | None = None,
        classes: Sequence[str] | None = None,
        phrase: str | None = None,
        language: str | None = None,
    ) -> dict[str, Any]:
        """One image, one task: see `predict_many` for the result's fields. `phrase`: what grounding
        and segmentation locate; `language`: of a caption or answer (PaliGemma; default en)."""
        item = {
            "image": image,
            "task": task,
            "question": question,
            "classes": classes,
            "phrase": phrase,
            "language": language,
        }
        return self.predict_many([item], progress=False)[0]

    def predict_many(
        self, items: Iterable[dict[str, Any]], *, batch_size: int = 16, progress: bool = True
    ) -> list[dict[str, Any]]:
        """Predict for items `{"image", "task", "question"?, "classes"?, "phrase"?, "language"?}`,
        batched by task.

        Each result has `task`, `prompt`, `generated_text`, `image_size` ([width, height] after
        EXIF orientation), `parse_errors`, and per task: `caption`; `answer`; `objects`
        (detection, grounding: `[{"bbox": [x1, y1, x2, y2] in image pixels, "label", "score"}]`);
        `label` (closed-set over `classes`, else the training class list, else the generated
        text), `generated_label` and `scores` (log-likelihood of each class); `polygons`
        (segmentation: flat `[x1, y1, x2, y2, ...]` lists in pixels); `text` and `regions` (ocr).
        """
        from tqdm.auto import tqdm

        items = list(items)
        results: list[dict[str, Any]] = []
        bar = tqdm(total=len(items), desc="predict", unit=" img", disable=not progress)
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            results.extend(self._predict_chunk(chunk, start, batch_size))
            bar.update(len(chunk))
        bar.close()
        return results

    def _predict_chunk(
        self, items: list[dict[str, Any]], offset: int, batch_size: int
    ) -> list[dict[str, Any]]:
        from pipeline.evaluation.predict import closed_set, generate
        from pipeline.sources.images import load_image

        rows = []
        for i, item in enumerate(items, start=offset):
            task = item.get("task")
            if task is None:
                raise UvftError(f"item {i}: no task; known: {', '.join(self.tasks)}")
            classes = list(item.get("classes") or [])
            where = item["image"] if not hasattr(item["image"], "size") else f"item {i}"
            try:
                image = load_image(item["image"])
            except (OSError, ValueError) as e:
                raise UvftError(f"cannot read image {where}: {e}") from None
            prompt = self.spec.prompt(  # a task the model was not trained on is refused here
                task,
                question=item.get("question"),
                classes=classes or None,
                phrase=item.get("phrase"),
                language=item.get("language"),
            )
            # a closed-set task's candidates: the given classes, else the training classes
            labels = classes or (self.spec.task(task).classes if tasks.get(task).CLOSED_SET else [])
            rows.append(
                {
                    "id": str(i),
                    "source": "predict",
                    "task": task,
                    "prompt": prompt,
                    "image": image,
                    "image_size": list(image.size),
                    "categories": labels,
                    "_where": str(where),
                }
            )
        outs = generate(
            self.model,
            self.processor,
            self.family,
            rows,
            generation_config=self.generation_config,
            batch_size=batch_size,
            progress=False,
        )
        # closed-set classification over the given or the training classes, as uvft eval scores it
        scored = [j for j, r in enumerate(rows) if tasks.get(r["task"]).CLOSED_SET and r["categories"]]
        chosen = closed_set(
            self.model,
            self.processor,
            self.family,
            [rows[j] for j in scored],
            batch_size=batch_size,
            progress=False,
        )
        closed = {scored[k]: c for k, c in chosen.items()}
        results = []
        for j, (r, o) in enumerate(zip(rows, outs, strict=True)):
            res: dict[str, Any] = {
                "image": r["_where"],
                "task": r["task"],
                "prompt": r["prompt"],
                "generated_text": o["generated_text"],
                "image_size": r["image_size"],
                "parse_errors": o["parsed"]["errors"],
            }
            res.update(tasks.get(r["task"]).result(o["parsed"], closed.get(j)))
            results.append(res)
        return results


# ---------------------------------------------------------------------------- loading


def load_model(
    source: str | Path,
    *,
    revision: str | None = None,
    token: str | None = None,
    device: str | None = None,
) -> Model:
    """Load a run folder, a merged export or a hub id (see the module doc) for prediction.

    device: "cpu", "cuda", ... (None: CUDA when available, else the CPU).
    """
    import torch

    folder = resolve_source(source, revision=revision, token=token)
    weights = weights_folder(folder)
    spec = spec_for(weights)
    family = models.get(spec.family)
    is_adapter = (weights / "adapter_config.json").is_file()
    if is_adapter:
        if not (weights / "adapter_model.safetensors").is_file():
            raise UvftError(f"{weights} has no adapter_model.safetensors (uvft loads safetensors only)")
        base = resolve_base(adapter_base(weights, spec), weights)
        model, processor = family.load(base)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(weights))
        processor = _processor(weights, family) or processor
    else:
        model, processor = family.load(weights)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    return Model(
        model=model,
        processor=processor,
        spec=spec,
        generation_config=pinned_generation_config(weights, model),
        folder=weights,
        is_adapter=is_adapter,
    )


def resolve_source(source: str | Path, *, revision: str | None = None, token: str | None = None) -> Path:
    """A local folder as it is, or a hub id downloaded with snapshot_download."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UvftError(f"{path} is a file; give a run folder, an export folder or a hub id")
        return path
    if not HUB_ID.match(str(source)):
        raise UvftError(f"{source}: no such folder (and not a hub id of the form namespace/name)")
    from huggingface_hub import snapshot_download

    from pipeline.hub import hub_errors

    with hub_errors(str(source), token=token):
        return Path(snapshot_download(repo_id=str(source), revision=revision, token=token))


def adapter_base(folder: Path, spec: ModelSpec | None = None) -> str:
    """The base model an adapter folder names: uvft.json's, else adapter_config.json's."""
    if spec is not None and spec.base_model:
        return spec.base_model
    config = json.loads((folder / "adapter_config.json").read_text())
    return str(config.get("base_model_name_or_path") or "")


def resolve_base(name: str, folder: Path) -> str:
    """A base model name as from_pretrained takes it: an existing folder, or a hub id."""
    if name and Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if HUB_ID.match(name):
        return name
    raise UvftError(
        f"the base model of {folder}, {name!r}, is a folder that is not on this machine "
        "(a local path of the machine that trained it); publish it with `uvft push --base-repo-id` "
        "or `--merged`, or run where it exists"
    )


def _processor(folder: Path, family: Any) -> Any | None:
    """The processor saved next to the weights (it carries the run's tokenizer), if there is one."""
    if not (folder / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(folder))


def pinned_generation_config(folder: Path, model: Any) -> Any:
    """The folder's generation_config.json (pinned at training), else the pinned default."""
    from transformers import GenerationConfig

    if (folder / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(str(folder))
    from pipeline.models.generation import generation_config

    return generation_config(model, max_new_tokens=256)


def spec_for(folder: Path) -> ModelSpec:
    """The folder's uvft.json; for a run trained before uvft wrote one (or `<run>/best`), the
    parent run's, else one rebuilt from the run's recipe.yaml and its (cached) records."""
    for where in (folder, folder.parent):
        spec = load_spec(where)
        if spec is not None:
            return spec
    for where in (folder, folder.parent):
        if (where / "recipe.yaml").is_file():
            return _spec_from_run(where)
    family = _family_from_config(folder)
    raise UvftError(
        f"{folder} has no uvft.json (nor a recipe.yaml to rebuild it from): uvft cannot tell which "
        f"prompts this {family or 'model'} was trained on; export or push it with uvft"
    )


def _spec_from_run(run_dir: Path) -> ModelSpec:
    from pipeline.data.build import build
    from pipeline.recipe import load_recipe

    recipe = load_recipe(run_dir / "recipe.yaml")
    logger.info("%s has no uvft.json: rebuilding it from its recipe and records", run_dir)
    records = build(recipe, progress=False).load()
    summary = run_dir / "summary.json"
    base = recipe.model.id or (json.loads(summary.read_text())["base_model"] if summary.is_file() else "")
    return spec_from_records(
        recipe.model.family, base, recipe.adapter.method, records[recipe.data.train_split]
    )


def _family_from_config(folder: Path) -> str | None:
    config = folder / "config.json"
    if not config.is_file():
        return None
    model_type = json.loads(config.read_text()).get("model_type", "")
    return model_type if model_type in FAMILIES else None  # the families' model_type is their name


# ---------------------------------------------------------------------------- `uvft predict` I/O

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def read_items(
    path: Path,
    task: str | None,
    *,
    question: str | None = None,
    classes: str | None = None,
    phrase: str | None = None,
    language: str | None = None,
) -> list[dict[str, Any]]:
    """What to predict on: one image, a folder of images (sorted, not recursive), a text file of
    image paths (one a line; relative to the file's folder; `#` comments), or JSON lines
    `{"image", "task"?, "question"?, "classes"?, "phrase"?, "language"?}` (paths relative to the
    file's folder). The command line's task / question / classes / phrase / language fill what a
    line does not say."""
    from pipeline.sources.images import parse_json

    path = Path(path)
    class_list = [c.strip() for c in classes.split(",") if c.strip()] if classes else None

    def item(image: Path, where: str, **given: Any) -> dict[str, Any]:
        if not image.is_file():
            raise UvftError(f"{where}: image {image} does not exist")
        return {
            "image": str(image),
            "task": given.get("task") or task,
            "question": given.get("question") or question,
            "classes": given.get("classes") or class_list,
            "phrase": given.get("phrase") or phrase,
            "language": given.get("language") or language,
        }

    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UvftError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return [item(p, str(path)) for p in images]
    if not path.is_file():
        raise UvftError(f"{path} does not exist")
    if path.suffix.lower() == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [
            item(path.parent / line.strip(), f"{path}:{n}")
            for n, line in enumerate(lines, start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if path.suffix.lower() == ".jsonl":
        items = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = parse_json(line, file=path, record=f"line {n}")
            if not isinstance(row, dict) or not isinstance(row.get("image"), str):
                raise UvftError(f"{path}: line {n}: field 'image' (a path) is missing")
            if row.get("classes") is not None and not isinstance(row["classes"], list):
                raise UvftError(f"{path}: line {n}: field 'classes' must be a list of names")
            given = {k: row.get(k) for k in ("task", "question", "classes", "phrase", "language")}
            items.append(item(path.parent / row["image"], f"{path}: line {n}", **given))
        if not items:
            raise UvftError(f"{path}: no lines")
        return items
    return [item(path, str(path))]


def format_prediction(result: dict[str, Any]) -> str:
    """A prediction as a person reads it."""
    text = tasks.get(result["task"]).describe(result)
    if result.get("parse_errors"):
        n, raw = result["parse_errors"], result["generated_text"]
        text += f"\n({n} piece(s) of the output could not be parsed: {raw!r})"
    return text


def draw_prediction(image: str | Path, result: dict[str, Any]) -> Any:
    """The image (EXIF-oriented, enlarged when small) with the predicted boxes, labels and scores
    drawn, as the evaluation report draws them; other tasks get their text written on top."""
    from PIL import ImageDraw

    from pipeline.evaluation.report import render_example_image

    objects = [
        {"bbox": o["bbox"], "category": o["label"], "score": o["score"]} for o in result.get("objects", [])
    ]
    drawn = render_example_image(
        {
            "image": str(image),
            "image_size": result["image_size"],
            "references": {},
            "parsed": {
                "objects": objects,
                "polygons": result.get("polygons", []),
                "regions": result.get("regions", []),
            },
        }
    )
    if not tasks.get(result["task"]).LABELS_DRAWN:
        text = format_prediction(result).splitlines()[0]
        draw = ImageDraw.Draw(drawn)
        left, top, right, bottom = draw.textbbox((0, 0), text)
        draw.rectangle([0, 0, right - left + 6, bottom - top + 6], fill=(0, 0, 0))
        draw.text((3 - left, 3 - top), text, fill=(255, 255, 255))
    return drawn
