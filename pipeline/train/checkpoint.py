"""Checkpoints: everything that decides what comes next, written atomically.

A checkpoint folder `checkpoints/step-000120/` holds the trainable weights (`weights/`: the
adapter, or the full model, as safetensors) and `optimizer.pt`, or under train.sharding both in
`sharded/` (one shard per process, pipeline.train.sharding), `scheduler.pt`, one `rng-<rank>.pt`
per process, `state.json` (step, sampler position, counters) and `recipe.yaml`, the resolved recipe
it was trained with (what resume compares a recipe with: the run's own recipe.yaml is rewritten by
each run, and may be lost). It is written under a hidden temporary name and renamed when complete,
with a manifest of every file written last, so a kill during a save never leaves a folder that
resume would pick. Tensors are loaded back with `torch.load(weights_only=True)`.

The models a run leaves for generation (`<run>/best`, and the final adapter or `<run>/model`) are
saved here too (`save_best`, `save_final`): weights, processor and pinned generation config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import UvftError
from pipeline.failpoints import failpoint
from pipeline.models import vqvae
from pipeline.models.generation import generation_config
from pipeline.models.spec import ModelSpec
from pipeline.recipe import Recipe, dump
from pipeline.runfolder import RECIPE
from pipeline.train import sharding

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"
# state.json's `format`: 2 = checkpoints with a manifest, 3 = with the recipe they were trained with
FORMAT = 3
MANIFEST_FORMAT, RECIPE_FORMAT = 2, 3
FULL_WEIGHTS = "model.safetensors"  # a full fine-tune's checkpoint weights, under in-memory names


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """`auto`: the latest checkpoint of the run that verifies (None when there is none), falling
    back past damaged ones with a warning that names the bad file; else a path, which must verify."""
    if resume is None:
        return None
    if resume == "auto":
        found = checkpoint_dirs(run_dir)
        damaged = []
        for path in reversed(found):
            problem = verify_checkpoint(path)
            if problem is None:
                if damaged:
                    logger.warning("resuming from %s, the latest complete checkpoint", path.name)
                return path
            damaged.append(path)
            logger.warning(
                "checkpoint %s is damaged (%s): falling back to an earlier one", path.name, problem
            )
        if damaged:
            raise UvftError(
                f"every checkpoint of {run_dir} is damaged ({', '.join(p.name for p in damaged)}); "
                "start over with --overwrite"
            )
        return None
    path = Path(resume)
    if path.is_dir() and not (path / "state.json").is_file() and checkpoint_dirs(path):
        path = checkpoint_dirs(path)[-1]  # a run folder: its latest checkpoint
    problem = verify_checkpoint(path)
    if problem is not None:
        raise UvftError(f"{path} is not a complete uvft checkpoint: {problem}")
    return path


def write_manifest(folder: Path) -> None:
    """manifest.json, written last: every file's size and sha256, so damage is found before use."""
    files = {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=2))


def verify_checkpoint(path: Path) -> str | None:
    """None when the checkpoint is whole; else what is wrong with which file. Checkpoints written
    before manifests existed (no `format` in state.json) are checked for state.json only, and
    those written before checkpoints kept their recipe (format 2) have no recipe.yaml."""
    if not path.is_dir():
        return "no such folder"
    state_file = path / "state.json"
    if not state_file.is_file():
        return "state.json is missing"
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError, TypeError):
            return f"{MANIFEST} does not parse"
        for name, want in files.items():
            f = path / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != want["size"]:
                return f"{name} has {f.stat().st_size} bytes, {want['size']} were written"
            if _sha256(f) != want["sha256"]:
                return f"{name} does not match its checksum"
    try:
        state = json.loads(state_file.read_text())
    except ValueError as e:
        return f"state.json does not parse ({e})"
    written = state.get("format", 1) if isinstance(state, dict) else 1
    if not manifest.is_file() and written >= MANIFEST_FORMAT:
        return f"{MANIFEST} is missing"  # written with one: its loss means the folder was tampered with
    if not (path / RECIPE).is_file() and written >= RECIPE_FORMAT:
        return f"{RECIPE} is missing"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep_last: int,
    recipe: str,
    rng: dict[str, Any] | None = None,
    sharded: bool = False,
) -> Path:
    """Save on every process (RNG per rank: `rng`, else the current one; `sharded`: each process's
    shard of the weights and optimizer state), the rest (weights, optimizer unless sharded, and
    `recipe`, the resolved recipe's YAML as the run trains it) on the main one; atomic rename."""
    root = run_dir / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    failure: str | None = None
    if accelerator.is_main_process:
        remove_leftovers(root)
        try:
            tmp.mkdir(parents=True)
        except OSError as e:
            failure = write_failure(e, root)
    accelerator.wait_for_everyone()
    if failure is None:
        try:
            torch.save(rng if rng is not None else rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
            if sharded:  # all processes together, each its shard
                sharding.save(tmp / sharding.FOLDER, model, optimizer)
            if accelerator.is_main_process:
                (tmp / RECIPE).write_text(recipe)  # listed in the manifest like the rest
                full_state = {"step": step, "format": FORMAT, **state}
                _write_main(tmp, accelerator, model, optimizer, scheduler, full_state, weights=not sharded)
            failpoint("checkpoint.write")
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
            failure = write_failure(e, root)
    # every process takes the same decision, or the others would wait at the next barrier forever
    if any_process(accelerator, failure is not None):
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # never leave a half checkpoint holding the space
        previous = checkpoint_dirs(run_dir)
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no checkpoint was kept"
        why = failure or "it failed on another process"
        raise UvftError(f"cannot save the checkpoint of step {step} in {root}: {why}; {kept}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(tmp)  # last: a checkpoint with a manifest was written whole
        swap_in(tmp, final)
        for old in checkpoint_dirs(run_dir)[:-keep_last]:
            # renamed first: a kill mid-delete must not leave a half-deleted step-N for resume
            gone = old.with_name(f".del-{old.name}")
            old.rename(gone)
            failpoint("checkpoint.prune")
            shutil.rmtree(gone, ignore_errors=True)
        logger.info("checkpoint saved: %s", final)
    accelerator.wait_for_everyone()
    return final


def remove_leftovers(root: Path) -> None:
    """Remove what killed saves and prunes left behind (`.tmp-`, `.del-`, `.old-` folders), which
    resume never reads but which hold disk space."""
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-step-", ".del-step-", ".old-step-")):
                shutil.rmtree(p, ignore_errors=True)


def write_failure(e: BaseException, folder: Path) -> str:
    """What went wrong writing into `folder`, in words: a full disk is said as such."""
    import errno

    try:
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    except OSError:
        free = None
    # torch.save reports a full disk as "basic_ios::clear: iostream error" or "unexpected pos":
    # the free space (measured before the partial files are removed) tells
    full = getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e)
    full = full or (free is not None and free < (1 << 20))
    if full:
        left = f", {free / 2**20:.1f} MiB free" if free is not None else ""
        return f"no space left on device{left}"
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def any_process(accelerator: Any, flag: bool) -> bool:
    """True when `flag` is set on any process: every process must take the same decision, or
    the others would wait at the next collective forever (DDP replicas would drift apart)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), "max").item())


def _write_main(
    tmp: Path, accelerator: Any, model, optimizer, scheduler, state: dict[str, Any], *, weights: bool
) -> None:
    """The main process's part of a checkpoint: weights and optimizer (unless sharded: `weights`
    False), scheduler, state.json."""
    if weights:
        _write_weights(tmp, accelerator, model, optimizer)
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))


def _write_weights(tmp: Path, accelerator: Any, model, optimizer) -> None:
    inner = accelerator.unwrap_model(model)
    if hasattr(inner, "peft_config"):  # the adapter (and modules_to_save) only
        inner.save_pretrained(tmp / "weights", safe_serialization=True)
    else:
        # the state dict under its in-memory names: save_pretrained renames keys to the
        # checkpoint format (PaliGemma's language_model.model.*) and drops tied copies, which
        # load_state_dict cannot map back; save_model keeps names and dedups shared tensors
        from safetensors.torch import save_model

        (tmp / "weights").mkdir()
        save_model(inner, str(tmp / "weights" / FULL_WEIGHTS))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")


def swap_in(tmp: Path, final: Path) -> None:
    """Replace `final` by the complete folder `tmp`: the old one is moved aside first and removed
    last, so at every moment one complete version exists (a crash leaves `final` or `.old`)."""
    old = final.with_name(f".old-{final.name}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
        failpoint("best.swap")
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def recover_swap(final: Path) -> None:
    """After a kill between swap_in's two renames, put the old complete version back."""
    old = final.with_name(f".old-{final.name}")
    if not final.exists() and old.is_dir():
        old.rename(final)
        logger.warning("restored %s from an interrupted replacement", final)


def load_checkpoint(
    path: Path,
    *,
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG; return state.json. A sharded
    checkpoint (`sharded/`) is loaded by all processes together, resharded to this launch."""
    if (path / sharding.FOLDER).is_dir():
        sharding.load(path / sharding.FOLDER, model, optimizer)
    else:
        _load_weights(path, accelerator, model, optimizer)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / f"rng-{accelerator.process_index}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    else:
        logger.warning(
            "%s has no RNG state for process %d; dropout will differ", path, accelerator.process_index
        )
    return json.loads((path / "state.json").read_text())


def _load_weights(path: Path, accelerator: Any, model, optimizer) -> None:
    from safetensors.torch import load_file

    inner = accelerator.unwrap_model(model)
    weights = path / "weights"
    if (weights / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(inner, load_file(str(weights / "adapter_model.safetensors")))
    elif (weights / FULL_WEIGHTS).is_file() and not (weights / "config.json").is_file():
        from safetensors.torch import load_model

        # shared tensors (tied embeddings) were saved once; load_model does not count them missing
        missing, unexpected = load_model(inner, str(weights / FULL_WEIGHTS), strict=False)
        if missing or unexpected:
            raise RuntimeError(
                f"checkpoint {path} does not fit the model: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
    else:  # a full model saved by uvft before FULL_WEIGHTS (save_pretrained's checkpoint format)
        fresh = type(inner).from_pretrained(str(weights), use_safetensors=True, dtype=inner.dtype)
        tensors = fresh.state_dict()
        missing, unexpected = inner.load_state_dict(tensors, strict=False)
        # tied weights (lm_head = embeddings) are saved once; anything else missing is a real error
        missing = [k for k in missing if k not in _tied_keys(inner)]
        if missing or unexpected:
            raise RuntimeError(
                f"checkpoint {path} does not fit the model: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))


def _tied_keys(model: torch.nn.Module) -> set[str]:
    tied = getattr(model, "_tied_weights_keys", None) or []
    if isinstance(tied, dict):
        tied = list(tied)
    return set(tied)


def save_best(
    model,
    processor,
    gen,
    recipe: Recipe,
    step: int,
    value: float,
    metrics: dict[str, Any],
    *,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """<run>/best: adapter (or full model), processor, generation config and best.json, written
    next to it and swapped in whole, so a crash never leaves a half-written best."""
    final, tmp = recipe.run_dir / "best", recipe.run_dir / ".tmp-best"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, processor, gen, tmp, weights=weights)
    info = {"step": step, "metric": recipe.eval.metric, "value": value, "metrics": metrics}
    (tmp / "best.json").write_text(json.dumps(info, indent=2))
    swap_in(tmp, final)
    return final


def save_final(
    model,
    processor,
    recipe: Recipe,
    run_dir: Path,
    summary: dict[str, Any],
    spec: ModelSpec,
    *,
    mask_vae: str | None = None,
    weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """Adapter (or full model) + processor + pinned generation config + uvft.json (what inference
    needs: pipeline.models.spec) + the mask codec when masks are written as codes + resolved recipe
    + summary (summary.json's fields)."""
    out = run_dir / "model" if recipe.adapter.method == "full" else run_dir
    gen = generation_config(model, max_new_tokens=recipe.train.max_target_tokens or 256)
    save_model(model, processor, gen, out, weights=weights)
    spec.save(out)
    if mask_vae is not None:
        vqvae.keep_with(mask_vae, out)
    (run_dir / "recipe.yaml").write_text(dump(recipe))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("saved %s to %s", "model" if recipe.adapter.method == "full" else "adapter", out)


def save_model(model, processor, gen, out: Path, *, weights: dict[str, torch.Tensor] | None = None) -> None:
    """What generation needs from a run: weights (safetensors), processor, pinned generation config.
    `weights`: a sharded model's trainable weights gathered whole (sharding.consolidated), written
    in the model's own format (adapter or model folder) instead of its shards."""
    try:
        model.save_pretrained(out, safe_serialization=True, **({"state_dict": weights} if weights else {}))
        processor.save_pretrained(out)
        gen.save_pretrained(out)
    except (OSError, RuntimeError) as e:
        raise UvftError(f"cannot save the model in {out}: {write_failure(e, out)}") from None
    # peft writes its empty card template ("[More Information Needed]"); the card is uvft push's job
    card = out / "README.md"
    if card.is_file() and "More Information Needed" in card.read_text(encoding="utf-8"):
        card.unlink()
