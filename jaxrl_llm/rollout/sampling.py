"""Batched autoregressive sampling from a Llama-family decoder with a KV cache, fully jitted.

One jitted program: a prefill over the (padded) prompts, then a `lax.while_loop` that samples
one token per row per step and feeds it back through the cache, stopping early once every row
has emitted a stop token. Recompiles only when a shape or static setting changes (batch size,
prompt length, `max_new_tokens`, `top_k`, `prompt_copies`, number of stop tokens, config);
temperature, top-p, the key, the prompts and `active` are traced values, so `generate` can
also be called inside another jitted function or a `lax.scan` body.

Shared-prompt prefill (`prompt_copies = G`): the prompts are U unique prompts [U, P] and the
output has B = U * G rows, group-major (row b continues prompt b // G, the order of
`jnp.repeat(prompts, G, axis=0)`). Each prompt is prefilled once; its KV cache, last-position
logits and next position are then repeated to its G rows, which sample independently (every
row draws its own uniform per step, as with G separate copies of the prompt). This saves
(G - 1) / G of the prefill; the decode loop is unchanged.

Shared prefix (`prefix`, e.g. an agent's chat head and instructions, the same in every prompt
of every turn): its KV cache (`llama.prefix_cache`, computed once per set of weights) is put
in front of every row's cache, and the prompts, passed without it, continue it.

The prefill attends only to the prompts' (and the prefix's) slots, not to the empty slots the
decode loop fills later.

Inactive rows (`active[b]` False, per output row): they start finished, so they emit nothing
(`pad_token`, log-prob 0, mask False), do not affect the other rows, and do not keep the
loop running; a batch with no active row returns at once.

Conventions
- `logprobs[b, t]` is log pi(tokens[b, t] | context) under the model's *raw* distribution
  (temperature 1, no top-k/top-p truncation), i.e. the behaviour policy log-probs that an RL
  loss compares with `token_logprobs_and_entropy(..., temperature=1)`. With temperature != 1
  or truncation this is not the density of the sampling distribution.
- `mask[b, t]` is True for generated tokens up to *and including* the first stop token; later
  positions hold `pad_token`, log-prob 0 and mask False.
- temperature == 0 is greedy decoding (argmax; top-k/top-p then have no effect).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxrl_llm.models.kv_cache import KVCache
from jaxrl_llm.models.layerwise_decode import decode_forward, decode_weights, split_cache
from jaxrl_llm.models.llama import prefill, project_to_vocab
from jaxrl_llm.models.llama_config import LlamaConfig


class GenerationOutput(NamedTuple):
    tokens: jax.Array  # [B, max_new_tokens] int32
    logprobs: jax.Array  # [B, max_new_tokens] float32, raw-policy log-probs of `tokens`
    mask: jax.Array  # [B, max_new_tokens] bool, through the first stop token


def filter_top_k(logits: jax.Array, top_k: int) -> jax.Array:
    """Keeps the k largest logits per row [B, V] (ties at the k-th value kept), the rest -inf."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth_largest = jax.lax.top_k(logits, top_k)[0][..., -1:]
    return jnp.where(logits < kth_largest, -jnp.inf, logits)


def filter_top_p(logits: jax.Array, top_p) -> jax.Array:
    """Nucleus filter: keeps the smallest set of largest-probability tokens whose mass reaches top_p."""
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    kept = mass_before < top_p  # the first token is always kept
    threshold = jnp.min(jnp.where(kept, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def sample_categorical(key, logits: jax.Array) -> jax.Array:
    """One token id per row of logits [B, V] (-inf = excluded), by inverting the CDF at one
    uniform draw per row.

    Exact sampling like `jax.random.categorical`, which draws B x V Gumbel variates: on a
    49k vocabulary that RNG work costs more than a small model's decode step on CPU.
    u is in (0, 1], so the chosen token always has positive probability.
    """
    cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
    u = (1.0 - jax.random.uniform(key, (logits.shape[0], 1))) * cdf[:, -1:]
    return jnp.minimum(jnp.sum(cdf < u, axis=-1), logits.shape[-1] - 1).astype(jnp.int32)


def sample_from_logits(key, logits: jax.Array, temperature, top_p, top_k: int) -> jax.Array:
    """Token ids [B] from logits [B, V]: greedy at temperature 0, else temperature -> top-k -> top-p -> sample."""

    def sample(logits):
        scaled = filter_top_k(logits / temperature, top_k)
        scaled = jax.lax.cond(top_p < 1.0, filter_top_p, lambda x, _: x, scaled, top_p)
        return sample_categorical(key, scaled)

    def greedy(logits):
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    return jax.lax.cond(temperature > 0, sample, greedy, logits)


class _DecodeState(NamedTuple):
    step: jax.Array
    logits: jax.Array  # [B, V] for the next token
    cache: object
    key: jax.Array
    position: jax.Array  # [B] RoPE position of the next token
    done: jax.Array  # [B] row has emitted a stop token
    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array


def _last_real_index(mask: jax.Array) -> jax.Array:
    """Index of the last True per row of mask [B, P] (left or right padding)."""
    return mask.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=1)


def _repeat_rows(x: jax.Array, copies: int, axis: int = 0) -> jax.Array:
    """Each index of `axis` repeated `copies` times in place (group-major), a no-op for 1."""
    return x if copies == 1 else jnp.repeat(x, copies, axis=axis)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "top_k", "prompt_copies"))
def _generate(
    params,
    prompt_tokens,
    prompt_mask,
    key,
    temperature,
    top_p,
    stop_tokens,
    pad_token,
    active,
    prefix,
    *,
    config: LlamaConfig,
    max_new_tokens: int,
    top_k: int,
    prompt_copies: int = 1,
) -> GenerationOutput:
    unique, prompt_len = prompt_tokens.shape
    batch = unique * prompt_copies
    # prefill the unique prompts once (after the shared prefix, if any) ...
    prefix_len = 0 if prefix is None else prefix.max_len
    hidden, cache = prefill(
        params, config, prompt_tokens, prompt_mask, prefix_len + prompt_len + max_new_tokens, prefix
    )
    last_hidden = jnp.take_along_axis(hidden, _last_real_index(prompt_mask)[:, None, None], axis=1)[:, 0]
    # lay weights and cache out for decoding once, before the loop (`layerwise_decode`) ...
    layer_weights, cache = decode_weights(params, config), split_cache(cache)
    # ... then give each of the `prompt_copies` rows of a prompt its own copy of the prompt's
    # per-layer cache [U, kv_heads, max_len, head_dim] -> [B, ...], next-token logits and position
    copies = functools.partial(_repeat_rows, copies=prompt_copies)
    cache = cache._replace(
        keys=tuple(map(copies, cache.keys)),
        values=tuple(map(copies, cache.values)),
        slot_mask=copies(cache.slot_mask),
    )
    first_logits = copies(project_to_vocab(params, config, last_hidden))
    prefix_tokens = 0 if prefix is None else prefix.slot_mask[0].sum().astype(jnp.int32)
    first_position = copies(prompt_mask.sum(axis=1).astype(jnp.int32)) + prefix_tokens

    def not_finished(state: _DecodeState):
        return (state.step < max_new_tokens) & ~jnp.all(state.done)

    def decode_step(state: _DecodeState) -> _DecodeState:
        key, sample_key = jax.random.split(state.key)
        running = ~state.done
        token = jnp.where(
            running, sample_from_logits(sample_key, state.logits, temperature, top_p, top_k), pad_token
        )
        logprob = jnp.take_along_axis(jax.nn.log_softmax(state.logits), token[:, None], axis=-1)[:, 0]
        is_stop = jnp.any(token[:, None] == stop_tokens[None, :], axis=-1)
        logits, cache = decode_forward(
            params,
            layer_weights,
            config,
            token[:, None],
            state.position[:, None],
            state.cache,
            running[:, None],
        )
        return _DecodeState(
            step=state.step + 1,
            logits=logits[:, 0],
            cache=cache,
            key=key,
            position=state.position + 1,
            done=state.done | (running & is_stop),
            tokens=state.tokens.at[:, state.step].set(token),
            logprobs=state.logprobs.at[:, state.step].set(jnp.where(running, logprob, 0.0)),
            mask=state.mask.at[:, state.step].set(running),
        )

    initial = _DecodeState(
        step=jnp.zeros((), jnp.int32),
        logits=first_logits,
        cache=cache,
        key=key,
        position=first_position,
        done=~active,  # inactive rows start finished: they emit nothing and never hold up the loop
        tokens=jnp.full((batch, max_new_tokens), pad_token, jnp.int32),
        logprobs=jnp.zeros((batch, max_new_tokens), jnp.float32),
        mask=jnp.zeros((batch, max_new_tokens), bool),
    )
    final = jax.lax.while_loop(not_finished, decode_step, initial)
    return GenerationOutput(final.tokens, final.logprobs, final.mask)


def generate(
    params,
    config: LlamaConfig,
    prompt_tokens: jax.Array,
    prompt_mask_or_lengths: jax.Array,
    key: jax.Array,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop_tokens: Sequence[int] = (),
    pad_token: int = 0,
    *,
    active: jax.Array | None = None,
    prompt_copies: int = 1,
    prefix: KVCache | None = None,
) -> GenerationOutput:
    """Samples `max_new_tokens` continuations of prompts [U, P] (see the module docstring):
    `prompt_copies` = G of each, B = U * G output rows, group-major.

    `prompt_mask_or_lengths` is either a [U, P] mask of real prompt tokens (left or right padded)
    or [U] lengths of right-padded prompts (tokens in `prompt_tokens[u, :length]`).
    `active` [B] bool (default all True) marks the output rows to generate; the others come back
    empty (`pad_token`, log-prob 0, mask False). `top_k` = 0 and `top_p` = 1 disable those filters.
    `prefix` (`llama.prefix_cache` of tokens every prompt starts with, left out of
    `prompt_tokens`) is prefilled once for all rows and calls instead of once per row.
    """
    prompt_tokens = jnp.asarray(prompt_tokens, jnp.int32)
    chex.assert_rank(prompt_tokens, 2)
    prompt_copies = int(prompt_copies)
    if prompt_copies < 1:
        raise ValueError(f"prompt_copies={prompt_copies} must be >= 1")
    given = jnp.asarray(prompt_mask_or_lengths)
    if given.ndim == 1:
        prompt_mask = jnp.arange(prompt_tokens.shape[1])[None, :] < given[:, None]
    else:
        chex.assert_equal_shape([prompt_tokens, given])
        prompt_mask = given.astype(bool)
    rows = prompt_tokens.shape[0] * prompt_copies
    if active is None:
        active = jnp.ones((rows,), bool)
    else:
        active = jnp.asarray(active, bool)
        chex.assert_shape(active, (rows,))
    return _generate(
        params,
        prompt_tokens,
        prompt_mask,
        key,
        jnp.asarray(temperature, jnp.float32),
        jnp.asarray(top_p, jnp.float32),
        jnp.asarray(stop_tokens, jnp.int32).reshape(-1),
        jnp.asarray(pad_token, jnp.int32),
        active,
        prefix,
        config=config,
        max_new_tokens=int(max_new_tokens),
        top_k=int(top_k),
        prompt_copies=prompt_copies,
    )
