"""Checkpoints that can be trusted: a half-written checkpoint is never picked, a damaged one is
named and skipped, a full disk is one clear error, non-finite losses are skipped then stop the run."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest
from loop_runs import interrupt_after_forward, losses, recipe_for

from pipeline.errors import UvftError
from pipeline.train import checkpoint as ckpt
from pipeline.train import loop
from pipeline.train.signals import TrainingStopped


def test_half_written_checkpoint_is_never_picked(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints/step-000003").mkdir(parents=True)
    (run / "checkpoints/step-000003/state.json").write_text("{}")
    (run / "checkpoints/.tmp-step-000006").mkdir()  # a save killed halfway
    assert ckpt.resolve_resume("auto", run) == run / "checkpoints/step-000003"
    assert ckpt.resolve_resume(str(run), run) == run / "checkpoints/step-000003"
    assert ckpt.resolve_resume("auto", tmp_path / "none") is None
    with pytest.raises(UvftError, match=r"not a complete uvft checkpoint: state\.json is missing"):
        ckpt.resolve_resume(str(run / "checkpoints/.tmp-step-000006"), run)


def test_non_finite_losses_are_skipped_then_stop_the_run(shapes_root, cache, tmp_path, monkeypatch):
    real = loop.token_losses
    calls = {"n": 0}

    def flaky(model, batch, *, shift):
        calls["n"] += 1
        loss_sum, n_tok = real(model, batch, shift=shift)
        if model.training and calls["n"] in (2, 4, 5, 6, 7):
            loss_sum = loss_sum * float("nan")
        return loss_sum, n_tok

    monkeypatch.setattr(loop, "token_losses", flaky)
    out = tmp_path / "run"
    recipe = recipe_for(
        shapes_root, cache, out, "train.steps=10", "train.max_nonfinite=3", "train.val_batches=1"
    )
    with pytest.raises(loop.NonFiniteLossError, match="3 non-finite losses in a row"):
        loop.train(recipe, progress=False)
    # held-out pass at step 0 is call 1; training calls 2.. : step 1 NaN (skipped), step 2 fine,
    # steps 3, 4, 5 NaN -> stop at step 5 with a checkpoint
    state = json.loads((ckpt.checkpoint_dirs(out)[-1] / "state.json").read_text())
    assert state["step"] == 5 and state["nonfinite_total"] == 4 and state["nonfinite_in_row"] == 3


DAMAGE_RUN = ("train.save_every=2", "train.keep_last=3", "adapter.dropout=0.1")


@pytest.fixture(scope="module")
def undamaged_losses(shapes_root, cache, tmp_path_factory) -> list[float]:
    """The losses of the damage tests' recipe run without a stop (one run for all cases)."""
    out = tmp_path_factory.mktemp("undamaged") / "run"
    return losses(loop.train(recipe_for(shapes_root, cache, out, *DAMAGE_RUN), progress=False))


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("truncate:weights/adapter_model.safetensors", r"weights/adapter_model.safetensors has \d+ bytes"),
        ("truncate:optimizer.pt", r"optimizer.pt has \d+ bytes"),
        ("flip:scheduler.pt", "scheduler.pt does not match its checksum"),
        ("remove:rng-0.pt", "rng-0.pt is missing"),
        ("remove:state.json", "state.json is missing"),
        ("truncate:state.json", r"state.json has \d+ bytes"),
        ("truncate:manifest.json", "manifest.json does not parse"),
    ],
)
def test_a_damaged_latest_checkpoint_is_named_and_skipped(
    shapes_root, cache, tmp_path, caplog, monkeypatch, undamaged_losses, damage, problem
):
    run = tmp_path / "b"
    recipe = recipe_for(shapes_root, cache, run, *DAMAGE_RUN)
    real = interrupt_after_forward(monkeypatch, 4, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TrainingStopped):
        loop.train(recipe, progress=False)
    monkeypatch.setattr(loop, "token_losses", real)
    assert [p.name for p in ckpt.checkpoint_dirs(run)] == ["step-000002", "step-000004"]
    how, name = damage.split(":")
    target = run / "checkpoints/step-000004" / name
    if how == "remove":
        target.unlink()
    elif how == "truncate":
        target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    assert ckpt.verify_checkpoint(run / "checkpoints/step-000002") is None
    assert re.search(problem, ckpt.verify_checkpoint(run / "checkpoints/step-000004"))
    with pytest.raises(UvftError, match=problem):  # named explicitly, it is refused, not replaced
        ckpt.resolve_resume(str(run / "checkpoints/step-000004"), run)
    with caplog.at_level("WARNING"):
        resumed = loop.train(recipe, resume="auto", progress=False)
    assert re.search(rf"step-000004 is damaged \({problem}.*falling back", caplog.text)
    assert losses(resumed) == undamaged_losses  # from step 2, exactly as if never stopped
    assert ckpt.verify_checkpoint(run / "checkpoints/step-000004") is None  # written anew, whole


def test_every_checkpoint_damaged_is_one_error(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints/step-000002").mkdir(parents=True)
    with pytest.raises(UvftError, match=r"every checkpoint of .* is damaged \(step-000002\).*--overwrite"):
        ckpt.resolve_resume("auto", run)


@pytest.fixture
def small_disk(tmp_path):
    """A 10 MiB tmpfs: room for one checkpoint of the test model (7 MiB), not for two."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "--lazy", str(mnt)], check=False)  # lazy: a failed write may hold a file


def test_disk_full_while_saving_is_one_clear_error(shapes_root, cache, small_disk):
    run = small_disk / "run"
    recipe = recipe_for(shapes_root, cache, run, "train.save_every=1", "train.steps=3")
    with pytest.raises(UvftError) as e:
        loop.train(recipe, progress=False)
    msg = str(e.value)
    assert f"cannot save the checkpoint of step 2 in {run / 'checkpoints'}: no space left on device" in msg
    assert f"the previous checkpoint {run / 'checkpoints/step-000001'} is intact" in msg
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001"]  # no .tmp left
    assert ckpt.verify_checkpoint(run / "checkpoints/step-000001") is None


def test_each_file_of_a_checkpoint_truncated_or_removed_in_turn_is_named_and_skipped(
    shapes_root, cache, tmp_path, caplog
):
    """Every file the manifest lists, and the manifest itself, truncated to half and removed: each
    time `--resume auto` names the file and falls back to the previous checkpoint."""
    import shutil

    run = tmp_path / "run"
    loop.train(recipe_for(shapes_root, cache, run, "train.steps=4", "train.save_every=2"), progress=False)
    latest = run / "checkpoints" / "step-000004"
    files = [*sorted(json.loads((latest / "manifest.json").read_text())["files"]), "manifest.json"]
    assert {
        "weights/adapter_model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng-0.pt",
        "state.json",
        "recipe.yaml",  # the recipe the checkpoint was trained with: resume compares with it
    } <= set(files)
    pristine = tmp_path / "pristine"
    shutil.copytree(latest, pristine)
    tried = 0
    for name in files:
        for how in ("truncate", "remove"):
            shutil.rmtree(latest)
            shutil.copytree(pristine, latest)
            target = latest / name
            if how == "remove":
                target.unlink()
                want = f"{name} is missing"
            else:
                target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
                want = f"{name} does not parse" if name == "manifest.json" else f"{name} has "
            caplog.clear()
            with caplog.at_level("WARNING"):
                assert ckpt.resolve_resume("auto", run) == run / "checkpoints" / "step-000002", (how, name)
            assert f"step-000004 is damaged ({want}" in caplog.text, (how, name, caplog.text)
            tried += 1
    assert tried == 2 * len(files) >= 16
