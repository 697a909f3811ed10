"""Llama-family decoder (Llama 2/3, SmolLM2, Qwen2) as a Flax Linen module.

    h_0     = embed(tokens)
    a_l     = h_{l-1} + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = rmsnorm(h_{l-1})
    h_l     = a_l + down_proj(silu(gate_proj(m)) * up_proj(m)),                          m = rmsnorm(a_l)
    logits  = rmsnorm(h_L) @ W_out          (W_out = embed^T when embeddings are tied)

Layers are an `nn.scan`, so every layer parameter is stacked on a leading [layers] axis and the
compile time does not grow with depth. Parameter tree (kernels are [in, out]):

    embed_tokens/embedding                [V, D]
    layers/input_norm/scale               [L, D]
    layers/attention/{q,k,v}_proj/kernel  [L, D, heads * d]     (+ bias [L, heads * d] for Qwen2)
    layers/attention/o_proj/kernel        [L, H * d, D]
    layers/post_attention_norm/scale      [L, D]
    layers/mlp/{gate,up}_proj/kernel      [L, D, F]
    layers/mlp/down_proj/kernel           [L, F, D]
    final_norm/scale                      [D]
    lm_head/kernel                        [D, V]                (absent when tied)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrl_llm.models.attention import grouped_query_attention
from jaxrl_llm.models.kv_cache import KVCache, init_cache, write_to_cache
from jaxrl_llm.models.llama_config import LlamaConfig
from jaxrl_llm.models.rope import apply_rope, inverse_frequencies, rope_angles

_INIT = nn.initializers.normal(stddev=0.02)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * scale, statistics in float32."""

    eps: float
    dtype: jnp.dtype
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        return rms_norm(x, scale, self.eps, self.dtype)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float, dtype) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) * scale over the last axis; statistics in float32, result in `dtype`."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed.astype(dtype) * scale.astype(dtype)).astype(dtype)


def _dense(config: LlamaConfig, features: int, name: str, use_bias: bool = False) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=config.compute_dtype,
        param_dtype=config.weight_dtype,
        kernel_init=_INIT,
        name=name,
    )


def _norm(config: LlamaConfig, name: str) -> RMSNorm:
    return RMSNorm(config.rms_norm_eps, config.compute_dtype, config.weight_dtype, name=name)


class Attention(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(self, x, cos, sin, token_mask, layer_cache):
        c = self.config
        batch, steps, _ = x.shape
        queries = _dense(c, c.num_heads * c.head_dim, "q_proj", c.qkv_bias)(x)
        keys = _dense(c, c.num_kv_heads * c.head_dim, "k_proj", c.qkv_bias)(x)
        values = _dense(c, c.num_kv_heads * c.head_dim, "v_proj", c.qkv_bias)(x)
        queries = apply_rope(queries.reshape(batch, steps, c.num_heads, c.head_dim), cos, sin)
        keys = apply_rope(keys.reshape(batch, steps, c.num_kv_heads, c.head_dim), cos, sin)
        values = values.reshape(batch, steps, c.num_kv_heads, c.head_dim)
        cached = (None, None, None) if layer_cache is None else layer_cache
        attended = grouped_query_attention(queries, keys, values, token_mask, *cached)
        output = _dense(c, c.hidden_size, "o_proj")(attended.reshape(batch, steps, -1))
        return output, (keys, values)


ACTIVATION_AXES = ("batch", "length", "activation_embed")
"""Logical axes of the hidden states [B, T, D]. Under `training.sharding`'s rules (a sharded step)
they pin the activations to the batch split, so XLA gathers FSDP-sharded weights (ZeRO-3) instead
of splitting each matmul's contraction and all-reducing activations; elsewhere a no-op."""


class SwiGLU(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        gate = _dense(c, c.intermediate_size, "gate_proj")(x)
        up = _dense(c, c.intermediate_size, "up_proj")(x)
        inner = nn.with_logical_constraint(nn.silu(gate) * up, ACTIVATION_AXES[:2] + ("mlp",))
        return _dense(c, c.hidden_size, "down_proj")(inner)


class DecoderLayer(nn.Module):
    """One pre-norm block; scanned over layers (carry: hidden [B, T, D])."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, hidden, layer_cache_kv, shared):
        cos, sin, token_mask, slot_mask = shared
        layer_cache = None if layer_cache_kv is None else (*layer_cache_kv, slot_mask)
        attended, new_kv = Attention(self.config, name="attention")(
            _norm(self.config, "input_norm")(hidden), cos, sin, token_mask, layer_cache
        )
        hidden = nn.with_logical_constraint(hidden + attended, ACTIVATION_AXES)
        hidden = hidden + SwiGLU(self.config, name="mlp")(_norm(self.config, "post_attention_norm")(hidden))
        return nn.with_logical_constraint(hidden, ACTIVATION_AXES), new_kv


def _logits(hidden, weight):
    return jnp.einsum(
        "...d,dv->...v", hidden, weight.astype(hidden.dtype), preferred_element_type=jnp.float32
    )


class VocabProjection(nn.Module):
    """Untied output head: hidden [..., D] @ kernel [D, V] accumulated into float32 logits."""

    vocab_size: int
    param_dtype: jnp.dtype

    @nn.compact
    def __call__(self, hidden):
        kernel = self.param("kernel", _INIT, (hidden.shape[-1], self.vocab_size), self.param_dtype)
        return _logits(hidden, kernel)


def rope_tables(config: LlamaConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """RoPE (cos, sin) for positions [B, T] under the config's theta and scaling."""
    return rope_angles(
        positions, inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    )


class LlamaForCausalLM(nn.Module):
    """`apply({"params": p}, tokens [B, T], positions [B, T], cache=None, mask=None) -> (logits [B, T, V] f32, cache)`.

    `mask` [B, T] marks real tokens (default: all); padded tokens are never attended to.
    With a cache, the new tokens are appended at `cache.length` and attend to every real cached
    slot; the updated cache is returned (None when no cache was given).
    """

    config: LlamaConfig

    def setup(self):
        c = self.config
        self.embed_tokens = nn.Embed(
            c.vocab_size,
            c.hidden_size,
            dtype=c.compute_dtype,
            param_dtype=c.weight_dtype,
            embedding_init=_INIT,
        )
        layer = nn.remat(DecoderLayer, prevent_cse=False) if c.remat else DecoderLayer
        self.layers = nn.scan(
            layer,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast),
            length=c.num_layers,
        )(c)
        self.final_norm = _norm(c, "final_norm")
        if not c.tie_embeddings:
            self.lm_head = VocabProjection(c.vocab_size, c.weight_dtype)

    def __call__(self, tokens, positions, cache: KVCache | None = None, mask=None):
        hidden, cache = self.hidden_states(tokens, positions, cache, mask)
        return self.project_to_vocab(hidden), cache

    def hidden_states(self, tokens, positions, cache: KVCache | None = None, mask=None):
        """Final-normed hidden states [B, T, D] (before the vocabulary projection) and the cache."""
        mask = jnp.ones(tokens.shape, bool) if mask is None else mask.astype(bool)
        hidden, new_keys, new_values = self.new_keys_and_values(tokens, positions, cache, mask)
        if cache is not None:
            cache = write_to_cache(cache, new_keys, new_values, mask)
        return hidden, cache

    def new_keys_and_values(self, tokens, positions, context: KVCache | None, mask):
        """Final-normed hidden states [B, T, D] of new tokens attending to the real slots of
        `context` (or to nothing before them), and their keys/values [layers, B, T, kv_heads, head_dim]."""
        cos, sin = rope_tables(self.config, positions)
        hidden = self.embed_tokens(tokens)
        context_kv = None if context is None else (context.keys, context.values)
        slot_mask = None if context is None else context.slot_mask
        hidden, (new_keys, new_values) = self.layers(hidden, context_kv, (cos, sin, mask, slot_mask))
        return self.final_norm(hidden), new_keys, new_values

    def project_to_vocab(self, hidden):
        """Logits [..., V] in float32 from final hidden states [..., D]."""
        if self.config.tie_embeddings:
            return _logits(hidden, self.embed_tokens.embedding.T)
        return self.lm_head(hidden)


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: LlamaConfig, key: jax.Array) -> dict:
    """Random parameters (normal(0.02) matrices, unit norm scales) as a plain pytree."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    return LlamaForCausalLM(config).init(key, tokens, tokens)["params"]


def forward(params, config: LlamaConfig, tokens, positions, cache: KVCache | None = None, mask=None):
    """(logits [B, T, V] float32, cache) — see `LlamaForCausalLM`."""
    return LlamaForCausalLM(config).apply({"params": params}, tokens, positions, cache, mask)


def hidden_states(params, config: LlamaConfig, tokens, positions, cache: KVCache | None = None, mask=None):
    """(final hidden states [B, T, D], cache) without the vocabulary projection."""
    model = LlamaForCausalLM(config)
    return model.apply({"params": params}, tokens, positions, cache, mask, method=model.hidden_states)


def prefill(params, config: LlamaConfig, tokens, mask, max_len: int, prefix: KVCache | None = None):
    """Prompts [B, P] (mask: real tokens) into a fresh cache of `max_len` slots:
    `(final hidden states [B, P, D], cache)`.

    Unlike `hidden_states` with an empty cache, the prompt attends only to itself (and to
    `prefix`), not to `max_len` empty slots. `prefix` is the cache of a shared start of every
    prompt (`prefix_cache`, batch 1): the prompts continue it (positions count on from its
    real tokens) and the returned cache holds its slots first, then the prompts', then
    `max_len - prefix slots - P` empty slots for decoding.
    """
    batch = tokens.shape[0]
    mask = mask.astype(bool)
    start, context = 0, None
    if prefix is not None:
        start = prefix.slot_mask.sum(axis=1)[:, None]
        context = KVCache(
            keys=jnp.broadcast_to(prefix.keys, prefix.keys.shape[:1] + (batch,) + prefix.keys.shape[2:]),
            values=jnp.broadcast_to(prefix.values, prefix.values.shape[:1] + (batch,) + prefix.values.shape[2:]),
            slot_mask=jnp.broadcast_to(prefix.slot_mask, (batch, prefix.slot_mask.shape[1])),
            length=prefix.length,
        )
    model = LlamaForCausalLM(config)
    hidden, new_keys, new_values = model.apply(
        {"params": params},
        tokens,
        positions_from_mask(mask, start),
        context,
        mask,
        method=model.new_keys_and_values,
    )
    cache = init_cache(config, batch, max_len, new_keys.dtype)
    if context is not None:
        cache = write_to_cache(cache, context.keys, context.values, context.slot_mask)
    return hidden, write_to_cache(cache, new_keys, new_values, mask)


def prefix_cache(params, config: LlamaConfig, prefix_tokens) -> KVCache:
    """The cache (batch 1, all slots real) of a token sequence [H] that starts every prompt."""
    tokens = jnp.asarray(prefix_tokens, jnp.int32)[None]
    return prefill(params, config, tokens, jnp.ones(tokens.shape, bool), tokens.shape[1])[1]


def embed(params, config: LlamaConfig, tokens):
    """Token embeddings [..., D] (compute dtype) of token ids [...]."""
    return LlamaForCausalLM(config).apply(
        {"params": params}, tokens, method=lambda model, t: model.embed_tokens(t)
    )


def final_norm(params, config: LlamaConfig, hidden):
    """The final RMSNorm of the decoder applied to hidden states [..., D]."""
    return _norm(config, "final_norm").apply({"params": params["final_norm"]}, hidden)


def project_to_vocab(params, config: LlamaConfig, hidden):
    """float32 logits [..., V] from hidden states [..., D]."""
    model = LlamaForCausalLM(config)
    return model.apply({"params": params}, hidden, method=model.project_to_vocab)


def make_apply_fn(config: LlamaConfig) -> Callable:
    """`apply_fn(params, tokens, positions, cache=None, mask=None) -> (logits, cache)` closed over `config`."""

    def apply_fn(params, tokens, positions, cache=None, mask=None):
        return forward(params, config, tokens, positions, cache, mask)

    return apply_fn


def positions_from_mask(mask: jax.Array, offset: jax.Array | int = 0) -> jax.Array:
    """RoPE positions [B, T] that count only real tokens: cumsum(mask) - 1 (+ offset), 0 on leading padding."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0) + offset


def count_params(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
