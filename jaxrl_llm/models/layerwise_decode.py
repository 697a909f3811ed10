"""Decoding over per-layer weight and cache buffers laid out for one-token steps.

The scanned model (`llama.py`) keeps each parameter stacked on a [layers] axis and its cache as
[layers, B, S, K, d]: right for training and the prefill, wrong for a decode step, which would
slice every layer's weights and cache out of the stacks (copies on CPU) and transpose the
cache for the attention dots. A decode loop instead prepares, once per `generate` call:

- `decode_weights`: per layer, the q/k/v kernels fused into one [D, (H + 2K) d] matrix and
  gate/up into one [D, 2F] (one matmul each instead of three and two), out of the stacks;
- `split_cache`: the prefill's cache as one [B, K, S, d] buffer per layer, the layout whose
  axes the attention dots want (batch b, k first; then slots, head dim), so a step writes its
  new keys/values in place at `length` and attends over the cache where it lies.

Measured A/B on SmolLM2-135M at batch 16 (benchmarks/RESULTS.md, "LM decode"): the cache
layout removes ~25% of a step, the fused projections a few percent more.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrl_llm.models.attention import cached_attention
from jaxrl_llm.models.kv_cache import KVCache, append_slots
from jaxrl_llm.models.llama import embed, final_norm, project_to_vocab, rms_norm, rope_tables
from jaxrl_llm.models.llama_config import LlamaConfig
from jaxrl_llm.models.rope import apply_rope


class LayerWeights(NamedTuple):
    """One decoder layer's weights for decoding (kernels [in, out])."""

    input_norm: jax.Array  # [D]
    qkv_kernel: jax.Array  # [D, (H + 2K) d]: q | k | v
    qkv_bias: jax.Array | None  # [(H + 2K) d] (Qwen2) or None
    o_kernel: jax.Array  # [H d, D]
    post_attention_norm: jax.Array  # [D]
    gate_up_kernel: jax.Array  # [D, 2F]: gate | up
    down_kernel: jax.Array  # [F, D]


class LayerCaches(NamedTuple):
    """A `KVCache` as one [B, kv_heads, max_len, head_dim] buffer per layer."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    slot_mask: jax.Array  # [B, max_len]
    length: jax.Array  # [] int32


def decode_weights(params, config: LlamaConfig) -> tuple[LayerWeights, ...]:
    """The per-layer `LayerWeights` of the stacked `params["layers"]` (copies, fused)."""
    stacked = params["layers"]
    attention, mlp = stacked["attention"], stacked["mlp"]
    qkv = ("q_proj", "k_proj", "v_proj")

    def layer(i: int) -> LayerWeights:
        return LayerWeights(
            input_norm=stacked["input_norm"]["scale"][i],
            qkv_kernel=jnp.concatenate([attention[name]["kernel"][i] for name in qkv], axis=-1),
            qkv_bias=(
                jnp.concatenate([attention[name]["bias"][i] for name in qkv], axis=-1)
                if config.qkv_bias
                else None
            ),
            o_kernel=attention["o_proj"]["kernel"][i],
            post_attention_norm=stacked["post_attention_norm"]["scale"][i],
            gate_up_kernel=jnp.concatenate(
                [mlp["gate_proj"]["kernel"][i], mlp["up_proj"]["kernel"][i]], axis=-1
            ),
            down_kernel=mlp["down_proj"]["kernel"][i],
        )

    return tuple(layer(i) for i in range(config.num_layers))


def split_cache(cache: KVCache) -> LayerCaches:
    """[layers, B, S, K, d] stacks -> per-layer [B, K, S, d] buffers (one copy, before decoding)."""
    layers = range(cache.keys.shape[0])
    return LayerCaches(
        tuple(cache.keys[i].swapaxes(1, 2) for i in layers),
        tuple(cache.values[i].swapaxes(1, 2) for i in layers),
        cache.slot_mask,
        cache.length,
    )


def _project(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """x @ kernel (+ bias) in x's dtype, as `nn.Dense` computes it."""
    y = jnp.dot(x, kernel.astype(x.dtype))
    return y if bias is None else y + bias.astype(x.dtype)


def _decode_layer(config: LlamaConfig, weights: LayerWeights, hidden, cos, sin, keys, values, visible, start):
    """`llama.DecoderLayer` on new tokens hidden [B, T, D] whose keys/values it first writes
    into this layer's cache buffers at `start`: (hidden, keys, values)."""
    c = config
    batch, steps, _ = hidden.shape
    split = (c.num_heads * c.head_dim, (c.num_heads + c.num_kv_heads) * c.head_dim)
    normed = rms_norm(hidden, weights.input_norm, c.rms_norm_eps, c.compute_dtype)
    queries, new_keys, new_values = jnp.split(_project(normed, weights.qkv_kernel, weights.qkv_bias), split, -1)
    queries = apply_rope(queries.reshape(batch, steps, c.num_heads, c.head_dim), cos, sin)
    new_keys = apply_rope(new_keys.reshape(batch, steps, c.num_kv_heads, c.head_dim), cos, sin)
    new_values = new_values.reshape(batch, steps, c.num_kv_heads, c.head_dim)
    keys = append_slots(keys, new_keys.swapaxes(1, 2), start, slot_axis=2)
    values = append_slots(values, new_values.swapaxes(1, 2), start, slot_axis=2)
    attended = cached_attention(queries, keys, values, visible)
    hidden = hidden + _project(attended.reshape(batch, steps, -1), weights.o_kernel)
    normed = rms_norm(hidden, weights.post_attention_norm, c.rms_norm_eps, c.compute_dtype)
    gate, up = jnp.split(_project(normed, weights.gate_up_kernel), 2, axis=-1)
    return hidden + _project(nn.silu(gate) * up, weights.down_kernel), keys, values


def decode_forward(params, layer_weights, config: LlamaConfig, tokens, positions, cache: LayerCaches, mask):
    """`llama.forward` with a cache, layer by layer: (logits [B, T, V] float32, updated cache).

    `layer_weights` is `decode_weights(params, config)`; `mask` [B, T] marks real tokens.
    New token t sees the cache's real slots and the real new tokens up to itself.
    """
    steps = tokens.shape[1]
    start = cache.length
    cos, sin = rope_tables(config, positions)
    slot_mask = append_slots(cache.slot_mask, mask.astype(bool), start, slot_axis=1)
    slots = jnp.arange(slot_mask.shape[1])
    visible = slot_mask[:, None, :] & (slots[None, None, :] <= start + jnp.arange(steps)[None, :, None])
    hidden = embed(params, config, tokens)
    keys, values = [], []
    for weights, layer_keys, layer_values in zip(layer_weights, cache.keys, cache.values):
        hidden, layer_keys, layer_values = _decode_layer(
            config, weights, hidden, cos, sin, layer_keys, layer_values, visible, start
        )
        keys.append(layer_keys)
        values.append(layer_values)
    new_cache = LayerCaches(tuple(keys), tuple(values), slot_mask, start + steps)
    logits = project_to_vocab(params, config, final_norm(params, config, hidden))
    return logits, new_cache
