"""Stress: the issue's hang reproducer, executed 6 times, never hangs silently.

jaxlib 0.10.2's CPU runtime occasionally loses a wake-up (host blocked in device_get,
every XLA thread idle). The reproducer is the GiGPO job on 6x6 mazes, 49,152 frames,
2 vmapped seeds; it is compiled once per process and executed repeatedly under the
stall watchdog. A stall must end its process with code 75 (the driver then restarts
the job), never block past the timeout.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from jaxrl_llm.training.watchdog import EXIT_STALLED

RUN_PY = Path(__file__).parents[2] / "experiments" / "gigpo_vs_grpo" / "run.py"
EXECUTIONS = 6


@pytest.mark.slow
def test_the_reproducer_never_hangs_silently(tmp_path):
    remaining, stalls = EXECUTIONS, 0
    for _ in range(4):  # at most 3 restarts after stalls
        command = [
            sys.executable,
            str(RUN_PY),
            "--frames",
            "49152",
            "--seeds",
            "2",
            "--repeats",
            str(remaining),
            "--stall-seconds",
            "30",
            "--job",
            f"Maze 6x6|GiGPO (w/ std)|{tmp_path / 'job.npz'}",
        ]
        out = subprocess.run(command, capture_output=True, text=True, timeout=900)  # a silent hang fails here
        assert out.returncode in (0, EXIT_STALLED), out.stderr[-2000:]
        remaining -= out.stdout.count(" of ")  # one line per finished execution
        if out.returncode == 0:
            break
        stalls += 1
        assert "stalled" in out.stderr
    assert remaining == 0, f"{remaining} executions left after {stalls} stalls"
    print(f"{EXECUTIONS} executions, {stalls} stalls caught by the watchdog")
