"""Preemption: SIGTERM (Slurm, Kubernetes, spot instances) and Ctrl-C stop training cleanly.

The first SIGTERM or SIGINT only records the request: the loop finishes the optimizer step in
progress, saves a checkpoint and exits with a message (`TrainingStopped`), so the checkpoint is
that of a whole step, with the RNG as it was after it, and `--resume auto` continues exactly. A
second SIGINT aborts at once (KeyboardInterrupt), for a user who does not want to wait.

DataLoader workers ignore both signals (`ignore_stop_signals` is their `worker_init_fn`): a
terminal's Ctrl-C and a container's SIGTERM reach the whole process group, and a worker that died
of it would fail the main process's next batch before it could save. A worker runs for a moment
before its `worker_init_fn`, under torch's own SIGTERM handler (which dies of it), so the loop's
loaders (`setup.StopSafeLoader`) fork their workers with both signals blocked, and
`ignore_stop_signals` unblocks them once they are ignored: one that came in between is dropped.

Because workers ignore SIGTERM, multiprocessing's exit-time `terminate()` cannot end them: the
loaders a run tracks are closed when the run leaves the StopRequest, while its handlers still
stand (`close_workers`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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
        self._iterators: list[Any] = []

    def track(self, iterator: Any) -> Any:
        """A DataLoader iterator whose workers are closed on leaving (see the module doc)."""
        self._iterators.append(iterator)
        return iterator

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
        try:
            while self._iterators:
                close_workers(self._iterators.pop())
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            self._previous.clear()


def close_workers(iterator: Any) -> None:
    """Shut a DataLoader iterator's workers down now; any still alive after that (a second Ctrl-C
    cut the shutdown short) are killed, since they ignore the SIGTERM of multiprocessing's exit."""
    workers = list(getattr(iterator, "_workers", []))
    try:
        shutdown = getattr(iterator, "_shutdown_workers", None)  # what the iterator's __del__ calls
        if shutdown is not None:
            shutdown()
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """SIGINT/SIGTERM held pending in this thread (and in what it forks) until the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker_init_fn: leave SIGINT/SIGTERM to the main process (see the module doc).
    Ignored first, then unblocked: one that came since the fork is discarded."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
