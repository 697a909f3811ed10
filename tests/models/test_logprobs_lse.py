"""Chunked raw target logits and log-sum-exp (`LogitStats`) against a float64 softmax of full logits."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm.models import llama
from jaxrl_llm.models.llama_config import tiny_config
from jaxrl_llm.models.logprobs import (
    completion_logit_stats,
    logit_stats_from_hidden,
    token_logit_stats,
    token_logprobs_and_entropy,
)

forward = jax.jit(llama.forward, static_argnums=1)
CONFIG = tiny_config(
    vocab_size=211, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
)
MASK = jnp.array([[1] * 10, [0, 0, 0] + [1] * 7, [1] * 6 + [0] * 4], bool)  # full, left- and right-padded


@pytest.fixture(scope="module")
def params():
    return llama.init_params(CONFIG, jax.random.key(0))


def _naive_float64(params, tokens, mask, temperature):
    """Full [T, V] logits per row, float64 numpy target logit and log-sum-exp.

    Each row's real tokens are moved to the front and followed by token 0 (causal attention: the
    trailing filler cannot change the logits of the real positions), so one compile serves all rows.
    """
    tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
    target_logit = np.zeros(tokens.shape)
    logsumexp = np.zeros(tokens.shape)
    num_columns = tokens.shape[1]
    for b in range(tokens.shape[0]):
        real = np.flatnonzero(mask[b])
        row = np.zeros(num_columns, tokens.dtype)
        row[: len(real)] = tokens[b, real]
        logits, _ = forward(params, CONFIG, jnp.asarray(row)[None], jnp.arange(num_columns)[None])
        z = np.asarray(logits[0], np.float64) / temperature
        peak = z.max(-1)
        lse = peak + np.log(np.exp(z - peak[:, None]).sum(-1))
        for i in range(1, len(real)):
            target_logit[b, real[i]] = z[i - 1, tokens[b, real[i]]]
            logsumexp[b, real[i]] = lse[i - 1]
    return target_logit, logsumexp


@pytest.mark.parametrize("chunk_size, temperature", [(3, 1.0), (128, 0.7)])
def test_chunked_target_logits_and_logsumexp_equal_full_softmax(params, chunk_size, temperature):
    tokens = jax.random.randint(jax.random.key(1), (3, 10), 0, CONFIG.vocab_size)
    compute = jax.jit(token_logit_stats, static_argnums=(1, 5))
    stats = compute(params, CONFIG, tokens, MASK, temperature, chunk_size)
    chex.assert_shape([stats.target_logit, stats.logsumexp], (3, 10))
    expected_logit, expected_lse = _naive_float64(params, tokens, MASK, temperature)
    np.testing.assert_allclose(stats.target_logit, expected_logit, atol=2e-5)
    np.testing.assert_allclose(stats.logsumexp, expected_lse, atol=2e-5)
    assert np.all(np.asarray(stats.logsumexp)[~np.asarray(MASK)] == 0)
    if chunk_size == 3:  # the difference is the log-prob of the existing function
        logprobs, _ = jax.jit(token_logprobs_and_entropy, static_argnums=(1, 5))(
            params, CONFIG, tokens, MASK, temperature, chunk_size
        )
        np.testing.assert_allclose(stats.logprob, logprobs, atol=2e-5)


def test_completion_stats_equal_the_completion_slice(params):
    tokens = jax.random.randint(jax.random.key(3), (3, 9), 0, CONFIG.vocab_size)
    mask = jnp.array([[1] * 9, [0, 0, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0, 0]], bool)
    compute = jax.jit(completion_logit_stats, static_argnums=(1, 4, 6))
    stats = compute(params, CONFIG, tokens, mask, 5, 1.0, 3)
    chex.assert_shape([stats.target_logit, stats.logsumexp], (3, 4))
    expected_logit, expected_lse = _naive_float64(params, tokens, mask, 1.0)
    np.testing.assert_allclose(stats.target_logit, expected_logit[:, 5:], atol=2e-5)
    np.testing.assert_allclose(stats.logsumexp, expected_lse[:, 5:], atol=2e-5)
    with pytest.raises(ValueError, match="num_prompt_tokens=0"):
        completion_logit_stats(params, CONFIG, tokens, mask, 0)


def test_chunked_gradients_equal_full_logit_gradients(params):
    """Through `jax.checkpoint` + `lax.map`: d/d hidden of Σ (LSE − ½ target logit) equals the
    gradient computed from the full [B, N, V] logits (d LSE / d logits = softmax)."""
    hidden = jax.random.normal(jax.random.key(2), (2, 7, CONFIG.hidden_size))
    targets = jax.random.randint(jax.random.key(3), (2, 7), 0, CONFIG.vocab_size)

    def chunked(h):
        stats = logit_stats_from_hidden(params, CONFIG, h, targets, 1.0, 3)
        return (stats.logsumexp - 0.5 * stats.target_logit).sum()

    def full(h):
        logits = llama.project_to_vocab(params, CONFIG, h)
        target = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        return (jax.nn.logsumexp(logits, axis=-1) - 0.5 * target).sum()

    np.testing.assert_allclose(jax.jit(jax.grad(chunked))(hidden), jax.jit(jax.grad(full))(hidden), atol=1e-5, rtol=1e-5)
