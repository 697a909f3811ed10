"""Every algorithm trains to the same parameters on 1 device and under shard_map, three of
them under pmap too, and four with their state sharded by the rule table on a
data x fsdp (x tensor) mesh (8 forced CPU devices, through `training.compose`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ALGORITHMS = ["ppo", "grpo", "gigpo", "lm_grpo", "lm_agent", "sft", "reward_model", "dqn", "sac", "sac_discrete", "td3"]
# pmap wraps every algorithm's learn the same way (`training.parallel`); one on-policy, one
# off-policy and one host-collected LM algorithm check it, the rest check shard_map only
# (each mode is one more compile of the whole step on 8 devices: ~10 s per case on 2 cores).
PMAP_CHECKED = {"ppo", "sac", "lm_grpo"}
# FSDP (and tensor parallelism for an LM) from the rule table: each device must hold about a
# quarter of the parameters (1/4 of every kernel, replicated norms and scalars on top).
SHARDED_CHECKED = {
    "ppo": "data=2,fsdp=4",
    "sft": "data=2,fsdp=4",
    "reward_model": "data=2,fsdp=4",
    "lm_grpo": "data=2,fsdp=2,tensor=2",
}


def parallel_report(algorithm: str) -> dict:
    script = Path(__file__).with_name("parallel_check.py")
    modes = ["shard_map", "pmap"] if algorithm in PMAP_CHECKED else ["shard_map"]
    if algorithm in SHARDED_CHECKED:
        modes.append(f"sharded:{SHARDED_CHECKED[algorithm]}")
    # XLA's CPU runtime with 8 forced devices on 2 cores occasionally aborts a collective
    # ("Termination timeout for all reduce", design.md); such an abort is retried once.
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, str(script), "--modes", ";".join(modes), algorithm], capture_output=True, text=True, timeout=900
        )
        if "Termination timeout" not in out.stderr:
            break
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sharded_modes_match_single_device(algorithm):
    report = parallel_report(algorithm)
    assert report["num_devices"] == 8
    result = report[algorithm]
    assert result["param_change_vs_start"] > 1e-4  # training moved the parameters
    modes = [mode for mode in result if mode not in ("single", "param_change_vs_start")]
    assert len(modes) == 1 + (algorithm in PMAP_CHECKED) + (algorithm in SHARDED_CHECKED), result
    for mode in modes:
        assert result[mode]["max_abs_param_diff"] < 1e-5, result
        assert abs(result[mode]["loss"] - result["single"]["loss"]) < 1e-4, result
        if mode.startswith("sharded"):
            assert result[mode]["fullest_device_param_fraction"] < 0.3, result
