"""gymnax's `FrozenLake-misc` plus `info["success"]`.

Same map, dynamics, rewards, constructor and name as `gymnax.environments.misc.frozen_lake.
FrozenLake`; `step_env` adds `info["success"]`, True exactly on the step that lands on the
goal tile `G` (False on a hole `H`, on frozen tiles and at the time limit). gymnax refuses
to re-register a built-in id, so `jaxrl_llm.envs.make("FrozenLake-misc")` builds this
class while a plain `gymnax.make("FrozenLake-misc")` still builds gymnax's own (for which
`jaxrl_llm.envs.has_success(env)` is False).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from gymnax.environments.misc import frozen_lake

__all__ = ["FrozenLake"]


class FrozenLake(frozen_lake.FrozenLake):
    """gymnax's FrozenLake reporting `info["success"]` (bool `[]`) on reaching the goal."""

    reports_success = True

    def step_env(
        self,
        key: jax.Array,
        state: frozen_lake.EnvState,
        action: int | jax.Array,
        params: frozen_lake.EnvParams,
    ) -> tuple[jax.Array, frozen_lake.EnvState, jax.Array, jax.Array, dict[str, Any]]:
        obs, state, reward, terminated, info = super().step_env(key, state, action, params)
        reached_goal = self.desc.reshape(-1)[state.position] == frozen_lake.GOAL
        return obs, state, reward, terminated, {**info, "success": jnp.asarray(reached_goal, dtype=bool)}
