"""Joins a policy and a critic written apart into the one network an actor-critic needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax


@dataclass(frozen=True)
class SeparateActorCritic:
    """`init(key, obs) -> {"actor", "critic"}` and `apply(params, obs) -> (distribution, value)`
    from any `actor` and `critic` with `init(key, obs)` / `apply(params, obs)` (Flax modules
    qualify), e.g. an MLP policy beside a transformer critic."""

    actor: Any
    critic: Any

    def init(self, key: jax.Array, obs: jax.Array) -> dict[str, Any]:
        actor_key, critic_key = jax.random.split(key)
        return {"actor": self.actor.init(actor_key, obs), "critic": self.critic.init(critic_key, obs)}

    def apply(self, params: dict[str, Any], obs: jax.Array):
        return self.actor.apply(params["actor"], obs), self.critic.apply(params["critic"], obs)
