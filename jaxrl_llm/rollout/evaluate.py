"""Policy evaluation: a fixed number of whole episodes, vmapped, in one `lax.scan`.

`evaluate_policy(key, env, env_params, act, params, num_episodes, max_steps)` runs
`num_episodes` independent episodes side by side for `max_steps` steps and returns each
one's undiscounted return. After an episode ends its environment keeps stepping (shapes
stay fixed) but its rewards are masked out, so each return counts exactly one episode.
An episode still running after `max_steps` contributes its partial return. Jittable and
vmappable with `env`, `act`, `num_episodes` and `max_steps` static.

`act(params, obs[E, ...], key) -> action[E, ...]` is batched over episodes: greedy
(argmax Q) for DQN, the mean action for SAC/TD3, a sample for a stochastic evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxrl_llm.rollout.env_rollout import reset, run_steps

Act = Callable[[Any, Any, jax.Array], jax.Array]


@struct.dataclass
class EpisodeStats:
    """Per-episode results `[num_episodes]` of `evaluate_episodes`."""

    returns: jax.Array  # float32: sum of rewards up to and including the final step
    lengths: jax.Array  # int32: steps taken (max_steps when it did not end)
    finished: jax.Array  # bool: the episode ended (terminated or truncated) within max_steps
    success: jax.Array  # bool: it ended with the env's info["success"] (False if unreported)


def evaluate_episodes(
    key: jax.Array, env, env_params, act: Act, params: Any, num_episodes: int, max_steps: int
) -> EpisodeStats:
    """`EpisodeStats` of `num_episodes` episodes of at most `max_steps` steps (see module)."""
    if num_episodes < 1 or max_steps < 1:
        raise ValueError(
            f"evaluate_episodes: num_episodes={num_episodes} and max_steps={max_steps} must both be >= 1."
        )
    reset_key, steps_key = jax.random.split(key)
    state = reset(reset_key, env, env_params, num_episodes)

    def policy(p, obs, k):
        action = act(p, obs, k)
        return action, jnp.zeros((num_episodes,), jnp.float32), {}

    trajectory, _ = run_steps(
        steps_key, env, env_params, policy, params, state, max_steps, single_episode=True
    )
    valid = trajectory.valid  # [T, E]: True up to and including each episode's last step
    return EpisodeStats(
        returns=jnp.where(valid, trajectory.reward, 0.0).sum(0),
        lengths=valid.sum(0).astype(jnp.int32),
        finished=trajectory.episode_ended.any(0),
        success=trajectory.episode_succeeded.any(0),
    )


def evaluate_policy(
    key: jax.Array, env, env_params, act: Act, params: Any, num_episodes: int, max_steps: int
) -> jax.Array:
    """Undiscounted returns `[num_episodes]` (float32) of `act` over whole episodes."""
    return evaluate_episodes(key, env, env_params, act, params, num_episodes, max_steps).returns
