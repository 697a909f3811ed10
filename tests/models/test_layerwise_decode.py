import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.models import llama
from jaxrl_llm.models.kv_cache import init_cache
from jaxrl_llm.models.layerwise_decode import decode_forward, split_cache, split_layers
from jaxrl_llm.models.llama_config import tiny_config

CONFIG = tiny_config(
    vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=3, num_heads=4, num_kv_heads=2
)


def test_layerwise_decode_steps_equal_the_scanned_model():
    params = llama.init_params(CONFIG, jax.random.key(0))
    prompt = jax.random.randint(jax.random.key(1), (2, 5), 0, CONFIG.vocab_size)
    prompt_mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    cache = init_cache(CONFIG, 2, 9)
    _, cache = llama.forward(
        params, CONFIG, prompt, llama.positions_from_mask(prompt_mask), cache, prompt_mask
    )
    layer_params, layer_cache = split_layers(params, CONFIG), split_cache(cache)
    position = prompt_mask.sum(1, keepdims=True)
    for step, token in enumerate(([[3], [5]], [[7], [11]], [[13], [17]])):
        token = jnp.asarray(token)
        active = jnp.array([[True], [step != 1]])  # a finished row writes a masked slot
        expected, cache = llama.forward(params, CONFIG, token, position + step, cache, active)
        logits, layer_cache = decode_forward(
            params, layer_params, CONFIG, token, position + step, layer_cache, active
        )
        np.testing.assert_allclose(logits, expected, atol=1e-5)
    np.testing.assert_allclose(jnp.stack(layer_cache.keys), cache.keys, atol=1e-6)
    np.testing.assert_allclose(jnp.stack(layer_cache.values), cache.values, atol=1e-6)
    np.testing.assert_array_equal(layer_cache.slot_mask, cache.slot_mask)
    assert int(layer_cache.length) == int(cache.length) == 8
