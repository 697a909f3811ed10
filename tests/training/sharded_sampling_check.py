"""Samples from a decoder whose weights are laid out by the rule table (data=2, fsdp=2, tensor=2
on 8 CPU devices) and from the same weights on one device; prints whether the greedy tokens
agree, the log-prob gap, and the partition spec XLA gives the prefill's KV cache.

Executed by test_sharding.py in a subprocess (the device count must be set before jax starts).
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxrl_llm.models.llama import init_params, prefill  # noqa: E402
from jaxrl_llm.models.llama_config import tiny_config  # noqa: E402
from jaxrl_llm.rollout.sampling import generate  # noqa: E402
from jaxrl_llm.training.sharding import batch_sharding, make_mesh, place_on_mesh  # noqa: E402

config = tiny_config()
params = init_params(config, jax.random.key(0))
mesh = make_mesh("data=2,fsdp=2,tensor=2")
placed = place_on_mesh(params, mesh)
tokens = jax.random.randint(jax.random.key(1), (8, 12), 3, config.vocab_size)
mask = jnp.ones(tokens.shape, bool).at[:4, :3].set(False)  # some left padding
sharded_tokens, sharded_mask = jax.device_put((tokens, mask), batch_sharding(mesh))
_, cache = jax.jit(lambda p, t, m: prefill(p, config, t, m, 32))(placed, sharded_tokens, sharded_mask)
sample = jax.jit(lambda p, t, m, k: generate(p, config, t, m, k, 8, temperature=0.0))
one = sample(params, tokens, mask, jax.random.key(2))
eight = sample(placed, sharded_tokens, sharded_mask, jax.random.key(2))
print(json.dumps({
    "tokens_equal": bool((one.tokens == eight.tokens).all()),
    "max_logprob_diff": float(jnp.abs(one.logprobs - eight.logprobs).max()),
    "cache_keys_spec": str(cache.keys.sharding.spec),  # [layers, batch, slots, kv_heads, head_dim]
    "cache_slot_mask_spec": str(cache.slot_mask.sharding.spec),
}))
