"""MiniBehavior-PickPlace-v0: pick an object up and put it on the table (Mini-BEHAVIOR style).

A `size x size` room (default 7) whose outer ring is wall. Each reset places the agent,
the object and the table on three distinct random floor cells.

Actions: 0 up, 1 right, 2 down, 3 left, 4 pick, 5 drop.
- Moves: walls block (no-op); the object and the table do not block, the agent may stand
  on them. A carried object moves with the agent.
- Pick: takes the object if it lies on the agent's cell or a 4-adjacent cell (Manhattan
  distance <= 1) and the agent's hands are empty; otherwise a no-op.
- Drop: if carrying, puts the object on the table when the table is on the agent's cell
  or 4-adjacent, otherwise on the floor at the agent's cell; a no-op with empty hands.
Reward 1.0 and `terminated` when the object is put on the table; 0.0 otherwise.
Info: `success` (bool), True exactly on the drop that puts the object on the table.

Observation: float32 `[4*size*size + 1]`: the channels walls / agent / object / table
(each `[size, size]`, flattened in that order), then a 0/1 "carrying" flag. A carried
object is shown on the agent's cell.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from jaxrl_llm.envs import grid

__all__ = ["EnvParams", "EnvState", "MiniBehaviorPickPlace", "room_walls"]

NUM_MOVES = 4
PICK, DROP = 4, 5


@struct.dataclass
class EnvState(environment.EnvState):
    agent_position: jax.Array  # [2] int32 (row, col)
    object_position: jax.Array  # [2] int32; equals agent_position while carried
    table_position: jax.Array  # [2] int32
    carrying: jax.Array  # bool scalar


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_steps_in_episode: int = 100


def room_walls(size: int) -> jax.Array:
    """`[size, size]` bool, `True` on the outer wall ring."""
    return jnp.ones((size, size), dtype=bool).at[1:-1, 1:-1].set(False)


def _within_reach(a: jax.Array, b: jax.Array) -> jax.Array:
    """Same cell or 4-adjacent (Manhattan distance <= 1)."""
    return jnp.abs(a - b).sum() <= 1


class MiniBehaviorPickPlace(environment.Environment[EnvState, EnvParams]):
    """Pick-and-place in a walled room; see the module docstring.

    Args:
      size: side length of the room including its wall ring (>= 4, so that three distinct
        floor cells exist).
    """

    reports_success = True  # `info["success"]`; see `jaxrl_llm.envs.has_success`

    def __init__(self, size: int = 7):
        if not isinstance(size, int) or size < 4:
            raise ValueError(f"MiniBehaviorPickPlace: `size` must be an int >= 4, got {size!r}.")
        self.size = size
        self.walls = room_walls(size)

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return "MiniBehavior-PickPlace-v0"

    @property
    def num_actions(self) -> int:
        return NUM_MOVES + 2

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        action = jnp.asarray(action, dtype=jnp.int32)
        # Moves: `% NUM_MOVES` only keeps the index in range for pick/drop, whose move is discarded.
        moved = grid.move(state.agent_position, grid.DIRECTIONS_URDL[action % NUM_MOVES], ~self.walls)
        agent = jnp.where(action < NUM_MOVES, moved, state.agent_position)

        picks = (action == PICK) & ~state.carrying & _within_reach(agent, state.object_position)
        drops = (action == DROP) & state.carrying
        on_table = drops & _within_reach(agent, state.table_position)
        carrying = (state.carrying | picks) & ~drops
        dropped_at = jnp.where(on_table, state.table_position, agent)
        object_position = jnp.where(carrying, agent, jnp.where(drops, dropped_at, state.object_position))

        state = state.replace(
            agent_position=agent,
            object_position=object_position.astype(jnp.int32),
            carrying=carrying,
            time=state.time + 1,
        )
        obs = self.observe(key, state, action, params)
        info = {"success": on_table}
        return obs, state, on_table.astype(jnp.float32), self.is_terminated(state, params), info

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        agent, obj, table = grid.sample_distinct_cells(key, ~self.walls, 3)
        state = EnvState(
            time=0,
            agent_position=agent,
            object_position=obj,
            table_position=table,
            carrying=jnp.array(False),
        )
        return self.observe(key, state, None, params), state

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        del params
        return ~state.carrying & jnp.all(state.object_position == state.table_position)

    def observe(self, key, state: EnvState, action, params) -> jax.Array:
        """Flat float32 `[4*size*size + 1]`: walls, agent, object, table channels, carrying flag."""
        del key, action, params
        shape = self.walls.shape
        channels = grid.flat_channels(
            self.walls,
            grid.cell_mask(state.agent_position, shape),
            grid.cell_mask(state.object_position, shape),
            grid.cell_mask(state.table_position, shape),
        )
        return jnp.concatenate([channels, state.carrying.astype(jnp.float32)[None]])

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (4 * self.size * self.size + 1,), jnp.float32)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        position = spaces.Box(0, self.size - 1, (2,), jnp.int32)
        return spaces.Dict(
            {
                "agent_position": position,
                "object_position": position,
                "table_position": position,
                "carrying": spaces.Discrete(2),
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )
