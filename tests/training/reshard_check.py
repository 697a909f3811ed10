"""Saves a rule-sharded train state on 8 CPU devices (data=2, fsdp=4) and restores it onto 4
devices (fsdp=4) and onto 1, through `CheckpointStore` with the target layout as template.

Executed by test_sharding.py in a subprocess (the device count must be set before jax starts).
Prints per target: the max |Δ| of every leaf against the saved state and the target's
sharding of one kernel.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxrl_llm.algorithms import lm_sft  # noqa: E402
from jaxrl_llm.training import CheckpointStore, compose  # noqa: E402
from jaxrl_llm.training.sharding import bytes_per_device, make_mesh  # noqa: E402


def main(directory):
    algorithm = lm_sft.make_sft(
        lm_sft.SFTConfig(model="tiny", arithmetic_kinds=("add",), max_operand=9, max_prompt_tokens=24, batch_size=16, num_updates=1),
        verbose=False,
    )
    devices = jax.devices()
    saved_fns = compose(algorithm, "sharded", make_mesh("data=2,fsdp=4", devices))
    state, _ = saved_fns.step(saved_fns.init(jax.random.PRNGKey(0)))  # one update: Adam moments are non-zero
    store = CheckpointStore(directory)
    store.save(1, state)
    targets = {
        "fsdp=4 on 4 devices": compose(algorithm, "sharded", make_mesh("fsdp=4", devices[:4])),
        "1 device": compose(algorithm),
    }
    report = {}
    for name, fns in targets.items():
        like = fns.init(jax.random.PRNGKey(1))  # other values, the target layout
        restored = store.restore(1, like)
        diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))), state, restored)
        kernel = restored.train_state.params["layers"]["mlp"]["gate_proj"]["kernel"]
        report[name] = {
            "max_abs_diff": max(jax.tree.leaves(diffs)),
            "devices": len(kernel.sharding.device_set),
            "spec": str(getattr(kernel.sharding, "spec", "")),
            "param_bytes_per_device": sorted(set(bytes_per_device(restored.train_state.params).values())),
        }
    report["saved_param_bytes_per_device"] = sorted(set(bytes_per_device(state.train_state.params).values()))
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
