"""Maze-v0: a procedurally generated N x N maze with a sparse goal reward.

Every reset draws a new maze, start and goal, entirely in JAX (fixed shapes, bounded
`lax.while_loop`s), so resets vmap and sit inside a jitted rollout.

Actions: 0 up, 1 right, 2 down, 3 left; moving into a wall or off the grid is a no-op.
Reward 1.0 and `terminated` on reaching the goal, 0.0 otherwise.
Observation: float32 `[3*N*N]`, the channels walls / agent / goal (each `[N, N]`, row-major)
flattened in that order.
Info: `distance_to_goal`, the BFS shortest-path length (int32) from the agent to the goal
after the move, read before any auto-reset; `success` (bool), True exactly on the step
that reaches the goal (never at the time limit).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from jaxrl_llm.envs import grid
from jaxrl_llm.envs.grid import shortest_path_distance  # re-exported for tests and users

__all__ = ["EnvParams", "EnvState", "Maze", "carve_maze", "generate_maze", "shortest_path_distance"]


@struct.dataclass
class EnvState(environment.EnvState):
    """Maze layout, positions and the goal's distance field (cached at reset)."""

    walls: jax.Array  # [N, N] bool
    agent_position: jax.Array  # [2] int32 (row, col)
    goal_position: jax.Array  # [2] int32 (row, col)
    goal_distances: jax.Array  # [N, N] int32 BFS distance to the goal, -1 on walls


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_steps_in_episode: int = 144  # Maze.default_params uses 4 * N * N


def _frontier(free: jax.Array) -> jax.Array:
    """Wall cells with exactly one free 4-neighbour: carving one keeps the free set a tree."""
    free_neighbours = grid.neighbour_values(free, False).sum(axis=0)
    return jnp.logical_and(~free, free_neighbours == 1)


def carve_maze(priorities: jax.Array) -> jax.Array:
    """Tree-shaped maze on a square grid by Prim's algorithm on random cell priorities.

    Starting from the highest-priority cell, repeatedly carve the highest-priority wall cell
    that touches exactly one free cell, until none is left. Each carve adds a leaf to a tree,
    so the free cells are always connected (every start/goal pair is reachable) and loop-free:
    corridors are one cell wide, as in a classic maze, for odd and even sizes alike.

    Args:
      priorities: `[N, N]` float, i.i.d. uniform for a uniformly random seed cell.

    Returns:
      `[N, N]` bool, `True` on walls.
    """
    size = priorities.shape[0]
    seed_cell = grid.top_cells(priorities, jnp.ones(priorities.shape, dtype=bool), 1)[0]

    def carve(carry):
        free, step = carry
        frontier = _frontier(free)
        chosen = grid.top_cells(priorities, frontier, 1)[0]
        # The `frontier.any()` guard keeps a finished maze unchanged if the body runs anyway.
        free = free.at[chosen[0], chosen[1]].set(jnp.logical_or(free[chosen[0], chosen[1]], frontier.any()))
        return free, step + 1

    def can_grow(carry):
        free, step = carry
        return jnp.logical_and(_frontier(free).any(), step < size * size)

    free, _ = jax.lax.while_loop(can_grow, carve, (grid.cell_mask(seed_cell, priorities.shape), 0))
    return ~free


def generate_maze(key: jax.Array, size: int) -> jax.Array:
    """Random `[size, size]` bool wall grid (`True` on walls); see `carve_maze`."""
    return carve_maze(jax.random.uniform(key, (size, size)))


class Maze(environment.Environment[EnvState, EnvParams]):
    """Random maze navigation; see the module docstring for spaces and rewards.

    Args:
      size: side length N of the square grid (>= 2).
      layout_seed: -1 (default) draws a new maze, start and goal at every reset; a seed >= 0
        fixes them (the maze of `reset(PRNGKey(layout_seed))`, every episode), e.g. for a
        quick learning check where states recur across episodes.
    """

    reports_success = True  # `info["success"]`; see `jaxrl_llm.envs.has_success`

    def __init__(self, size: int = 6, layout_seed: int = -1):
        if not isinstance(size, int) or size < 2:
            raise ValueError(f"Maze: `size` must be an int >= 2, got {size!r}.")
        if not isinstance(layout_seed, int) or layout_seed < -1:
            raise ValueError(
                f"Maze: `layout_seed` must be -1 (random mazes) or a seed >= 0, got {layout_seed!r}."
            )
        self.size = size
        self.layout_seed = layout_seed

    @property
    def default_params(self) -> EnvParams:
        return EnvParams(max_steps_in_episode=4 * self.size * self.size)

    @property
    def name(self) -> str:
        return "Maze-v0"

    @property
    def num_actions(self) -> int:
        return 4

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        direction = grid.DIRECTIONS_URDL[jnp.asarray(action, dtype=jnp.int32)]
        agent = grid.move(state.agent_position, direction, ~state.walls)
        state = state.replace(agent_position=agent, time=state.time + 1)
        reached_goal = self.is_terminated(state, params)
        info = {"distance_to_goal": state.goal_distances[agent[0], agent[1]], "success": reached_goal}
        obs = self.observe(key, state, action, params)
        return obs, state, reached_goal.astype(jnp.float32), reached_goal, info

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        if self.layout_seed >= 0:
            key = jax.random.PRNGKey(self.layout_seed)
        # One uniform draw for everything: random calls dominate compile time on CPU.
        maze_priorities, placement_scores = jax.random.uniform(key, (2, self.size, self.size))
        walls = carve_maze(maze_priorities)
        start, goal = grid.top_cells(placement_scores, ~walls, 2)
        state = EnvState(
            time=0,
            walls=walls,
            agent_position=start,
            goal_position=goal,
            goal_distances=grid.distance_field(~walls, goal),
        )
        return self.observe(key, state, None, params), state

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        del params
        return jnp.all(state.agent_position == state.goal_position)

    def observe(self, key, state: EnvState, action, params) -> jax.Array:
        """Flat float32 `[3*N*N]`: walls, agent, goal channels."""
        del key, action, params
        shape = state.walls.shape
        agent = grid.cell_mask(state.agent_position, shape)
        return grid.flat_channels(state.walls, agent, grid.cell_mask(state.goal_position, shape))

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(4)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (3 * self.size * self.size,), jnp.float32)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        cells = (self.size, self.size)
        return spaces.Dict(
            {
                "walls": spaces.Box(0, 1, cells, jnp.bool_),
                "agent_position": spaces.Box(0, self.size - 1, (2,), jnp.int32),
                "goal_position": spaces.Box(0, self.size - 1, (2,), jnp.int32),
                "goal_distances": spaces.Box(-1, self.size * self.size, cells, jnp.int32),
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )
