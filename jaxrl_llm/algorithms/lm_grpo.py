"""GRPO on language models: prompts -> G sampled completions -> verifiable rewards ->
group advantages -> the GRPO-family clipped loss with a KL to a frozen reference.

`make_lm_grpo(config)` is the algorithm (see `training.algorithm`). The sampler and the
gradient step are jitted; rewards are Python functions of the completion text
(exact-match answers, format checks), so `collect` runs on the host each update and the
same `training.run` loop checkpoints, resumes and logs. The gradient step is written on a
per-device batch, so it runs data-parallel (`shard_map`/`pmap`) unchanged; each device
holds whole groups because advantages are computed before the step.

Full fine-tuning trains every parameter; `lora_rank > 0` trains low-rank adapters on
the attention and MLP projections and keeps the base weights frozen, which are also
the reference policy (read in place: no second copy of the base weights is made for it).
With `kl_coef == 0` the loss has no KL term, so `collect` runs no reference pass at all
(`needs_reference`) and the batch carries `ref_log_prob=None`.

`reward="l2t"` (L2T's dense information-gain reward, paper or released-code credit
assignment) and `reward="length-penalty"` replace the group advantages of the outcome
reward with those of `algorithms.l2t_rewards`; the default `"outcome"` path is unchanged.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxrl_llm import data
from jaxrl_llm.algorithms import l2t_rewards
from jaxrl_llm.algorithms.configs.lm_grpo import LMGRPOConfig, LMTaskConfig, SFTConfig
from jaxrl_llm.algorithms.lm_sft import make_sft
from jaxrl_llm.algorithms.lm_task import LoadedModel, load_model, load_problems, train_warm_up
from jaxrl_llm.config import to_dict
from jaxrl_llm.data.problems import encode_prompts
from jaxrl_llm.losses import group_advantages, policy_gradient_loss
from jaxrl_llm.models.logprobs import completion_logprobs_and_entropy
from jaxrl_llm.models.lora import model_weights, trainable_weights
from jaxrl_llm.models.tokenizer import stop_token_ids
from jaxrl_llm.rollout.sampling import generate
from jaxrl_llm.training import Algorithm, TrainState
from jaxrl_llm.training.gradient_steps import (
    loss_norm_constant,
    microbatch_count,
    microbatch_norm_constant,
    repeated_gradient_steps,
    split_microbatches,
)
from jaxrl_llm.training.loop import fetch_to_host
from jaxrl_llm.training.optimizers import clipped_adam
from jaxrl_llm.training.train_state import create as create_train_state


@struct.dataclass
class CompletionBatch:
    """One update's rows `[B, ...]` (B = prompts x group_size, group-major)."""

    tokens: jax.Array  # [B, P + N] left-padded prompt followed by the completion
    mask: jax.Array  # [B, P + N] real tokens (contiguous)
    completion_mask: jax.Array  # [B, N]
    old_log_prob: jax.Array  # [B, N] sampler log-probs
    ref_log_prob: jax.Array | None  # [B, N]; None when kl_coef == 0 (no reference pass, no KL term)
    advantage: jax.Array  # [B]


@struct.dataclass
class LMCollectState:
    update: jax.Array  # int32 count of finished updates (selects the prompts: resumable)
    reference_adapters: Any = None  # initial LoRA adapters (L2T's compression penalty), else None


@dataclass(frozen=True)
class LMGRPO:
    """Everything an LM-GRPO run holds fixed: model, tokenizer, problems, compiled steps."""

    config: LMGRPOConfig
    model_config: Any
    tokenizer: Any
    base_params: Any  # frozen: the reference policy (and the LoRA base)
    problems: list
    stop_tokens: tuple[int, ...]


def setup(
    config: LMGRPOConfig,
    params=None,
    model_config=None,
    tokenizer=None,
    problems=None,
    *,
    verbose: bool = True,
    warmup_dir: str | Path | None = None,
    resume: bool = False,
) -> LMGRPO:
    """Loads the model (unless given) and the task, then runs the supervised warm-up if
    `config.sft_warmup_steps`.

    With `warmup_dir` the warm-up is a checkpointed SFT run there, so `resume` restores its
    result instead of training again; without, it runs in memory. `verbose` reports the model
    load on stderr and shows the warm-up's progress bar (minutes for a 135M model on a CPU).
    """
    if params is None:
        loaded = load_model(config, verbose)
        params, model_config, tokenizer = loaded.params, loaded.model_config, loaded.tokenizer
    if tokenizer is None:
        raise ValueError(f"model {config.model!r} came without a tokenizer; pass tokenizer= to setup().")
    problems = list(problems) if problems is not None else load_problems(config)
    if config.sft_warmup_steps:
        params = warm_up(
            config, LoadedModel(params, model_config, tokenizer), problems, verbose, warmup_dir, resume
        )
    return LMGRPO(config, model_config, tokenizer, params, problems, stop_token_ids(tokenizer))


def warmup_config(config: LMGRPOConfig) -> SFTConfig:
    """The SFT run of the warm-up: the task's answers, `sft_warmup_steps` Adam steps at 1e-3."""
    task = {f.name: getattr(config, f.name) for f in dataclasses.fields(LMTaskConfig)}
    return SFTConfig(
        **task,
        num_updates=config.sft_warmup_steps,
        batch_size=32,
        learning_rate=1e-3,
        max_target_tokens=config.max_new_tokens,
    )


def warm_up(config, loaded: LoadedModel, problems, verbose: bool, out_dir=None, resume: bool = False):
    """The supervised warm-up's final parameters (see `setup`)."""
    sft_config = warmup_config(config)
    algorithm = make_sft(sft_config, loaded, problems, verbose=verbose)
    return train_warm_up(
        algorithm,
        {"algorithm": "sft", **to_dict(sft_config)},
        config.seed,
        verbose=verbose,
        out_dir=out_dir,
        resume=resume,
        title=f"supervised warm-up of {config.model}",
    )


def effective_params(run: LMGRPO, trainable):
    return model_weights(run.base_params, trainable)


def make_optimizer(config: LMGRPOConfig) -> optax.GradientTransformation:
    return clipped_adam(config.learning_rate, config.max_grad_norm)


LOGPROB_CHUNK = 32
"""Completion positions projected onto the vocabulary at once: the backward pass keeps four
[rows, chunk, V] float32 arrays (SmolLM2: 0.8 MB per row and position)."""


def sequence_log_probs(params, model_config, batch_tokens, batch_mask, num_prompt_tokens: int):
    """Teacher-forced log-probs and entropies of the completion part `[B, N]`."""
    return completion_logprobs_and_entropy(
        params, model_config, batch_tokens, batch_mask, num_prompt_tokens, chunk_size=LOGPROB_CHUNK
    )


def activation_bytes(model_config, rows: int, prompt_tokens: int, completion_tokens: int, remat: bool) -> int:
    """Estimated activation memory of one gradient pass over `rows` sequences of
    `prompt_tokens + completion_tokens` = T tokens (weights and optimizer state excluded).

    Per row, a decoder layer's backward pass keeps T (4 D + 7 F) values of the compute
    dtype and 2 H T^2 float32 attention scores; all L layers' worth without `remat`, only
    the L layer inputs (L T D values) plus one recomputed layer with it. The vocabulary
    projection keeps 4 chunk V float32 values. Against XLA's buffer assignment of SmolLM2's
    LoRA step (`compiled.memory_analysis()`, rows 1-32, T 96-480) the row-dependent part is
    within 2% without remat and up to 20% low with it at T >= 320; tiny models come out
    ~25% low. Not included: buffers that do not scale with rows (LoRA's merged weights and
    their gradients, 0.8 GiB for SmolLM2).
    """
    c = model_config
    itemsize = jnp.dtype(c.compute_dtype).itemsize
    steps = prompt_tokens + completion_tokens
    layer = steps * (itemsize * (4 * c.hidden_size + 7 * c.intermediate_size) + 4 * 2 * c.num_heads * steps)
    logits = 4 * 4 * min(completion_tokens, LOGPROB_CHUNK) * c.vocab_size
    if remat:
        # the projection's buffers are freed before the layers' backward reuses the space
        per_row = c.num_layers * steps * c.hidden_size * itemsize + max(layer, logits)
    else:
        per_row = c.num_layers * layer + logits
    return rows * per_row


def auto_micro_batch_size(
    model_config, rows: int, prompt_tokens: int, completion_tokens: int, budget_bytes: float, remat: bool
) -> int:
    """The largest divisor of `rows` whose `activation_bytes` fit `budget_bytes` (at least 1)."""
    fitting = [
        size
        for size in range(1, rows + 1)
        if rows % size == 0
        and activation_bytes(model_config, size, prompt_tokens, completion_tokens, remat) <= budget_bytes
    ]
    return max(fitting, default=1)


def num_microbatches(
    config: LMGRPOConfig, model_config, rows: int, prompt_tokens: int, completion_tokens: int
) -> int:
    """How many slices a (per-device) batch of `rows` sequences runs in: `rows / micro_batch_size`,
    or with `micro_batch_size=0` as many as `memory_budget_gb` needs."""
    size = config.micro_batch_size or auto_micro_batch_size(
        model_config,
        rows,
        prompt_tokens,
        completion_tokens,
        config.memory_budget_gb * 2**30,
        config.remat or model_config.remat,
    )
    return microbatch_count(rows, size)


def needs_reference(config) -> bool:
    """Whether the loss reads the reference log-probs: only its KL term does, so with
    `kl_coef == 0` (TRL's default beta) `collect` skips the reference forward pass."""
    return config.kl_coef != 0


def reference_log_probs(
    params, model_config, batch_tokens, batch_mask, num_prompt_tokens: int, num_slices: int
):
    """`sequence_log_probs` computed `num_slices` row slices at a time (bounded memory)."""
    slices = split_microbatches((batch_tokens, batch_mask), num_slices)
    log_probs, _ = jax.lax.map(
        lambda xs: sequence_log_probs(params, model_config, *xs, num_prompt_tokens), slices
    )
    return log_probs.reshape(batch_tokens.shape[0], -1)


class TokenLossPlan(NamedTuple):
    """How a gradient step over a batch of (prompt, completion) rows runs."""

    prompt_len: int
    num_slices: int  # micro-batches (gradient accumulation)
    model_config: Any  # with remat when the config asks for it
    norm: jax.Array  # the token loss's shard- and micro-batch-exact normaliser


def plan_token_loss(config, model_config, batch: CompletionBatch, axis_name: str | None) -> TokenLossPlan:
    """The `TokenLossPlan` of `batch` under an LM RL config (`loss_agg_mode`, `max_new_tokens`,
    `remat` and the micro-batch fields)."""
    rows, completion_len = batch.completion_mask.shape
    prompt_len = batch.tokens.shape[1] - completion_len
    slices = num_microbatches(config, model_config, rows, prompt_len, completion_len)
    norm = loss_norm_constant(config.loss_agg_mode, batch.completion_mask, axis_name, config.max_new_tokens)
    return TokenLossPlan(
        prompt_len,
        slices,
        model_config.replace(remat=True) if config.remat else model_config,
        microbatch_norm_constant(config.loss_agg_mode, norm, slices),
    )


def clipped_token_loss(config, log_prob, entropy, batch: CompletionBatch, norm):
    """The GRPO-family clipped token loss with k-estimated KL to the reference, under `config`.

    `batch.ref_log_prob` None (kl_coef 0, see `needs_reference`) drops the KL term and its
    `kl`/`kl_loss` metrics; with it given, a zero coefficient adds exactly 0 to the loss."""
    return policy_gradient_loss(
        log_prob,
        batch.old_log_prob,
        batch.advantage,
        batch.completion_mask,
        ref_logp=batch.ref_log_prob,
        entropy=entropy,
        eps_low=config.eps_low,
        eps_high=config.eps_high,
        kl_coef=config.kl_coef,
        kl_estimator=config.kl_estimator,
        loss_agg_mode=config.loss_agg_mode,
        norm_constant=norm,
    )


def grpo_step(
    train_state: TrainState,
    batch: CompletionBatch,
    key: jax.Array,
    axis_name: str | None = None,
    *,
    frozen: Any,
    run: LMGRPO,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`update_epochs` gradient steps of the GRPO-family loss on one batch of completions.

    `frozen` is the base model (the reference policy and, with LoRA, the adapted weights): an
    argument of the compiled step, never a compiled-in constant. `run` needs only `config`
    and `model_config` (the LM-agent trainer passes its own).
    """
    del key
    config = run.config
    plan = plan_token_loss(config, run.model_config, batch, axis_name)

    def loss_fn(trainable, micro: CompletionBatch):
        params = model_weights(frozen, trainable)
        log_prob, entropy = sequence_log_probs(
            params, plan.model_config, micro.tokens, micro.mask, plan.prompt_len
        )
        loss, metrics = clipped_token_loss(config, log_prob, entropy, micro, plan.norm)
        return loss, {**metrics, "loss": loss}

    return repeated_gradient_steps(
        train_state,
        loss_fn,
        tx,
        config.update_epochs,
        axis_name,
        batch=batch,
        num_microbatches=plan.num_slices,
    )


def rewards_of(run: LMGRPO, completions: list[str], answers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`(reward, correct)` per completion: exact match (0/1) + w * format."""
    correct = np.array([data.exact_match_reward(c, a) for c, a in zip(completions, answers)], np.float32)
    formatted = np.array([data.format_reward(c) for c in completions], np.float32)
    return correct + run.config.format_reward_weight * formatted, correct


def decode_completions(tokenizer, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    return [tokenizer.decode(row[m].tolist(), skip_special_tokens=True) for row, m in zip(tokens, mask)]


def completion_width(config: LMGRPOConfig, completion_mask: np.ndarray) -> int:
    """Columns of the sampled completions to train on: the longest completion rounded up to
    `length_bucket` (all `max_new_tokens` when bucketing is off)."""
    if not config.length_bucket:
        return config.max_new_tokens
    longest = max(int(completion_mask.sum(axis=1).max()), 1)
    return min(config.max_new_tokens, -(-longest // config.length_bucket) * config.length_bucket)


def make_lm_grpo(
    config: LMGRPOConfig,
    loaded: LMGRPO | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    verbose: bool = True,
) -> Algorithm:
    """LM-GRPO as an `Algorithm`: `collect` samples `group_size` completions of
    `prompts_per_update` prompts, scores them with the Python rewards and computes the
    reference log-probs (unless `kl_coef == 0`) and group advantages (host-driven); `learn`
    is `grpo_step`, with the base model as `frozen`. The model is loaded by `setup(config)`
    unless `loaded` is given; `optimizer` replaces the config's clipped Adam.
    """
    run = loaded or setup(config, verbose=verbose)
    model_config = run.model_config
    tx = optimizer or make_optimizer(config)
    sample = jax.jit(
        lambda trainable, base, tokens, mask, key: generate(
            model_weights(base, trainable),
            model_config,
            tokens,
            mask,
            key,
            config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            stop_tokens=run.stop_tokens,
            pad_token=run.tokenizer.pad_token_id or 0,
            prompt_copies=config.group_size,  # each prompt prefilled once for its whole group
        )
    )
    reference = jax.jit(
        partial(reference_log_probs, model_config=model_config),
        static_argnames=("num_prompt_tokens", "num_slices"),
    )
    advantages = jax.jit(
        partial(group_advantages, num_groups=config.prompts_per_update, normalization=config.normalization)
    )
    group_ids = jnp.repeat(jnp.arange(config.prompts_per_update), config.group_size)
    shaping = l2t_rewards.make_reward_shaping(
        config,
        model_config,
        run.tokenizer,
        stop_tokens=run.stop_tokens,
        num_slices_fn=partial(num_microbatches, config, model_config),
        logprob_chunk=LOGPROB_CHUNK,
        verbose=verbose,
    )

    def init(key: jax.Array) -> tuple[TrainState, LMCollectState]:
        trainable = trainable_weights(key, run.base_params, config.lora_rank, config.lora_alpha)
        reference = l2t_rewards.initial_reference(config, trainable)
        return create_train_state(trainable, tx), LMCollectState(jnp.zeros((), jnp.int32), reference)

    def collect(state: LMCollectState, trainable, key: jax.Array, *, frozen):
        started = time.perf_counter()
        rng = np.random.default_rng([config.seed, int(state.update)])
        chosen = rng.choice(len(run.problems), config.prompts_per_update, replace=False)
        unique = [run.problems[i] for i in chosen]
        unique_tokens, unique_mask = encode_prompts(
            run.tokenizer, unique, config.max_prompt_tokens, config.length_bucket
        )
        out = sample(trainable, frozen, unique_tokens, unique_mask, key)  # B = prompts x group_size rows
        # rows are group-major: row b is a completion of unique prompt b // group_size
        problems = [problem for problem in unique for _ in range(config.group_size)]
        prompt_tokens = np.repeat(unique_tokens, config.group_size, axis=0)
        prompt_mask = np.repeat(unique_mask, config.group_size, axis=0)
        out = fetch_to_host(out)  # waits for the sampler (every process gets every row)
        sampled_mask = out.mask
        sampled = time.perf_counter()
        width = completion_width(config, sampled_mask)
        tokens, completion_mask = out.tokens[:, :width], sampled_mask[:, :width]
        completions = decode_completions(run.tokenizer, tokens, completion_mask)
        reward, correct = rewards_of(run, completions, [p.answer for p in problems])
        full_tokens = jnp.concatenate([prompt_tokens, tokens], axis=1)
        full_mask = jnp.concatenate([prompt_mask, completion_mask], axis=1)
        prompt_len = prompt_tokens.shape[1]
        scored = time.perf_counter()  # reference_seconds times the reference pass alone
        ref_log_prob = None  # kl_coef 0: the loss never reads it, so no reference forward
        if needs_reference(config):
            ref_log_prob = reference(
                frozen,
                batch_tokens=full_tokens,
                batch_mask=full_mask,
                num_prompt_tokens=prompt_len,
                num_slices=num_microbatches(config, model_config, config.batch_size, prompt_len, width),
            )
            ref_log_prob.block_until_ready()
        referenced = time.perf_counter()
        if shaping is None:
            advantage, advantage_metrics = advantages(jnp.asarray(reward), group_ids)
            shaped_metrics = {}
        else:
            advantage, shaped_metrics = shaping(
                trainable,
                frozen,
                state.reference_adapters,
                prompt_tokens=prompt_tokens,
                prompt_mask=prompt_mask,
                completion_tokens=tokens,
                completion_mask=completion_mask,
                old_log_prob=out.logprobs[:, :width],
                reward=reward,
                correct=correct,
                answers=[p.answer for p in problems],
                group_ids=group_ids,
            )
            shaped_metrics["shaping_seconds"] = time.perf_counter() - referenced
            advantage_metrics = {"zero_std_group_fraction": shaped_metrics.pop("zero_std_group_fraction")}
        batch = CompletionBatch(
            full_tokens,
            full_mask,
            jnp.asarray(completion_mask),
            out.logprobs[:, :width],
            ref_log_prob,
            advantage,
        )
        generated = int(completion_mask.sum())
        metrics = {
            "reward_mean": float(reward.mean()),
            "accuracy": float(correct.mean()),
            "zero_std_group_fraction": float(advantage_metrics["zero_std_group_fraction"]),
            "completion_length_mean": float(completion_mask.sum(1).mean()),
            "sampled_tokens_per_second": generated / (sampled - started),
            "sample_seconds": sampled - started,
            "reference_seconds": referenced - scored,
            **shaped_metrics,
        }
        return state.replace(update=state.update + 1), batch, metrics

    return Algorithm(
        init,
        collect,
        partial(grpo_step, run=run, tx=tx),
        config.num_updates,
        frames_per_update=config.batch_size,
        progress_metric="accuracy",
        host_collect=True,
        frame_name="completion",
        frozen=run.base_params,
    )


def evaluate_accuracy(
    run: LMGRPO,
    trainable,
    problems,
    *,
    temperature: float = 0.0,
    samples: int = 1,
    seed: int = 0,
    batch_size: int = 64,
) -> float:
    """Exact-match accuracy of the policy on `problems`: greedy (temperature 0), or the mean
    over `samples` sampled completions per problem (pass@1 under sampling, lower variance)."""
    config = run.config
    params = effective_params(run, trainable)
    repeated = [p for p in problems for _ in range(samples)]
    key = jax.random.key(seed)
    correct = []
    for start in range(0, len(repeated), batch_size):
        chunk = repeated[start : start + batch_size]
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))  # one compiled shape
        tokens, mask = encode_prompts(run.tokenizer, padded, config.max_prompt_tokens, config.length_bucket)
        key, sample_key = jax.random.split(key)
        out = generate(
            params,
            run.model_config,
            tokens,
            mask,
            sample_key,
            config.max_new_tokens,
            temperature=temperature,
            stop_tokens=run.stop_tokens,
            pad_token=run.tokenizer.pad_token_id or 0,
        )
        texts = decode_completions(run.tokenizer, np.asarray(out.tokens), np.asarray(out.mask))
        correct += [data.exact_match_reward(t, p.answer) for t, p in zip(texts[: len(chunk)], chunk)]
    return float(np.mean(correct))
