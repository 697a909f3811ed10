"""Vectorised environment rollouts: one `lax.scan` over `vmap`ped gymnax envs.

A policy is any function `policy(params, obs[N, ...], key) -> (action[N, ...],
log_prob[N], extras)` where `extras` is a dict of `[N, ...]` arrays (e.g. value
estimates) stored in `Trajectory.extras`.

`Trajectory.success` is the env's `info["success"]` where the env reports success
(`jaxrl_llm.envs.has_success(env)`), else all False.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxrl_llm.envs.registry import has_success
from jaxrl_llm.rollout.trajectory import RolloutState, Trajectory

Policy = Callable[[Any, Any, jax.Array], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


def reset(key: jax.Array, env, env_params, num_envs: int) -> RolloutState:
    """Independent initial states for `num_envs` environments."""
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), env_params)
    return _fresh_state(env_state, obs, num_envs)


def reset_grouped(key: jax.Array, env, env_params, num_groups: int, group_size: int) -> RolloutState:
    """`num_groups * group_size` envs; the members of a group share one initial state.

    Members are laid out group-major: env `i` belongs to group `i // group_size`.
    """
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_groups), env_params)
    repeat = lambda x: jnp.repeat(x, group_size, axis=0)
    return _fresh_state(jax.tree.map(repeat, env_state), jax.tree.map(repeat, obs), num_groups * group_size)


def group_ids(num_groups: int, group_size: int) -> jax.Array:
    """`[num_groups * group_size]` group index of each env of a grouped rollout."""
    return jnp.arange(num_groups * group_size, dtype=jnp.int32) // group_size


def _fresh_state(env_state, obs, num_envs: int) -> RolloutState:
    return RolloutState(
        env_state=env_state,
        obs=obs,
        episode_return=jnp.zeros((num_envs,), jnp.float32),
        episode_length=jnp.zeros((num_envs,), jnp.int32),
        alive=jnp.ones((num_envs,), bool),
    )


def _num_envs(state: RolloutState) -> int:
    return state.episode_return.shape[0]


def run_steps(
    key: jax.Array,
    env,
    env_params,
    policy: Policy,
    policy_params,
    state: RolloutState,
    num_steps: int,
    single_episode: bool = False,
) -> tuple[Trajectory, RolloutState]:
    """Steps `state` for `num_steps` with `policy`; returns `([T, N] Trajectory, state)`.

    With `single_episode=True` each env counts only its first episode: steps after it
    ends are marked `valid=False` (the env keeps stepping so shapes stay fixed).
    """
    num_envs = _num_envs(state)
    # A single-episode member never needs gymnax's auto-reset (computed on every step,
    # and costly for procedurally generated envs): step without it.
    step_fn = _step_without_reset(env) if single_episode else env.step
    batched_step = jax.vmap(step_fn, in_axes=(0, 0, 0, None))
    reports_success = has_success(env)

    def one_step(state: RolloutState, step_key: jax.Array):
        policy_key, env_key = jax.random.split(step_key)
        action, log_prob, extras = policy(policy_params, state.obs, policy_key)
        obs, env_state, reward, terminated, truncated, info = batched_step(
            jax.random.split(env_key, num_envs), state.env_state, action, env_params
        )
        reward = reward.astype(jnp.float32)
        done = jnp.logical_or(terminated, truncated)
        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        transition = Trajectory(
            obs=state.obs,
            action=action,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            success=_success(env, reports_success, info, terminated),
            log_prob=log_prob,
            next_obs=info["final_observation"],
            episode_return=jnp.where(done, episode_return, 0.0),
            episode_length=jnp.where(done, episode_length, 0),
            valid=state.alive,
            extras=extras,
        )
        alive = jnp.logical_and(state.alive, ~done) if single_episode else state.alive
        next_state = RolloutState(
            env_state=env_state,
            obs=obs,
            episode_return=jnp.where(done, 0.0, episode_return),
            episode_length=jnp.where(done, 0, episode_length),
            alive=alive,
        )
        return next_state, transition

    state, trajectory = jax.lax.scan(one_step, state, jax.random.split(key, num_steps))
    return trajectory, state


def _success(env, reports_success: bool, info: dict, terminated: jax.Array) -> jax.Array:
    """`[N]` bool: `info["success"]` (from `step_env`, so before any auto-reset), else False."""
    if not reports_success:
        return jnp.zeros(terminated.shape, bool)
    if "success" not in info:
        raise ValueError(
            f"{type(env).__name__} declares reports_success=True but its step returned no "
            f"info['success'] (info keys: {sorted(info)})."
        )
    return jnp.asarray(info["success"], bool).reshape(terminated.shape)


def _step_without_reset(env):
    """`env.step` minus the auto-reset, with the same six outputs."""

    def step(key, state, action, params):
        obs, next_state, reward, terminated, info = env.step_env(key, state, action, params)
        truncated = env.is_truncated(next_state, params)
        return obs, next_state, reward, terminated, truncated, {**info, "final_observation": obs}

    return step


def rollout(
    key: jax.Array,
    env,
    env_params,
    policy: Policy,
    policy_params,
    num_envs: int,
    num_steps: int,
    state: RolloutState | None = None,
) -> tuple[Trajectory, RolloutState]:
    """Rolls out `num_envs` auto-resetting environments for `num_steps` steps.

    Pass the returned `RolloutState` to the next call to continue the same episodes:
    an episode that straddles two calls is counted once, with its full return, in
    the call where it ends. Jittable with `env`, `policy`, `num_envs` and `num_steps`
    static.

    Returns:
      `(trajectory, state)`: a `Trajectory` with leaves `[num_steps, num_envs, ...]`.
    """
    reset_key, steps_key = jax.random.split(key)
    if state is None:
        state = reset(reset_key, env, env_params, num_envs)
    elif _num_envs(state) != num_envs:
        raise ValueError(
            f"rollout: state holds {_num_envs(state)} envs but num_envs={num_envs}; "
            "pass the state returned by a rollout with the same num_envs, or state=None."
        )
    return run_steps(steps_key, env, env_params, policy, policy_params, state, num_steps)


def grouped_rollout(
    key: jax.Array,
    env,
    env_params,
    policy: Policy,
    policy_params,
    num_groups: int,
    group_size: int,
    num_steps: int,
) -> tuple[Trajectory, jax.Array]:
    """One episode per env, `group_size` members per shared initial state (GRPO/GiGPO).

    Returns:
      `(trajectory, group_ids)`: leaves `[num_steps, num_groups * group_size, ...]`,
      with `valid` False after a member's episode ended; `group_ids[N]`.
    """
    reset_key, steps_key = jax.random.split(key)
    state = reset_grouped(reset_key, env, env_params, num_groups, group_size)
    trajectory, _ = run_steps(
        steps_key, env, env_params, policy, policy_params, state, num_steps, single_episode=True
    )
    return trajectory, group_ids(num_groups, group_size)
