import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm.models import llama
from jaxrl_llm.models.llama_config import tiny_config
from jaxrl_llm.models.logprobs import completion_logprobs_and_entropy, token_logprobs_and_entropy

forward = jax.jit(llama.forward, static_argnums=1)
CONFIG = tiny_config(
    vocab_size=211, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
)


@pytest.fixture(scope="module")
def params():
    return llama.init_params(CONFIG, jax.random.key(0))


def _naive_float64(params, tokens, mask, temperature):
    """Full [B, T, V] logits, float64 numpy softmax, each row computed on its real tokens only."""
    tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
    logprobs = np.zeros(tokens.shape)
    entropy = np.zeros(tokens.shape)
    for b in range(tokens.shape[0]):
        real = np.flatnonzero(mask[b])
        row = jnp.asarray(tokens[b, real])[None]
        logits, _ = forward(params, CONFIG, row, jnp.arange(len(real))[None])
        z = np.asarray(logits[0], np.float64) / temperature
        log_p = (
            z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
        )
        for i in range(1, len(real)):
            logprobs[b, real[i]] = log_p[i - 1, tokens[b, real[i]]]
            entropy[b, real[i]] = -(np.exp(log_p[i - 1]) * log_p[i - 1]).sum()
    return logprobs, entropy


@pytest.mark.parametrize("chunk_size, temperature", [(3, 1.0), (128, 0.7)])
def test_chunked_logprobs_and_entropy_equal_full_softmax(params, chunk_size, temperature):
    tokens = jax.random.randint(jax.random.key(1), (3, 10), 0, CONFIG.vocab_size)
    mask = jnp.array([[1] * 10, [0, 0, 0] + [1] * 7, [1] * 6 + [0] * 4], bool)  # full, left- and right-padded
    compute = jax.jit(token_logprobs_and_entropy, static_argnums=(1, 5))
    logprobs, entropy = compute(params, CONFIG, tokens, mask, temperature, chunk_size)
    chex.assert_shape([logprobs, entropy], (3, 10))
    expected_logprobs, expected_entropy = _naive_float64(params, tokens, mask, temperature)
    np.testing.assert_allclose(logprobs, expected_logprobs, atol=2e-5)
    np.testing.assert_allclose(entropy, expected_entropy, atol=2e-5)
    assert np.all(np.asarray(logprobs)[~np.asarray(mask)] == 0)


def test_logprobs_are_differentiable(params):
    tokens = jax.random.randint(jax.random.key(2), (2, 7), 0, CONFIG.vocab_size)
    mask = jnp.ones((2, 7), bool)

    def loss(p):
        return -token_logprobs_and_entropy(p, CONFIG, tokens, mask, chunk_size=4)[0].sum()

    grads = jax.jit(jax.grad(loss))(params)
    chex.assert_tree_all_finite(grads)
    assert float(jnp.abs(grads["lm_head"]["kernel"]).sum()) > 0


def test_completion_logprobs_equal_the_completion_slice_of_full_logprobs(params):
    # left-padded prompts of 5 columns, completions of 4 columns with right padding
    tokens = jax.random.randint(jax.random.key(3), (3, 9), 0, CONFIG.vocab_size)
    mask = jnp.array([[1] * 9, [0, 0, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0, 0]], bool)
    compute = jax.jit(completion_logprobs_and_entropy, static_argnums=(1, 4, 6))
    logprobs, entropy = compute(params, CONFIG, tokens, mask, 5, 1.0, 3)
    chex.assert_shape([logprobs, entropy], (3, 4))
    expected_logprobs, expected_entropy = _naive_float64(params, tokens, mask, 1.0)
    np.testing.assert_allclose(logprobs, expected_logprobs[:, 5:], atol=2e-5)
    np.testing.assert_allclose(entropy, expected_entropy[:, 5:], atol=2e-5)
    assert np.all(np.asarray(logprobs)[~np.asarray(mask[:, 5:])] == 0)
    with pytest.raises(ValueError, match="num_prompt_tokens=0"):
        completion_logprobs_and_entropy(params, CONFIG, tokens, mask, 0)
