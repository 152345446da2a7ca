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

Symlinks are followed only where their real target lies inside `root` (paths.outside, the check
annotation paths pass), and each real folder is read once: the folders reached without a symlink
first, then those a symlink leads to, so a link into another class's folder cannot label its
images twice, and a link back up the tree cannot read it again (a loop). What a symlink reaches
otherwise is not read and is counted as one skip per symlink: "symlink out of the root" (to a
folder or an image), "symlink loop" (it resolves to nothing), "folder read already" (a symlinked
folder whose real folder was read). A class folder that is such a symlink is no class.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import DataError
from pipeline.records import Example, Tally
from pipeline.sources import register
from pipeline.sources.context import SourceContext
from pipeline.sources.images import check_image, prefetch_checks, read_data_file, read_json
from pipeline.sources.paths import OUT_OF_ROOT, outside
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


FOLDER_READ_ALREADY = "folder read already"


def _list_images(root: Path, tally: Tally) -> tuple[list[str], dict[str, list[str]], int]:
    """The classes (sorted), the relative POSIX paths of each class's image files (sorted), and
    how many other files were ignored; see the module docstring for symlinks."""
    read = {os.path.realpath(root)}  # real folders read: root first, so a link back to it is refused
    linked: list[tuple[str, str]] = []  # (path under root, class) of the symlinked folders found
    classes: list[str] = []
    ignored = 0
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if why := _refused(entry, root):
                tally.skip(why, entry.name)
            elif entry.is_dir():
                classes.append(entry.name)
                if entry.is_symlink():  # a class folder that is a symlink is read with the others
                    linked.append((entry.name, entry.name))
            else:
                ignored += 1  # a file directly under root belongs to no class
    found: dict[str, list[str]] = {c: [] for c in classes}

    def read_tree(top: str, cls: str) -> None:
        """Read the folder root/top and the folders under it that are not symlinks; symlinked
        folders are put in `linked`, to be read once every folder reached without one is."""
        nonlocal ignored
        todo = [(top, os.path.realpath(os.path.join(root, top)))]
        while todo:
            rel, real = todo.pop()
            if real in read:
                tally.skip(FOLDER_READ_ALREADY, f"{rel} (the folder {real})")
                continue
            read.add(real)
            with os.scandir(os.path.join(root, rel)) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    child = f"{rel}/{entry.name}"
                    if entry.name.startswith("."):  # .ipynb_checkpoints and the like
                        ignored += not entry.is_dir()
                    elif why := _refused(entry, root):
                        tally.skip(why, child)
                    elif entry.is_symlink() and entry.is_dir():
                        linked.append((child, cls))
                    elif entry.is_dir():
                        todo.append((child, os.path.join(real, entry.name)))
                    elif _is_image(entry.name):
                        found[cls].append(child)
                    else:
                        ignored += 1

    class_links = {rel for rel, _ in linked}
    for cls in classes:
        if cls not in class_links:
            read_tree(cls, cls)
    for rel, cls in linked:  # grows as the symlinked folders are read
        read_tree(rel, cls)
    return classes, {c: sorted(f) for c, f in found.items()}, ignored


def _refused(entry: os.DirEntry, root: Path) -> str | None:
    """Why a symlink is not followed (the skip reason): it leads out of the root to a folder or an
    image, or round a loop. None for anything else: a plain entry, a symlink that stays inside, one
    out of the root that would not be read anyway (a file that is no image: ignored as such)."""
    if not entry.is_symlink():
        return None
    why = outside(root, entry.path)
    if why == OUT_OF_ROOT and not (entry.is_dir() or _is_image(entry.name)):
        return None
    return why


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


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

    classes, images, ignored = _list_images(root, ctx.tally)
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
    for cls in classes:
        if not images[cls]:
            logger.warning("class folder %s has no images", root / cls)
        files.extend((rel, cls) for rel in images[cls])
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
