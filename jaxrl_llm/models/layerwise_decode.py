"""Decoding with the layers unrolled over per-layer weight and cache buffers.

The scanned model (`llama.py`) keeps each parameter stacked on a [layers] axis, which keeps
compile time flat in depth but makes every layer of every step slice its weights and cache
out of the stacks: on CPU those slices are copies, and for one-token decode steps they cost
as much as the matmuls. A decode loop instead splits the stacks once (`split_layers`,
`split_cache`) and runs the same `DecoderLayer` layer by layer on the separate buffers, so a
step reads each weight once and updates each layer's cache in place.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from jaxrl_llm.models.kv_cache import KVCache, append_slots
from jaxrl_llm.models.llama import DecoderLayer, embed, final_norm, project_to_vocab, rope_tables
from jaxrl_llm.models.llama_config import LlamaConfig


class LayerCaches(NamedTuple):
    """A `KVCache` as one [B, max_len, kv_heads, head_dim] buffer per layer."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    slot_mask: jax.Array  # [B, max_len]
    length: jax.Array  # [] int32


def split_layers(params, config: LlamaConfig) -> tuple:
    """The per-layer parameter trees of the stacked `params["layers"]`."""
    return tuple(jax.tree.map(lambda x, i=i: x[i], params["layers"]) for i in range(config.num_layers))


def split_cache(cache: KVCache) -> LayerCaches:
    layers = range(cache.keys.shape[0])
    return LayerCaches(
        tuple(cache.keys[i] for i in layers),
        tuple(cache.values[i] for i in layers),
        cache.slot_mask,
        cache.length,
    )


def decode_forward(params, layer_params, config: LlamaConfig, tokens, positions, cache: LayerCaches, mask):
    """`llama.forward` with a cache, layer by layer: (logits [B, T, V] float32, updated cache).

    `layer_params` is `split_layers(params, config)`; `mask` [B, T] marks real tokens.
    """
    mask = mask.astype(bool)
    cos, sin = rope_tables(config, positions)
    hidden = embed(params, config, tokens)
    layer = DecoderLayer(config)
    start = cache.length
    keys, values = [], []
    for weights, cached_keys, cached_values in zip(layer_params, cache.keys, cache.values):
        hidden, (new_keys, new_values) = layer.apply(
            {"params": weights}, hidden, (cached_keys, cached_values), (cos, sin, mask, cache.slot_mask)
        )
        keys.append(append_slots(cached_keys, new_keys, start, slot_axis=1))
        values.append(append_slots(cached_values, new_values, start, slot_axis=1))
    slot_mask = append_slots(cache.slot_mask, mask, start, slot_axis=1)
    new_cache = LayerCaches(tuple(keys), tuple(values), slot_mask, start + tokens.shape[1])
    logits = project_to_vocab(params, config, final_norm(params, config, hidden))
    return logits, new_cache
