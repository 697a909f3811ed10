"""Critic-free group RL on multi-step gymnax environments: GRPO and GiGPO.

Each update rolls out `num_groups x group_size` environments, where the members of
a group start from the same initial state and play one episode each (padded to
`episode_steps`). Every env step is one sample row, as in verl-agent:

* GRPO: the episode return of each member is normalised within its group
  (`losses.group_advantages`) and broadcast to all its steps.
* GiGPO (Feng et al. 2025, arXiv 2505.10978): the episode-level advantage plus
  `omega` x a step-level advantage that compares discounted step returns among the
  steps of a group whose anchor observation is identical (`losses.gigpo_advantages`).

The policy is an MLP over the flattened observation; the loss is the GRPO-family
clipped surrogate (`losses.policy_gradient_loss`) with an optional KL to the frozen
initial policy.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxrl_llm import envs
from jaxrl_llm.algorithms.configs.group_rl import GroupRLConfig
from jaxrl_llm.losses import gigpo_advantages, group_advantages, policy_gradient_loss
from jaxrl_llm.models import CategoricalPolicy
from jaxrl_llm.rollout import Trajectory, episode_success_rate, grouped_rollout
from jaxrl_llm.training import Algorithm, TrainState
from jaxrl_llm.training import make_train as make_train_from_algorithm
from jaxrl_llm.training.gradient_steps import loss_norm_constant, repeated_gradient_steps
from jaxrl_llm.training.optimizers import clipped_adam
from jaxrl_llm.training.parallel import Mode
from jaxrl_llm.training.train_state import create as create_train_state


@struct.dataclass
class GroupBatch:
    """Trajectory-major `[N, T, ...]` rows of one update (split across devices by whole groups)."""

    obs: Any
    action: jax.Array
    old_log_prob: jax.Array
    ref_log_prob: jax.Array
    advantage: jax.Array
    valid: jax.Array


@struct.dataclass
class GroupCollectState:
    ref_params: Any  # the frozen initial policy, the KL's reference


def make_policy_network(config: GroupRLConfig, env, env_params) -> CategoricalPolicy:
    obs_space = env.observation_space(env_params)
    scalar_categorical = hasattr(obs_space, "n") and tuple(getattr(obs_space, "shape", ())) == ()
    return CategoricalPolicy(
        num_actions=int(env.action_space(env_params).n),
        hidden_sizes=tuple(config.hidden_sizes),
        obs_rank=0 if scalar_categorical else len(obs_space.shape),
        num_obs_categories=int(obs_space.n) if scalar_categorical else 0,
    )


def compute_advantages(trajectory: Trajectory, group_ids: jax.Array, config: GroupRLConfig):
    """`[N, T]` advantages (0 on padding) and their metrics, from a time-major trajectory."""
    rewards = jnp.swapaxes(trajectory.reward * trajectory.valid, 0, 1)
    valid = jnp.swapaxes(trajectory.valid, 0, 1)
    if config.algorithm == "grpo":
        episode_return = rewards.sum(1)
        advantage, metrics = group_advantages(
            episode_return, group_ids, config.num_groups, normalization=config.normalization
        )
        return advantage[:, None] * valid, metrics
    result = gigpo_advantages(
        rewards,
        valid,
        group_ids,
        jnp.swapaxes(trajectory.obs, 0, 1),
        gamma=config.gamma,
        step_advantage_weight=config.step_advantage_weight,
        normalization="std" if config.normalization == "group" else "none",
        num_episode_groups=config.num_groups,
    )
    return result.advantages, result.metrics


def group_policy_update(
    state: TrainState,
    batch: GroupBatch,
    key: jax.Array,
    axis_name: str | None = None,
    *,
    network: CategoricalPolicy,
    tx: optax.GradientTransformation,
    config: GroupRLConfig,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`update_epochs` full-batch gradient steps of the GRPO-family loss.

    Under data parallelism each device holds whole groups (advantages are computed
    before this step, per group) and gradients are averaged over `axis_name`.
    """
    del key  # full-batch epochs: no shuffling
    norm = loss_norm_constant(config.loss_agg_mode, batch.valid, axis_name, config.episode_steps)

    def loss_fn(params):
        dist = network.apply(params, batch.obs)
        log_prob = dist.log_prob(batch.action)
        loss, metrics = policy_gradient_loss(
            log_prob,
            batch.old_log_prob,
            batch.advantage,
            batch.valid,
            ref_logp=batch.ref_log_prob,
            entropy=dist.entropy(),
            eps_low=config.eps_low,
            eps_high=config.eps_high,
            kl_coef=config.kl_coef,
            entropy_coef=config.entropy_coef,
            loss_agg_mode=config.loss_agg_mode,
            norm_constant=norm,
        )
        return loss, {**metrics, "loss": loss}

    state, metrics = repeated_gradient_steps(state, loss_fn, tx, config.update_epochs, axis_name)
    return state, metrics


def make_policy_sampler(network):
    """The rollout policy: samples an action and keeps its log-prob."""

    def policy(params, obs, key):
        dist = network.apply(params, obs)
        action = dist.sample(key)
        return action, dist.log_prob(action), {}

    return policy


def make_optimizer(config: GroupRLConfig) -> optax.GradientTransformation:
    return clipped_adam(config.learning_rate, config.max_grad_norm)


def make_group_rl(config: GroupRLConfig, policy: Any = None) -> Algorithm:
    """GRPO or GiGPO (`config.algorithm`) as an `Algorithm`.

    `collect` plays `num_groups x group_size` episodes, computes the advantages (whole
    groups, before any split across devices) and the log-probs of the frozen initial
    policy, which `collect_state` holds; `learn` is `group_policy_update`. `policy` is any
    `init(key, obs) -> params`, `apply(params, obs) -> distribution` pair (default: an MLP).
    """
    # the env's own step limit is the rollout length, so truncation flags agree with it
    env, env_params = envs.make_configured(config.env, config.env_kwargs, config.episode_steps)
    network = policy or make_policy_network(config, env, env_params)
    tx = make_optimizer(config)
    sample_policy = make_policy_sampler(network)
    reports_success = envs.has_success(env)

    def init(key: jax.Array) -> tuple[TrainState, GroupCollectState]:
        params_key, obs_key = jax.random.split(key)
        obs, _ = env.reset(obs_key, env_params)
        params = network.init(params_key, jnp.asarray(obs)[None])
        return create_train_state(params, tx), GroupCollectState(ref_params=params)

    def collect(state: GroupCollectState, params, key: jax.Array):
        trajectory, group_ids = grouped_rollout(
            key,
            env,
            env_params,
            sample_policy,
            params,
            config.num_groups,
            config.group_size,
            config.episode_steps,
        )
        advantage, advantage_metrics = compute_advantages(trajectory, group_ids, config)
        to_rows = lambda x: jnp.swapaxes(x, 0, 1)
        obs, action = to_rows(trajectory.obs), to_rows(trajectory.action)
        ref_log_prob = network.apply(state.ref_params, obs).log_prob(action)
        batch = GroupBatch(
            obs, action, to_rows(trajectory.log_prob), ref_log_prob, advantage, to_rows(trajectory.valid)
        )
        episode_return = (trajectory.reward * trajectory.valid).sum(0)
        metrics = {
            **{k: jnp.asarray(v, jnp.float32) for k, v in advantage_metrics.items()},
            "episode_return_mean": episode_return.mean(),
            "episode_length_mean": trajectory.valid.sum(0).mean(),
        }
        if reports_success:  # the environment says what success is (reaching the goal, ...)
            metrics["success_rate"] = episode_success_rate(trajectory)
        return state, batch, metrics

    return Algorithm(
        init,
        collect,
        partial(group_policy_update, network=network, tx=tx, config=config),
        config.num_updates,
        config.frames_per_update,
        progress_metric="success_rate" if reports_success else "episode_return_mean",
    )


def make_train(config: GroupRLConfig, parallel: Mode = "single"):
    """`train(key) -> (final LoopState, metrics [num_updates])`, jittable and vmappable over keys."""
    return make_train_from_algorithm(make_group_rl(config), parallel)
