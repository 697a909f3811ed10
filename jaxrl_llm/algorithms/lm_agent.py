"""LM agents trained with GiGPO, GRPO or RLOO in gymnax grid environments, one program per update.

`make_lm_agent(config)` is the algorithm (see `training.algorithm`). `collect` is jittable:
the multi-turn episode scan (`rollout.agent.agent_rollout`, the LM sampling every turn), the
group advantages and the reference log-probs compile together with `learn`, the GRPO-family
clipped token loss (`lm_grpo.grpo_step`), into one program per chunk of updates.

Each (episode, turn) is one training row: prompt = the turn's fixed-length window, response =
the turn's answer tokens. Advantages per row (verl-agent's recipe):
- GiGPO (Feng et al. 2025, Eq. 3-8): A = A^E + omega A^S (`losses.gigpo_advantages`), with the
  anchor observation of a turn the environment's raw observation, not the prompt. The prompt
  also carries the last `history_length` (observation, action) pairs, so two turns in one
  step group can have different prompts (the state aliasing verl-agent accepts, digest 2.6.6).
- GRPO: the episode level of the same function with omega = 0 and std normalisation (the
  episode return of each row normalised over its group's step rows, as verl-agent).
- RLOO: R_i minus the mean return of the other members of its group, per trajectory.
- PPO: a value head V(s_t) = w . h_t + b on the decoder's final hidden state at the turn's
  last prompt position (shared with the policy, trained with `value_coef` x 1/2 (V - R)^2),
  and GAE over the turns of each episode. An episode cut at `max_turns` bootstraps with 0
  (the horizon is part of the task; the next prompt is never built).
The invalid-action penalty is subtracted from the rows whose answer named no action
(GiGPO/GRPO inside the advantage function, as verl-agent; RLOO after it; PPO from the turn's
reward, so GAE carries it back to earlier turns).

The base model (LoRA base, and reference policy of the k3 KL) is the algorithm's `frozen`
argument. With `sft_warmup_steps` a from-scratch model first learns the answer format by
supervised steps on random-walk transcripts (`make_agent_sft`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxrl_llm import envs
from jaxrl_llm.algorithms.configs.lm_agent import LMAgentConfig
from jaxrl_llm.algorithms.lm_grpo import (
    LOGPROB_CHUNK,
    CompletionBatch,
    clipped_token_loss,
    grpo_step,
    num_microbatches,
    plan_token_loss,
    reference_log_probs,
)
from jaxrl_llm.algorithms.lm_sft import SFTBatch, sft_step
from jaxrl_llm.algorithms.lm_task import LoadedModel, load_model, train_warm_up
from jaxrl_llm.config import to_dict
from jaxrl_llm.losses import gigpo_advantages, group_advantages
from jaxrl_llm.losses.gae import generalized_advantage_estimation
from jaxrl_llm.models.llama import hidden_states, positions_from_mask
from jaxrl_llm.models.logprobs import completion_logprobs_entropy_and_prompt_state
from jaxrl_llm.models.lora import model_weights, trainable_weights
from jaxrl_llm.models.tokenizer import stop_token_ids
from jaxrl_llm.rollout.agent import AgentRows, agent_rollout, episode_metrics, lm_policy, random_walk_policy
from jaxrl_llm.rollout.agent_text import AgentText, build_agent_text
from jaxrl_llm.training import Algorithm, TrainState
from jaxrl_llm.training.gradient_steps import (
    loss_norm_constant,
    microbatch_norm_constant,
    repeated_gradient_steps,
    split_microbatches,
)
from jaxrl_llm.training.optimizers import clipped_adam
from jaxrl_llm.training.train_state import create as create_train_state


@dataclass(frozen=True)
class AgentSetup:
    """What an LM-agent run holds fixed: the model, the environment and its token tables."""

    config: LMAgentConfig
    model_config: Any
    tokenizer: Any
    base_params: Any  # frozen: the reference policy (and the LoRA base)
    env: Any
    env_params: Any
    text: AgentText
    stop_tokens: tuple[int, ...]


def setup(
    config: LMAgentConfig,
    loaded: LoadedModel | None = None,
    *,
    verbose: bool = True,
    warmup_dir: str | Path | None = None,
    resume: bool = False,
) -> AgentSetup:
    """Loads the model (unless given), builds the environment's token tables and runs the
    supervised warm-up when `config.sft_warmup_steps` (checkpointed in `warmup_dir` if given)."""
    loaded = loaded or load_model(config, verbose)
    env, env_params = envs.make_configured(config.env, config.env_kwargs)
    text = build_agent_text(
        env,
        env_params,
        loaded.tokenizer,
        history_length=config.history_length,
        style=config.observation_style,
        action_format=config.action_format,
        prompt_style=config.prompt_style,
    )
    longest_answer = int(text.answer_mask[:-1].sum(axis=1).max()) + 1  # an action and the stop token
    if config.max_new_tokens < longest_answer:
        raise ValueError(
            f"max_new_tokens={config.max_new_tokens} cannot hold the longest answer of {config.env} "
            f"({longest_answer} tokens with the stop token): raise --max-new-tokens."
        )
    run = AgentSetup(
        config,
        loaded.model_config,
        loaded.tokenizer,
        loaded.params,
        env,
        env_params,
        text,
        stop_token_ids(loaded.tokenizer),
    )
    if config.sft_warmup_steps:
        run = dataclasses.replace(run, base_params=warm_up(run, verbose, warmup_dir, resume))
    return run


def rollout(run: AgentSetup, params, key: jax.Array, *, policy=None, temperature=None) -> AgentRows:
    """One update's episodes with `params` (or `policy`); jittable."""
    config = run.config
    policy = policy or lm_policy(
        params,
        run.model_config,
        config.max_new_tokens,
        temperature=config.temperature if temperature is None else temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        stop_tokens=run.stop_tokens,
        pad_token=run.text.pad_token,
        shared_prefix=run.text.head,
    )
    return agent_rollout(
        key,
        run.env,
        run.env_params,
        run.text,
        policy,
        num_groups=config.num_groups,
        group_size=config.group_size,
        max_turns=config.max_turns,
        stop_tokens=run.stop_tokens,
    )


def row_advantages(rows: AgentRows, config: LMAgentConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`[B, T]` advantages of the turns (0 on inactive rows) and their metrics (module docstring)."""
    episode_group = rows.group_id[:, 0]
    if config.algorithm == "rloo":
        returns = rows.reward.sum(axis=1)
        advantage, metrics = group_advantages(
            returns, episode_group, config.num_groups, normalization="none", baseline="leave_one_out"
        )
        penalty = config.invalid_action_penalty * rows.invalid_action
        return jnp.where(rows.active, advantage[:, None] - penalty, 0.0), metrics
    gigpo = config.algorithm == "gigpo"
    result = gigpo_advantages(
        rows.reward,
        rows.active,
        episode_group,
        rows.anchor_obs,
        gamma=config.gamma,
        step_advantage_weight=config.step_advantage_weight if gigpo else 0.0,
        normalization=config.normalization if gigpo else "std",
        invalid_action_mask=rows.invalid_action,
        invalid_action_penalty=config.invalid_action_penalty,
        num_episode_groups=config.num_groups,
    )
    return result.advantages, result.metrics


def flatten_rows(rows: AgentRows, advantage: jax.Array, ref_log_prob_fn) -> CompletionBatch:
    """Rows `[B, T, ...]` as a `CompletionBatch` of `B*T` (prompt + answer) sequences."""
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    tokens = jnp.concatenate([flat(rows.prompt_tokens), flat(rows.answer_tokens)], axis=1)
    mask = jnp.concatenate([flat(rows.prompt_mask), flat(rows.answer_mask)], axis=1)
    prompt_len = rows.prompt_tokens.shape[-1]
    return CompletionBatch(
        tokens=tokens,
        mask=mask,
        completion_mask=flat(rows.answer_mask),
        old_log_prob=flat(rows.answer_logprobs),
        ref_log_prob=ref_log_prob_fn(tokens, mask, prompt_len),
        advantage=flat(advantage),
    )


@struct.dataclass
class AgentPPOBatch:
    completions: CompletionBatch  # advantage = GAE advantage of the row's turn
    returns: jax.Array  # [R] value targets
    row_mask: jax.Array  # [R] bool, real (active) rows


def init_value_head(hidden_size: int) -> dict[str, jax.Array]:
    return {"kernel": jnp.zeros((hidden_size,), jnp.float32), "bias": jnp.zeros((), jnp.float32)}


def value_of(head: dict[str, jax.Array], state: jax.Array) -> jax.Array:
    """V = w . h + b for hidden states `[..., D]`."""
    return state.astype(jnp.float32) @ head["kernel"] + head["bias"]


def prompt_states(params, model_config, tokens, mask, num_slices: int) -> jax.Array:
    """Final hidden state `[R, D]` at the last position of prompts `[R, P]`, `num_slices` row
    slices at a time (the last prompt slot is always a real token: the chat template's tail)."""

    def last_state(slice_):
        slice_tokens, slice_mask = slice_
        hidden, _ = hidden_states(
            params, model_config, slice_tokens, positions_from_mask(slice_mask), mask=slice_mask
        )
        return hidden[:, -1]

    states = jax.lax.map(last_state, split_microbatches((tokens, mask), num_slices))
    return states.reshape(tokens.shape[0], -1)


def turn_advantages_gae(
    rows: AgentRows, values: jax.Array, config: LMAgentConfig
) -> tuple[jax.Array, jax.Array]:
    """`(advantages, returns)` `[B, T]` by GAE over each episode's turns (0 on inactive rows)."""
    reward = rows.reward - config.invalid_action_penalty * rows.invalid_action
    next_active = jnp.concatenate([rows.active[:, 1:], jnp.zeros_like(rows.active[:, :1])], axis=1)
    following = jnp.where(next_active, jnp.concatenate([values[:, 1:], values[:, :1]], axis=1), 0.0)
    cut = rows.active & ~next_active & ~rows.terminated  # the episode's last turn without an ending
    advantage, returns = generalized_advantage_estimation(
        reward.T, values.T, following.T, rows.terminated.T, cut.T, config.gamma, config.gae_lambda
    )
    return jnp.where(rows.active, advantage.T, 0.0), jnp.where(rows.active, returns.T, 0.0)


def ppo_step(
    train_state: TrainState,
    batch: AgentPPOBatch,
    key: jax.Array,
    axis_name: str | None = None,
    *,
    frozen: Any,
    run: AgentSetup,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`update_epochs` steps of the clipped token loss plus `value_coef` x the value head's
    squared error, both normalised over the global batch (shard- and micro-batch-exact)."""
    del key
    config = run.config
    plan = plan_token_loss(config, run.model_config, batch.completions, axis_name)
    value_norm = loss_norm_constant("token-mean", batch.row_mask[:, None], axis_name, 1)
    value_norm = microbatch_norm_constant("token-mean", value_norm, plan.num_slices)

    def loss_fn(trainable, micro: AgentPPOBatch):
        params = model_weights(frozen, trainable["policy"])
        c = micro.completions
        log_prob, entropy, state = completion_logprobs_entropy_and_prompt_state(
            params, plan.model_config, c.tokens, c.mask, plan.prompt_len, chunk_size=LOGPROB_CHUNK
        )
        policy_loss, metrics = clipped_token_loss(config, log_prob, entropy, c, plan.norm)
        error = jnp.where(micro.row_mask, value_of(trainable["value_head"], state) - micro.returns, 0.0)
        value_loss = 0.5 * jnp.sum(error**2) / value_norm
        loss = policy_loss + config.value_coef * value_loss
        return loss, {**metrics, "value_loss": value_loss * plan.num_slices, "loss": loss}

    return repeated_gradient_steps(
        train_state,
        loss_fn,
        tx,
        config.update_epochs,
        axis_name,
        batch=batch,
        num_microbatches=plan.num_slices,
    )


def make_optimizer(config: LMAgentConfig) -> optax.GradientTransformation:
    return clipped_adam(config.learning_rate, config.max_grad_norm)


def make_lm_agent(
    config: LMAgentConfig,
    loaded: AgentSetup | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    verbose: bool = True,
) -> Algorithm:
    """The LM agent trainer as an `Algorithm` (module docstring). `loaded` is `setup(config)`'s
    result (built here if not given); `optimizer` replaces the config's clipped Adam."""
    run = loaded or setup(config, verbose=verbose)
    tx = optimizer or make_optimizer(config)
    rows_per_update = config.batch_size
    num_slices = num_microbatches(
        config, run.model_config, rows_per_update, run.text.prompt_length, config.max_new_tokens
    )

    ppo = config.algorithm == "ppo"

    def init(key: jax.Array) -> tuple[TrainState, jax.Array]:
        policy = trainable_weights(key, run.base_params, config.lora_rank, config.lora_alpha)
        trainable = (
            {"policy": policy, "value_head": init_value_head(run.model_config.hidden_size)} if ppo else policy
        )
        return create_train_state(trainable, tx), jnp.zeros((), jnp.int32)

    def collect(update: jax.Array, trainable, key: jax.Array, *, frozen):
        policy = trainable["policy"] if ppo else trainable
        params = model_weights(frozen, policy)
        rows = rollout(run, params, key)
        reference = partial(reference_log_probs, frozen, run.model_config, num_slices=num_slices)
        ref_log_prob = lambda t, m, p: reference(t, m, num_prompt_tokens=p)
        if ppo:
            flat = lambda x: x.reshape((-1,) + x.shape[2:])
            states = prompt_states(
                params, run.model_config, flat(rows.prompt_tokens), flat(rows.prompt_mask), num_slices
            )
            values = value_of(trainable["value_head"], states).reshape(rows.reward.shape)
            advantage, returns = turn_advantages_gae(rows, values, config)
            batch = AgentPPOBatch(
                flatten_rows(rows, advantage, ref_log_prob), flat(returns), flat(rows.active)
            )
            advantage_metrics = {
                "value_mean": jnp.sum(values * rows.active) / jnp.maximum(rows.active.sum(), 1)
            }
        else:
            advantage, advantage_metrics = row_advantages(rows, config)
            batch = flatten_rows(rows, advantage, ref_log_prob)
        metrics = {
            **episode_metrics(rows),
            **{k: jnp.asarray(v, jnp.float32) for k, v in advantage_metrics.items()},
        }
        return update + 1, batch, metrics

    return Algorithm(
        init,
        collect,
        partial(ppo_step if ppo else grpo_step, run=run, tx=tx),
        config.num_updates,
        frames_per_update=config.num_envs * config.max_turns,
        progress_metric="success_rate" if envs.has_success(run.env) else "episode_return_mean",
        frame_name="turn",
        frozen=run.base_params,
    )


# ---- supervised warm-up on random-walk transcripts ------------------------------------------


def make_agent_sft(run: AgentSetup, num_updates: int, learning_rate: float) -> Algorithm:
    """Next-token training on the canonical answers of random-walk episodes (valid moves, not
    optimal ones): teaches a from-scratch model the prompt -> answer format before RL."""
    config = run.config
    tx = clipped_adam(learning_rate, None)
    stop = run.stop_tokens[0]
    walker = random_walk_policy(run.text, run.env.num_actions, stop, config.max_new_tokens)
    num_slices = num_microbatches(
        config, run.model_config, config.batch_size, run.text.prompt_length, config.max_new_tokens
    )

    def init(key):
        del key
        return create_train_state(run.base_params, tx), jnp.zeros((), jnp.int32)

    def collect(update, params, key):
        rows = rollout(run, params, key, policy=walker)
        flat = lambda x: x.reshape((-1,) + x.shape[2:])
        tokens = jnp.concatenate([flat(rows.prompt_tokens), flat(rows.answer_tokens)], axis=1)
        answer_mask = flat(rows.answer_mask)
        mask = jnp.concatenate([flat(rows.prompt_mask), answer_mask], axis=1)
        loss_mask = jnp.concatenate([jnp.zeros_like(flat(rows.prompt_mask)), answer_mask], axis=1)
        return update + 1, SFTBatch(tokens, mask, loss_mask), {}

    return Algorithm(
        init,
        collect,
        partial(sft_step, model_config=run.model_config, tx=tx, num_microbatches=num_slices),
        num_updates,
        config.batch_size,
        progress_metric="loss",
        frame_name="row",
    )


def warm_up(run: AgentSetup, verbose: bool, out_dir=None, resume: bool = False):
    """The warm-up's final parameters (in memory, or a checkpointed run in `out_dir`)."""
    config = run.config
    algorithm = make_agent_sft(run, config.sft_warmup_steps, config.sft_learning_rate)
    return train_warm_up(
        algorithm,
        {"algorithm": "agent-sft", **to_dict(config)},
        config.seed,
        verbose=verbose,
        out_dir=out_dir,
        resume=resume,
        title=f"supervised warm-up of {config.model} on {config.env}",
    )
