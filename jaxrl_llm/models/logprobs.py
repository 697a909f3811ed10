"""Teacher-forced per-token log-probabilities and entropies without [B, T, V] float32 logits.

For a row of tokens x_0..x_{T-1}:
    logprobs[t] = log pi(x_t | x_<t)            (0 where t has no real predecessor or is padding)
    entropy[t]  = H(pi(. | x_<t)) = logsumexp(z) - sum_v softmax(z)_v z_v
with z = logits / temperature. Outputs are aligned with `tokens`, so a completion mask over
`tokens` selects the completion's log-probs directly.

The vocabulary projection runs over chunks of `chunk_size` time steps with `lax.map`, each chunk
rematerialised in the backward pass (`jax.checkpoint`): peak memory is [B, chunk_size, V] float32
instead of [B, T, V] (SmolLM2: 49152 x 4 bytes per token).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxrl_llm.models.llama import hidden_states, positions_from_mask, project_to_vocab
from jaxrl_llm.models.llama_config import LlamaConfig


def _chunk_stats(params, config: LlamaConfig, temperature, hidden_chunk, target_chunk):
    """hidden [B, C, D], targets [B, C] -> (log-prob of target, entropy), each [B, C] float32."""
    logits = project_to_vocab(params, config, hidden_chunk) / temperature
    log_normaliser = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, target_chunk[..., None], axis=-1)[..., 0]
    expected_logit = jnp.sum(jax.nn.softmax(logits, axis=-1) * logits, axis=-1)
    return target_logit - log_normaliser, log_normaliser - expected_logit


def _map_over_time_chunks(chunk_fn, hidden: jax.Array, targets: jax.Array, chunk_size: int):
    """`chunk_fn(hidden [B, C, D], targets [B, C]) -> tuple of [B, C]` over time chunks of
    `hidden [B, N, D]` (rematerialised in the backward pass), reassembled to `[B, N]` each: the
    `[B, N, V]` logits exist one chunk at a time."""
    batch, steps, width = hidden.shape
    chunk = min(chunk_size, steps)
    padded = -(-steps // chunk) * chunk
    hidden = jnp.pad(hidden, ((0, 0), (0, padded - steps), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, padded - steps)))
    hidden_chunks = hidden.reshape(batch, padded // chunk, chunk, width).swapaxes(0, 1)
    target_chunks = targets.reshape(batch, padded // chunk, chunk).swapaxes(0, 1)
    stats = jax.checkpoint(chunk_fn)
    outputs = jax.lax.map(lambda xs: stats(*xs), (hidden_chunks, target_chunks))
    return tuple(x.swapaxes(0, 1).reshape(batch, padded)[:, :steps] for x in outputs)


def logprobs_from_hidden(
    params, config: LlamaConfig, hidden: jax.Array, targets: jax.Array, temperature=1.0, chunk_size: int = 128
) -> tuple[jax.Array, jax.Array]:
    """log pi(targets) and entropies [B, N] from the hidden states [B, N, D] that predict them, in time chunks."""
    chunk_fn = functools.partial(_chunk_stats, params, config, temperature)
    return _map_over_time_chunks(chunk_fn, hidden, targets, chunk_size)


def _teacher_forced_hidden(params, config: LlamaConfig, tokens, mask) -> tuple[jax.Array, jax.Array]:
    """(final hidden states [B, T, D], bool mask) of real tokens `tokens` [B, T] under `mask` [B, T]."""
    chex.assert_rank([tokens, mask], 2)
    chex.assert_equal_shape([tokens, mask])
    mask = mask.astype(bool)
    hidden, _ = hidden_states(params, config, tokens, positions_from_mask(mask), mask=mask)
    return hidden, mask


def _completion_forward(params, config: LlamaConfig, tokens, mask, num_prompt_tokens: int):
    """`_teacher_forced_hidden` of `tokens [B, P + N]`, after checking that the completion
    `tokens[:, P:]` has a prompt before it."""
    chex.assert_rank([tokens, mask], 2)
    if not 0 < num_prompt_tokens < tokens.shape[1]:
        raise ValueError(
            f"num_prompt_tokens={num_prompt_tokens} must be in [1, {tokens.shape[1] - 1}] for tokens of "
            f"length {tokens.shape[1]} (the completion needs a prompt before it)."
        )
    return _teacher_forced_hidden(params, config, tokens, mask)


def token_logprobs_and_entropy(
    params, config: LlamaConfig, tokens: jax.Array, mask: jax.Array, temperature=1.0, chunk_size: int = 128
) -> tuple[jax.Array, jax.Array]:
    """Teacher-forced (logprobs [B, T], entropy [B, T]) of `tokens` [B, T] under the model.

    `mask` [B, T] marks real tokens; real tokens must be contiguous in each row (left or right
    padding). Entries are 0 where the token is padding or is the first real token of its row.
    """
    hidden, mask = _teacher_forced_hidden(params, config, tokens, mask)
    logprobs, entropy = logprobs_from_hidden(
        params, config, hidden[:, :-1], tokens[:, 1:], temperature, chunk_size
    )
    has_context = mask & (jnp.cumsum(mask, axis=1) > 1)

    def align_with_tokens(x):
        return jnp.where(has_context, jnp.pad(x, ((0, 0), (1, 0))), 0.0)

    return align_with_tokens(logprobs), align_with_tokens(entropy)


def completion_logprobs_and_entropy(
    params,
    config: LlamaConfig,
    tokens: jax.Array,
    mask: jax.Array,
    num_prompt_tokens: int,
    temperature=1.0,
    chunk_size: int = 128,
) -> tuple[jax.Array, jax.Array]:
    """Teacher-forced (logprobs, entropy) `[B, N]` of the completion `tokens[:, P:]` only.

    Equals `token_logprobs_and_entropy(...)[:, P:]` for rows whose prompt part `tokens[:, :P]`
    holds at least one real token, but projects only the N completion positions onto the
    vocabulary (the prompt positions are most of the projection's cost in RL batches).
    Padding positions of the completion are 0.
    """
    logprobs, entropy, _ = completion_logprobs_entropy_and_prompt_state(
        params, config, tokens, mask, num_prompt_tokens, temperature, chunk_size
    )
    return logprobs, entropy


def completion_logprobs_entropy_and_prompt_state(
    params,
    config: LlamaConfig,
    tokens: jax.Array,
    mask: jax.Array,
    num_prompt_tokens: int,
    temperature=1.0,
    chunk_size: int = 128,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`completion_logprobs_and_entropy` plus the final hidden state `[B, D]` at the last prompt
    position `P - 1` (the state that predicts the first completion token), from the same forward
    pass: what a value head on the decoder reads."""
    hidden, mask = _completion_forward(params, config, tokens, mask, num_prompt_tokens)
    logprobs, entropy = logprobs_from_hidden(
        params,
        config,
        hidden[:, num_prompt_tokens - 1 : -1],
        tokens[:, num_prompt_tokens:],
        temperature,
        chunk_size,
    )
    completion_mask = mask[:, num_prompt_tokens:]
    return (
        jnp.where(completion_mask, logprobs, 0.0),
        jnp.where(completion_mask, entropy, 0.0),
        hidden[:, num_prompt_tokens - 1],
    )


# ------------------------------------------------------------------------------------------------
# Raw target logits and full-vocabulary log-sum-exp (for soft-Q / ShiQ losses).
#
#     target_logit[t] = z_t(x_t)                 with z_t = logits(x_<t) / temperature
#     logsumexp[t]    = log sum_v exp z_t(v)
#     log pi(x_t | x_<t) = target_logit[t] - logsumexp[t]
#
# A soft-Q loss needs both separately: the Q-value of the taken token reads the raw logit, the state
# value reads the log-sum-exp over the whole vocabulary (jaxrl_llm/losses/bellman.py). Same time
# chunking and rematerialisation as the log-probs above, so [B, T, V] is never materialised.
# ------------------------------------------------------------------------------------------------


class LogitStats(NamedTuple):
    """Per-position `[B, N]` raw target logit and log-sum-exp of the logits (0 where not defined)."""

    target_logit: jax.Array
    logsumexp: jax.Array

    @property
    def logprob(self) -> jax.Array:
        """log pi(target) = target_logit - logsumexp (0 where both are 0)."""
        return self.target_logit - self.logsumexp


def _chunk_logit_stats(params, config: LlamaConfig, temperature, hidden_chunk, target_chunk):
    """hidden [B, C, D], targets [B, C] -> (raw logit of target, logsumexp of the logits), each [B, C]."""
    logits = project_to_vocab(params, config, hidden_chunk) / temperature
    target_logit = jnp.take_along_axis(logits, target_chunk[..., None], axis=-1)[..., 0]
    return target_logit, jax.nn.logsumexp(logits, axis=-1)


def logit_stats_from_hidden(
    params, config: LlamaConfig, hidden: jax.Array, targets: jax.Array, temperature=1.0, chunk_size: int = 128
) -> LogitStats:
    """(target logit, logsumexp) `[B, N]` from the hidden states `[B, N, D]` that predict `targets`, in time chunks."""
    chunk_fn = functools.partial(_chunk_logit_stats, params, config, temperature)
    return LogitStats(*_map_over_time_chunks(chunk_fn, hidden, targets, chunk_size))


def token_logit_stats(
    params, config: LlamaConfig, tokens: jax.Array, mask: jax.Array, temperature=1.0, chunk_size: int = 128
) -> LogitStats:
    """Teacher-forced `LogitStats` `[B, T]` of `tokens` `[B, T]`, aligned with `tokens`.

    Entry t holds the raw logit of `tokens[:, t]` and the log-sum-exp of the logits that predict it
    (computed at position t - 1). Same mask rules as `token_logprobs_and_entropy`: real tokens
    contiguous in each row; entries are 0 where the token is padding or the first real token of its
    row. `.logprob` equals `token_logprobs_and_entropy(...)[0]`.
    """
    hidden, mask = _teacher_forced_hidden(params, config, tokens, mask)
    stats = logit_stats_from_hidden(params, config, hidden[:, :-1], tokens[:, 1:], temperature, chunk_size)
    has_context = mask & (jnp.cumsum(mask, axis=1) > 1)

    def align_with_tokens(x):
        return jnp.where(has_context, jnp.pad(x, ((0, 0), (1, 0))), 0.0)

    return LogitStats(*map(align_with_tokens, stats))


def completion_logit_stats(
    params,
    config: LlamaConfig,
    tokens: jax.Array,
    mask: jax.Array,
    num_prompt_tokens: int,
    temperature=1.0,
    chunk_size: int = 128,
) -> LogitStats:
    """Teacher-forced `LogitStats` `[B, N]` of the completion `tokens[:, P:]` only.

    Equals `token_logit_stats(...)[:, P:]` for rows whose prompt part holds at least one real token,
    projecting only the N completion positions onto the vocabulary. Padding positions are 0.
    """
    hidden, mask = _completion_forward(params, config, tokens, mask, num_prompt_tokens)
    stats = logit_stats_from_hidden(
        params,
        config,
        hidden[:, num_prompt_tokens - 1 : -1],
        tokens[:, num_prompt_tokens:],
        temperature,
        chunk_size,
    )
    completion_mask = mask[:, num_prompt_tokens:]
    return LogitStats(*(jnp.where(completion_mask, x, 0.0) for x in stats))
