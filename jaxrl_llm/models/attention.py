"""Grouped-query causal attention over new tokens plus an optional key/value cache.

Scores against the cache and against the new tokens are computed separately and joined
before one softmax, so the cache is only read (never copied) inside a layer:
    softmax([q K_cache^T | q K_new^T] / sqrt(d)) @ [V_cache ; V_new]
Masks: a cache slot is visible if `slot_mask` marks it as a real token (all cached slots
precede the new ones); a new key is visible if it is a real token and not in the future.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_MASKED = jnp.finfo(jnp.float32).min  # finite: a fully masked (padding) query gets a harmless uniform row


def grouped_query_attention(
    queries: jax.Array,
    new_keys: jax.Array,
    new_values: jax.Array,
    new_token_mask: jax.Array,
    cached_keys: jax.Array | None = None,
    cached_values: jax.Array | None = None,
    cached_slot_mask: jax.Array | None = None,
) -> jax.Array:
    """queries [B, T, H, d]; new_keys/new_values [B, T, K, d]; new_token_mask [B, T] bool;
    cached_* [B, S, K, d] and [B, S] (or None). H must be a multiple of K. Returns [B, T, H, d]."""
    batch, steps, num_heads, head_dim = queries.shape
    num_kv_heads = new_keys.shape[2]
    grouped = queries.reshape(batch, steps, num_kv_heads, num_heads // num_kv_heads, head_dim)
    grouped = grouped * jnp.asarray(head_dim**-0.5, queries.dtype)

    def scores(keys):
        return jnp.einsum("btkgd,bskd->bkgts", grouped, keys, preferred_element_type=jnp.float32)

    causal = jnp.tril(jnp.ones((steps, steps), bool))
    new_visible = causal[None] & new_token_mask[:, None, :].astype(bool)  # [B, Tq, Tk]
    parts = [(scores(new_keys), new_visible, new_values)]
    if cached_keys is not None:
        cache_visible = jnp.broadcast_to(
            cached_slot_mask[:, None, :], (batch, steps, cached_slot_mask.shape[1])
        )
        parts.insert(0, (scores(cached_keys), cache_visible, cached_values))

    all_scores = jnp.concatenate([s for s, _, _ in parts], axis=-1)
    all_visible = jnp.concatenate([m for _, m, _ in parts], axis=-1)[:, None, None]  # [B, 1, 1, Tq, S+Tk]
    probs = jax.nn.softmax(jnp.where(all_visible, all_scores, _MASKED), axis=-1)

    output = 0.0
    offset = 0
    for _, _, values in parts:
        width = values.shape[1]
        part_probs = probs[..., offset : offset + width].astype(values.dtype)
        output = output + jnp.einsum(
            "bkgts,bskd->btkgd", part_probs, values, preferred_element_type=jnp.float32
        )
        offset += width
    return output.reshape(batch, steps, num_heads, head_dim).astype(queries.dtype)


def cached_attention(
    queries: jax.Array, cached_keys: jax.Array, cached_values: jax.Array, visible: jax.Array
) -> jax.Array:
    """Grouped-query attention of new tokens over a cache that already holds their keys/values,
    in the cache's own [B, K, S, d] layout (decoding: the dots' batch axes (b, k) lead and the
    cache is read where it lies, never transposed):

        softmax(q K^T / sqrt(d), masked to `visible`) @ V

    queries [B, T, H, d] (H a multiple of K); cached_keys/cached_values [B, K, S, d];
    visible [B, T, S] bool (real slots at or before each query's own). Returns [B, T, H, d].
    """
    batch, steps, num_heads, head_dim = queries.shape
    num_kv_heads = cached_keys.shape[1]
    group = num_heads // num_kv_heads
    # rows m = g * T + t of each kv head's query block [B, K, G * T, d]
    grouped = queries.reshape(batch, steps, num_kv_heads, group, head_dim).transpose(0, 2, 3, 1, 4)
    grouped = grouped.reshape(batch, num_kv_heads, group * steps, head_dim)
    grouped = grouped * jnp.asarray(head_dim**-0.5, queries.dtype)
    scores = jnp.einsum("bkmd,bksd->bkms", grouped, cached_keys, preferred_element_type=jnp.float32)
    visible_rows = jnp.tile(visible, (1, group, 1))[:, None]  # [B, 1, G * T, S], row m -> query t = m % T
    probs = jax.nn.softmax(jnp.where(visible_rows, scores, _MASKED), axis=-1)
    output = jnp.einsum(
        "bkms,bksd->bkmd", probs.astype(cached_values.dtype), cached_values, preferred_element_type=jnp.float32
    )
    output = output.reshape(batch, num_kv_heads, group, steps, head_dim).transpose(0, 3, 1, 2, 4)
    return output.reshape(batch, steps, num_heads, head_dim).astype(queries.dtype)
