"""Fixed-size key/value cache for incremental decoding, as a plain pytree.

Slots are written in time order for the whole batch at once (`length` is shared), and
`slot_mask` says which slots hold real tokens: left padding, right padding and tokens
written after a row finished are all just masked slots, so attention needs no per-row offsets.
Positions (for RoPE) are the caller's business and are baked into the cached keys.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_llm.models.llama_config import LlamaConfig


class KVCache(NamedTuple):
    keys: jax.Array  # [layers, B, max_len, kv_heads, head_dim]
    values: jax.Array  # [layers, B, max_len, kv_heads, head_dim]
    slot_mask: jax.Array  # [B, max_len] bool: slot holds a real (non-padding) token
    length: jax.Array  # [] int32: slots written so far (the next write starts here)

    @property
    def max_len(self) -> int:
        return self.keys.shape[2]


def init_cache(config: LlamaConfig, batch_size: int, max_len: int, dtype=None) -> KVCache:
    """An empty cache; `dtype` defaults to the config's compute dtype."""
    shape = (config.num_layers, batch_size, max_len, config.num_kv_heads, config.head_dim)
    dtype = config.compute_dtype if dtype is None else dtype
    return KVCache(
        keys=jnp.zeros(shape, dtype),
        values=jnp.zeros(shape, dtype),
        slot_mask=jnp.zeros((batch_size, max_len), bool),
        length=jnp.zeros((), jnp.int32),
    )


def append_slots(stored: jax.Array, new: jax.Array, start, slot_axis: int) -> jax.Array:
    """Writes `new` into `stored` from slot `start` along `slot_axis` (every other index 0)."""
    zero = jnp.zeros((), jnp.int32)
    index = tuple(start if axis == slot_axis else zero for axis in range(stored.ndim))
    return jax.lax.dynamic_update_slice(stored, new.astype(stored.dtype), index)


def write_to_cache(
    cache: KVCache, new_keys: jax.Array, new_values: jax.Array, token_mask: jax.Array
) -> KVCache:
    """Appends T steps: keys/values [layers, B, T, kv_heads, head_dim], token_mask [B, T].

    Writing past `max_len` is not checked inside jit (dynamic_update_slice clamps the index);
    size the cache for prompt + new tokens.
    """
    start = cache.length
    return KVCache(
        keys=append_slots(cache.keys, new_keys, start, slot_axis=2),
        values=append_slots(cache.values, new_values, start, slot_axis=2),
        slot_mask=append_slots(cache.slot_mask, token_mask.astype(bool), start, slot_axis=1),
        length=start + new_keys.shape[2],
    )
