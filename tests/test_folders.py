"""pipeline.folders: locks that name their holder, whole-folder swaps, and never deleting what uvft
did not write."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import folders
from pipeline.errors import UvftError

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pipeline import folders
    with folders.locked(Path(sys.argv[1]), "uvft finetune"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def _holder(target: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_live_holder_is_named_and_its_lock_refused(tmp_path):
    target = tmp_path / "runs" / "demo"
    p = _holder(target)
    try:
        with pytest.raises(folders.FolderInUse) as e, folders.locked(target, "uvft finetune"):
            pass
        msg = str(e.value)
        assert msg.startswith(f"{target} is being written by `uvft finetune` (pid {p.pid} on ")
        assert msg.endswith("wait for it to finish, or write somewhere else")
    finally:
        p.kill()
        p.wait()


def test_a_dead_holders_lock_is_taken_over_with_a_message(tmp_path, caplog):
    target = tmp_path / "demo"
    p = _holder(target)
    p.kill()  # kill -9: no cleanup, the lock file still names it
    p.wait()
    assert json.loads(folders.lock_file(target).read_text())["pid"] == p.pid
    with caplog.at_level(logging.WARNING, logger="pipeline.folders"), folders.locked(target, "uvft eval"):
        assert json.loads(folders.lock_file(target).read_text())["pid"] == os.getpid()
    assert f"took over the lock left by `uvft finetune` (pid {p.pid} on " in caplog.text
    assert not folders.lock_file(target).exists()  # released cleanly: nothing left beside the folder


def test_waiting_for_a_lock_gets_it_when_the_holder_ends(tmp_path):
    target = tmp_path / "cache"
    p = _holder(target)
    subprocess.Popen(["sh", "-c", f"sleep 1; kill {p.pid}"])
    with folders.locked(target, "uvft build", wait=True):
        assert json.loads(folders.lock_file(target).read_text())["pid"] == os.getpid()
    p.wait()


def test_writing_swaps_a_whole_folder_in_and_marks_it(tmp_path):
    out = tmp_path / "eval"
    with folders.writing(out, "uvft eval") as tmp:
        (tmp / "metrics.json").write_text("{}")
        assert not out.exists()
    assert sorted(p.name for p in out.iterdir()) == [folders.MARKER, "metrics.json"]
    assert json.loads((out / folders.MARKER).read_text())["written_by"] == "uvft eval"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no tmp, no old, no lock left


def test_a_failed_write_leaves_the_old_folder_as_it_was(tmp_path):
    out = tmp_path / "eval"
    with folders.writing(out, "uvft eval") as tmp:
        (tmp / "metrics.json").write_text("old")
    with pytest.raises(RuntimeError), folders.writing(out, "uvft eval") as tmp:
        (tmp / "metrics.json").write_text("new")
        raise RuntimeError("killed")
    assert (out / "metrics.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def test_a_full_disk_is_one_line_and_replaces_nothing(tmp_path):
    out = tmp_path / "eval"
    with folders.writing(out, "uvft eval") as tmp:
        (tmp / "metrics.json").write_text("old")
    with pytest.raises(UvftError) as e, folders.writing(out, "uvft eval") as tmp:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "metrics.json"))
        except OSError:
            raise RuntimeError("a library's own error, raised while handling it") from None
    assert str(e.value) == (
        f"No space left on device while writing {out}: nothing was replaced ({out} is as it was); "
        "free some space and run it again"
    )
    assert (out / "metrics.json").read_text() == "old"


def test_leftovers_of_killed_writers_are_removed_by_the_next(tmp_path):
    out = tmp_path / "records"
    (tmp_path / ".records.tmp-999999" / "parts").mkdir(parents=True)
    (tmp_path / ".records.tmp-999999" / "parts" / "a.arrow").write_bytes(b"x" * 1000)
    (tmp_path / ".records.old-999998").mkdir()
    (tmp_path / ".recordsX.tmp-1").mkdir()  # another folder's: kept
    with folders.writing(out, "uvft build") as tmp:
        (tmp / "stats.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".recordsX.tmp-1", "records"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_uvft_did_not_write_is_replaced_only_with_overwrite(tmp_path, overwrite):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("x")
    if not overwrite:
        with pytest.raises(UvftError) as e, folders.writing(victim, "uvft export", overwrite=False):
            pass
        assert str(e.value) == (
            f"{victim} exists and was not written by uvft (no .uvft file in it): choose a new folder, "
            "or pass --overwrite to replace it and everything in it"
        )
        assert (victim / "notes.txt").read_text() == "x"
        return
    with folders.writing(victim, "uvft export", overwrite=True) as tmp:
        (tmp / "config.json").write_text("{}")
    assert not (victim / "notes.txt").exists()


def test_an_empty_folder_or_one_uvft_wrote_is_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    folders.check_replaceable(tmp_path / "empty", option="--overwrite")
    with folders.writing(tmp_path / "ours", "uvft export") as tmp:
        (tmp / "x").write_text("1")
    folders.check_replaceable(tmp_path / "ours", option="--overwrite")


def test_never_replaced_even_with_overwrite(tmp_path, monkeypatch):
    run = tmp_path / "nest" / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "adapter_model.safetensors").write_bytes(b"w")
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for out, holds in (
        (tmp_path / "nest" / "runs", str(run)),
        (run, str(run)),
        (cwd, "the current directory"),
        (Path("."), "the current directory"),
        (tmp_path, "the current directory"),
    ):
        with pytest.raises(UvftError) as e:
            folders.check_replaceable(out, option="--overwrite", overwrite=True, protect=[run])
        assert str(e.value) == f"refusing to replace {out}: it holds {holds}; choose another folder"
    assert (run / "adapter_model.safetensors").read_bytes() == b"w"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UvftError, match="exists and is not a folder"):
        folders.check_replaceable(tmp_path / "afile", option="--overwrite", overwrite=True)


def test_a_full_disk_said_by_a_rust_library_is_known():
    from safetensors import SafetensorError

    e = SafetensorError("Error while serializing: I/O error: File too large (os error 27)")
    assert folders.disk_full(e).errno == errno.EFBIG
    assert folders.disk_full(SafetensorError("I/O error: Permission denied (os error 13)")) is None
