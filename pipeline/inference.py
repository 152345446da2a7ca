"""Use a trained model: `load_model(run folder | merged export | hub id)` and `Model.predict`.

Shared by `uvft predict` and the Python API (`from pipeline import load_model`). Everything that
decides an output is what `uvft eval` uses: the model is loaded by the same loader
(pipeline.loader: what it accepts is listed there), the family's format module renders the prompt
(from the model's `uvft.json`, see pipeline.models.spec) and parses the generation, the generation
config is the one pinned in the folder (greedy, `no_repeat_ngram_size=0`), images go through the
same `load_image` (EXIF orientation, grayscale / RGBA / 16-bit to RGB), and records are generated
in the same batches (pipeline.evaluation.predict). So `predict` reproduces `uvft eval`'s
generations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import loader, tasks
from pipeline.errors import UvftError
from pipeline.formats.loc import FLORENCE, PALI
from pipeline.models.spec import ModelSpec
from pipeline.tasks.task import BoxTask

ImageLike = Any  # a path (str / Path) or a PIL.Image.Image
CHUNK = 256  # images held in memory at once by predict_many


@dataclass
class Model:
    """A loaded model with what it needs to reproduce its outputs (see the module doc)."""

    model: Any
    processor: Any
    spec: ModelSpec
    generation_config: Any
    folder: Path  # where the weights were read from
    kind: str  # "adapter", "full" or "merged" (pipeline.loader.Loaded)
    mask_vae: Any = None  # the codec of masks written as codes, saved with the model (models.vqvae)

    @property
    def is_adapter(self) -> bool:
        return self.kind == "adapter"

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
        level: str | None = None,
        region: Sequence[float] | None = None,
        threshold: float | None = None,
    ) -> dict[str, Any]:
        """One image, one task: see `predict_many` for the result's fields. `phrase`: what grounding
        and segmentation locate; `language`: of a caption or answer (PaliGemma; default en);
        `level`: a caption's (brief, detailed, paragraph); `region`: the x1, y1, x2, y2 box in
        pixels a region_to_* task asks about; `threshold`: the lowest box score kept (detection,
        grounding)."""
        if threshold is not None and not isinstance(tasks.get(task), BoxTask):
            raise UvftError(f"a threshold is for the tasks answered with boxes ({', '.join(BOX_TASKS)})")
        item = {
            "image": image,
            "task": task,
            "question": question,
            "classes": classes,
            "phrase": phrase,
            "language": language,
            "level": level,
            "region": region,
        }
        return self.predict_many([item], progress=False, threshold=threshold)[0]

    def predict_many(
        self,
        items: Iterable[dict[str, Any]],
        *,
        batch_size: int = 16,
        progress: bool = True,
        threshold: float | None = None,
    ) -> list[dict[str, Any]]:
        """Predict for items `{"image", "task", "question"?, "classes"?, "phrase"?, "language"?,
        "level"?, "region"?}`, batched by task.

        Each result has `task`, `prompt`, `generated_text`, `image_size` ([width, height] after
        EXIF orientation), `parse_errors`, and per task: `caption`; `answer`; `objects`
        (detection, grounding: `[{"bbox": [x1, y1, x2, y2] in image pixels, "label", "score"}]`);
        `label` (closed-set over `classes`, else the training class list, else the generated
        text), `generated_label` and `scores` (log-likelihood of each class); `polygons`
        (segmentation: flat `[x1, y1, x2, y2, ...]` lists in pixels); `text` and `regions` (ocr).

        Detection with `classes` keeps to them (Florence-2's `<OD>` does not name them, and a model
        may write a class it was not asked for), and `threshold` drops boxes scoring below it
        (detection, grounding): what either drops is listed in the result's `dropped`
        (`[{"bbox", "label", "score", "reason"}]`), present whenever a filter applied.
        """
        from tqdm.auto import tqdm

        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise UvftError(f"threshold {threshold:g}: a box score is between 0 and 1")
        items = list(items)
        results: list[dict[str, Any]] = []
        bar = tqdm(total=len(items), desc="predict", unit=" img", disable=not progress)
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            results.extend(self._predict_chunk(chunk, start, batch_size, threshold))
            bar.update(len(chunk))
        bar.close()
        return results

    def _predict_chunk(
        self, items: list[dict[str, Any]], offset: int, batch_size: int, threshold: float | None
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
                level=item.get("level"),
                region=item.get("region"),
                image_size=image.size,
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
                    "_classes": classes,
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
            mask_vae=self.mask_vae,
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
            task = tasks.get(r["task"])
            res.update(task.result(o["parsed"], closed.get(j)))
            if isinstance(task, BoxTask):
                res = task.keep(res, classes=r["_classes"], threshold=threshold)
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
    """Load a run folder, a merged export or a hub id (pipeline.loader) for prediction.

    device: "cpu", "cuda", ... (None: CUDA when available, else the CPU).
    """
    m = loader.load(source, revision=revision, token=token, device=device)
    return Model(
        model=m.model,
        processor=m.processor,
        spec=m.spec,
        generation_config=m.generation_config,
        folder=m.folder,
        kind=m.kind,
        mask_vae=m.mask_vae,
    )


# ---------------------------------------------------------------------------- `uvft predict` I/O

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
BOX_TASKS = tuple(t.NAME for t in tasks.all_tasks() if isinstance(t, BoxTask))
SHOWN_CHARS = 80  # of an unparseable output's start and end in the text output


def parse_classes(values: Sequence[str] | None) -> list[str] | None:
    """`--classes` as given: one value is a comma-separated list; a repeated flag gives one name
    per value, taken whole, so a name may hold a comma (`--classes "salt, fine" --classes pepper`)."""
    if not values:
        return None
    names = [c for v in values for c in (v.split(",") if len(values) == 1 else [v])]
    names = [" ".join(c.split()) for c in names]
    return list(dict.fromkeys(c for c in names if c)) or None


def read_items(
    path: Path,
    task: str | None,
    *,
    question: str | None = None,
    classes: Sequence[str] | None = None,
    phrase: str | None = None,
    language: str | None = None,
    level: str | None = None,
    region: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """What to predict on: one image, a folder of images (sorted, not recursive), a text file of
    image paths (one a line; relative to the file's folder; `#` comments), or JSON lines
    `{"image", "task"?, "question"?, "classes"?, "phrase"?, "language"?, "level"?, "region"?}`
    (paths relative to the file's folder). The command line's task / question / classes (a list,
    or one comma-separated string) / phrase / language / level / region fill what a line does not
    say."""
    from pipeline.sources.images import parse_json

    path = Path(path)
    class_list = parse_classes([classes]) if isinstance(classes, str) else list(classes or []) or None

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
            "level": given.get("level") or level,
            "region": given.get("region") or region,
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
            names = row.get("classes")
            if names is not None and not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
                raise UvftError(f"{path}: line {n}: field 'classes' must be a list of names")
            box = row.get("region")
            if box is not None and not (
                isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)
            ):
                raise UvftError(
                    f"{path}: line {n}: field 'region' must be 4 numbers, x1, y1, x2, y2 in pixels"
                )
            names = ("task", "question", "classes", "phrase", "language", "level", "region")
            given = {k: row.get(k) for k in names}
            items.append(item(path.parent / row["image"], f"{path}: line {n}", **given))
        if not items:
            raise UvftError(f"{path}: no lines")
        return items
    return [item(path, str(path))]


def format_prediction(result: dict[str, Any]) -> str:
    """A prediction as a person reads it. An output that did not parse is shown, shortened to its
    start and end when long (a runaway generation is hundreds of location tokens); the result
    itself (`--json`) keeps it whole."""
    text = tasks.get(result["task"]).describe(result)
    if result.get("parse_errors"):
        n, raw = result["parse_errors"], result["generated_text"]
        text += f"\n({n} piece(s) of the output could not be parsed: {shorten(raw)})"
    return text


def shorten(raw: str, keep: int = SHOWN_CHARS) -> str:
    """`raw` quoted, or its first and last `keep` characters with what lies between counted."""
    if len(raw) <= 2 * keep + 40:  # shortening must save more than it adds
        return repr(raw)
    locations = len(FLORENCE.pattern.findall(raw)) + len(PALI.pattern.findall(raw))
    return (
        f"{raw[:keep]!r} … {raw[-keep:]!r}; {len(raw):,} characters, {locations:,} location tokens, "
        "shortened (--json prints it whole)"
    )


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
                "mask": result.get("mask"),
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
