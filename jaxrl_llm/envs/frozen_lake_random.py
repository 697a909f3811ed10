"""FrozenLakeRandom-v0: Gymnasium/gymnax FrozenLake on a fresh random map every reset.

The id keeps FrozenLake's name (same tiles, actions, rewards as gymnax's `FrozenLake-misc`)
and says what differs: the map is random per episode, as in the GiGPO/GRPO "FrozenLake
with random maps" setting, instead of one fixed `desc`.

Map: start `S` at the top-left, goal `G` at the bottom-right, every other tile a hole `H`
with probability `hole_probability`, else frozen `F` (Gymnasium's `generate_random_map`
with `p = 1 - hole_probability`). Gymnasium resamples until a path exists; to keep a
fixed cost per reset we draw `num_map_candidates` maps at once, keep the first with a
path, and if none has one we clear the holes along a random monotone (right/down)
staircase on the last candidate, so a path is always guaranteed.

Actions (gymnax/Gymnasium order): 0 left, 1 down, 2 right, 3 up; moves are clipped at the
border. Non-slippery by default; `is_slippery=True` gives Gymnasium's slip rule.
Reward 1.0 at the goal (0.0 elsewhere); `terminated` on a hole or the goal.
Info: `success` (bool), True exactly on the step that lands on the goal (not on a hole).
Observation: float32 `[3*N*N]`, the channels holes / agent / goal flattened in that order.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces
from gymnax.environments.misc.frozen_lake import FROZEN, GOAL, HOLE, START

from jaxrl_llm.envs import grid

__all__ = ["EnvParams", "EnvState", "FrozenLakeRandom", "generate_frozen_lake"]


@struct.dataclass
class EnvState(environment.EnvState):
    """The episode's map and the agent's row-major position (as in gymnax FrozenLake)."""

    desc: jax.Array  # [N, N] int32 tile ids START/FROZEN/HOLE/GOAL from gymnax
    position: jax.Array  # scalar int32, row * N + col


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_steps_in_episode: int = 100  # FrozenLakeRandom.default_params: 100 up to 4x4, else 200


def _staircase_path(scores: jax.Array) -> jax.Array:
    """`[N, N]` bool mask of a uniformly random monotone right/down path from (0,0) to (N-1,N-1).

    Args:
      scores: `[2(N-1)]` i.i.d. uniform; the N-1 highest mark which moves go down (a uniform
        subset, with one top_k instead of `permutation`'s rounds of sorting).
    """
    num_moves = scores.shape[0]
    size = num_moves // 2 + 1
    _, down_moves = jax.lax.top_k(scores, size - 1)
    goes_down = jnp.zeros(num_moves, dtype=jnp.int32).at[down_moves].set(1)
    rows = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(goes_down)])
    cols = jnp.arange(num_moves + 1) - rows
    return jnp.zeros((size, size), dtype=bool).at[rows, cols].set(True)


def generate_frozen_lake(
    key: jax.Array, size: int, hole_probability: float, num_map_candidates: int = 4
) -> jax.Array:
    """Random FrozenLake map with a guaranteed start-to-goal path (see module docstring).

    Returns:
      `[size, size]` int32 tile ids (gymnax's START, FROZEN, HOLE, GOAL).
    """
    # One uniform draw for everything: random calls dominate compile time on CPU.
    num_tiles = num_map_candidates * size * size
    uniforms = jax.random.uniform(key, (num_tiles + 2 * (size - 1),))
    holes = uniforms[:num_tiles].reshape(num_map_candidates, size, size) < hole_probability
    holes = holes.at[:, 0, 0].set(False).at[:, -1, -1].set(False)
    start, goal = jnp.array([0, 0]), jnp.array([size - 1, size - 1])
    has_path = jax.vmap(lambda h: grid.shortest_path_distance(h, start, goal) >= 0)(holes)
    fallback = jnp.logical_and(holes[-1], ~_staircase_path(uniforms[num_tiles:]))
    chosen = jnp.where(has_path.any(), holes[jnp.argmax(has_path)], fallback)
    desc = jnp.where(chosen, HOLE, FROZEN).astype(jnp.int32)
    return desc.at[0, 0].set(START).at[-1, -1].set(GOAL)


class FrozenLakeRandom(environment.Environment[EnvState, EnvParams]):
    """FrozenLake with a random map per episode; see the module docstring.

    Args:
      size: side length N of the square map (>= 2).
      hole_probability: chance that a non-start/goal tile is a hole, in [0, 1).
      is_slippery: Gymnasium's slippery ice (intended move with `success_rate`).
      success_rate: probability of the intended move when slippery.
      num_map_candidates: maps drawn per reset before falling back to a carved path.
    """

    reports_success = True  # `info["success"]`; see `jaxrl_llm.envs.has_success`

    def __init__(
        self,
        size: int = 4,
        hole_probability: float = 0.2,
        is_slippery: bool = False,
        success_rate: float = 1.0 / 3.0,
        num_map_candidates: int = 4,
    ):
        if not isinstance(size, int) or size < 2:
            raise ValueError(f"FrozenLakeRandom: `size` must be an int >= 2, got {size!r}.")
        if not 0.0 <= hole_probability < 1.0:
            raise ValueError(
                f"FrozenLakeRandom: `hole_probability` must be in [0, 1), got {hole_probability!r}."
            )
        if not 0.0 <= success_rate <= 1.0:
            raise ValueError(f"FrozenLakeRandom: `success_rate` must be in [0, 1], got {success_rate!r}.")
        if num_map_candidates < 1:
            raise ValueError(
                f"FrozenLakeRandom: `num_map_candidates` must be >= 1, got {num_map_candidates!r}."
            )
        self.size = size
        self.hole_probability = float(hole_probability)
        self.is_slippery = is_slippery
        self.success_rate = float(success_rate)
        self.num_map_candidates = num_map_candidates

    @property
    def default_params(self) -> EnvParams:
        # gymnax/Gymnasium use 100 steps for 4x4 and 200 for 8x8.
        return EnvParams(max_steps_in_episode=100 if self.size <= 4 else 200)

    @property
    def name(self) -> str:
        return "FrozenLakeRandom-v0"

    @property
    def num_actions(self) -> int:
        return 4

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        action = jnp.asarray(action, dtype=jnp.int32)
        if self.is_slippery:
            action = grid.slip_action(key, action, self.success_rate)
        position = grid.move(
            grid.to_position(state.position, self.size),
            grid.DIRECTIONS_LDRU[action],
            jnp.ones((self.size, self.size), dtype=bool),
        )
        state = state.replace(position=grid.to_index(position, self.size), time=state.time + 1)
        tile = state.desc[position[0], position[1]]
        reward = (tile == GOAL).astype(jnp.float32)
        obs = self.observe(key, state, action, params)
        info = {"success": tile == GOAL}
        return obs, state, reward, self.is_terminated(state, params), info

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        desc = generate_frozen_lake(key, self.size, self.hole_probability, self.num_map_candidates)
        state = EnvState(time=0, desc=desc, position=jnp.array(0, dtype=jnp.int32))
        return self.observe(key, state, None, params), state

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        del params
        tile = state.desc.reshape(-1)[state.position]
        return jnp.logical_or(tile == HOLE, tile == GOAL)

    def observe(self, key, state: EnvState, action, params) -> jax.Array:
        """Flat float32 `[3*N*N]`: holes, agent, goal channels."""
        del key, action, params
        agent = grid.cell_mask(grid.to_position(state.position, self.size), state.desc.shape)
        return grid.flat_channels(state.desc == HOLE, agent, state.desc == GOAL)

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(4)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (3 * self.size * self.size,), jnp.float32)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        return spaces.Dict(
            {
                "desc": spaces.Box(START, GOAL, (self.size, self.size), jnp.int32),
                "position": spaces.Discrete(self.size * self.size),
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )
