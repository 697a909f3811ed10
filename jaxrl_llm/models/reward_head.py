"""A scalar reward head on the Llama-family decoder: the reward of a sequence is a linear read-out
of the final (normed) hidden state of its last real token,

    r(tokens) = h_last · w + b,    h_last = hidden_states(tokens)[t*],  t* = the last t with mask[t]

so left and right padding give the same reward (positions count real tokens only). Rows of a
preference dataset end with the end-of-sequence token, so t* is the end of the response, where
the HelpSteer3 and InstructGPT reward models read it. The head and the reward are float32 whatever
the decoder's dtype (NeMo-Aligner forces its head to fp32).

Parameters are a plain pytree, `{"decoder": <llama params>, "head": {"kernel": [D, 1], "bias": [1]}}`
(the head's names are `nn.Dense(1)`'s, so a Dense module applies it too).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxrl_llm.models.llama import hidden_states, positions_from_mask
from jaxrl_llm.models.llama_config import LlamaConfig


def init_head(key: jax.Array, hidden_size: int, scale: float = 0.02) -> dict[str, jax.Array]:
    """`{"kernel": [D, 1] ~ N(0, scale²), "bias": [1] = 0}` in float32."""
    kernel = scale * jax.random.normal(key, (hidden_size, 1), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((1,), jnp.float32)}


def last_real_index(mask: jax.Array) -> jax.Array:
    """`[B]` index of the last True of each row of `mask [B, T]` (left or right padding)."""
    chex.assert_rank(mask, 2)
    return mask.shape[1] - 1 - jnp.argmax(mask[:, ::-1].astype(bool), axis=1)


def head_rewards(head: dict[str, jax.Array], hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """`[B]` float32 rewards from hidden states `[B, T, D]`, read at each row's last real token."""
    last = jnp.take_along_axis(hidden, last_real_index(mask)[:, None, None], axis=1)[:, 0]
    return (last.astype(jnp.float32) @ head["kernel"] + head["bias"])[:, 0]


def sequence_rewards(params, config: LlamaConfig, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """`[B]` rewards of the sequences `tokens [B, T]` (`mask [B, T]` marks real tokens; every row
    needs one) under `params = {"decoder", "head"}`."""
    chex.assert_rank([tokens, mask], 2)
    chex.assert_equal_shape([tokens, mask])
    mask = mask.astype(bool)
    hidden, _ = hidden_states(params["decoder"], config, tokens, positions_from_mask(mask), mask=mask)
    return head_rewards(params["head"], hidden, mask)
