"""What the off-policy learners (DQN, SAC, TD3, DDPG) share: target-network averaging,
action boxes, per-row noise and critic keys that do not depend on the device count, the
critic chosen by `config.critic`, batch layouts, and the `collect` of SAC and TD3 (N
environments -> replay buffer -> `[batch_size, gradient_steps]` samples, periodic greedy
evaluation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxrl_llm.models.continuous import DiscreteQEnsemble, QEnsemble
from jaxrl_llm.models.reacritic import DiscreteReaCriticEnsemble, ReaCriticEnsemble
from jaxrl_llm.rollout import (
    RecentReturns,
    RolloutState,
    episode_return_mean,
    recent_returns_add,
    recent_returns_init,
    recent_returns_mean,
    reset,
    run_steps,
)
from jaxrl_llm.rollout.evaluate import evaluate_policy
from jaxrl_llm.rollout.replay import example_transition, make_replay_buffer, transitions_from_trajectory
from jaxrl_llm.training import reduce_mean, shard_index


def polyak_update(online: Any, target: Any, tau: float | jax.Array) -> Any:
    """`target <- tau * online + (1 - tau) * target`, leaf by leaf; with a Python `tau == 1`
    an exact copy of `online` (a hard target update)."""
    if isinstance(tau, (int, float)) and tau == 1.0:
        return jax.tree.map(jnp.asarray, online)
    return jax.tree.map(lambda o, t: tau * o + (1.0 - tau) * t, online, target)


def action_box(env, env_params) -> tuple[np.ndarray, np.ndarray] | None:
    """`(low, high)` `[A]` of a continuous action space; None for a discrete one."""
    space = env.action_space(env_params)
    if hasattr(space, "n"):
        return None
    shape = tuple(space.shape) or (1,)
    low = np.broadcast_to(np.asarray(space.low, np.float32), shape)
    high = np.broadcast_to(np.asarray(space.high, np.float32), shape)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(
            f"The action space is unbounded (low={low}, high={high}): SAC/TD3 squash actions into "
            "a bounded box; wrap the environment with finite bounds."
        )
    return low, high


def scale_action(unit_action: jax.Array, low: np.ndarray, high: np.ndarray) -> jax.Array:
    """Maps `[-1, 1]^A` affinely onto `[low, high]`."""
    return low + 0.5 * (unit_action + 1.0) * (high - low)


def row_keys(key: jax.Array, num_rows: int, axis_name: str | None) -> jax.Array:
    """One key per batch row, from the row's *global* index (its position in the
    unsharded batch), so noise is the same whatever the device count."""
    rows = shard_index(axis_name) * num_rows + jnp.arange(num_rows)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, rows)


def row_normal(key: jax.Array, shape: tuple[int, ...], axis_name: str | None) -> jax.Array:
    """Standard normal noise `[B, ...]` drawn per global row (see `row_keys`)."""
    keys = row_keys(key, shape[0], axis_name)
    return jax.vmap(lambda k: jax.random.normal(k, shape[1:]))(keys)


def critic_keys(key: jax.Array, num_rows: int, axis_name: str | None, num_passes: int) -> list[jax.Array]:
    """Per-row critic keys `[B]` for each of `num_passes` critic calls (target, online,
    actor...): `row_keys` of the `num_passes` keys split from `key` (see the critic
    contract in `algorithms.sac`)."""
    return [row_keys(k, num_rows, axis_name) for k in jax.random.split(key, num_passes)]


def reacritic_kwargs(config) -> dict[str, int]:
    """The ReaCritic settings of a config with the `configs.critic` fields."""
    return {
        "width": config.reacritic_width,
        "num_steps": config.reacritic_steps,
        "depth": config.reacritic_depth,
    }


def make_q_critic(config, num_actions: int | None = None):
    """The `config.num_critics` Q-critics of `config.critic`: 'mlp' (`QEnsemble`, or
    `DiscreteQEnsemble` when `num_actions` is given) or 'reacritic' (`ReaCriticEnsemble` /
    `DiscreteReaCriticEnsemble`)."""
    num_critics = config.num_critics
    if config.critic == "reacritic":
        settings = {"num_critics": num_critics, **reacritic_kwargs(config)}
        if num_actions is None:
            return ReaCriticEnsemble(**settings)
        return DiscreteReaCriticEnsemble(num_actions=num_actions, **settings)
    hidden, activation = tuple(config.hidden_sizes), config.activation
    if num_actions is None:
        return QEnsemble(num_critics, hidden, activation)
    return DiscreteQEnsemble(num_actions, num_critics, hidden, activation)


def rows_first(batch: Any, batch_size: int, gradient_steps: int) -> Any:
    """A sample of `batch_size * gradient_steps` items laid out `[batch_size, gradient_steps, ...]`,
    so data-parallel runs split every gradient step's batch across devices."""
    return jax.tree.map(lambda x: x.reshape(batch_size, gradient_steps, *x.shape[1:]), batch)


def steps_first(batch: Any) -> Any:
    """`[B, k, ...]` -> `[k, B, ...]` for a scan over gradient steps."""
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch)


@struct.dataclass
class OffPolicyCollectState:
    """What `collect` carries: environments, replay buffer, recent returns, frame count."""

    rollout_state: RolloutState
    buffer_state: Any
    recent_returns: RecentReturns
    frames: jax.Array  # environment frames collected so far


def make_off_policy_collect(
    config,
    env,
    env_params,
    explore: Callable[[Any, Any, jax.Array], tuple[jax.Array, jax.Array]],
    random_action: Callable[[jax.Array, int], tuple[jax.Array, jax.Array]],
    greedy: Callable[[Any, Any], jax.Array],
    example_obs: jax.Array,
    example_action: jax.Array,
):
    """`init(key) -> OffPolicyCollectState` and `collect(state, params, key)` of SAC and TD3.

    `explore(params, obs[N], key) -> (env_action, stored_action)` and
    `random_action(key, N) -> (env_action, stored_action)` act for the rollout (random
    before `learning_starts` frames); `greedy(params, obs) -> env_action` is evaluated
    every `eval_interval` frames. The batch is `[batch_size, gradient_steps, ...]`.
    """
    buffer = make_replay_buffer(
        capacity=config.buffer_size,
        min_size=1,
        sample_batch_size=config.batch_size * config.gradient_steps,
        add_batch_size=config.frames_per_update,
    )
    fpu = config.frames_per_update

    def policy(policy_params, obs, key):
        params, use_random = policy_params
        explore_key, random_key = jax.random.split(key)
        env_action, stored = jax.lax.cond(
            use_random,
            lambda: random_action(random_key, obs.shape[0]),
            lambda: explore(params, obs, explore_key),
        )
        return env_action, jnp.zeros(obs.shape[0]), {"stored_action": stored}

    def init(key: jax.Array) -> OffPolicyCollectState:
        rollout_state = reset(key, env, env_params, config.num_envs)
        return OffPolicyCollectState(
            rollout_state,
            buffer.init(example_transition(example_obs, example_action)),
            recent_returns_init(100),
            jnp.zeros((), jnp.int32),
        )

    def evaluate(params, key):
        act = lambda p, obs, _key: greedy(p, obs)
        returns = evaluate_policy(
            key, env, env_params, act, params, config.eval_episodes, max_episode_steps(env_params)
        )
        return returns.mean()

    def collect(state: OffPolicyCollectState, params, key: jax.Array):
        rollout_key, sample_key, eval_key = jax.random.split(key, 3)
        use_random = state.frames < config.learning_starts
        trajectory, rollout_state = run_steps(
            rollout_key,
            env,
            env_params,
            policy,
            (params, use_random),
            state.rollout_state,
            config.train_frequency,
        )
        trajectory = trajectory.replace(action=trajectory.extras["stored_action"], extras={})
        buffer_state = buffer.add(state.buffer_state, transitions_from_trajectory(trajectory))
        sample = buffer.sample(buffer_state, sample_key)
        batch = rows_first(sample, config.batch_size, config.gradient_steps)
        recent = recent_returns_add(state.recent_returns, trajectory)
        frames = state.frames + fpu
        metrics = {
            "episode_return_mean": episode_return_mean(trajectory),
            "episode_return_last100": recent_returns_mean(recent),
            "episodes": trajectory.episode_ended.sum().astype(jnp.float32),
        }
        if config.eval_interval:
            due = frames // config.eval_interval > state.frames // config.eval_interval
            metrics["eval_return_mean"] = jax.lax.cond(
                due, lambda: evaluate(params, eval_key), lambda: jnp.float32(jnp.nan)
            )
        return OffPolicyCollectState(rollout_state, buffer_state, recent, frames), batch, metrics

    return init, collect


def max_episode_steps(env_params, default: int = 1_000) -> int:
    """The environment's step limit, the length of an evaluation episode."""
    return int(getattr(env_params, "max_steps_in_episode", default))


def learning_due(updates: jax.Array, config) -> jax.Array:
    """True once more than `learning_starts` frames are collected (SB3's rule), counting
    this update's frames."""
    return (updates + 1) * config.frames_per_update > config.learning_starts


def adam_step(tx, params, grads, opt_state, axis_name):
    """`grads` averaged over `axis_name`, then one step of `tx` (Adam here) on `params`."""
    grads = reduce_mean(grads, axis_name)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
