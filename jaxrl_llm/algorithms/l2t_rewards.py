"""L2T's dense reward with the policy model, and the length-penalty baseline, for LM-GRPO.

`LMGRPOConfig.reward` selects how a batch of scored completions becomes advantages:
"outcome" (GRPO: exact match + format, group advantages; not handled here), "l2t" (Wang et al.
2025, "Learning to Think", arXiv 2505.10425; `losses.information_gain`) or "length-penalty"
(`losses.information_gain.length_penalty_rewards`, the "length penalty" row of L2T's Table 1).

**J_r with the model (the paper leaves it open).** J_r of a prefix is the policy's teacher-forced
probability of the gold answer forced after it: for completion i and boundary j ∈ {0..K} (j = 0:
right after the prompt; j = k: after episode k, from `rollout.episode_spans`),

    J_{i,j} = answer_score( log π_θ(y_a | x, z_{i,<n_{i,j}}, cue, y_{<a}) for a = 1..|y| )

with n_{i,j} the number of completion tokens before the boundary, `cue` = `l2t_answer_cue`
("\\n#### " by default, the tasks' answer format) and y the gold answer's tokens (the cue is
context, only tokens that overlap the answer's characters are scored; cue and answer are
tokenised together, so BPE merges across them are kept). `l2t_score` picks the score
(`answer_score`: probability, geometric-mean probability, or their logs). θ is the policy at
collection time (the sampler's parameters); J_r is a reward, never differentiated.

**One batched pass.** All K + 1 boundaries of all B rows run as ONE forward pass over a
`[B·(K+1), P + N + S]` batch built by masking, not by moving tokens: every row holds the prompt
(P columns), the whole completion (N) and the cue + answer (S, right-padded); row (i, j) masks
out the completion tokens at positions ≥ n_{i,j}. RoPE positions count only real tokens
(`positions_from_mask`) and attention never sees masked keys, so each row computes exactly
the separate teacher-forced pass over `prompt + z_{<n} + cue + answer` (tested against a loop of
such passes). Only the S − 1 cue/answer positions are projected onto the vocabulary
(`models.logprobs.logprobs_from_hidden`). Stop tokens (e.g. `<eos>`) are left out of every
prefix, so the last boundary reads "…completion text, cue, answer", not "…<eos> cue answer".
Boundaries of missing episodes use n = 0 and are masked by `fitting_gain`. The batch can run
in row slices (`num_slices`, bounded memory).

**Episodes.** `l2t_episodes="chunks"` (default) splits the generated tokens into chunks of
`l2t_chunk_size` tokens (the practical choice for tiny character-level models on arithmetic, which
write no tags); "episode-tags" / "think-tags" read `<episode_k>…</episode_k>` or `<think>…</think>`
(`spans_from_tags`), falling back to chunks for untagged completions. `l2t_max_episodes` = K
slots; later episodes merge into the last one.

**Compression penalty.** With LoRA (`lora_rank > 0`), C_{i,k} = β[(Δθ̃·g_{i,k})² + λ‖Δθ̃‖²]
with θ̃ = the adapter factors and Δθ̃ = current adapters − the adapters at initialisation
(`models.compression_penalty.lora_compression_penalty`, one `jax.jvp`; the initial adapters are
kept in the checkpointed collect state). Without LoRA there is no low-rank proxy and the penalty
is off (r^prg = ΔJ). The "code" variant never uses a penalty (the released code computes it
and drops it).

**Advantages.** `l2t_advantages`: "paper" (R_k = r_out/K + α r^prg_k spread to tokens by the
sampler's surprise −log p_old, truncated mean, group-normalised, token advantages `[B, N]`) or
"code" (score = r_out + Σ_{k≥2} ΔJ_k (e_k − e_{k−1}), group-normalised and broadcast to tokens,
with ΔJ standing in for the PRM's step-score differences). r_out is the task reward
(exact match + `format_reward_weight` × format). The group statistics are GRPO's (group std);
`normalization` applies to the "outcome" and "length-penalty" rewards only.

**Length penalty.** r = length_penalty_rewards(exact match, generated tokens; `length_penalty_kind`,
`length_penalty_coef`, budget = `max_new_tokens`) + `format_reward_weight` × format, then
group advantages under `normalization` (the "kimi" rule's "correct" is the exact match).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.algorithms.configs.lm_grpo import LMGRPOConfig
from jaxrl_llm.losses.group_advantages import group_advantages
from jaxrl_llm.losses.information_gain import (
    answer_score,
    fitting_gain,
    l2t_advantages,
    length_penalty_rewards,
    process_rewards,
)
from jaxrl_llm.models.compression_penalty import lora_compression_penalty
from jaxrl_llm.models.llama import hidden_states, positions_from_mask
from jaxrl_llm.models.logprobs import logprobs_from_hidden
from jaxrl_llm.models.lora import model_weights
from jaxrl_llm.rollout.episode_spans import (
    EpisodeSpans,
    episode_tag_patterns,
    spans_from_chunks,
    spans_from_tags,
    think_tag_patterns,
)

__all__ = [
    "boundary_answer_logprobs",
    "boundary_batch",
    "boundary_prefix_lengths",
    "boundary_scores",
    "encode_answer_targets",
    "initial_reference",
    "make_episode_splitter",
    "make_reward_shaping",
    "uses_compression_penalty",
]

TARGET_BUCKET = 8
"""The cue + answer width S is padded to a multiple of this (fewer compiled shapes)."""


# ----------------------------------------------------------------------------------------------
# Host side: the forced cue + gold answer of each row.
# ----------------------------------------------------------------------------------------------


def encode_answer_targets(
    tokenizer, answers: Sequence[str], cue: str, pad_to_multiple_of: int = TARGET_BUCKET
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(tokens, mask, scored)` `[B, S]` of `cue + answer` per row, right-padded.

    `cue + answer` is tokenised as one text; `scored` marks the tokens that overlap the answer's
    characters (a token straddling cue and answer is scored). The first token must be cue only,
    since it is the context that predicts the first scored token.
    """
    rows = []
    for answer in answers:
        text = cue + answer
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = [int(i) for i in encoded["input_ids"]]
        scored = [end > len(cue) for _, end in encoded["offset_mapping"]]
        if not ids or scored[0] or not any(scored):
            raise ValueError(
                f"l2t_answer_cue={cue!r} with the answer {answer!r} tokenises to {ids}: the cue must "
                "end in at least one token of its own before the answer's tokens (try a cue ending in "
                "a space or newline, e.g. '\\n#### ')."
            )
        rows.append((ids, scored))
    longest = max(len(ids) for ids, _ in rows)
    width = -(-longest // pad_to_multiple_of) * pad_to_multiple_of if pad_to_multiple_of else longest
    tokens = np.full((len(rows), width), tokenizer.pad_token_id or 0, np.int32)
    mask = np.zeros((len(rows), width), bool)
    scored_mask = np.zeros((len(rows), width), bool)
    for row, (ids, scored) in enumerate(rows):
        tokens[row, : len(ids)] = ids
        mask[row, : len(ids)] = True
        scored_mask[row, : len(ids)] = scored
    return tokens, mask, scored_mask


# ----------------------------------------------------------------------------------------------
# Device side: J_r at every episode boundary in one batched pass.
# ----------------------------------------------------------------------------------------------


def boundary_prefix_lengths(spans: EpisodeSpans) -> chex.Array:
    """n_{i,j}: completion tokens before boundary j, `[B, K + 1]` (0, then ends + 1 of valid episodes, 0 else)."""
    after = jnp.where(spans.valid, spans.ends + 1, 0).astype(jnp.int32)
    return jnp.concatenate([jnp.zeros_like(after[:, :1]), after], axis=1)


def boundary_batch(
    prompt_tokens: chex.Array,
    prompt_mask: chex.Array,
    completion_tokens: chex.Array,
    completion_mask: chex.Array,
    prefix_lengths: chex.Array,
    target_tokens: chex.Array,
    target_mask: chex.Array,
) -> tuple[chex.Array, chex.Array]:
    """`(tokens, mask)` `[B·(K+1), P + N + S]`: row i·(K+1) + j = prompt_i, the first
    `prefix_lengths[i, j]` completion tokens (others masked), then cue + answer_i.

    Args:
      prompt_tokens, prompt_mask: `[B, P]` (left-padded prompts).
      completion_tokens, completion_mask: `[B, N]` (tokens the prefix may keep: pass the
        completion mask without stop tokens).
      prefix_lengths: `[B, K + 1]` int, completion positions kept per boundary.
      target_tokens, target_mask: `[B, S]` cue + gold answer, right-padded.
    """
    chex.assert_rank([prompt_tokens, prompt_mask, completion_tokens, completion_mask, prefix_lengths], 2)
    chex.assert_equal_shape([prompt_tokens, prompt_mask])
    chex.assert_equal_shape([completion_tokens, completion_mask])
    chex.assert_equal_shape([target_tokens, target_mask])
    boundaries = prefix_lengths.shape[1]
    width = completion_tokens.shape[1]
    kept = completion_mask.astype(bool)[:, None, :] & (
        jnp.arange(width)[None, None, :] < prefix_lengths[:, :, None]
    )  # [B, K+1, N]

    def tile(x):  # [B, W] -> [B, K+1, W]
        return jnp.broadcast_to(x[:, None, :], (x.shape[0], boundaries, x.shape[1]))

    tokens = jnp.concatenate(
        [tile(prompt_tokens), tile(completion_tokens), tile(target_tokens)], axis=2
    ).astype(jnp.int32)
    mask = jnp.concatenate([tile(prompt_mask.astype(bool)), kept, tile(target_mask.astype(bool))], axis=2)
    rows = prefix_lengths.shape[0] * boundaries
    return tokens.reshape(rows, -1), mask.reshape(rows, -1)


def boundary_answer_logprobs(
    params, model_config, tokens: chex.Array, mask: chex.Array, num_context_tokens: int, chunk_size: int = 32
) -> chex.Array:
    """Teacher-forced log-probs `[R, S]` of the last S = T − `num_context_tokens` columns of
    `tokens [R, T]` (column 0 of the result is 0: nothing in the target block predicts it);
    masked tokens anywhere are skipped (RoPE positions count real tokens only)."""
    mask = mask.astype(bool)
    hidden, _ = hidden_states(params, model_config, tokens, positions_from_mask(mask), mask=mask)
    logprobs, _ = logprobs_from_hidden(
        params,
        model_config,
        hidden[:, num_context_tokens:-1],
        tokens[:, num_context_tokens + 1 :],
        1.0,
        chunk_size,
    )
    return jnp.pad(logprobs, ((0, 0), (1, 0)))


def boundary_scores(
    params,
    model_config,
    prompt_tokens: chex.Array,
    prompt_mask: chex.Array,
    completion_tokens: chex.Array,
    completion_mask: chex.Array,
    prefix_lengths: chex.Array,
    target_tokens: chex.Array,
    target_mask: chex.Array,
    scored_mask: chex.Array,
    *,
    kind: str = "prob",
    num_slices: int = 1,
    chunk_size: int = 32,
) -> chex.Array:
    """J_r `[B, K + 1]` at every boundary (module docstring): one batched forward pass over
    `boundary_batch`, `num_slices` row slices at a time, then `answer_score(kind)` over the
    `scored_mask [B, S]` tokens."""
    tokens, mask = boundary_batch(
        prompt_tokens,
        prompt_mask,
        completion_tokens,
        completion_mask,
        prefix_lengths,
        target_tokens,
        target_mask,
    )
    rows, boundaries = tokens.shape[0], prefix_lengths.shape[1]
    if rows % num_slices:
        raise ValueError(f"num_slices={num_slices} must divide the {rows} boundary rows")
    context = prompt_tokens.shape[1] + completion_tokens.shape[1]
    sliced = jax.tree.map(lambda x: x.reshape(num_slices, rows // num_slices, -1), (tokens, mask))
    logprobs = jax.lax.map(
        lambda xs: boundary_answer_logprobs(params, model_config, *xs, context, chunk_size), sliced
    ).reshape(rows, -1)
    scored = jnp.repeat(scored_mask.astype(bool), boundaries, axis=0)
    return answer_score(logprobs, scored, kind).reshape(-1, boundaries)


# ----------------------------------------------------------------------------------------------
# Glue for LM-GRPO.
# ----------------------------------------------------------------------------------------------


def make_episode_splitter(
    config: LMGRPOConfig, tokenizer
) -> Callable[[chex.Array, chex.Array], EpisodeSpans]:
    """`(completion_tokens, completion_mask) [B, N] -> EpisodeSpans` under `config.l2t_episodes`
    (tag patterns are built once here, on the host)."""
    slots, chunk = config.l2t_max_episodes, config.l2t_chunk_size
    if config.l2t_episodes == "chunks":
        return lambda tokens, mask: spans_from_chunks(mask, chunk, slots)
    if config.l2t_episodes == "episode-tags":
        opening, closing = episode_tag_patterns(tokenizer, 2 * slots)
    else:
        opening, closing = think_tag_patterns(tokenizer)
    return lambda tokens, mask: spans_from_tags(
        tokens, mask, opening, closing, slots, no_tags="chunks", chunk_size=chunk
    )


def uses_compression_penalty(config: LMGRPOConfig) -> bool:
    """The paper variant with LoRA and β > 0 (the penalty needs the adapters as its low-rank proxy)."""
    return (
        config.reward == "l2t"
        and config.l2t_variant == "paper"
        and config.lora_rank > 0
        and config.l2t_beta > 0
    )


def initial_reference(config: LMGRPOConfig, trainable) -> Any:
    """What the collect state keeps for the compression penalty: a copy of the initial adapters
    (a copy, so donated train-state buffers never alias it), or None when no penalty is computed."""
    if not uses_compression_penalty(config):
        return None
    return jax.tree.map(lambda x: jnp.array(x, copy=True), trainable)


def _masked_mean(values, mask):
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_reward_shaping(
    config: LMGRPOConfig,
    model_config,
    tokenizer,
    *,
    stop_tokens: Sequence[int] = (),
    num_slices_fn: Callable[[int, int, int], int] | None = None,
    logprob_chunk: int = 32,
    verbose: bool = False,
) -> Callable[..., tuple[jax.Array, dict[str, float]]] | None:
    """The advantages of `config.reward` ("l2t" or "length-penalty"; None for "outcome").

    Returns `shape(trainable, frozen, reference, *, prompt_tokens, prompt_mask, completion_tokens,
    completion_mask, old_log_prob, reward, correct, answers, group_ids) -> (advantage, metrics)`:
    `advantage` `[B, N]` (l2t) or `[B]` (length penalty) for `policy_gradient_loss`, metrics host
    floats. `trainable`/`frozen` as in LM-GRPO (`frozen` = the LoRA base), `reference` from
    `initial_reference`. `num_slices_fn(rows, prompt_len, completion_len)` picks how many row
    slices the J_r pass runs in (default 1).
    """
    if config.reward == "outcome":
        return None
    num_groups = config.prompts_per_update
    lora = config.lora_rank > 0

    if config.reward == "length-penalty":

        @jax.jit
        def length_advantages(reward, correct, lengths, group_ids):
            shaped = length_penalty_rewards(
                correct,
                lengths,
                group_ids,
                num_groups,
                kind=config.length_penalty_kind,
                coef=config.length_penalty_coef,
                budget=float(config.max_new_tokens),
            ) + (reward - correct)  # the format term stays as in the outcome reward
            advantage, metrics = group_advantages(
                shaped, group_ids, num_groups, normalization=config.normalization
            )
            return advantage, {"shaped_reward_mean": jnp.mean(shaped), **metrics}

        def shape_length(trainable, frozen, reference, *, completion_mask, reward, correct, group_ids, **_):
            lengths = jnp.asarray(np.asarray(completion_mask).sum(axis=1), jnp.float32)
            advantage, metrics = length_advantages(
                jnp.asarray(reward, jnp.float32), jnp.asarray(correct, jnp.float32), lengths, group_ids
            )
            keys = ("shaped_reward_mean", "zero_std_group_fraction")
            return advantage, {k: float(metrics[k]) for k in keys}

        return shape_length

    split = make_episode_splitter(config, tokenizer)
    penalty_on = uses_compression_penalty(config)
    if verbose and config.l2t_variant == "paper" and not lora and config.l2t_beta > 0:
        print(
            "L2T: compression penalty off (it needs LoRA adapters as its proxy: --lora-rank > 0)",
            file=sys.stderr,
        )
    stops = jnp.asarray(tuple(stop_tokens) or (-1,), jnp.int32)
    num_slices_fn = num_slices_fn or (lambda rows, prompt_len, completion_len: 1)

    @partial(jax.jit, static_argnames=("num_slices",))
    def l2t_core(
        trainable,
        frozen,
        reference,
        prompt_tokens,
        prompt_mask,
        completion_tokens,
        completion_mask,
        old_log_prob,
        outcome,
        group_ids,
        target_tokens,
        target_mask,
        scored_mask,
        num_slices,
    ):
        completion_mask = completion_mask.astype(bool)
        params = model_weights(frozen, trainable)
        spans = split(completion_tokens, completion_mask)
        content = completion_mask & ~jnp.any(completion_tokens[..., None] == stops, axis=-1)
        scores = boundary_scores(
            params,
            model_config,
            prompt_tokens,
            prompt_mask,
            completion_tokens,
            content,
            boundary_prefix_lengths(spans),
            target_tokens,
            target_mask,
            scored_mask,
            kind=config.l2t_score,
            num_slices=num_slices,
            chunk_size=logprob_chunk,
        )
        gains = fitting_gain(scores, spans.valid)
        num_episodes = config.l2t_max_episodes
        if penalty_on:
            penalty, _ = lora_compression_penalty(
                frozen,
                model_config,
                trainable,
                reference,
                jnp.concatenate([prompt_tokens, completion_tokens], axis=1),
                jnp.concatenate([prompt_mask.astype(bool), completion_mask], axis=1),
                prompt_tokens.shape[1],
                spans.token_episode,
                num_episodes,
                beta=config.l2t_beta,
                damping=config.l2t_fisher_damping,
                episode_mask=spans.valid,
                chunk_size=logprob_chunk,
            )
        else:
            penalty = jnp.zeros_like(gains)
        common = (spans.valid, spans.token_episode, completion_mask, group_ids, num_groups)
        if config.l2t_variant == "paper":
            process = process_rewards(gains, penalty if penalty_on else None, spans.valid)
            advantage, aux = l2t_advantages(
                outcome, process, *common, variant="paper", old_logp=old_log_prob, alpha=config.l2t_alpha
            )
        else:
            advantage, aux = l2t_advantages(outcome, gains, *common, variant="code", episode_ends=spans.ends)
        _, group_metrics = group_advantages(
            aux["sequence_rewards"], group_ids, num_groups, mask=aux["row_valid"]
        )
        rows = jnp.arange(scores.shape[0])
        last = jnp.sum(spans.valid, axis=1)  # boundary after the last valid episode
        metrics = {
            "l2t_fitting_gain_mean": _masked_mean(gains, spans.valid),
            "l2t_penalty_mean": _masked_mean(penalty, spans.valid),
            "l2t_episodes_per_completion": jnp.mean(jnp.sum(spans.valid, axis=1).astype(jnp.float32)),
            "l2t_answer_score_start": jnp.mean(scores[:, 0]),
            "l2t_answer_score_end": jnp.mean(scores[rows, last]),
            "l2t_sequence_reward_mean": _masked_mean(aux["sequence_rewards"], aux["row_valid"]),
            "zero_std_group_fraction": group_metrics["zero_std_group_fraction"],
        }
        return advantage, metrics

    def shape_l2t(
        trainable,
        frozen,
        reference,
        *,
        prompt_tokens,
        prompt_mask,
        completion_tokens,
        completion_mask,
        old_log_prob,
        reward,
        answers,
        group_ids,
        **_,
    ):
        target_tokens, target_mask, scored_mask = encode_answer_targets(
            tokenizer, answers, config.l2t_answer_cue
        )
        rows = completion_tokens.shape[0] * (config.l2t_max_episodes + 1)
        num_slices = num_slices_fn(
            rows, prompt_tokens.shape[1], completion_tokens.shape[1] + target_tokens.shape[1]
        )
        advantage, metrics = l2t_core(
            trainable,
            frozen,
            reference,
            jnp.asarray(prompt_tokens),
            jnp.asarray(prompt_mask),
            jnp.asarray(completion_tokens),
            jnp.asarray(completion_mask),
            old_log_prob,
            jnp.asarray(reward, jnp.float32),
            group_ids,
            target_tokens,
            target_mask,
            scored_mask,
            num_slices=num_slices,
        )
        return advantage, {k: float(v) for k, v in metrics.items()}

    return shape_l2t
