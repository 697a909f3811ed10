import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrl_llm.models import llama
from jaxrl_llm.models.llama_config import tiny_config
from jaxrl_llm.models.lora import (
    ATTENTION_TARGETS,
    apply_lora,
    lora_init,
    lora_optimizer,
    merge_lora,
    model_weights,
    trainable_weights,
    unmerge_lora,
)

CONFIG = tiny_config(
    vocab_size=61, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
)
forward = jax.jit(llama.forward, static_argnums=1)
TOKENS = jax.random.randint(jax.random.key(1), (2, 6), 0, CONFIG.vocab_size)
POSITIONS = jnp.broadcast_to(jnp.arange(6), (2, 6))


@pytest.fixture(scope="module")
def params():
    return llama.init_params(CONFIG, jax.random.key(0))


def _random_b(adapters, seed=3):
    leaves, treedef = jax.tree_util.tree_flatten(adapters)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [0.1 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]
    )


def test_adapter_shapes_follow_the_stacked_kernels(params):
    adapters = lora_init(jax.random.key(2), params, rank=4, alpha=8.0)
    chex.assert_shape(adapters.weights["layers"]["attention"]["k_proj"]["a"], (2, 32, 4))
    chex.assert_shape(adapters.weights["layers"]["mlp"]["down_proj"]["b"], (2, 4, 32))
    assert adapters.scale == 2.0
    only_attention = lora_init(jax.random.key(2), params, rank=4, alpha=8.0, targets=ATTENTION_TARGETS)
    assert set(only_attention.weights["layers"]) == {"attention"}
    with pytest.raises(ValueError, match="targets"):
        lora_init(jax.random.key(2), params, rank=4, alpha=8.0, targets=("nothing",))


def test_zero_initialised_b_leaves_logits_unchanged(params):
    adapters = lora_init(jax.random.key(2), params, rank=4, alpha=8.0)
    chex.assert_trees_all_equal(
        forward(apply_lora(params, adapters), CONFIG, TOKENS, POSITIONS)[0],
        forward(params, CONFIG, TOKENS, POSITIONS)[0],
    )


def test_merged_kernel_equals_the_adapter_path_in_numpy(params):
    adapters = _random_b(lora_init(jax.random.key(2), params, rank=4, alpha=8.0))
    merged = merge_lora(params, adapters)
    x = np.random.default_rng(0).normal(size=(5, 32))
    base = np.asarray(params["layers"]["attention"]["q_proj"]["kernel"][1], np.float64)
    factors = adapters.weights["layers"]["attention"]["q_proj"]
    a, b = np.asarray(factors["a"][1], np.float64), np.asarray(factors["b"][1], np.float64)
    adapter_path = x @ base + adapters.scale * (x @ a) @ b
    np.testing.assert_allclose(
        x @ np.asarray(merged["layers"]["attention"]["q_proj"]["kernel"][1]), adapter_path, atol=1e-4
    )
    assert not np.allclose(
        forward(merged, CONFIG, TOKENS, POSITIONS)[0], forward(params, CONFIG, TOKENS, POSITIONS)[0]
    )
    chex.assert_trees_all_close(unmerge_lora(merged, adapters), params, atol=1e-6)


def test_lora_optimizer_trains_only_the_adapters(params):
    adapters = lora_init(jax.random.key(2), params, rank=2, alpha=2.0)
    trainable = {"base": params, "lora": adapters}
    optimizer = lora_optimizer(optax.adam(1e-2))
    state = optimizer.init(trainable)

    def loss(tree):
        logits, _ = llama.forward(apply_lora(tree["base"], tree["lora"]), CONFIG, TOKENS, POSITIONS)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), TOKENS[..., None], -1))

    grads = jax.jit(jax.grad(loss))(trainable)
    updates, state = optimizer.update(grads, state, trainable)
    updated = optax.apply_updates(trainable, updates)
    chex.assert_trees_all_equal(updated["base"], params)
    b_before = adapters.weights["layers"]["mlp"]["up_proj"]["b"]
    assert float(jnp.abs(updated["lora"].weights["layers"]["mlp"]["up_proj"]["b"] - b_before).max()) > 0


def test_a_run_trains_adapters_with_a_rank_and_the_weights_without(params):
    key = jax.random.key(5)
    full = trainable_weights(key, params, rank=0, alpha=16.0)
    assert full is params and model_weights(params, full) is params
    adapters = trainable_weights(key, params, rank=4, alpha=16.0)
    chex.assert_trees_all_equal(adapters, lora_init(key, params, 4, 16.0))
    adapters = adapters.replace(weights=_random_b(adapters.weights))
    chex.assert_trees_all_close(model_weights(params, adapters), apply_lora(params, adapters))
    assert not np.allclose(model_weights(params, adapters)["layers"]["attention"]["q_proj"]["kernel"],
                           params["layers"]["attention"]["q_proj"]["kernel"])
