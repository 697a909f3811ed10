"""Multi-process (multi-host) runs on localhost: 2 processes x 4 CPU devices joined by
`jax.distributed` (the CLI joins when JAX_COORDINATOR_ADDRESS is set) train PPO rule-sharded
on a data=2 x fsdp=4 mesh; a killed process makes the other stop with an error instead of
waiting forever; --resume on both continues (checkpoints are collective, process 0 alone writes
the run directory) and ends exactly where one process with 8 devices ends."""

import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxrl_llm.algorithms import ppo
from jaxrl_llm.training import CheckpointStore, compose
from jaxrl_llm.training.metrics import read_metrics

# a constant learning rate: a run stopped early and resumed has the schedule of one run
PPO_FLAGS = ["--parallel", "sharded", "--mesh", "data=2,fsdp=4", "--num-envs", "8", "--num-steps", "16",
             "--no-anneal-lr", "--no-progress", "--stall-seconds", "0"]
CLI = "import sys\nfrom jaxrl_llm.cli import main\nmain(sys.argv[1:])\n"
HEARTBEAT_SECONDS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def start(args, *, process_id=None, port=None, log=None) -> subprocess.Popen:
    env = dict(os.environ)
    if process_id is not None:
        env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(process_id),
                   JAXRL_HEARTBEAT_TIMEOUT=str(HEARTBEAT_SECONDS))
    return subprocess.Popen([sys.executable, "-c", CLI, "ppo", *args], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def run_two_processes(args, tmp_path, timeout=600) -> list[str]:
    port = free_port()
    logs = [open(tmp_path / f"process{i}.log", "a+") for i in range(2)]
    procs = [start([*args, "--cpu-devices", "4"], process_id=i, port=port, log=logs[i]) for i in range(2)]
    for proc in procs:
        proc.wait(timeout=timeout)
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    return outputs


def final_params(out, frames):
    algorithm = ppo.make_ppo(ppo.PPOConfig(num_envs=8, num_steps=16, total_frames=frames, anneal_lr=False))
    like = compose(algorithm).init(jax.random.PRNGKey(0))
    store = CheckpointStore(out / "checkpoints")
    return store.restore(store.latest_step(), like).train_state.params


@pytest.mark.slow
def test_two_processes_survive_a_kill_resume_and_equal_one_process(tmp_path):
    """Kill one of two processes mid-run (each sees 4 devices: --cpu-devices takes effect before
    gymnax starts JAX): the other stops with the runtime's error within the
    heartbeat timeout; --resume on both continues from the last checkpoint, writes each metrics
    row once, and ends where one 8-device process running straight through ends."""
    out, single = tmp_path / "multi", tmp_path / "single"
    args = [*PPO_FLAGS, "--total-frames", "2000000", "--out", str(out), "--cpu-devices", "4"]
    port = free_port()
    logs = [open(tmp_path / f"kill{i}.log", "w+") for i in range(2)]
    procs = [start(args, process_id=i, port=port, log=logs[i]) for i in range(2)]
    deadline = time.monotonic() + 300

    def checkpointed_updates():
        folder = out / "checkpoints"
        return [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.exists() else []

    while not any(step > 0 for step in checkpointed_updates()):  # a checkpoint after some updates
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "no checkpoint"
        time.sleep(0.5)
    procs[1].kill()
    try:
        procs[0].wait(timeout=HEARTBEAT_SECONDS + 120)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        pytest.fail("the surviving process kept waiting after its peer died")
    logs[0].seek(0)
    survivor = logs[0].read()
    for log in logs:
        log.close()
    assert procs[0].returncode != 0 and "stopped sending heartbeats" in survivor, survivor[-2000:]

    saved = CheckpointStore(out / "checkpoints").latest_step()
    frames = (saved + 4) * 128
    run_two_processes([*PPO_FLAGS, "--total-frames", str(frames), "--out", str(out), "--resume"], tmp_path)
    one = subprocess.run([sys.executable, "-c", CLI, "ppo", *PPO_FLAGS, "--cpu-devices", "8", "--total-frames", str(frames),
                          "--out", str(single)], capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    rows_multi, rows_single = read_metrics(out / "metrics.csv"), read_metrics(single / "metrics.csv")
    assert [int(r["step"]) for r in rows_multi] == list(range(1, saved + 5))  # one writer, no duplicates
    for a, b in zip(rows_multi, rows_single):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(final_params(out, frames)), jax.tree.leaves(final_params(single, frames))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


SMALL = {"hidden_size": "32", "intermediate_size": "64", "num_layers": "1", "num_heads": "2", "num_kv_heads": "2"}
GRPO_FLAGS = ["--model", "tiny", "--model-overrides", *[x for kv in SMALL.items() for x in kv], "--parallel", "sharded",
              "--mesh", "data=2,fsdp=2,tensor=2", "--prompts-per-update", "8", "--group-size", "4", "--max-new-tokens", "8",
              "--num-updates", "3", "--no-progress", "--stall-seconds", "0"]


@pytest.mark.slow
def test_lm_grpo_on_two_processes_equals_one_process(tmp_path):
    """Host-collected LM-GRPO: the completions are sampled on the global mesh and gathered to every
    process, which scores them all and feeds the same global batch to the FSDP x tensor step."""
    from jaxrl_llm.algorithms import lm_grpo

    multi, single = tmp_path / "multi", tmp_path / "single"
    port = free_port()
    logs = [open(tmp_path / f"grpo{i}.log", "w+") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", CLI.replace("main(sys.argv[1:])", "main(['lm-grpo', *sys.argv[1:]])"),
                               *GRPO_FLAGS, "--cpu-devices", "4", "--out", str(multi)],
                              env={**os.environ, "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
                                   "JAX_PROCESS_ID": str(i), "JAXRL_HEARTBEAT_TIMEOUT": str(HEARTBEAT_SECONDS)},
                              stdout=logs[i], stderr=subprocess.STDOUT, text=True) for i in range(2)]
    for proc, log in zip(procs, logs):
        proc.wait(timeout=600)
        log.seek(0)
        assert proc.returncode == 0, log.read()[-3000:]
        log.close()
    one = subprocess.run([sys.executable, "-c", CLI, "lm-grpo", *GRPO_FLAGS, "--cpu-devices", "8", "--out", str(single)],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    rows_multi, rows_single = read_metrics(multi / "metrics.csv"), read_metrics(single / "metrics.csv")
    assert [int(r["step"]) for r in rows_multi] == [1, 2, 3]
    for a, b in zip(rows_multi, rows_single):
        assert a["accuracy"] == b["accuracy"]  # the same completions, scored the same
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-7)
    config = lm_grpo.LMGRPOConfig(model="tiny", model_overrides=SMALL, prompts_per_update=8, group_size=4, max_new_tokens=8,
                                  num_updates=3)
    like = compose(lm_grpo.make_lm_grpo(config, verbose=False)).init(jax.random.PRNGKey(0))
    restored = [CheckpointStore(out / "checkpoints").restore(3, like).train_state.params for out in (multi, single)]
    for a, b in zip(*map(jax.tree.leaves, restored)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_each_process_feeds_only_its_rows_and_the_global_batch_is_whole(tmp_path):
    """Host-local data: each process holds half the rows (`host_local_slice`), the global array
    built from them (`jax.make_array_from_process_local_data`) is the whole batch in process
    order, and a jitted reduction over all 8 devices sees every row once."""
    import json
    from pathlib import Path

    port = free_port()
    script = Path(__file__).with_name("host_local_check.py")
    procs = []
    for process_id in range(2):
        env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(process_id), JAXRL_HEARTBEAT_TIMEOUT=str(HEARTBEAT_SECONDS))
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    for process_id, report in enumerate(reports):
        assert report["rows"] == [8 * process_id, 8 * process_id + 8], report
        assert report["global_shape"] == [16, 3], report
        # this process's devices hold exactly its own rows (two per device)
        assert report["addressable_rows"] == list(range(8 * process_id, 8 * process_id + 8, 2)), report
        assert report["weighted_sum"] == report["expected_weighted_sum"], report
        assert report["gathered_equals_full"], report
