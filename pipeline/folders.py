"""Folders uvft writes: locked while written, written beside and swapped in, marked as uvft's.

Every command that produces a folder (a run, an evaluation, an export, a push staging folder, the
record cache, the demo data) goes through here, so that

- two processes never write one folder at once: `locked` holds an exclusive lock on a file
  beside it (`.NAME.lock`, flock: the kernel releases it when its holder dies, however it dies);
  the lock file names its holder, so a refusal says who holds it, and a lock left by a dead
  process is taken over with a message;
- a folder is never half-written or half-replaced: `writing` yields a folder beside the target,
  and only a complete one is swapped in (the old one moved aside first, removed last); leftovers
  of killed writers (`.NAME.tmp-PID`, `.NAME.old-PID`) are removed by the next writer, which
  holds the lock, so nobody else can be using them;
- a folder uvft did not write is never deleted without `--overwrite`: what uvft writes carries a
  marker file (`.uvft`), and a folder that holds the current directory, the home folder or a
  protected path (a run being exported) is never replaced at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pipeline.errors import UvftError

logger = logging.getLogger(__name__)

MARKER = ".uvft"  # {"written_by": "uvft eval"}: no time in it, so a folder written twice is the same
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over a file-size limit


class FolderInUse(UvftError):
    """Another live process holds the lock of a folder."""


# ----------------------------------------------------------------------------------------- locks


def lock_file(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _holder_text(what: str) -> str:
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "what": what,
            "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300],
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )


def _describe(holder: str) -> str:
    try:
        h = json.loads(holder)
        return f"`{h['what']}` (pid {h['pid']} on {h['host']}, since {h['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def locked(target: Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold the lock of `target` (a folder, which need not exist yet) while the block runs.

    Held by a live process: FolderInUse naming it, or with `wait`, wait for it (saying so once).
    Left by a dead one (the file still names a holder): taken over, with a warning. Not for
    re-entry: a process takes a folder's lock once."""
    # flock rather than the filelock package: filelock truncates the lock file whenever it opens
    # it, so the file could not name its holder for the message a refused process prints.
    target = Path(target)
    path = lock_file(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            if not wait:
                os.close(fd)
                raise FolderInUse(
                    f"{target} is being written by {holder}; wait for it to finish, or write somewhere else"
                ) from None
            logger.info("%s is being written by %s: waiting for it", target, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        # A holder that released removed the file: if ours is no longer the file at `path`, the
        # lock we hold is on an orphan, and the next process would lock the new file. Start over.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        if stale := _read(fd):
            logger.warning(
                "%s: took over the lock left by %s, which is no longer running", target, _describe(stale)
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text(what).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # still holding it: nobody can be between open and flock on this file
        os.close(fd)


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()


# ---------------------------------------------------------------------------------- ownership


def mark(folder: Path, what: str) -> None:
    """Say in `folder` that uvft wrote it (and may replace it)."""
    (Path(folder) / MARKER).write_text(json.dumps({"written_by": what}) + "\n")


def is_marked(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def check_replaceable(
    out: Path,
    *,
    option: str,
    overwrite: bool = False,
    protect: Iterable[Path] = (),
    owned: Callable[[Path], bool] | None = None,
) -> None:
    """Refuse to replace `out` when that would delete what uvft did not write.

    Never replaced: a folder holding the current directory, the home folder, the file system's
    root, or a `protect`ed path (a run being exported), nor a file that is not a folder. A
    non-empty folder without uvft's marker (or that `owned` does not recognise: folders written
    before the marker existed) is replaced only with `overwrite`, `option` naming how to ask."""
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise UvftError(f"{out} exists and is not a folder; choose another path (nothing was deleted)")
    real = out.resolve()
    for keep, why in (
        (Path.cwd(), "the current directory"),
        (Path.home(), "your home folder"),
        *((Path(p), str(p)) for p in protect),
    ):
        kept = keep.resolve()
        if real == kept or real in kept.parents or real == Path(real.anchor):
            raise UvftError(f"refusing to replace {out}: it holds {why}; choose another folder")
    if overwrite or is_marked(out) or (owned is not None and owned(out)) or not any(out.iterdir()):
        return
    raise UvftError(
        f"{out} exists and was not written by uvft (no {MARKER} file in it): choose a new folder, or "
        f"pass {option} to replace it and everything in it"
    )


# ------------------------------------------------------------------------------------ writing


def leftovers(out: Path) -> list[Path]:
    """Folders beside `out` that killed writers left: `.NAME.tmp-*` and `.NAME.old-*`."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    return sorted(
        p
        for p in out.parent.iterdir()
        if p.name.startswith((f".{out.name}.tmp-", f".{out.name}.old-")) and not p.is_symlink()
    )


def remove_leftovers(out: Path) -> None:
    """Remove what killed writers of `out` left; call it holding `out`'s lock."""
    for p in leftovers(out):
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        logger.info("removing %s (%.1f MB), left by an interrupted writer of %s", p, size / 1e6, out)
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def swap_in(tmp: Path, out: Path) -> None:
    """Rename the complete `tmp` to `out`; an earlier `out` is moved aside first and removed only
    afterwards, so at every instant `out` is either the old folder or the new one, whole."""
    old: Path | None = None
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def writing(
    out: Path,
    what: str,
    *,
    option: str = "--overwrite",
    overwrite: bool = False,
    protect: Iterable[Path] = (),
    owned: Callable[[Path], bool] | None = None,
    wait: bool = False,
    locked_already: bool = False,
) -> Iterator[Path]:
    """Write the folder `out` whole or not at all: yields a fresh folder beside it; when the block
    ends normally it is marked as uvft's and swapped in; when it raises (a full disk included),
    it is removed and `out` is as it was. Holds `out`'s lock throughout (unless the caller holds
    it: `locked_already`)."""
    out = Path(out)
    lock = contextlib.nullcontext() if locked_already else locked(out, what, wait=wait)
    with lock:
        check_replaceable(out, option=option, overwrite=overwrite, protect=protect, owned=owned)
        remove_leftovers(out)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        try:
            yield tmp
            mark(tmp, what)
            swap_in(tmp, out)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if full := disk_full(e):
                raise UvftError(
                    f"{full.strerror} while writing {out}: nothing was replaced ({out} is as it was"
                    f"{'' if out.exists() else ', absent'}); free some space and run it again"
                ) from None
            raise


def disk_full(e: BaseException | None) -> OSError | None:
    """The full-disk (or over-quota, or over-size-limit) OSError behind `e`, if one is: followed
    through the exceptions raised while handling it, where libraries re-raise their own."""
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return e
        # libraries in Rust (safetensors, tokenizers) say it in their message: "(os error 28)"
        code = _RUST_OS_ERROR.search(str(e)) if not isinstance(e, OSError) else None
        if code and int(code[1]) in DISK_FULL:
            return OSError(int(code[1]), os.strerror(int(code[1])))
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
