"""Sharded training (`train.sharding: fsdp2`): the model, its gradients and its optimizer state split
across the processes of a launch, and checkpoints that every process writes its own part of.

- **Sharding** (`shard`): torch's FSDP2 (`fully_shard`) on every decoder / encoder block (and
  Florence-2's vision blocks), then on the whole model, over a mesh of all processes. uvft does it
  itself on every device, CPU processes (gloo) included, where Accelerate would only wrap the model
  in DDP: one code path, tested on 2 CPU processes. On CUDA with bf16 mixed precision the policy
  computes in bf16 and reduces gradients in fp32. LoRA and full fine-tunes alike; frozen weights
  (the base under LoRA, a frozen vision tower) are sharded too, so every process holds 1/N of
  everything. One process shards nothing (there is no one to share with).
- **Checkpoints** (`save` / `load`): the trainable weights and the optimizer state through
  `torch.distributed.checkpoint` (DCP): each process writes its shard in parallel (one `.distcp`
  file each, nothing gathered on one process), and loading reshards, so a checkpoint written by N
  processes resumes with M. Frozen weights are not saved (they are the base model's).
- **The finished model** (`consolidated`): the trainable weights gathered onto the main process
  (on its CPU), written as the ordinary peft adapter / Hugging Face folder, which `uvft eval`,
  `predict`, `export` and `push` read unchanged.
- **Generation during training** (`gathered`): each process gathers the whole weights for the
  evaluation and shards them again after. Generation runs a different number of forward passes on
  every process (its own share of the records, each stopping at its own length); sharded weights
  would have every forward wait for all processes. The weights alone (not gradients, optimizer
  state and activations) must fit one device; where they do not, set eval.every=0 and evaluate the
  finished model. The held-out loss stays sharded: every process runs the same number of batches.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import UvftError
from pipeline.recipe import Recipe

logger = logging.getLogger(__name__)

FSDP2 = "fsdp2"
FOLDER = "sharded"  # a checkpoint's DCP folder: model and optimizer shards, `.metadata` by the first process
# the blocks sharded one by one (their parameters gathered for their own forward, then freed)
_BLOCKS = ("DecoderLayer", "EncoderLayer", "VisionBlock")


def wanted(recipe: Recipe) -> bool:
    return recipe.train.sharding == FSDP2


def asked_by_launch() -> bool:
    """Whether the launch config asks for FSDP (`accelerate launch --config_file fsdp.yaml` sets
    ACCELERATE_USE_FSDP): uvft's sharding is what it gets."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def from_launch(recipe: Recipe) -> Recipe:
    """The recipe with train.sharding=fsdp2 when the launch config asks for FSDP and the recipe
    says nothing; and Accelerate told not to shard on its own, so that it neither wraps the model
    nor expects to (uvft shards it: `shard`)."""
    if not asked_by_launch():
        return recipe
    os.environ["ACCELERATE_USE_FSDP"] = "false"
    if wanted(recipe):
        return recipe
    logger.info("the launch config asks for FSDP: train.sharding=fsdp2")
    return recipe.model_copy(update={"train": recipe.train.model_copy(update={"sharding": FSDP2})})


def active(model: torch.nn.Module) -> bool:
    """Whether `model` is sharded (several processes under train.sharding)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard(model: torch.nn.Module, accelerator: Any) -> torch.nn.Module:
    """Shard every block, then the model, over all processes (see the module doc); in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    precision = accelerator.mixed_precision
    if precision == "fp16":
        raise UvftError(
            "train.sharding=fsdp2 trains in bf16 or fp32: fp16 needs a sharded gradient scaler uvft "
            "does not have; set train.mixed_precision=bf16 (or the launch's --mixed_precision bf16)"
        )
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    options: dict[str, Any] = {"mesh": mesh}
    if precision == "bf16":
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    blocks = [m for m in model.modules() if type(m).__name__.endswith(_BLOCKS)]
    for block in blocks:
        fully_shard(block, **options)
    fully_shard(model, **options)
    if accelerator.is_main_process:
        logger.info(
            "train.sharding=fsdp2: %d blocks and the model sharded over %d processes",
            len(blocks),
            accelerator.num_processes,
        )
    return model


def held(model: torch.nn.Module, optimizer: Any) -> str:
    """What this process holds of the parameters and of the optimizer state, in bytes, against
    the whole: said after the first step, once the optimizer state exists."""
    params, state = list(model.parameters()), optimizer_tensors(_plain(optimizer))
    return (
        f"this process holds {local_bytes(params):,} of {full_bytes(params):,} parameter bytes and "
        f"{local_bytes(state):,} of {full_bytes(state):,} optimizer-state bytes"
    )


def local_bytes(tensors: Any) -> int:
    """Bytes of the tensors this process holds (a sharded tensor: its own shard)."""
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        local = t.to_local() if isinstance(t, DTensor) else t
        total += local.numel() * local.element_size()
    return total


def full_bytes(tensors: Any) -> int:
    """Bytes of the whole tensors (a sharded tensor counted whole)."""
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's state tensors (AdamW: step, exp_avg, exp_avg_sq per parameter)."""
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def sync_gradients(model: torch.nn.Module, sync: bool) -> None:
    """Reduce gradients across processes after this backward (the last micro-batch of an
    accumulation window) or keep accumulating them unreduced (the others): what `no_sync` is to DDP."""
    if active(model):
        model.set_requires_gradient_sync(sync)


def _options(*, full: bool = False, frozen: bool = False) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # frozen weights are the base model's: never in a checkpoint, so not looked for at load (strict
    # would ask for them); dcp.load has already refused a checkpoint without a trainable one
    return StateDictOptions(
        full_state_dict=full, cpu_offload=full, ignore_frozen_params=not frozen, strict=frozen
    )


def _plain(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper (one process) holds it


def save(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every process writes its shard of the trainable weights and the optimizer state into
    `folder` (DCP); called by all processes together."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, _plain(optimizer), options=_options())
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder))


def load(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Restore the trainable weights and the optimizer state from a DCP `folder` written by any
    number of processes (resharded to this launch's); called by all processes together."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, _plain(optimizer), options=_options())
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(
        model,
        _plain(optimizer),
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
        options=_options(),
    )


def zero3(accelerator: Any) -> bool:
    """Whether DeepSpeed ZeRO stage 3 partitions the weights (recipes/accelerate/deepspeed_zero3.yaml)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return False
    return accelerator.state.deepspeed_plugin.zero_stage == 3


def consolidated(model: torch.nn.Module, accelerator: Any, *, frozen: bool) -> dict[str, torch.Tensor] | None:
    """The weights of a sharded model gathered whole onto the main process's CPU (an empty dict on
    the others), for the ordinary adapter / model folder: the trainable ones (an adapter), or with
    `frozen` every one (a full fine-tune's model, a frozen vision tower included). Under ZeRO-3,
    DeepSpeed's 16-bit gathered state dict (the adapter's keys picked from it by peft). None when
    the model is whole on the main process (it saves itself). Called by all processes together."""
    if zero3(accelerator):
        return accelerator.get_state_dict(model)
    if not active(model):
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    weights = get_model_state_dict(model, options=_options(full=True, frozen=frozen))
    # a tied weight (Florence-2's embeddings and lm_head) comes back once per name, as copies that
    # share nothing: keep the name an unsharded model saves it under, as save_pretrained would
    kept = {name for name, _ in model.named_parameters()}
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - kept
    return {k: v for k, v in weights.items() if k not in tied}


@contextlib.contextmanager
def gathered(model: torch.nn.Module) -> Iterator[None]:
    """The whole weights on every process for the duration (generation; see the module doc), sharded
    again after. Nothing happens to a model that is not sharded."""
    from torch.distributed.fsdp import FSDPModule

    parts = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not parts:
        yield
        return
    model.set_reshard_after_forward(False)  # recurse: every block keeps its gathered weights
    for part in parts:
        part.unshard()
    try:
        yield
    finally:
        for part in parts:
            part.reshard()
        model.set_reshard_after_forward(True)
