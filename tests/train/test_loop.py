"""The training loop: it learns, resumes exactly, checkpoints atomically, guards non-finite losses."""

from __future__ import annotations

import json
import math
import os
import re
import signal
from pathlib import Path

import pytest
import torch

from pipeline.errors import UvftError
from pipeline.recipe import load_recipe
from pipeline.train import checkpoint as ckpt
from pipeline.train import loop
from pipeline.train.signals import TrainingStopped

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def recipe_for(shapes_root: Path, cache: Path, out: Path, *overrides: str):
    return load_recipe(
        ROOT / "recipes/demo.yaml",
        [
            f"data.root={shapes_root}",
            f"data.cache_dir={cache}",
            "data.demo=null",
            f"output_dir={out}",
            "model.tiny.base_steps=0",
            "train.steps=6",
            "train.batch_size=4",
            "train.grad_accum=1",
            "train.num_workers=0",
            "train.trackers=[]",
            "train.log_every=1",
            "train.save_every=3",
            "train.val_batches=1",
            "train.warmup_steps=0",
            "adapter.dropout=0.0",
            *overrides,
        ],
    )


def losses(summary: loop.RunSummary) -> list[float]:
    return [e["loss"] for e in summary.losses]


@pytest.mark.parametrize("family", ["paligemma", "florence2"])
def test_short_run_lowers_the_loss_and_saves_the_adapter(shapes_root, cache, tmp_path, family):
    out = tmp_path / "run"
    recipe = recipe_for(shapes_root, cache, out, f"model.family={family}", "train.steps=12", "train.lr=3e-3")
    summary = loop.train(recipe, progress=False)
    ls = losses(summary)
    assert len(ls) == 12 and all(math.isfinite(v) for v in ls)
    assert summary.val[-1]["all"] < summary.val[0]["all"]
    assert 0 < summary.trainable_params < summary.total_params
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "generation_config.json",
        "recipe.yaml",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["no_repeat_ngram_size"] == 0 and gen["num_beams"] == 1
    assert [p.name for p in ckpt.checkpoint_dirs(out)] == ["step-000009", "step-000012"]  # keep_last=2


def test_ctrl_c_saves_and_resume_gives_the_same_losses_as_never_stopping(
    shapes_root, cache, tmp_path, monkeypatch
):
    # dropout on: resuming must also restore the RNG; save_every=100: only Ctrl-C saves
    overrides = ("adapter.dropout=0.1", "train.save_every=100")
    straight = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *overrides), progress=False)

    real, calls = loop.token_losses, {"n": 0}

    def interrupt_at_step_4(model, batch, *, shift):
        calls["n"] += model.training
        if model.training and calls["n"] == 4:
            raise KeyboardInterrupt
        return real(model, batch, shift=shift)

    recipe = recipe_for(shapes_root, cache, tmp_path / "b", *overrides)
    monkeypatch.setattr(loop, "token_losses", interrupt_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        loop.train(recipe, progress=False)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "b")] == ["step-000003"]
    monkeypatch.setattr(loop, "token_losses", real)
    resumed = loop.train(recipe, resume="auto", progress=False)
    assert len(straight.losses) == 6
    assert losses(resumed) == losses(straight)  # exactly: the same batches, the same RNG
    assert resumed.val[-1] == straight.val[-1]


def test_a_fresh_run_refuses_a_folder_with_checkpoints(shapes_root, cache, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints/step-000003").mkdir(parents=True)
    (out / "checkpoints/step-000003/state.json").write_text("{}")
    recipe = recipe_for(shapes_root, cache, out, "train.steps=1")
    with pytest.raises(UvftError, match="--resume auto"):
        loop.train(recipe, progress=False)
    loop.train(recipe, progress=False, overwrite=True)
    assert [p.name for p in ckpt.checkpoint_dirs(out)] == ["step-000001"]


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


def test_tokens_are_averaged_over_the_global_batch():
    # two examples with 1 and 3 target tokens: the loss is the mean over 4 tokens, not of 2 means
    logits = torch.zeros(2, 3, 5)
    logits[0, 0, 1] = 10.0
    labels = torch.tensor([[1, -100, -100], [2, 3, 4]])

    class M(torch.nn.Module):
        def forward(self, **kw):
            return type("Out", (), {"logits": logits})

    loss_sum, n_tok = loop.token_losses(M(), {"labels": labels}, shift=False)
    assert n_tok.tolist() == [1, 3]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1), reduction="sum")
    assert float(loss_sum.sum()) == pytest.approx(float(expected))


def test_gradient_checkpointing_and_tensorboard(shapes_root, cache, tmp_path):
    out = tmp_path / "run"
    recipe = recipe_for(
        shapes_root,
        cache,
        out,
        "train.steps=2",
        "train.gradient_checkpointing=true",
        "train.trackers=[tensorboard]",
    )
    summary = loop.train(recipe, progress=False)
    assert len(summary.losses) == 2 and all(math.isfinite(v) for v in losses(summary))
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "samples_per_s", "val/all"} <= tags
    assert any(t.startswith("loss/") for t in tags)


def test_base_stage_is_built_once_and_cached(shapes_root, cache, tmp_path, monkeypatch):
    base_overrides = ("model.tiny.base_steps=2", "model.tiny.base_sources=[shapes_captions]", "train.steps=1")
    first = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *base_overrides), progress=False)
    assert first.base_model.endswith("/model") and (Path(first.base_model) / "config.json").is_file()
    base_summary = json.loads((Path(first.base_model).parent / "summary.json").read_text())
    assert base_summary["steps"] == 2
    assert {k for e in base_summary["losses"] for k in e if k.startswith("loss/")} == {"loss/caption"}

    calls = []
    monkeypatch.setattr(loop, "_base_stage_train", lambda *a, **k: calls.append(a))
    # another run with another name, folder and adapter reuses the cached base
    again = loop.train(
        recipe_for(shapes_root, cache, tmp_path / "b", *base_overrides, "adapter.r=4"), progress=False
    )
    assert again.base_model == first.base_model and calls == []


def _interrupt_after_forward(monkeypatch, at: int, action):
    """Patch token_losses so that the `at`-th training forward runs (drawing its dropout masks)
    and then `action()` fires: a signal or a KeyboardInterrupt in the middle of the step."""
    real, calls = loop.token_losses, {"n": 0}

    def patched(model, batch, *, shift):
        out = real(model, batch, shift=shift)
        calls["n"] += model.training
        if model.training and calls["n"] == at:
            action()
        return out

    monkeypatch.setattr(loop, "token_losses", patched)
    return real


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_step_finishes_the_step_saves_and_resumes_exactly(
    shapes_root, cache, tmp_path, monkeypatch, signum
):
    # dropout on, and a logging window (log_every=4) in progress when the signal comes at step 3
    overrides = ("adapter.dropout=0.1", "train.save_every=100", "train.log_every=4")
    straight = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *overrides), progress=False)
    recipe = recipe_for(shapes_root, cache, tmp_path / "b", *overrides)
    before = signal.getsignal(signum)  # SIG_IGN for SIGINT in a background job, as CI may run
    real = _interrupt_after_forward(monkeypatch, 3, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(
        TrainingStopped, match=r"stopped after step 3 of 6; checkpoint saved in .*step-000003"
    ) as e:
        loop.train(recipe, progress=False)
    assert e.value.exit_code == 128 + signum
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "b")] == ["step-000003"]
    assert signal.getsignal(signum) == before  # the handler the process had is back
    monkeypatch.setattr(loop, "token_losses", real)
    resumed = loop.train(recipe, resume="auto", progress=False)

    def logged(summary):  # samples/s is wall-clock: everything else must be equal
        return [{k: v for k, v in e.items() if k != "samples_per_s"} for e in summary.losses]

    assert [e["step"] for e in resumed.losses] == [4, 6]
    assert logged(resumed) == logged(straight)  # the window of steps 1-4 spans the stop
    assert resumed.val == straight.val
    a, b = (p / "adapter_model.safetensors" for p in (tmp_path / "a", tmp_path / "b"))
    assert a.read_bytes() == b.read_bytes()


def test_ctrl_c_raised_mid_forward_saves_the_rng_the_step_began_with(
    shapes_root, cache, tmp_path, monkeypatch
):
    overrides = ("adapter.dropout=0.1", "train.save_every=100")
    straight = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *overrides), progress=False)
    recipe = recipe_for(shapes_root, cache, tmp_path / "b", *overrides)

    def ctrl_c():
        raise KeyboardInterrupt

    real = _interrupt_after_forward(monkeypatch, 4, ctrl_c)  # step 4's dropout masks are drawn
    with pytest.raises(KeyboardInterrupt):
        loop.train(recipe, progress=False)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "b")] == ["step-000003"]
    monkeypatch.setattr(loop, "token_losses", real)
    resumed = loop.train(recipe, resume="auto", progress=False)
    assert losses(resumed) == losses(straight)
    assert resumed.val[-1] == straight.val[-1]


def test_resuming_a_finished_run_records_nothing_twice(shapes_root, cache, tmp_path):
    recipe = recipe_for(shapes_root, cache, tmp_path / "a")
    first = loop.train(recipe, progress=False)
    again = loop.train(recipe, resume="auto", progress=False)  # what a second `make finetune` does
    assert again.val == first.val and [v["step"] for v in again.val] == [0, 6]
    assert again.losses == first.losses
    saved = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert [v["step"] for v in saved["val"]] == [0, 6]


@pytest.mark.parametrize("family", ["paligemma", "florence2"])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_is_exact_for_both_methods_and_families(
    shapes_root, cache, tmp_path, monkeypatch, family, method
):
    overrides = (f"model.family={family}", f"adapter.method={method}", "adapter.dropout=0.1")
    straight = loop.train(recipe_for(shapes_root, cache, tmp_path / "a", *overrides), progress=False)
    recipe = recipe_for(shapes_root, cache, tmp_path / "b", *overrides)
    real = _interrupt_after_forward(monkeypatch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TrainingStopped, match="after step 5 of 6"):
        loop.train(recipe, progress=False)
    monkeypatch.setattr(loop, "token_losses", real)
    resumed = loop.train(recipe, resume="auto", progress=False)
    assert losses(resumed) == losses(straight) and resumed.val == straight.val
    name = "model/model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


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
    real = _interrupt_after_forward(monkeypatch, 4, lambda: os.kill(os.getpid(), signal.SIGTERM))
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


def test_resume_refuses_a_changed_recipe_and_allows_extending(shapes_root, cache, tmp_path):
    run = tmp_path / "run"
    loop.train(recipe_for(shapes_root, cache, run, "train.steps=4", "train.save_every=2"), progress=False)
    changed = recipe_for(shapes_root, cache, run, "train.steps=4", "train.lr=0.01", "train.batch_size=2")
    with pytest.raises(UvftError) as e:
        loop.train(changed, resume="auto", progress=False)
    msg = str(e.value)
    assert "cannot resume" in msg and "train.batch_size: 4 -> 2" in msg and "train.lr: 0.0005 -> 0.01" in msg
    assert "lr: 0.0005" in (run / "recipe.yaml").read_text()  # what was trained is still what is recorded
    # extending a run (and changing how often it saves) is allowed, and recorded
    longer = recipe_for(shapes_root, cache, run, "train.steps=6", "train.save_every=3")
    summary = loop.train(longer, resume="auto", progress=False)
    assert summary.steps == 6 and [v["step"] for v in summary.val] == [0, 4, 6]
    assert "steps: 6" in (run / "recipe.yaml").read_text()


def test_a_signal_during_set_up_stops_before_the_first_step(shapes_root, cache, tmp_path, monkeypatch):
    real = loop.held_out_loss

    def held_out_then_sigterm(*args, **kwargs):  # the held-out loss at step 0 runs before the loop
        out = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop, "held_out_loss", held_out_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingStopped, match=r"^SIGTERM: stopped before step 1 of 6; nothing to save\.$"):
        loop.train(recipe_for(shapes_root, cache, tmp_path / "run"), progress=False)
    assert ckpt.checkpoint_dirs(tmp_path / "run") == []
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are gone with the run
