"""Supervised next-token training of a causal LM on problems with known answers (SFT).

Trains log pi(completion | chat prompt) with the completion `"<answer><eos>"` (or any
`target_text(problem)`), loss = −Σ_t m_t log pi(y_t | y_<t) / Σ_t m_t over completion
tokens only (averaged over all answer tokens of the global batch, whatever the device
count or micro-batching). Used to give a tiny from-scratch model the task format before
RL (`LMGRPOConfig.sft_warmup_steps`) and as `jaxrl-llm sft`.

`collect` reads a batch of rows from the encoded dataset on the host (the rows of
update u are drawn by `numpy.random.default_rng([seed, u])`, so a resumed run reads the
same ones); `learn` is one Adam step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxrl_llm.algorithms.configs.lm_grpo import SFTConfig
from jaxrl_llm.algorithms.lm_task import LoadedModel, load_model, load_problems
from jaxrl_llm.data import Problem
from jaxrl_llm.data.problems import encode_prompts
from jaxrl_llm.models.logprobs import token_logprobs_and_entropy
from jaxrl_llm.training import Algorithm, TrainState
from jaxrl_llm.training.gradient_steps import (
    loss_norm_constant,
    microbatch_norm_constant,
    repeated_gradient_steps,
)
from jaxrl_llm.training.optimizers import clipped_adam
from jaxrl_llm.training.train_state import create as create_train_state


def answer_only(problem: Problem) -> str:
    return problem.answer


def encode_supervised(
    tokenizer,
    problems: Sequence[Problem],
    max_prompt_tokens: int,
    max_target_tokens: int,
    target_text: Callable[[Problem], str] = answer_only,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(tokens, mask, target_mask)` `[B, P + N]`: left-padded prompt, then target + eos, right-padded."""
    # padded to the longest prompt of the whole set (one shape), not to the maximum allowed
    prompt_tokens, prompt_mask = encode_prompts(tokenizer, problems, max_prompt_tokens, pad_to_multiple_of=16)
    targets = np.full((len(problems), max_target_tokens), tokenizer.pad_token_id or 0, np.int32)
    target_mask = np.zeros_like(targets, bool)
    for row, problem in enumerate(problems):
        ids = tokenizer.encode(target_text(problem), add_special_tokens=False) + [tokenizer.eos_token_id]
        if len(ids) > max_target_tokens:
            raise ValueError(
                f"the answer of problem {row} is {len(ids)} tokens long (with end-of-sequence), more than "
                f"max_target_tokens={max_target_tokens}: raise --max-target-tokens."
            )
        targets[row, : len(ids)] = ids
        target_mask[row, : len(ids)] = True
    tokens = np.concatenate([prompt_tokens, targets], axis=1)
    mask = np.concatenate([prompt_mask, target_mask], axis=1)
    loss_mask = np.concatenate([np.zeros_like(prompt_mask), target_mask], axis=1)
    return tokens, mask, loss_mask


def next_token_loss(params, model_config, tokens, mask, loss_mask, norm_constant=None) -> jax.Array:
    """−Σ m log pi / `norm_constant` over the `loss_mask` tokens (default: their count)."""
    log_probs, _ = token_logprobs_and_entropy(params, model_config, tokens, mask)
    weights = loss_mask.astype(log_probs.dtype)
    denominator = jnp.maximum(weights.sum(), 1.0) if norm_constant is None else norm_constant
    return -(log_probs * weights).sum() / denominator


@struct.dataclass
class SFTBatch:
    tokens: jax.Array  # [B, P + N]
    mask: jax.Array  # [B, P + N] real tokens
    loss_mask: jax.Array  # [B, P + N] answer tokens


@struct.dataclass
class SFTCollectState:
    update: jax.Array  # int32 count of finished updates (selects the rows: resumable)


def sft_step(
    train_state: TrainState,
    batch: SFTBatch,
    key: jax.Array,
    axis_name: str | None = None,
    *,
    model_config,
    tx: optax.GradientTransformation,
    num_microbatches: int,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One step on the token mean of the global batch (shard- and micro-batch-exact)."""
    del key
    norm = loss_norm_constant("token-mean", batch.loss_mask, axis_name, 0)
    norm = microbatch_norm_constant("token-mean", norm, num_microbatches)

    def loss_fn(params, micro: SFTBatch):
        loss = next_token_loss(params, model_config, micro.tokens, micro.mask, micro.loss_mask, norm)
        return loss, {"loss": loss}  # slices are averaged: their mean is the batch loss

    return repeated_gradient_steps(
        train_state, loss_fn, tx, 1, axis_name, batch=batch, num_microbatches=num_microbatches
    )


def make_sft(
    config: SFTConfig,
    loaded: LoadedModel | None = None,
    problems: Sequence[Problem] | None = None,
    *,
    target_text: Callable[[Problem], str] = answer_only,
    optimizer: optax.GradientTransformation | None = None,
    verbose: bool = True,
) -> Algorithm:
    """SFT as an `Algorithm` (host-driven: batches are read on the host). The model is loaded
    from `config.model` unless `loaded` is given; the problems from the task unless given;
    `optimizer` replaces the config's clipped Adam."""
    loaded = loaded or load_model(config, verbose)
    problems = list(problems) if problems is not None else load_problems(config)
    tokens, mask, loss_mask = encode_supervised(
        loaded.tokenizer, problems, config.max_prompt_tokens, config.max_target_tokens, target_text
    )
    tx = optimizer or clipped_adam(config.learning_rate, config.max_grad_norm or None)
    micro = config.micro_batch_size or config.batch_size

    def init(key: jax.Array):
        del key  # starts from the loaded weights
        return create_train_state(loaded.params, tx), SFTCollectState(jnp.zeros((), jnp.int32))

    def collect(state: SFTCollectState, params, key: jax.Array):
        del params, key
        rng = np.random.default_rng([config.seed, int(state.update)])
        rows = rng.choice(len(tokens), config.batch_size, replace=len(tokens) < config.batch_size)
        batch = SFTBatch(jnp.asarray(tokens[rows]), jnp.asarray(mask[rows]), jnp.asarray(loss_mask[rows]))
        return SFTCollectState(state.update + 1), batch, {}

    def learn(train_state, batch, key, axis_name=None):
        num_microbatches = max(batch.tokens.shape[0] // micro, 1)
        step = partial(sft_step, model_config=loaded.model_config, tx=tx, num_microbatches=num_microbatches)
        return step(train_state, batch, key, axis_name)

    return Algorithm(
        init,
        collect,
        learn,
        config.num_updates,
        config.batch_size,
        progress_metric="loss",
        host_collect=True,
        frame_name="sequence",
    )
