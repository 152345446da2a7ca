"""Confining the image paths an annotation file names to its dataset's folder: `confine` for one
path, `Paths` for a whole build (each folder resolved and listed once).

An annotation file decides which files a reader opens, so it must not reach outside its dataset:
absolute paths, `..` that climbs out, symlinks whose target lies outside the root, and symlink
loops (whose target cannot be known) are refused with a DataError naming the annotation file, the
record and the field. `outside` is the same judgement for a path a reader found by listing a
folder (image_folder), which counts what it refuses instead.
"""

from __future__ import annotations

import errno
import functools
import os
import typing
from pathlib import Path
from typing import Any

from pipeline.errors import DataError

# Marks a reader parameter that names a folder the reader writes (a cache), not one it reads, as
# `image_cache: Annotated[Path, WRITTEN] | None`: `uvft check` does not ask for it to exist.
WRITTEN = "written by the reader"


def is_written(hint: Any) -> bool:
    """Whether a parameter's type hint (typing.get_type_hints(reader, include_extras=True)) is
    marked WRITTEN, alone or inside a union."""
    if typing.get_origin(hint) is typing.Annotated:
        return WRITTEN in hint.__metadata__
    return any(is_written(arg) for arg in typing.get_args(hint))


# Why `outside` refuses a path: the skip reasons image_folder counts
OUT_OF_ROOT = "symlink out of the root"
SYMLINK_LOOP = "symlink loop"


class SymlinkLoop(OSError):
    """A path that goes round a symlink loop: it resolves to nothing, inside the root or out."""


def resolve(path: str) -> str:
    """`os.path.realpath(path)`, raising SymlinkLoop where the path goes round a symlink loop (a
    plain realpath returns the loop's own path there, which looks inside the root). A path that
    does not exist resolves as far as it exists, as realpath does."""
    try:
        return os.path.realpath(path, strict=True)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SymlinkLoop(errno.ELOOP, "symlink loop", path) from None
        return os.path.realpath(path)  # missing, or not a folder on the way: checked when opened


def outside(root: Path | str, path: Path | str) -> str | None:
    """Why `path`, which lies lexically under `root`, may not be read: OUT_OF_ROOT (its real target
    is outside the real `root`) or SYMLINK_LOOP; None when it stays inside."""
    try:
        real = resolve(os.fspath(path))
    except SymlinkLoop:
        return SYMLINK_LOOP
    return None if _within(real, _real_root(os.path.abspath(root))) else OUT_OF_ROOT


def confine(root: Path, relpath: str, *, file: str | Path, record: str | int, field: str) -> Path:
    """Return `root / relpath` (absolute, normalised), refusing paths that leave `root`.

    An annotation file decides which files we open, so it must not reach outside its dataset:
    absolute paths, `..` that climbs out, symlinks whose target lies outside `root` and symlink
    loops are all refused with a DataError naming the annotation file, the record and the field.
    """
    return Path(_confine(root, relpath, resolve, file=file, record=record, field=field))


class Paths:
    """`confine` for one build: each directory is resolved and listed once, so a file name costs no
    lstat. A name the listing shows as a symlink (or any name in a folder that cannot be listed)
    is resolved in full (`resolve`), as `confine` does; `..` and absolute paths are refused before
    any of this. Symlinks created after a folder was listed are not seen: keep one per build.
    """

    def __init__(self) -> None:
        self._dirs: dict[str, tuple[str, frozenset[str] | None]] = {}  # dir -> (resolved, symlinks)

    def confine(
        self, root: Path | str, relpath: str, *, file: str | Path, record: str | int, field: str
    ) -> str:
        """`confine`, as a string (what an Example holds)."""
        return _confine(root, relpath, self._realpath, file=file, record=record, field=field)

    def _realpath(self, path: str) -> str:
        folder, name = os.path.split(path)
        known = self._dirs.get(folder)
        if known is None:
            try:
                with os.scandir(folder) as entries:  # d_type: symlinks known without an lstat each
                    links: frozenset[str] | None = frozenset(e.name for e in entries if e.is_symlink())
            except OSError:  # missing or not a folder: resolve every name in it in full
                links = None
            known = self._dirs[folder] = (resolve(folder), links)
        real_folder, links = known
        if links is None or name in links or not name:
            return resolve(path)
        return os.path.join(real_folder, name)  # not a symlink: resolving it changes nothing


def _confine(
    root: Path | str, relpath: str, realpath, *, file: str | Path, record: str | int, field: str
) -> str:
    if not isinstance(relpath, str) or not relpath.strip():
        raise DataError(
            f"image path must be a non-empty string, got {relpath!r}", file=file, record=record, field=field
        )
    # "/x", "\\server\x", "C:\x", "C:x": absolute or drive-relative somewhere. String checks cost a
    # tenth of PurePath parsing, which shows at 100k+ images.
    if relpath.startswith(("/", "\\")) or (len(relpath) > 1 and relpath[1] == ":" and relpath[0].isalpha()):
        raise DataError(
            f"absolute image path {relpath!r} refused: paths must be relative to {root}",
            file=file,
            record=record,
            field=field,
        )
    root_str = os.fspath(root)
    root_str = _abs_root(root_str) if os.path.isabs(root_str) else os.path.abspath(root_str)
    candidate = os.path.normpath(os.path.join(root_str, relpath))
    # lexical check first (cheap, and catches `..` even when the target does not exist), then
    # the resolved one, which catches symlinks pointing out of the root
    try:
        inside = _within(candidate, root_str) and _within(realpath(candidate), _real_root(root_str))
    except SymlinkLoop:
        raise DataError(
            f"image path {relpath!r} is a symlink loop: it never reaches a file",
            file=file,
            record=record,
            field=field,
        ) from None
    if not inside:
        raise DataError(
            f"image path {relpath!r} escapes the dataset root {root}", file=file, record=record, field=field
        )
    return candidate


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


@functools.lru_cache(maxsize=64)
def _abs_root(root: str) -> str:
    return os.path.abspath(root)  # absolute roots only: a relative one depends on the cwd


@functools.lru_cache(maxsize=64)
def _real_root(root: str) -> str:
    # one root serves ~100k images: resolve it once
    return os.path.realpath(root)
