"""PPO (Schulman et al. 2017) on gymnax environments, the whole loop compiled.

`make_ppo(config)` is the algorithm (see `training.algorithm`); `make_train(config)(key)`
runs every update in one jitted function (PureJaxRL style) and can be `jax.vmap`ped
over keys to train several seeds at once. The gradient phase, `ppo_update`, is written
on a per-device batch, so it runs on one device, under `shard_map` or under `pmap` with
the same numbers.

The network follows the critic contract of `algorithms.sac`: `network.apply(params,
obs[B], keys[B]) -> (distribution, value[B])`, where `keys` holds one PRNG key per row
for the value head's noise and dropout (an MLP value head ignores them; a ReaCritic one,
`config.critic='reacritic'`, draws from them). Collect passes fresh keys split from its
rollout keys, `learn` a fresh key per minibatch, row-indexed globally (`row_keys`) so the
sharded modes still equal one device.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxrl_llm import envs
from jaxrl_llm.algorithms.configs.ppo import PPOConfig
from jaxrl_llm.algorithms.off_policy import reacritic_kwargs, row_keys
from jaxrl_llm.losses import generalized_advantage_estimation, ppo_loss
from jaxrl_llm.models import ActorCritic
from jaxrl_llm.models.reacritic import ReaCriticValue
from jaxrl_llm.rollout import (
    RecentReturns,
    RolloutState,
    Trajectory,
    episode_return_mean,
    recent_returns_add,
    recent_returns_init,
    recent_returns_mean,
    reset,
    run_steps,
)
from jaxrl_llm.training import Algorithm, TrainState, apply_gradients, reduce_mean, shard_index
from jaxrl_llm.training import make_train as make_train_from_algorithm
from jaxrl_llm.training.optimizers import clipped_adam
from jaxrl_llm.training.parallel import Mode
from jaxrl_llm.training.train_state import create as create_train_state


@struct.dataclass
class PPOBatch:
    """Env-major `[N, T, ...]` data of one update (the leading axis is split across devices)."""

    obs: Any
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    advantage: jax.Array
    target: jax.Array


def make_network(config: PPOConfig, env, env_params) -> ActorCritic:
    """The MLP actor with the value head of `config.critic` (an MLP or `ReaCriticValue`)."""
    space = env.action_space(env_params)
    continuous = not hasattr(space, "n")
    action_dim = int(space.shape[0]) if continuous else int(space.n)
    critic = ReaCriticValue(**reacritic_kwargs(config)) if config.critic == "reacritic" else None
    return ActorCritic(action_dim, continuous, tuple(config.hidden_sizes), config.activation, critic)


def make_optimizer(config: PPOConfig) -> optax.GradientTransformation:
    steps = config.num_updates * config.update_epochs * config.num_minibatches
    learning_rate = (
        optax.linear_schedule(config.learning_rate, 0.0, steps) if config.anneal_lr else config.learning_rate
    )
    return clipped_adam(learning_rate, config.max_grad_norm, eps=1e-5)


def make_policy(network: ActorCritic):
    """The rollout policy: samples an action, keeps its log-prob and the value estimate
    (the value head gets row keys split from the step's key)."""

    def policy(params, obs, key):
        action_key, value_key = jax.random.split(key)
        dist, value = network.apply(params, obs, row_keys(value_key, obs.shape[0], None))
        action = dist.sample(action_key)
        return action, dist.log_prob(action), {"value": value}

    return policy


def ppo_update(
    state: TrainState,
    batch: PPOBatch,
    key: jax.Array,
    axis_name: str | None = None,
    *,
    network: ActorCritic,
    tx: optax.GradientTransformation,
    config: PPOConfig,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`update_epochs` passes of `num_minibatches` clipped-PPO gradient steps.

    Minibatch m of an epoch takes, from every env, the time steps
    `perm_n[m*T/M:(m+1)*T/M]` of a permutation drawn per env from
    `fold_in(perm_key, global_env_index)`. A global minibatch is therefore the union of the
    per-device ones whatever the device count, and with gradients and advantage
    statistics averaged over `axis_name` all sharding modes give the same update. The
    value head's row keys come from the epoch's `critic_key`, one key per minibatch, and
    the global index of the row in the env-major `[N, T/M]` minibatch.
    """
    num_envs, num_steps = batch.action.shape[:2]
    minibatch_steps = num_steps // config.num_minibatches
    env_index = shard_index(axis_name) * num_envs + jnp.arange(num_envs)

    def minibatch_loss(params, minibatch: PPOBatch, key: jax.Array):
        obs = minibatch.obs.reshape(-1, *minibatch.obs.shape[2:])
        dist, value = network.apply(params, obs, row_keys(key, obs.shape[0], axis_name))
        flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), minibatch)
        advantage = flat.advantage
        if config.normalize_advantages:
            mean = reduce_mean(advantage.mean(), axis_name)
            var = reduce_mean(((advantage - mean) ** 2).mean(), axis_name)
            advantage = (advantage - mean) / (jnp.sqrt(var) + 1e-8)
        return ppo_loss(
            dist.log_prob(flat.action),
            flat.log_prob,
            advantage,
            value,
            flat.value,
            flat.target,
            dist.entropy(),
            config.clip_eps,
            value_coef=config.value_coef,
            entropy_coef=config.entropy_coef,
        )

    def gradient_step(state: TrainState, minibatch_and_key: tuple[PPOBatch, jax.Array]):
        grads, metrics = jax.grad(minibatch_loss, has_aux=True)(state.params, *minibatch_and_key)
        grads = reduce_mean(grads, axis_name)
        return apply_gradients(state, grads, tx), reduce_mean(metrics, axis_name)

    def epoch(state: TrainState, epoch_key: jax.Array):
        perm_key, critic_key = jax.random.split(epoch_key)
        perms = jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(perm_key, i), num_steps))(
            env_index
        )
        perms = perms.reshape(num_envs, config.num_minibatches, minibatch_steps)
        take = lambda x: jax.vmap(lambda xe, pe: xe[pe])(x, perms)  # [N, M, T/M, ...]
        minibatches = jax.tree.map(lambda x: jnp.swapaxes(take(x), 0, 1), batch)  # [M, N, T/M, ...]
        critic_keys = jax.random.split(critic_key, config.num_minibatches)
        return jax.lax.scan(gradient_step, state, (minibatches, critic_keys))

    state, metrics = jax.lax.scan(epoch, state, jax.random.split(key, config.update_epochs))
    return state, jax.tree.map(jnp.mean, metrics)


def collect_batch(trajectory: Trajectory, next_values: jax.Array, config: PPOConfig) -> PPOBatch:
    """GAE on a time-major trajectory, returned env-major for the gradient phase."""
    values = trajectory.extras["value"]
    advantages, targets = generalized_advantage_estimation(
        trajectory.reward,
        values,
        next_values,
        trajectory.terminated,
        trajectory.truncated,
        config.gamma,
        config.gae_lambda,
    )
    time_major = PPOBatch(trajectory.obs, trajectory.action, trajectory.log_prob, values, advantages, targets)
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), time_major)


@struct.dataclass
class PPOCollectState:
    rollout_state: RolloutState
    recent_returns: RecentReturns  # the last 100 finished episodes, for logging


def make_ppo(config: PPOConfig, network: Any = None) -> Algorithm:
    """PPO as an `Algorithm`: `collect` scans `num_steps` steps of `num_envs` environments and
    computes GAE; `learn` is `ppo_update`.

    `network` is any `init(key, obs, keys) -> params`,
    `apply(params, obs, keys) -> (distribution, value)` pair (`keys[B]`: the value head's
    per-row PRNG keys, see the module docstring): by default `make_network`'s `ActorCritic`
    (MLP actor; MLP or ReaCritic value head by `config.critic`);
    `models.SeparateActorCritic(actor, critic)` joins a policy and a critic written apart.
    """
    env, env_params = envs.make_configured(config.env, config.env_kwargs, config.max_episode_steps)
    network = network or make_network(config, env, env_params)
    tx = make_optimizer(config)
    policy = make_policy(network)

    def init(key: jax.Array) -> tuple[TrainState, PPOCollectState]:
        params_key, env_key = jax.random.split(key)
        obs, _ = env.reset(env_key, env_params)
        keys = jax.random.split(params_key, 1)  # the value head's row keys (only shapes matter here)
        params = network.init(params_key, jnp.asarray(obs)[None], keys)
        rollout_state = reset(env_key, env, env_params, config.num_envs)
        return create_train_state(params, tx), PPOCollectState(rollout_state, recent_returns_init(100))

    def collect(state: PPOCollectState, params, key: jax.Array):
        rollout_key, value_key = jax.random.split(key)
        trajectory, rollout_state = run_steps(
            rollout_key, env, env_params, policy, params, state.rollout_state, config.num_steps
        )
        next_obs = trajectory.next_obs.reshape(-1, *trajectory.next_obs.shape[2:])
        _, next_values = network.apply(params, next_obs, row_keys(value_key, next_obs.shape[0], None))
        batch = collect_batch(trajectory, next_values.reshape(trajectory.reward.shape), config)
        recent = recent_returns_add(state.recent_returns, trajectory)
        metrics = {
            "episode_return_mean": episode_return_mean(trajectory),
            "episode_return_last100": recent_returns_mean(recent),
            "episodes": trajectory.episode_ended.sum().astype(jnp.float32),
        }
        return PPOCollectState(rollout_state, recent), batch, metrics

    return Algorithm(
        init,
        collect,
        partial(ppo_update, network=network, tx=tx, config=config),
        config.num_updates,
        config.frames_per_update,
        progress_metric="episode_return_last100",
        raw_progress_metric="episode_return_mean",
    )


def make_train(config: PPOConfig, parallel: Mode = "single"):
    """`train(key) -> (final LoopState, metrics [num_updates])`, jittable and vmappable."""
    return make_train_from_algorithm(make_ppo(config), parallel)
