"""The pytrees a rollout produces and carries between calls."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Trajectory:
    """Time-major transitions, every leaf shaped `[T, N, ...]`.

    `obs` is the observation the action was chosen from; `next_obs` the one that
    followed it *before* any auto-reset (gymnax's `info["final_observation"]`), so a
    truncated step can bootstrap from the true last state. `episode_return` and
    `episode_length` are non-zero only where an episode ended (`done`), and count the
    whole episode even when it began in an earlier rollout call. `valid` is False on
    steps taken after a single-episode rollout's member had already finished.

    `success` is the environment's `info["success"]` (bool): True exactly on the step whose
    transition ended the episode by reaching the goal, read before any auto-reset; all
    False for an environment that does not report success (`jaxrl_llm.envs.has_success`
    tells the two cases apart). Like `terminated` it is not masked by `valid`: use
    `episode_succeeded` or `episode_success_rate` to count episodes.
    """

    obs: Any
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    success: jax.Array
    log_prob: jax.Array
    next_obs: Any
    episode_return: jax.Array
    episode_length: jax.Array
    valid: jax.Array
    extras: dict[str, jax.Array]

    @property
    def done(self) -> jax.Array:
        return jnp.logical_or(self.terminated, self.truncated)

    @property
    def episode_ended(self) -> jax.Array:
        """Steps at which a counted episode finished: `[T, N]` bool."""
        return jnp.logical_and(self.done, self.valid)

    @property
    def episode_succeeded(self) -> jax.Array:
        """Steps at which a counted episode finished with a success: `[T, N]` bool."""
        return jnp.logical_and(self.success, self.episode_ended)


@struct.dataclass
class RolloutState:
    """What a rollout carries across calls, leaves shaped `[N, ...]`."""

    env_state: Any
    obs: Any
    episode_return: jax.Array  # running return of the episode in progress
    episode_length: jax.Array
    alive: jax.Array  # False once a single-episode member has finished


def episode_return_mean(traj: Trajectory) -> jax.Array:
    """Mean return of the episodes that ended inside `traj` (NaN when none did)."""
    ended = traj.episode_ended
    count = ended.sum()
    total = jnp.where(ended, traj.episode_return, 0.0).sum()
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def episode_success_rate(traj: Trajectory) -> jax.Array:
    """Fraction of the episodes that ended inside `traj` that ended in success.

    Counts `episode_succeeded / episode_ended` over all `[T, N]` steps (an episode that
    is still running at the end of `traj` is not counted). Returns a float32 scalar, NaN
    when no episode ended (no division by zero; reduce several with `nanmean`). It is
    0.0, never NaN, for an environment without a notion of success once an episode
    ended: check `jaxrl_llm.envs.has_success(env)` to tell that apart from "never
    succeeded".
    """
    count = traj.episode_ended.sum()
    successes = traj.episode_succeeded.sum()
    rate = successes.astype(jnp.float32) / jnp.maximum(count, 1).astype(jnp.float32)
    return jnp.where(count > 0, rate, jnp.nan)
