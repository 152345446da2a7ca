"""Failpoints: named places where the fault suite kills a training process the way a cluster does.

`UVFT_FAILPOINTS="checkpoint.write:2,eval.generate:1"` makes the process SIGKILL itself (no
handler, no cleanup: what the OOM killer, a lost node or `kill -9` do) at the 2nd time it passes
`checkpoint.write`, or the 1st time it passes `eval.generate`; `step.forward:3@1` kills only the
process of rank 1 (the `RANK` that `accelerate launch` and torchrun set). Unset, as it always is outside the
tests, a failpoint is one dictionary lookup. The points (see `POINTS`) sit where an interruption
is hardest to recover from: mid-step, mid-save, mid-prune, mid-evaluation.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "UVFT_FAILPOINTS"

POINTS = {
    "step.forward": "after a micro-batch's forward and backward, before the optimizer steps",
    "step.update": "after the optimizer stepped, before the step is counted",
    "checkpoint.write": "a checkpoint's files half written (weights and optimizer, no manifest)",
    "checkpoint.prune": "an old checkpoint renamed for deletion, not yet removed",
    "eval.generate": "inside the in-training evaluation, after generation, before scoring",
    "best.swap": "<run>/best being replaced: the old one moved aside, the new one not yet in",
}

_hits: Counter[str] = Counter()


def parse(spec: str, rank: int = 0) -> dict[str, int]:
    """`name:N@R,...` -> {name: N} for the process of rank `rank`; a bare name means its first hit,
    no `@R` every rank. Unknown names are errors, so a misspelt failpoint cannot make a fault test
    pass without its fault."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        point, _, only = part.partition("@")
        name, _, n = point.partition(":")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r}; known: {', '.join(POINTS)}")
        if not only or int(only) == rank:
            out[name] = int(n) if n else 1
    return out


def failpoint(name: str) -> None:
    """SIGKILL this process here when `UVFT_FAILPOINTS` asks for this pass of `name`."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _hits[name] += 1
    if parse(spec, int(os.environ.get("RANK", 0))).get(name) == _hits[name]:
        os.kill(os.getpid(), signal.SIGKILL)
