"""The experiment driver restarts a stalled job instead of hanging or failing."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

RUN_PY = Path(__file__).parents[2] / "experiments" / "gigpo_vs_grpo" / "run.py"


def load_driver():
    spec = importlib.util.spec_from_file_location("gigpo_vs_grpo_run", RUN_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stall", ["exit75", "timeout"])
def test_a_stalled_job_is_restarted(tmp_path, monkeypatch, stall):
    driver = load_driver()
    calls = []

    def fake_run(command, timeout):
        calls.append(command)
        if len(calls) == 1:  # the first attempt stalls
            if stall == "timeout":
                raise subprocess.TimeoutExpired(command, timeout)
            return SimpleNamespace(returncode=driver.EXIT_STALLED)
        npz = command[-1].split("|")[-1]
        np.savez(npz, frames=np.arange(3), success=np.ones((2, 3)), compile_s=1.0, run_s=2.0)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(driver.subprocess, "run", fake_run)
    frames, success, _, run_s = driver.run_in_subprocess(driver.Args(), "Maze 6x6", "GRPO", tmp_path)
    assert len(calls) == 2 and run_s == 2.0 and success.shape == (2, 3)


def test_a_job_that_always_stalls_gives_up_with_a_message(tmp_path, monkeypatch):
    driver = load_driver()
    monkeypatch.setattr(driver.subprocess, "run", lambda command, timeout: SimpleNamespace(returncode=75))
    with pytest.raises(RuntimeError, match="stalled 3 times"):
        driver.run_in_subprocess(driver.Args(), "Maze 6x6", "GRPO", tmp_path)
