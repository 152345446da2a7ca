"""The fault suite with train.compile on: kill -9 mid-step, mid-update and mid-save, and SIGTERM and
Ctrl-C at a random moment, each then resumed, end exactly as an uninterrupted compiled run does
(losses, held-out losses, evaluations, adapter and best/ bytes): a compiled step is as resumable as
an eager one. The suite runs in a pytest of its own with UVFT_FAULTS_COMPILE=1 (fault_runs.COMPILE),
its reference run compiled too; `UVFT_FAULTS_COMPILE=1 pytest tests/faults` runs all of it so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fault_runs import ROOT

KILL = "tests/faults/test_kill.py::test_kill_9_at_a_failpoint_then_resume_equals_never_stopping"
SIGNAL = "tests/faults/test_preemption.py::test_signal_to_a_training_process_saves_and_resumes_exactly"
SELECTION = [
    *(f"{KILL}[{point}]" for point in ("step.forward:7", "step.update:10", "checkpoint.write:2")),
    *(f"{SIGNAL}[{signum}]" for signum in (15, 2)),  # SIGTERM, SIGINT
]


@pytest.mark.slow
def test_the_fault_suite_holds_with_compile_on(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SELECTION],
        cwd=ROOT,
        env={**os.environ, "UVFT_FAULTS_COMPILE": "1", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "5 passed" in proc.stdout, proc.stdout[-2000:]
