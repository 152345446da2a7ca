"""Preemption: SIGTERM (Slurm, Kubernetes, spot instances) and Ctrl-C stop training cleanly.

The first SIGTERM or SIGINT only records the request: the loop finishes the optimizer step in
progress, saves a checkpoint and exits with a message (`TrainingStopped`), so the checkpoint is
that of a whole step, with the RNG as it was after it, and `--resume auto` continues exactly. A
second SIGINT aborts at once (KeyboardInterrupt), for a user who does not want to wait.

DataLoader workers ignore both signals (`ignore_stop_signals` is their `worker_init_fn`): a
terminal's Ctrl-C and a container's SIGTERM reach the whole process group, and a worker that died
of it would fail the main process's next batch before it could save.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from pipeline.errors import UvftError

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(UvftError):
    """Training stopped on a signal after saving a checkpoint; `exit_code` is 128 + the signal."""

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class StopRequest:
    """Context manager: while active, SIGINT/SIGTERM set `signum` instead of killing the process.

    Only the main thread can install handlers; elsewhere (a training run inside a thread) it
    stays inactive and the default behaviour is kept.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.signum is None:
            self.signum = signum
            logger.warning(
                "%s received: finishing this step, then saving a checkpoint and stopping (a run "
                "already in its final evaluation finishes instead; Ctrl-C again to abort without saving)",
                signal.Signals(signum).name,
            )

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker_init_fn: leave SIGINT/SIGTERM to the main process (see the module doc)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
