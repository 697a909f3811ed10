"""Compiles the tiny LM-GRPO learn step on an fsdp=4 mesh of 4 forced CPU devices, exactly as
`compose(..., "sharded")` runs it (`parallel.sharded_program`), for two global batch sizes, and
prints the collectives of the compiled per-device HLO (`training.hlo_accounting`) with the
parameter bytes.

Executed by test_sharding.py in a subprocess (the device count must be set before jax starts).
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxrl_llm.algorithms import lm_grpo  # noqa: E402
from jaxrl_llm.training.hlo_accounting import hlo_accounting  # noqa: E402
from jaxrl_llm.training.parallel import sharded_program  # noqa: E402
from jaxrl_llm.training.sharding import make_mesh, place_on_mesh  # noqa: E402

PROMPT, COMPLETION = 8, 8
config = lm_grpo.LMGRPOConfig(
    model="tiny", max_prompt_tokens=PROMPT, prompts_per_update=1, group_size=2, max_new_tokens=COMPLETION, num_updates=1
)
run = lm_grpo.setup(config, verbose=False)
algorithm = lm_grpo.make_lm_grpo(config, run, verbose=False)
mesh = make_mesh("fsdp=4")
train_state, _ = algorithm.init(jax.random.key(0))
train_state, frozen = place_on_mesh((train_state, algorithm.frozen), mesh)


def batch_of(rows: int) -> lm_grpo.CompletionBatch:
    keys = jax.random.split(jax.random.key(rows), 3)
    return lm_grpo.CompletionBatch(
        tokens=jax.random.randint(keys[0], (rows, PROMPT + COMPLETION), 1, run.model_config.vocab_size),
        mask=jnp.ones((rows, PROMPT + COMPLETION), bool),
        completion_mask=jnp.ones((rows, COMPLETION), bool),
        old_log_prob=-2.0 + 0.1 * jax.random.normal(keys[1], (rows, COMPLETION)),
        ref_log_prob=jnp.full((rows, COMPLETION), -2.0),
        advantage=jax.random.normal(keys[2], (rows,)),
    )


report = {"param_bytes": sum(x.nbytes for x in jax.tree.leaves(algorithm.frozen))}
for rows in (8, 32):
    batch = batch_of(rows)
    program, _ = sharded_program(algorithm.learn, mesh, train_state, batch, frozen, donate_state=True)
    text = program.lower(train_state, batch, jax.random.key(1), frozen).compile().as_text()
    report[str(rows)] = hlo_accounting(text, num_devices=4)["collectives"]
print(json.dumps(report))
