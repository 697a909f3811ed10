"""Faults: SIGKILL + --resume is bitwise identical; NaN stops cleanly; config mismatch refuses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxrl_llm.training import (
    CheckpointStore,
    IncompatibleRunError,
    compose,
    NonFiniteLossError,
    prepare_run_dir,
    run,
)
from jaxrl_llm.training.metrics import read_metrics
from counting_algorithm import counting_functions

PPO_ARGS = [
    "--total-frames",
    "102400",
    "--num-envs",
    "4",
    "--num-steps",
    "64",
    "--checkpoint-every",
    "5",
    "--no-progress",
    "--seed",
    "3",
]  # 400 updates


def cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jaxrl_llm.cli", "ppo", "--out", str(out), *PPO_ARGS, *extra]


def final_params(out: Path):
    store = CheckpointStore(out / "checkpoints")
    step = store.latest_step()
    from jaxrl_llm.algorithms import ppo

    config = ppo.PPOConfig(total_frames=102400, num_envs=4, num_steps=64, seed=3)
    like = jax.eval_shape(compose(ppo.make_ppo(config)).init, jax.random.PRNGKey(0))
    state = store.restore(step, like)
    store.close()
    return step, state


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(cli(reference), check=True, timeout=600, capture_output=True)

    proc = subprocess.Popen(cli(interrupted), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = interrupted / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.exists() and any(p.name.isdigit() and int(p.name) > 0 for p in checkpoints.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; raise its budget"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = CheckpointStore(checkpoints).latest_step()
    assert killed_at is not None and 0 < killed_at < 400

    subprocess.run(cli(interrupted, "--resume"), check=True, timeout=600, capture_output=True)
    (step_a, state_a), (step_b, state_b) = final_params(reference), final_params(interrupted)
    assert step_a == step_b == 400
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rows = read_metrics(interrupted / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 401))  # no update logged twice or lost
    assert (interrupted / "learning_curve.png").stat().st_size > 1000


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match="update 7.*last good checkpoint \\(update 5\\)"):
        run(
            counting_functions(nan_at=7),
            {"algorithm": "count"},
            tmp_path,
            seed=0,
            checkpoint_every=5,
            progress=False,
        )
    store = CheckpointStore(tmp_path / "checkpoints")
    assert store.latest_step() == 5
    state = store.restore(5, counting_functions().init(None))
    assert int(state["count"]) == 5
    np.testing.assert_array_equal(np.asarray(state["w"]), 0.5**5)


@pytest.mark.parametrize("host_update", [False, True])
def test_resume_continues_and_short_last_chunk(tmp_path, host_update):
    fns = counting_functions(num_updates=12, host_update=host_update)
    state = run(fns, {"algorithm": "count"}, tmp_path, seed=0, checkpoint_every=5, progress=False)
    assert int(state["count"]) == 12
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 12
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["frames"] for r in rows] == [10.0 * i for i in range(1, 13)]


def test_new_run_refuses_to_overwrite_and_resume_refuses_other_config(tmp_path):
    run(
        counting_functions(num_updates=3),
        {"algorithm": "count", "lr": 1.0},
        tmp_path,
        seed=0,
        checkpoint_every=5,
        progress=False,
    )
    with pytest.raises(IncompatibleRunError, match="--resume"):
        prepare_run_dir(tmp_path, {"algorithm": "count", "lr": 1.0}, resume=False)
    with pytest.raises(IncompatibleRunError, match="lr: stored 1.0, now 2.0"):
        prepare_run_dir(tmp_path, {"algorithm": "count", "lr": 2.0}, resume=True)
    prepare_run_dir(tmp_path, {"algorithm": "count", "lr": 1.0}, resume=True)  # same config: fine


def test_cli_reports_incompatible_resume(tmp_path):
    run(counting_functions(num_updates=3), {"algorithm": "count"}, tmp_path, seed=0, progress=False)
    out = subprocess.run(cli(tmp_path, "--resume"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "Cannot resume" in out.stderr and "algorithm: stored 'count', now 'ppo'" in out.stderr
