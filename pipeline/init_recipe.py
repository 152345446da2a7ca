"""`uvft init`: a commented recipe for a user's own data, written from their paths.

Each path is looked at, not trusted to a name: a folder of class folders is an ImageFolder (with
`train/` and `val/` inside, both splits), a `.jsonl` file is uvft's JSONL, a `.json` file is COCO
instances (its annotations have boxes), COCO captions (they have captions) or VQAv2 questions (the
annotations file beside it is found by name). A training file whose name says `train` gets the `val`
file beside it as its validation split when there is one; sources without one get a seeded tenth of
their images as validation (`data.val_fraction`). COCO's and VQAv2's image folders are found from the
first image the file names. The recipe is validated before it is written.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import UvftError
from pipeline.families import DEFAULT_FAMILY, FAMILIES, FAMILY_MODULES
from pipeline.sources.images import COCO_CAPTION, parse_json, read_json

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
TRAIN, VAL = "train", "val"


@dataclass
class Source:
    """One source of the recipe: its reader, and per split the reader's paths (absolute)."""

    name: str
    format: str
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # paths absolute
    note: str = ""  # what was found, for the recipe's comment


def init_recipe(
    paths: list[Path],
    out: Path,
    *,
    family: str = DEFAULT_FAMILY,
    model_id: str | None = None,
    force: bool = False,
) -> tuple[Path, list[Source]]:
    """Look at `paths`, write the recipe to `out`; return (out, the sources found)."""
    from pipeline.recipe import load_recipe

    if family not in FAMILIES:
        raise UvftError(f"--family {family!r}: known families are {', '.join(FAMILIES)}")
    if out.exists() and not force:
        raise UvftError(f"{out} exists: choose another file, or pass --force to replace it")
    if not paths:
        raise UvftError("give the paths of your data: annotation files, JSONL files, ImageFolder folders")
    found: list[Source] = []
    for path in paths:
        source = detect(Path(path).expanduser().resolve())
        source.name = _unique(source.name, {s.name for s in found})
        found.append(source)
    every = [p for s in found for split in s.splits.values() for p in split.values() if isinstance(p, Path)]
    root = Path(os.path.commonpath([str(p if p.is_dir() else p.parent) for p in every]))
    text = _recipe_text(found, root, out, family, model_id or FAMILY_MODULES.get(family).checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    try:
        load_recipe(tmp)  # what is written must load: a mistake of ours, not the user's, otherwise
    except Exception:
        tmp.unlink()
        raise
    tmp.replace(out)
    return out, found


def detect(path: Path) -> Source:
    """The source a path holds (see the module doc); an unknown layout is a UvftError naming it."""
    if not path.exists():
        raise UvftError(f"{path}: no such file or folder")
    if path.is_dir():
        return _image_folder(path)
    if path.suffix == ".jsonl":
        source = Source(_name(path), "jsonl", note="JSONL, one example per line")
        return _with_val(source, path, _jsonl_params)
    if path.suffix == ".json":
        return _json_source(path)
    raise UvftError(
        f"{path}: not a data set uvft knows (a folder of class folders, a .jsonl file, or COCO / VQAv2 .json)"
    )


def _image_folder(path: Path) -> Source:
    split_dirs = {s: path / s for s in (TRAIN, VAL) if _class_folders(path / s)}
    if TRAIN in split_dirs:
        source = Source(
            _name(path), "image_folder", note=f"ImageFolder, classes: {_classes(split_dirs[TRAIN])}"
        )
        source.splits = {s: {"root": p} for s, p in split_dirs.items()}
        return source
    if _class_folders(path):
        return Source(
            _name(path),
            "image_folder",
            {TRAIN: {"root": path}},
            note=f"ImageFolder, classes: {_classes(path)}",
        )
    raise UvftError(
        f"{path}: a folder uvft reads as ImageFolder holds one folder of images per class "
        "(or train/ and val/ holding those)"
    )


def _class_folders(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return [
        d
        for d in sorted(path.iterdir())
        if d.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir() if f.is_file())
    ]


def _classes(path: Path) -> str:
    names = [d.name for d in _class_folders(path)]
    return ", ".join(names[:8]) + (f" ... ({len(names)} in all)" if len(names) > 8 else "")


def _json_source(path: Path) -> Source:
    data = _read(path)
    if isinstance(data, dict) and isinstance(data.get("questions"), list):
        if _vqa_annotations(path) is None:
            raise UvftError(
                f"{path}: VQAv2 questions, but no annotations file beside it "
                "(v2_*_annotations.json of the same split)"
            )
        name = re.sub(r"(^|_)(v2|openended|questions)(?=_|$)", "", _name(path)).strip("_")
        source = Source(
            f"vqav2_{name}" if name else "vqav2", "vqav2", note=f"VQAv2, {len(data['questions'])} questions"
        )
        return _with_val(source, path, _vqa_params)
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if isinstance(annotations, list) and annotations and isinstance(annotations[0], dict):
        first = annotations[0]
        if "bbox" in first:
            n = len(data.get("categories") or [])
            kind, what = "coco_detection", f"COCO instances, {n} categor{'y' if n == 1 else 'ies'}"
        elif COCO_CAPTION in first:
            kind, what = "coco_captions", "COCO captions"
        else:
            kind = ""
        if kind:
            source = Source(_name(path), kind, note=f"{what}, {len(annotations)} annotations")
            return _with_val(source, path, lambda p: {"annotations": p, "images": _images_dir(_read(p), p)})
    raise UvftError(
        f'{path}: a JSON file uvft reads is COCO instances or captions ("annotations" with "bbox" or '
        '"caption") or VQAv2 questions ("questions")'
    )


def _jsonl_params(path: Path) -> dict[str, Path]:
    """A JSONL file, and the folder its image paths are relative to when that is not its own: the
    nearest folder above it that holds the first line's image."""
    params = {"path": path}
    try:
        with path.open("rb") as f:
            first = parse_json(next((line for line in f if line.strip()), b"{}"), file=path)
    except (OSError, ValueError):  # DataError too
        return params  # the reader says what is wrong with the file, naming the line
    image = first.get("image") if isinstance(first, dict) else None
    if isinstance(image, str) and not (path.parent / image).is_file():
        for folder in list(path.parents)[1:4]:
            if (folder / image).is_file():
                params["images"] = folder
                break
    return params


def _vqa_params(questions: Path) -> dict[str, Any]:
    annotations = _vqa_annotations(questions)
    if annotations is None:
        raise UvftError(f"{questions}: no annotations file of its split beside it")
    images = _images_dir(_read(questions), questions)
    params: dict[str, Any] = {"questions": questions, "annotations": annotations, "images": images}
    pattern = _image_pattern(images)
    if pattern is not None:
        params["image_pattern"] = pattern
    return params


def _image_pattern(folder: Path) -> str | None:
    """The pattern of VQAv2 image names in `folder` when they are not COCO's (`000042.png` ->
    `{image_id:06d}.png`); None: COCO's names, or names it cannot tell."""
    first = next((p.name for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES), None)
    match = re.fullmatch(r"(\d+)(\.\w+)", first or "")
    if match is None:
        return None
    digits, suffix = match.groups()
    return f"{{image_id:0{len(digits)}d}}{suffix}" if digits.startswith("0") else f"{{image_id}}{suffix}"


def _vqa_annotations(questions: Path) -> Path | None:
    """VQAv2's annotations beside its questions: v2_OpenEnded_mscoco_train2014_questions.json ->
    v2_mscoco_train2014_annotations.json (any name with `annotations` and the same split word)."""
    split = _split_word(questions.name)
    for candidate in sorted(questions.parent.glob("*annotations*.json")):
        if split is None or split in candidate.name:
            return candidate
    return None


def _with_val(source: Source, train: Path, params: Any) -> Source:
    """The file's reader parameters as the training split, and its `val` namesake, when it exists,
    as the validation split."""
    source.splits[TRAIN] = params(train)
    val = _val_namesake(train)
    if val is not None:
        source.splits[VAL] = params(val)
    return source


def _val_namesake(train: Path) -> Path | None:
    if TRAIN not in train.name:
        return None
    candidate = train.with_name(train.name.replace(TRAIN, VAL))
    return candidate if candidate.exists() else None


def _split_word(name: str) -> str | None:
    match = re.search(r"(train|val|test)\d*", name)
    return match.group(0) if match else None


def _images_dir(data: Any, annotation: Path) -> Path:
    """The folder holding the first image a COCO / VQAv2 file names: beside the file, or beside its
    folder (COCO keeps annotations/ and the image folders side by side); among several, the one
    named for the file's split (`instances_val.json` -> `images/val`)."""
    images = data.get("images") if isinstance(data, dict) else None
    name = images[0].get("file_name") if images and isinstance(images[0], dict) else None
    split = _split_word(annotation.name) or ""
    for base in (annotation.parent, annotation.parent.parent):
        # a folder named for the split first, then the shallower (images/val before imagefolder/val/cat)
        folders = sorted(
            _folders(base),
            key=lambda d: (split not in d.relative_to(base).parts, len(d.relative_to(base).parts), str(d)),
        )
        for folder in folders:
            if name and (folder / name).is_file():
                return folder
            if not name and split and folder.name == split and _has_images(folder):  # VQAv2: by id
                return folder
    raise UvftError(f"{annotation}: cannot find the images it names ({name or 'by image id'}) near it")


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def _folders(base: Path, depth: int = 3) -> list[Path]:
    """`base` and the folders under it, `depth` levels down at most."""
    out = [base]
    for here, dirs, _ in os.walk(base):
        level = len(Path(here).relative_to(base).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if level < depth else []
        out += [Path(here) / d for d in dirs]
    return out


def _read(path: Path) -> Any:
    return read_json(path)  # the readers' own: bounded nesting, errors that name the file


def _name(path: Path) -> str:
    """A source's name from its file or folder: the stem without its split word (`instances_train`
    -> `instances`)."""
    stem = path.name if path.is_dir() else path.stem
    stem = re.sub(r"(^|[_\-.])(train|val|test)\d*(?=$|[_\-.])", r"\1", stem.lower())
    return re.sub(r"[^a-z0-9]+", "_", stem).strip("_") or "data"


def _unique(name: str, taken: set[str]) -> str:
    n, candidate = 2, name
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def _recipe_text(found: list[Source], root: Path, out: Path, family: str, model_id: str) -> str:
    """The recipe as YAML with comments (written by hand: yaml.safe_dump drops comments)."""

    def rel(p: Path) -> str:
        return json.dumps(os.path.relpath(p, root))

    carve = any(VAL not in s.splits for s in found)
    lines = [
        f"# A recipe for your own data, written by `uvft init` from: {', '.join(s.name for s in found)}.",
        f"# Check it: `uvft check {out}`; train: `uvft finetune {out}`; evaluate: `uvft eval {out}`.",
        "# Every key is in the README (Recipes); `uvft check` names a mistyped one.",
        f"name: {_name(Path(out.stem))}",
        "model:",
        f"  family: {family}",
        f"  id: {model_id}   # a hub id or a local folder; null trains uvft's tiny stand-in (demos, tests)",
        "data:",
        f"  root: {json.dumps(str(root))}   # the paths below are relative to it",
        "  seed: 0",
    ]
    if carve:
        lines.append(
            "  val_fraction: 0.1   # sources without a val split give it a seeded tenth of their images"
        )
    lines.append("  sources:")
    for s in found:
        lines += [f"    - name: {s.name}   # {s.note}", f"      format: {s.format}", "      splits:"]
        for split, params in s.splits.items():
            inner = ", ".join(
                f"{k}: {rel(v) if isinstance(v, Path) else json.dumps(v)}" for k, v in params.items()
            )
            lines.append(f"        {split}: {{{inner}}}")
    lines += [
        "adapter:",
        "  method: lora",
        "  preset: attention_mlp   # the language model's attention and MLP layers",
        "  r: 16",
        "  alpha: 32",
        "mixture:",
        "  strategy: temperature   # task-balanced: larger sources drawn more, but not in proportion",
        "  temperature: 2.0",
        "train:",
        "  epochs: 3   # passes over the training records (or `steps:`)",
        "  batch_size: 8   # per GPU; a CPU trains a real model very slowly",
        "  lr: 1.0e-4",
        "  warmup_steps: 100",
        "  save_every: 500",
        "eval:",
        "  every: 500   # generation metrics on a validation sample in training; the best adapter in best/",
        "  per_task: 64",
        "",
    ]
    return "\n".join(lines)
