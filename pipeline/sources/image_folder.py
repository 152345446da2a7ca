"""An ImageFolder tree (`root/<class>/<images>`) -> classification Examples.

Every non-hidden folder directly under `root` is a class; its images are found recursively
(extensions jpg jpeg png bmp gif webp tif tiff, any case). Order is deterministic: classes by
folder name, then files by relative path. Example id = the POSIX path relative to `root`
(e.g. "n01440764/ILSVRC2012_val_00000293.JPEG"), label = the folder name, or its entry in
`label_map` / `label_map_file` (e.g. Imagenette's "n01440764" -> "tench"). categories = every
class label, in folder-name order (duplicates from a many-to-one map removed).

A label map file is JSON (`{"n01440764": "tench", ...}`) or text with one "key name" pair per
line, split at the first whitespace ("n01440764 tench, Tinca tinca" -> "tench, Tinca tinca");
blank lines and lines starting with "#" are ignored. `label_map` entries override the file's.
When a map is given it must cover every class folder (an unmapped folder is a DataError, since
a half-applied map mixes two naming schemes); extra entries are fine.

Files that are not images by extension, hidden files, and files directly under `root` are
ignored (and logged at debug level). Skipped and counted: unusable image files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import DataError
from pipeline.records import Example
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import check_image, prefetch_checks, read_data_file, read_json
from pipeline.tasks import CLASSIFICATION

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def read_label_map(path: Path) -> dict[str, str]:
    """A label map from JSON (an object of strings) or "key name" text lines."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = read_json(path)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise DataError("a JSON label map must be an object mapping folder names to strings", file=path)
        return {str(k): v for k, v in data.items()}
    try:
        text = read_data_file(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text: {e}", file=path) from None
    mapping: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"expected 'key name', got {line!r}", file=path, record=f"line {lineno}")
        if parts[0] in mapping:
            raise DataError(f"duplicate key {parts[0]!r}", file=path, record=f"line {lineno}")
        mapping[parts[0]] = parts[1].strip()
    return mapping


def _images_under(folder: Path, root: Path) -> tuple[list[str], int]:
    """Relative POSIX paths of the image files under `folder` (sorted) and how many files were ignored."""
    found: list[str] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # .ipynb_checkpoints and the like
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath, name).relative_to(root).as_posix())
            else:
                ignored += 1
    return sorted(found), ignored


@register("image_folder")
def read_image_folder(
    ctx: SourceContext,
    *,
    root: Path,
    label_map: dict[str, str] | None = None,
    label_map_file: Path | None = None,
) -> Iterator[Example]:
    """Yield one classification Example per image file under root/<class>/."""
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise DataError("not a directory", file=root)
    mapping = read_label_map(label_map_file) if label_map_file is not None else {}
    mapping.update(label_map or {})

    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if mapping:
        unmapped = [c for c in classes if c not in mapping]
        if unmapped:
            raise DataError(
                f"{len(unmapped)} class folder(s) have no entry in the label map, e.g. {unmapped[:5]}",
                file=label_map_file if label_map_file is not None else root,
                record=unmapped[0],
                field="label_map",
            )
    labels = {c: mapping.get(c, c) for c in classes}
    categories = list(dict.fromkeys(labels[c] for c in classes))  # shared by every Example

    files: list[tuple[str, str]] = []
    ignored = sum(1 for e in os.scandir(root) if e.is_file())
    for cls in classes:
        found, n_ignored = _images_under(root / cls, root)
        ignored += n_ignored
        if not found:
            logger.warning("class folder %s has no images", root / cls)
        files.extend((rel, cls) for rel in found)
    if ignored:
        logger.debug("%s: ignored %d files that are not images in class folders", root, ignored)
    if not files:
        raise DataError(
            f"no images found: expected root/<class>/<image> with extensions {sorted(IMAGE_EXTENSIONS)}",
            file=root,
        )

    prefetch_checks((str(root / rel) for rel, _ in files), ctx)
    for rel, cls in files:
        path = root / rel
        size = check_image(path, ctx, record=rel)
        if size is None:
            continue
        yield ctx.example(rel, path, size, task=CLASSIFICATION, label=labels[cls], categories=categories)
