"""Joins a policy and a critic written apart into the one network an actor-critic needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax


@dataclass(frozen=True)
class SeparateActorCritic:
    """`init(key, obs, keys=None) -> {"actor", "critic"}` and
    `apply(params, obs, keys=None) -> (distribution, value)` from any `actor` with
    `init(key, obs)` / `apply(params, obs)` and any `critic` with `init(key, obs, keys)` /
    `apply(params, obs, keys) -> value[B]` (Flax modules qualify), e.g. an MLP policy beside
    a transformer critic. `keys[B]` are the critic's per-row PRNG keys (noise, dropout; see
    `algorithms.ppo`)."""

    actor: Any
    critic: Any

    def init(self, key: jax.Array, obs: jax.Array, keys: jax.Array | None = None) -> dict[str, Any]:
        actor_key, critic_key = jax.random.split(key)
        return {
            "actor": self.actor.init(actor_key, obs),
            "critic": self.critic.init(critic_key, obs, keys),
        }

    def apply(self, params: dict[str, Any], obs: jax.Array, keys: jax.Array | None = None):
        return self.actor.apply(params["actor"], obs), self.critic.apply(params["critic"], obs, keys)
