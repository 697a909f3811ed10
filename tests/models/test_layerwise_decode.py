import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm.models import llama
from jaxrl_llm.models.attention import cached_attention, grouped_query_attention
from jaxrl_llm.models.kv_cache import init_cache
from jaxrl_llm.models.layerwise_decode import decode_forward, decode_weights, split_cache
from jaxrl_llm.models.llama_config import tiny_config

CONFIG = tiny_config(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2
)


@pytest.mark.parametrize("qkv_bias", [False, True], ids=["llama", "qwen2-bias"])
def test_layerwise_decode_steps_equal_the_scanned_model(qkv_bias):
    """The fused-weight, [B, K, S, d]-cache decode path against the plain scanned model, one and
    two tokens per step, with a row that writes a masked slot."""
    config = CONFIG.replace(qkv_bias=qkv_bias)
    params = llama.init_params(config, jax.random.key(0))
    if qkv_bias:  # random biases: the fused bias must line up with q | k | v
        attention = params["layers"]["attention"]
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            bias = attention[name]["bias"]
            attention[name]["bias"] = jax.random.normal(jax.random.key(10 + i), bias.shape)
    prompt = jax.random.randint(jax.random.key(1), (2, 5), 0, config.vocab_size)
    prompt_mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    cache = init_cache(config, 2, 10)
    _, cache = llama.forward(params, config, prompt, llama.positions_from_mask(prompt_mask), cache, prompt_mask)
    weights, layer_cache = decode_weights(params, config), split_cache(cache)
    position = prompt_mask.sum(1, keepdims=True)
    steps = [([[3], [5]], [[True], [True]]), ([[7], [11]], [[True], [False]]), ([[13, 2], [17, 4]], [[True, True], [True, False]])]
    for token, active in steps:
        token, active = jnp.asarray(token), jnp.asarray(active)
        positions = position + jnp.arange(token.shape[1])
        expected, cache = llama.forward(params, config, token, positions, cache, active)
        logits, layer_cache = decode_forward(params, weights, config, token, positions, layer_cache, active)
        np.testing.assert_allclose(logits, expected, atol=1e-5)
        position = position + token.shape[1]
    np.testing.assert_allclose(jnp.stack(layer_cache.keys).swapaxes(2, 3), cache.keys, atol=1e-6)
    np.testing.assert_allclose(jnp.stack(layer_cache.values).swapaxes(2, 3), cache.values, atol=1e-6)
    np.testing.assert_array_equal(layer_cache.slot_mask, cache.slot_mask)
    assert int(layer_cache.length) == int(cache.length) == 9


def test_decode_weights_fuse_qkv_and_gate_up_in_order():
    params = llama.init_params(CONFIG, jax.random.key(0))
    weights = decode_weights(params, CONFIG)
    q_width = CONFIG.num_heads * CONFIG.head_dim
    kv_width = CONFIG.num_kv_heads * CONFIG.head_dim
    chex.assert_shape(weights[1].qkv_kernel, (CONFIG.hidden_size, q_width + 2 * kv_width))
    attention = params["layers"]["attention"]
    np.testing.assert_array_equal(weights[1].qkv_kernel[:, q_width : q_width + kv_width], attention["k_proj"]["kernel"][1])
    np.testing.assert_array_equal(
        weights[2].gate_up_kernel[:, CONFIG.intermediate_size :], params["layers"]["mlp"]["up_proj"]["kernel"][2]
    )
    assert weights[0].qkv_bias is None


def test_cached_attention_equals_grouped_query_attention_over_the_same_slots():
    """Attending over a [B, K, S, d] cache that holds the new tokens equals the scanned model's
    attention over [B, S, K, d] cached slots plus new tokens (causal among the new ones)."""
    keys = jax.random.split(jax.random.key(3), 5)
    batch, cached, new, heads, kv_heads, dim = 2, 6, 3, 6, 2, 8
    queries = jax.random.normal(keys[0], (batch, new, heads, dim))
    old_k, new_k = jax.random.normal(keys[1], (batch, cached, kv_heads, dim)), jax.random.normal(keys[2], (batch, new, kv_heads, dim))
    old_v, new_v = jax.random.normal(keys[3], (batch, cached, kv_heads, dim)), jax.random.normal(keys[4], (batch, new, kv_heads, dim))
    slot_mask = jnp.array([[1, 1, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]], bool)
    new_mask = jnp.array([[1, 1, 1], [1, 0, 1]], bool)
    expected = grouped_query_attention(queries, new_k, new_v, new_mask, old_k, old_v, slot_mask)
    all_k = jnp.concatenate([old_k, new_k], 1).swapaxes(1, 2)
    all_v = jnp.concatenate([old_v, new_v], 1).swapaxes(1, 2)
    slots = jnp.concatenate([slot_mask, new_mask], 1)
    visible = slots[:, None, :] & (jnp.arange(cached + new)[None, None, :] <= cached + jnp.arange(new)[None, :, None])
    np.testing.assert_allclose(cached_attention(queries, all_k, all_v, visible), expected, atol=1e-5)
