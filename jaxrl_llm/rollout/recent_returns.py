"""The mean return of the last `window` finished episodes (SB3's `ep_rew_mean`).

A per-update mean is NaN whenever no episode ends inside an update (CartPole episodes
of 500 steps span several updates); this running statistic has a value from the first
finished episode on. A fixed-size ring buffer in the runner state keeps it jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxrl_llm.rollout.trajectory import Trajectory


@struct.dataclass
class RecentReturns:
    returns: jax.Array  # [window] ring buffer of finished episodes' returns
    count: jax.Array  # how many slots hold an episode (<= window)
    next_slot: jax.Array  # where the next finished episode is written


def recent_returns_init(window: int = 100) -> RecentReturns:
    return RecentReturns(jnp.zeros(window, jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def recent_returns_add(stats: RecentReturns, traj: Trajectory) -> RecentReturns:
    """Adds the episodes that ended in `traj` `[T, N]`, in time order (then env order)."""
    window = stats.returns.shape[0]
    ended = traj.episode_ended.reshape(-1)
    rank = jnp.cumsum(ended)  # 1-based position among this call's finished episodes
    total = rank[-1]
    keep = ended & (total - rank < window)  # only the newest `window` can survive
    slot = jnp.where(keep, (stats.next_slot + rank - 1) % window, window)  # `window`: dropped
    returns = stats.returns.at[slot].set(traj.episode_return.reshape(-1).astype(jnp.float32), mode="drop")
    return RecentReturns(
        returns, jnp.minimum(stats.count + total, window), (stats.next_slot + total) % window
    )


def recent_returns_mean(stats: RecentReturns) -> jax.Array:
    """Mean over the stored episodes; NaN before the first one finishes."""
    valid = jnp.arange(stats.returns.shape[0]) < stats.count
    total = jnp.where(valid, stats.returns, 0.0).sum()
    return jnp.where(stats.count > 0, total / jnp.maximum(stats.count, 1), jnp.nan)
