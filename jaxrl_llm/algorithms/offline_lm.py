"""Offline training of a causal LM against a frozen reference: ShiQ on rewarded completions,
DPO on preference pairs.

Both read a fixed JSON Lines dataset (`data/offline.py`), tokenised once into `[M, P + N]` rows
(chat prompt left part, completion + eos right part), and differ only in the loss:

* **ShiQ** (Clavier et al. 2025, arXiv 2505.11081; `losses/bellman.py::shiq_loss`): token-level soft
  Q-learning with q_θ = β (ℓ_θ − ℓ_ref) read from the logits, the sequence reward R on the last
  completion token (its eos), or each turn's reward on the turn's last token, multi-step residual Δ_t = v_θ(s_t) + Σ_{k≥t} [β log π_θ/π_ref(a_k|s_k)
  − r_k] by default. The learned policy is a plain softmax of the learned logits: sampling and
  evaluation need neither the reference nor a temperature.
* **DPO** (Rafailov et al. 2023, arXiv 2305.18290; `losses/preference.py::dpo_loss`):
  −log σ(β [log π_θ/π_ref(y_w|x) − log π_θ/π_ref(y_l|x)]) on summed completion log-probs.

As an `Algorithm`: `frozen` holds the reference weights (the base model, also the LoRA base when
`lora_rank > 0`) and the encoded dataset, so neither is compiled in as a constant nor checkpointed;
`collect` draws `batch_size` rows on device (without replacement within an update, from the loop's
key: a resumed run draws the same rows); `learn` computes the policy's and the reference's
teacher-forced statistics of the completion tokens and takes one clipped-Adam step, with gradient
accumulation over `micro_batch_size` rows and shard-exact normalisation when data-parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxrl_llm.algorithms.configs.dpo import DPOConfig
from jaxrl_llm.algorithms.configs.shiq import OfflineLMConfig, ShiQConfig
from jaxrl_llm.algorithms.lm_task import LoadedModel, load_model
from jaxrl_llm.data import Problem, exact_match_reward, offline
from jaxrl_llm.data.problems import encode_prompts
from jaxrl_llm.losses.bellman import shiq_loss
from jaxrl_llm.losses.preference import dpo_loss
from jaxrl_llm.models.logprobs import LogitStats, completion_logit_stats
from jaxrl_llm.models.lora import model_weights, trainable_weights
from jaxrl_llm.models.tokenizer import stop_token_ids
from jaxrl_llm.rollout.sampling import generate
from jaxrl_llm.training import Algorithm, TrainState
from jaxrl_llm.training.gradient_steps import (
    loss_norm_constant,
    microbatch_count,
    microbatch_norm_constant,
    repeated_gradient_steps,
)
from jaxrl_llm.training.optimizers import clipped_adam
from jaxrl_llm.training.train_state import create as create_train_state

__all__ = [
    "DPOConfig",
    "OfflineFrozen",
    "PairBatch",
    "RewardedBatch",
    "ShiQConfig",
    "make_dpo",
    "make_shiq",
    "draw_rows",
    "pair_data",
    "rewarded_data",
    "sample_rewarded_dataset",
]


@struct.dataclass
class RewardedBatch:
    tokens: jax.Array  # [B, P + N]
    mask: jax.Array  # [B, P + N] real tokens; mask[:, P:] are the actions
    rewards: jax.Array  # [B, N] reward on each completion token (a turn's on its last token)
    num_prompt_tokens: int = struct.field(pytree_node=False)


@struct.dataclass
class PairBatch:
    tokens: jax.Array  # [B, 2, P + N]: [:, 0] the chosen completion, [:, 1] the rejected one
    mask: jax.Array  # [B, 2, P + N]
    num_prompt_tokens: int = struct.field(pytree_node=False)


@struct.dataclass
class OfflineFrozen:
    """What `collect` and `learn` read and never change (the algorithm's `frozen`)."""

    reference: Any  # the reference policy's weights (and the LoRA base)
    data: Any  # the whole encoded dataset, a RewardedBatch or PairBatch of M rows


@struct.dataclass
class OfflineCollectState:
    update: jax.Array  # int32 count of collected batches


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def rewarded_data(config: OfflineLMConfig, tokenizer, samples=None) -> RewardedBatch:
    """The encoded rewarded completions: `samples`, else `config.data_path`, else the bundled sample."""
    samples = samples if samples is not None else offline.read_rewarded_jsonl(
        config.data_path or offline.REWARDS_SAMPLE_FILE
    )
    tokens, mask, rewards, prompt_len = offline.encode_rewarded(
        tokenizer, samples, config.max_prompt_tokens, config.max_completion_tokens
    )
    return RewardedBatch(jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(rewards), prompt_len)


def pair_data(config: OfflineLMConfig, tokenizer, pairs=None) -> PairBatch:
    """The encoded preference pairs: `pairs`, else `config.data_path`, else the bundled sample."""
    pairs = pairs if pairs is not None else offline.read_preference_jsonl(
        config.data_path or offline.PAIRS_SAMPLE_FILE
    )
    tokens, mask, prompt_len = offline.encode_pairs(
        tokenizer, pairs, config.max_prompt_tokens, config.max_completion_tokens
    )
    return PairBatch(jnp.asarray(tokens), jnp.asarray(mask), prompt_len)


def draw_rows(key: jax.Array, data, batch_size: int):
    """`batch_size` rows of every leaf of the encoded dataset `data` (a `RewardedBatch` or
    `PairBatch`), drawn on device from `key` without replacement while it holds that many."""
    num_rows = data.tokens.shape[0]
    rows = jax.random.choice(key, num_rows, (batch_size,), replace=num_rows < batch_size)
    return jax.tree.map(lambda x: x[rows], data)


def sample_rewarded_dataset(
    loaded: LoadedModel,
    problems: list[Problem],
    key: jax.Array,
    *,
    samples_per_problem: int = 4,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    max_prompt_tokens: int = 256,
    prompts_per_call: int = 16,
    score: Callable[[str, Problem], tuple[tuple[str, ...], tuple[float, ...]]] | None = None,
) -> list[offline.RewardedCompletion]:
    """An offline dataset drawn from the model itself (usually the reference): `samples_per_problem`
    completions of each problem's chat prompt, rewarded 1.0 / 0.0 by exact match of the final
    answer (`data.exact_match_reward`), or cut into turns with a reward each by
    `score(text, problem) -> (turn texts, turn rewards)` (the turns must join into `text`). Write
    it with `data.offline.write_jsonl`, or turn it into DPO pairs with
    `data.offline.pairs_from_rewarded`. A completion cut at `max_new_tokens` keeps its reward as
    the terminal reward (ShiQ appends eos when it reads the text back)."""
    tokenizer = loaded.tokenizer
    sample = jax.jit(
        partial(
            generate,
            config=loaded.model_config,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            stop_tokens=stop_token_ids(tokenizer),
            pad_token=tokenizer.pad_token_id or 0,
            prompt_copies=samples_per_problem,
        )
    )
    records = []
    for start in range(0, len(problems), prompts_per_call):
        chunk = problems[start : start + prompts_per_call]
        tokens, mask = encode_prompts(tokenizer, chunk, max_prompt_tokens, pad_to_multiple_of=16)
        key, sample_key = jax.random.split(key)
        out = sample(loaded.params, prompt_tokens=tokens, prompt_mask_or_lengths=mask, key=sample_key)
        completion_tokens, completion_mask = np.asarray(out.tokens), np.asarray(out.mask)
        stops = set(stop_token_ids(tokenizer))
        for row, (ids, real) in enumerate(zip(completion_tokens, completion_mask)):
            problem = chunk[row // samples_per_problem]  # rows are problem-major
            text = tokenizer.decode([t for t in ids[real].tolist() if t not in stops], skip_special_tokens=True)
            if score is None:
                records.append(
                    offline.RewardedCompletion(problem.question, text, exact_match_reward(text, problem.answer), "sampled")
                )
                continue
            turns, rewards = score(text, problem)
            if "".join(turns) != text:
                raise ValueError(f"score({text!r}, ...) returned turns {turns!r} that do not join into the text.")
            records.append(offline.RewardedCompletion(problem.question, tuple(turns), tuple(rewards), "sampled"))
    return records


# ------------------------------------------------------------------------------------------------
# Losses on a batch (per device, per micro-batch)
# ------------------------------------------------------------------------------------------------

Objective = Callable[[Any, Any, Any, Any], tuple[jax.Array, dict[str, jax.Array]]]
"""`(params, reference_params, batch_slice, norm) -> (loss, metrics)`."""


def policy_and_reference_stats(
    params, reference, model_config, tokens, mask, num_prompt_tokens: int
) -> tuple[LogitStats, LogitStats]:
    """Teacher-forced `LogitStats` `[B, N]` of the completion tokens under the policy and the
    (constant) reference."""
    stats = completion_logit_stats(params, model_config, tokens, mask, num_prompt_tokens)
    ref = completion_logit_stats(reference, model_config, tokens, mask, num_prompt_tokens)
    return stats, jax.lax.stop_gradient(ref)


def shiq_objective(params, reference, batch: RewardedBatch, norm, *, config: ShiQConfig, model_config):
    """`shiq_loss` of a batch of rewarded completions; `norm` its `norm_constant`."""
    prompt_len = batch.num_prompt_tokens
    stats, ref = policy_and_reference_stats(params, reference, model_config, batch.tokens, batch.mask, prompt_len)
    actions = batch.mask[:, prompt_len:]
    loss, info = shiq_loss(
        stats.target_logit,
        stats.logsumexp,
        ref.target_logit,
        ref.logsumexp,
        batch.rewards,
        actions,
        beta=config.beta,
        one_step_coef=config.one_step_coef,
        multi_step_coef=config.multi_step_coef,
        stop_gradient_targets=config.stop_gradient_targets,
        loss_agg_mode=config.loss_agg_mode,
        norm_constant=norm,
    )
    return loss, {**info, "loss": loss, "reward_mean": batch.rewards.sum(-1).mean()}


def dpo_objective(params, reference, batch: PairBatch, norm, *, config: DPOConfig, model_config):
    """`dpo_loss` of a batch of pairs (a mean over pairs: `norm` is unused)."""
    del norm
    rows, _, length = batch.tokens.shape
    prompt_len = batch.num_prompt_tokens
    tokens, mask = batch.tokens.reshape(2 * rows, length), batch.mask.reshape(2 * rows, length)
    stats, ref = policy_and_reference_stats(params, reference, model_config, tokens, mask, prompt_len)
    logps = stats.logprob.sum(-1).reshape(rows, 2)  # 0 at padding: sums over the completion tokens
    ref_logps = ref.logprob.sum(-1).reshape(rows, 2)
    loss, info = dpo_loss(
        logps[:, 0],
        logps[:, 1],
        ref_logps[:, 0],
        ref_logps[:, 1],
        beta=config.beta,
        label_smoothing=config.label_smoothing,
    )
    num_tokens = jnp.maximum(mask[:, prompt_len:].sum(), 1)
    return loss, {
        "loss": loss,
        "reward_accuracy": info["accuracy"],
        "margin_mean": info["margin_mean"],
        "chosen_reward_mean": info["chosen_rewards"].mean(),
        "rejected_reward_mean": info["rejected_rewards"].mean(),
        # per-token log π_θ/π_ref on the dataset's completions (both sides)
        "log_ratio_mean": jax.lax.stop_gradient((logps - ref_logps).sum() / num_tokens),
    }


# ------------------------------------------------------------------------------------------------
# The algorithm
# ------------------------------------------------------------------------------------------------


def offline_step(
    train_state: TrainState,
    batch: RewardedBatch | PairBatch,
    key: jax.Array,
    axis_name: str | None = None,
    *,
    frozen: OfflineFrozen,
    objective: Objective,
    config: OfflineLMConfig,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step on `objective` over the (per-device) batch, accumulated over
    micro-batches of `config.micro_batch_size` rows, exact whatever the device count."""
    del key
    rows = batch.tokens.shape[0]
    num_microbatches = microbatch_count(rows, config.micro_batch_size)
    mode = getattr(config, "loss_agg_mode", None)  # token-weighted losses need the global count
    norm = None
    if mode is not None:
        actions = batch.mask[:, batch.num_prompt_tokens :]
        norm = loss_norm_constant(mode, actions, axis_name, actions.shape[1])
        norm = microbatch_norm_constant(mode, norm, num_microbatches)

    def loss_fn(trainable, micro):
        params = model_weights(frozen.reference, trainable)
        return objective(params, frozen.reference, micro, norm)

    return repeated_gradient_steps(
        train_state, loss_fn, tx, 1, axis_name, batch=batch, num_microbatches=num_microbatches
    )


def _make_offline(
    config: OfflineLMConfig,
    loaded: LoadedModel,
    data: RewardedBatch | PairBatch,
    objective: Objective,
    optimizer: optax.GradientTransformation | None,
    *,
    progress_metric: str,
    frame_name: str,
) -> Algorithm:
    tx = optimizer or clipped_adam(config.learning_rate, config.max_grad_norm or None)

    def init(key: jax.Array):
        # full fine-tuning starts at the reference: q_θ = v_θ = 0
        trainable = trainable_weights(key, loaded.params, config.lora_rank, config.lora_alpha)
        return create_train_state(trainable, tx), OfflineCollectState(jnp.zeros((), jnp.int32))

    def collect(state: OfflineCollectState, params, key: jax.Array, *, frozen: OfflineFrozen):
        del params
        return OfflineCollectState(state.update + 1), draw_rows(key, frozen.data, config.batch_size), {}

    def learn(train_state, batch, key, axis_name=None, *, frozen: OfflineFrozen):
        return offline_step(
            train_state, batch, key, axis_name, frozen=frozen, objective=objective, config=config, tx=tx
        )

    return Algorithm(
        init,
        collect,
        learn,
        config.num_updates,
        config.batch_size,
        progress_metric=progress_metric,
        frame_name=frame_name,
        frozen=OfflineFrozen(loaded.params, data),
    )


def make_shiq(
    config: ShiQConfig,
    loaded: LoadedModel | None = None,
    dataset=None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    verbose: bool = True,
) -> Algorithm:
    """ShiQ as an `Algorithm` (jittable: whole chunks of updates compile into one program).

    The model is loaded from `config.model` unless `loaded` is given; `dataset` is a list of
    `data.offline.RewardedCompletion` (default: read from `config.data_path`, else the bundled
    sample); `optimizer` replaces the config's clipped Adam."""
    loaded = loaded or load_model(config, verbose)
    data = rewarded_data(config, loaded.tokenizer, dataset)
    objective = partial(shiq_objective, config=config, model_config=loaded.model_config)
    return _make_offline(config, loaded, data, objective, optimizer, progress_metric="loss", frame_name="completion")


def make_dpo(
    config: DPOConfig,
    loaded: LoadedModel | None = None,
    dataset=None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    verbose: bool = True,
) -> Algorithm:
    """DPO as an `Algorithm`; arguments as `make_shiq`, with `dataset` a list of
    `data.offline.PreferencePair` (default: `config.data_path`, else the bundled sample)."""
    loaded = loaded or load_model(config, verbose)
    data = pair_data(config, loaded.tokenizer, dataset)
    objective = partial(dpo_objective, config=config, model_config=loaded.model_config)
    return _make_offline(
        config, loaded, data, objective, optimizer, progress_metric="reward_accuracy", frame_name="pair"
    )
