"""Tests of jaxrl_llm.models.compression_penalty: one JVP equals per-episode gradients and finite differences."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.models.compression_penalty import (
    compression_penalty,
    episode_logprob_sums,
    lora_compression_penalty,
    lora_logprob_fn,
)
from jaxrl_llm.models.llama import init_params
from jaxrl_llm.models.llama_config import LlamaConfig
from jaxrl_llm.models.lora import LoraAdapters, lora_init

NUM_EPISODES = 3
TOKEN_EPISODE = np.array(
    [
        [0, 0, 0, 1, 1, -1, 2, 2],  # three episodes with a gap
        [0, 0, 0, 0, 0, 0, -1, -1],  # one episode, padding at the end
    ],
    np.int32,
)


def _explicit_derivatives(logprob_fn, theta, delta, token_episode, num_episodes):
    """[B, K] of Δθ · ∇_θ log π(z_k|s_k): the reverse-mode gradient of every (b, k) entry (jacrev), dotted with Δθ."""
    jacobian = jax.jit(
        jax.jacrev(lambda p: episode_logprob_sums(logprob_fn(p), token_episode, num_episodes))
    )(theta)
    leaves = zip(jax.tree_util.tree_leaves(jacobian), jax.tree_util.tree_leaves(delta))
    return np.asarray(sum(jnp.tensordot(j, d, axes=d.ndim) for j, d in leaves))


def _perturbed(key, tree, scale):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    )


def test_lora_jvp_equals_explicit_gradients_and_finite_differences_float32():
    config = LlamaConfig(
        vocab_size=24, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1
    )
    key_params, key_lora, key_ref, key_cur, key_tokens = jax.random.split(jax.random.PRNGKey(0), 5)
    params = init_params(config, key_params)
    adapters = lora_init(key_lora, params, rank=2, alpha=4.0, targets=("q_proj", "v_proj", "up_proj"))
    reference = LoraAdapters(weights=_perturbed(key_ref, adapters.weights, 0.1), scale=adapters.scale)
    current = LoraAdapters(weights=_perturbed(key_cur, reference.weights, 0.3), scale=adapters.scale)
    prompt, steps = 3, TOKEN_EPISODE.shape[1]
    tokens = jax.random.randint(key_tokens, (2, prompt + steps), 0, config.vocab_size)
    mask = jnp.ones(tokens.shape, bool).at[1, prompt + 6 :].set(False)

    penalty, aux = jax.jit(
        lambda c, r: lora_compression_penalty(
            params, config, c, r, tokens, mask, prompt, TOKEN_EPISODE, NUM_EPISODES, beta=0.6, damping=1e-5
        )
    )(current, reference)
    chex.assert_shape(penalty, (2, NUM_EPISODES))
    derivative = np.asarray(aux["directional_derivative"])

    logprob_fn = lora_logprob_fn(params, config, adapters.scale, tokens, mask, prompt)
    delta = jax.tree_util.tree_map(lambda x, y: x - y, current.weights, reference.weights)
    explicit = _explicit_derivatives(logprob_fn, current.weights, delta, TOKEN_EPISODE, NUM_EPISODES)
    np.testing.assert_allclose(derivative, explicit, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(derivative[0]) > 1e-3)  # a non-trivial direction
    np.testing.assert_allclose(derivative[1, 1:], 0.0)  # empty episode slots

    @jax.jit
    def sums_at(step):
        moved = jax.tree_util.tree_map(lambda x, d: x + step * d, current.weights, delta)
        return episode_logprob_sums(logprob_fn(moved), TOKEN_EPISODE, NUM_EPISODES)

    def at(step):
        return np.asarray(sums_at(jnp.float32(step)), np.float64)

    eps = 1e-2  # float32: a coarse step; the central difference's error is O(eps²)
    np.testing.assert_allclose(derivative, (at(eps) - at(-eps)) / (2 * eps), rtol=2e-2, atol=2e-3)

    delta_sq = sum(float(np.sum(np.square(x))) for x in jax.tree_util.tree_leaves(delta))
    np.testing.assert_allclose(float(aux["delta_sq_norm"]), delta_sq, rtol=1e-5)
    np.testing.assert_allclose(penalty, 0.6 * (derivative**2 + 1e-5 * delta_sq), rtol=1e-5, atol=1e-8)


def _tiny_lm_logprob_fn(tokens, base_embed, base_out):
    """A float64 LM: h_t = mean of embeddings up to t; logits = h_t @ (W + A B). theta = {a, b}."""

    def logprob_fn(theta):
        embeddings = base_embed[tokens]  # [B, T, D]
        counts = jnp.arange(1, tokens.shape[1] + 1, dtype=embeddings.dtype)[None, :, None]
        hidden = jnp.tanh(jnp.cumsum(embeddings, axis=1) / counts)
        logits = hidden @ (base_out + theta["a"] @ theta["b"])
        logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
        targets = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
        return jnp.pad(targets, ((0, 0), (1, 0)))  # aligned with tokens; t = 0 has no context

    return logprob_fn


def test_jvp_equals_gradients_and_central_differences_float64():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        vocab, width, rank = 11, 6, 2
        tokens = jnp.asarray(rng.integers(0, vocab, size=TOKEN_EPISODE.shape))
        logprob_fn = _tiny_lm_logprob_fn(
            tokens, jnp.asarray(rng.normal(size=(vocab, width))), jnp.asarray(rng.normal(size=(width, vocab)))
        )
        theta_ref = {"a": jnp.asarray(rng.normal(size=(width, rank))), "b": jnp.asarray(rng.normal(size=(rank, vocab)))}
        theta = jax.tree_util.tree_map(lambda x: x + 0.2 * jnp.asarray(rng.normal(size=x.shape)), theta_ref)
        penalty, aux = compression_penalty(
            logprob_fn, theta, theta_ref, jnp.asarray(TOKEN_EPISODE), NUM_EPISODES, beta=1e-2, damping=0.0,
            episode_mask=jnp.asarray([[True, True, True], [True, False, False]]),
        )
        derivative = np.asarray(aux["directional_derivative"])
        assert derivative.dtype == np.float64
        delta = jax.tree_util.tree_map(lambda x, y: x - y, theta, theta_ref)
        explicit = _explicit_derivatives(logprob_fn, theta, delta, jnp.asarray(TOKEN_EPISODE), NUM_EPISODES)
        np.testing.assert_allclose(derivative, explicit, rtol=1e-12, atol=1e-12)

        def at(step):
            moved = jax.tree_util.tree_map(lambda x, d: x + step * d, theta, delta)
            return np.asarray(episode_logprob_sums(logprob_fn(moved), jnp.asarray(TOKEN_EPISODE), NUM_EPISODES))

        eps = 1e-5
        np.testing.assert_allclose(derivative, (at(eps) - at(-eps)) / (2 * eps), rtol=1e-7, atol=1e-9)
        # The code's finite difference of L = −Σ log π on the whole response (K = 1) gives the same square.
        whole = jnp.where(jnp.asarray(TOKEN_EPISODE) >= 0, 0, -1)
        code_penalty, _ = compression_penalty(logprob_fn, theta, theta_ref, whole, 1, beta=1e-2, damping=0.0)

        def loss(step):
            return -at(step).sum(axis=1)

        fd = (loss(1e-3) - loss(-1e-3)) / 2e-3
        np.testing.assert_allclose(code_penalty[:, 0], 1e-2 * fd**2, rtol=1e-5)
        expected = 1e-2 * derivative**2 * np.array([[1, 1, 1], [1, 0, 0]])
        np.testing.assert_allclose(penalty, expected, rtol=1e-12)


def test_zero_direction_gives_damping_only():
    with jax.enable_x64(True):
        tokens = jnp.asarray(np.arange(16).reshape(2, 8) % 5)
        logprob_fn = _tiny_lm_logprob_fn(tokens, jnp.eye(5, 3) + 0.1, jnp.ones((3, 5)))
        theta = {"a": jnp.ones((3, 1)), "b": jnp.ones((1, 5))}
        penalty, aux = compression_penalty(logprob_fn, theta, theta, jnp.asarray(TOKEN_EPISODE), 3, damping=1e-5)
        np.testing.assert_array_equal(penalty, 0.0)
        np.testing.assert_array_equal(aux["directional_derivative"], 0.0)
