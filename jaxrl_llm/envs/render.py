"""Text and image renderers for every grid environment (ours and gymnax's grid worlds).

Both renderers go through one per-environment function, `cell_codes(env, state) -> [H, W]`
int32 array of `Cell` codes (pure jnp), so text and image always agree:

- `render_text(env, state) -> str`: host-side (not jittable). One line per grid row, one
  character per cell, then a one-line legend listing the symbols the environment can show,
  e.g. `legend: #=wall .=floor A=agent G=goal`. Deterministic: the same state always gives
  the same string, so it can be hashed or put in a language-model prompt.
- `render_image(env, state, cell_px=8) -> uint8 [H*cell_px, W*cell_px, 3]`: pure jnp, so it
  jits (`env` and `cell_px` static) and vmaps over a batch of states.

Both take an unbatched `state` (vmap `render_image` for batches). Supported: `Maze-v0`,
`MiniBehavior-PickPlace-v0`, `CliffWalking-v0`, `FrozenLakeRandom-v0`, `Sokoban-v0`, gymnax's
`FrozenLake-misc`, `FourRooms-misc` and `MetaMaze-misc`. Add another with `register_renderer`.
Where two things share a cell the agent is drawn on top, then the object, then the rest.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments.misc import frozen_lake, meta_maze, rooms

from jaxrl_llm.envs import grid
from jaxrl_llm.envs.cliff_walking import GOAL_POSITION, START_POSITION, CliffWalking, cliff_mask
from jaxrl_llm.envs.frozen_lake_random import FrozenLakeRandom
from jaxrl_llm.envs.maze import Maze
from jaxrl_llm.envs.minibehavior import MiniBehaviorPickPlace
from jaxrl_llm.envs.sokoban import Sokoban

__all__ = [
    "PALETTE",
    "Cell",
    "cell_codes",
    "legend_text",
    "register_renderer",
    "render_image",
    "render_text",
    "symbol_of",
]


class Cell(enum.IntEnum):
    """What a rendered cell shows; the value indexes `_SYMBOLS`."""

    FLOOR = 0
    WALL = 1
    AGENT = 2
    GOAL = 3
    START = 4
    FROZEN = 5
    HOLE = 6
    CLIFF = 7
    OBJECT = 8
    TABLE = 9
    AGENT_CARRYING = 10
    BOX = 11
    TARGET = 12
    BOX_ON_TARGET = 13


class _Symbol(NamedTuple):
    char: str
    meaning: str
    rgb: tuple[int, int, int]


_SYMBOLS: dict[Cell, _Symbol] = {
    Cell.FLOOR: _Symbol(".", "floor", (235, 235, 235)),
    Cell.WALL: _Symbol("#", "wall", (60, 60, 60)),
    Cell.AGENT: _Symbol("A", "agent", (220, 40, 40)),
    Cell.GOAL: _Symbol("G", "goal", (40, 180, 60)),
    Cell.START: _Symbol("S", "start", (240, 200, 80)),
    Cell.FROZEN: _Symbol("F", "frozen", (190, 225, 250)),
    Cell.HOLE: _Symbol("H", "hole", (20, 40, 120)),
    Cell.CLIFF: _Symbol("C", "cliff", (110, 70, 40)),
    Cell.OBJECT: _Symbol("O", "object", (230, 140, 20)),
    Cell.TABLE: _Symbol("T", "table", (150, 100, 200)),
    Cell.AGENT_CARRYING: _Symbol("a", "agent carrying the object", (250, 110, 160)),
    Cell.BOX: _Symbol("B", "box", (175, 115, 55)),
    Cell.TARGET: _Symbol("+", "target", (130, 220, 210)),
    Cell.BOX_ON_TARGET: _Symbol("*", "box on target", (40, 130, 150)),
}
# [num_cells, 3] uint8: the colour `render_image` paints each `Cell` with.
PALETTE = np.array([_SYMBOLS[cell].rgb for cell in Cell], dtype=np.uint8)


class _Renderer(NamedTuple):
    cell_codes: Callable[[Any, Any], jax.Array]
    legend: tuple[Cell, ...]


_RENDERERS: dict[type, _Renderer] = {}


def register_renderer(
    env_type: type, cell_codes_fn: Callable[[Any, Any], jax.Array], legend: Sequence[Cell]
) -> None:
    """Adds a renderer for `env_type` (and its subclasses).

    Args:
      cell_codes_fn: `(env, state) -> [H, W]` int32 `Cell` codes, written in jnp.
      legend: the `Cell`s this environment can show, in legend order.
    """
    _RENDERERS[env_type] = _Renderer(cell_codes_fn, tuple(legend))


def _renderer_for(env) -> _Renderer:
    for env_type in type(env).__mro__:  # subclasses inherit their parent's renderer
        if env_type in _RENDERERS:
            return _RENDERERS[env_type]
    supported = ", ".join(sorted(t.__name__ for t in _RENDERERS))
    raise TypeError(f"No renderer for {type(env).__name__}; supported: {supported}.")


def cell_codes(env, state) -> jax.Array:
    """`[H, W]` int32 `Cell` codes of an unbatched `state` of `env` (jittable)."""
    return _renderer_for(env).cell_codes(env, state)


def render_text(env, state) -> str:
    """ASCII grid of an unbatched `state`, one row per line, then a one-line legend (host-side)."""
    renderer = _renderer_for(env)
    codes = np.asarray(jax.device_get(renderer.cell_codes(env, state)))
    if codes.ndim != 2:
        raise ValueError(f"render_text expects an unbatched state; got a grid of shape {codes.shape}.")
    chars = np.array([_SYMBOLS[cell].char for cell in Cell])
    rows = ["".join(row) for row in chars[codes]]
    return "\n".join([*rows, legend_text(env)])


def symbol_of(cell: Cell) -> str:
    """The character `render_text` draws for `cell`."""
    return _SYMBOLS[Cell(cell)].char


def legend_text(env) -> str:
    """`render_text`'s legend line of `env`, e.g. `legend: #=wall .=floor A=agent G=goal`."""
    legend = " ".join(f"{_SYMBOLS[cell].char}={_SYMBOLS[cell].meaning}" for cell in _renderer_for(env).legend)
    return f"legend: {legend}"


def render_image(env, state, cell_px: int = 8) -> jax.Array:
    """RGB image of an unbatched `state`: uint8 `[H*cell_px, W*cell_px, 3]`, one colour per cell.

    Jittable with `env` and `cell_px` static, e.g. `jax.jit(render_image, static_argnums=(0, 2))`
    or `jax.vmap(lambda s: render_image(env, s))(batched_states)`.
    """
    pixels = jnp.asarray(PALETTE)[cell_codes(env, state)]  # [H, W, 3]
    return jnp.repeat(jnp.repeat(pixels, cell_px, axis=0), cell_px, axis=1)


# ---- per-environment cell codes ------------------------------------------------------------


def _overlay(codes: jax.Array, position: jax.Array, cell: Cell | jax.Array) -> jax.Array:
    """`codes` with `cell` written at `position` `[2]`."""
    return codes.at[position[0], position[1]].set(cell)


def _walls_and_floor(walls: jax.Array) -> jax.Array:
    return jnp.where(walls, Cell.WALL, Cell.FLOOR).astype(jnp.int32)


def _maze_codes(env: Maze, state) -> jax.Array:
    codes = _overlay(_walls_and_floor(state.walls), state.goal_position, Cell.GOAL)
    return _overlay(codes, state.agent_position, Cell.AGENT)


def _minibehavior_codes(env: MiniBehaviorPickPlace, state) -> jax.Array:
    codes = _overlay(_walls_and_floor(env.walls), state.table_position, Cell.TABLE)
    codes = _overlay(codes, state.object_position, Cell.OBJECT)
    agent = jnp.where(state.carrying, Cell.AGENT_CARRYING, Cell.AGENT)
    return _overlay(codes, state.agent_position, agent)


def _cliff_walking_codes(env: CliffWalking, state) -> jax.Array:
    codes = jnp.where(cliff_mask(), Cell.CLIFF, Cell.FLOOR).astype(jnp.int32)
    codes = codes.at[START_POSITION].set(Cell.START).at[GOAL_POSITION].set(Cell.GOAL)
    return _overlay(codes, grid.to_position(state.position, env.shape[1]), Cell.AGENT)


_FROZEN_LAKE_TILES = np.zeros(4, dtype=np.int32)  # gymnax tile id -> Cell
_FROZEN_LAKE_TILES[[frozen_lake.START, frozen_lake.FROZEN, frozen_lake.HOLE, frozen_lake.GOAL]] = [
    Cell.START,
    Cell.FROZEN,
    Cell.HOLE,
    Cell.GOAL,
]


def _frozen_lake_codes(desc: jax.Array, position: jax.Array) -> jax.Array:
    """FrozenLake tile ids `[H, W]` and a row-major agent index -> cell codes."""
    codes = jnp.asarray(_FROZEN_LAKE_TILES)[desc]
    return _overlay(codes, grid.to_position(position, desc.shape[1]), Cell.AGENT)


def _gymnax_grid_world_codes(env, state) -> jax.Array:
    """gymnax's FourRooms / MetaMaze: `env.env_map` is `True` on free cells; `pos`, `goal` are `[2]`."""
    codes = _overlay(_walls_and_floor(~jnp.asarray(env.env_map, dtype=bool)), state.goal, Cell.GOAL)
    return _overlay(codes, state.pos, Cell.AGENT)


def _sokoban_codes(env: Sokoban, state) -> jax.Array:
    codes = _overlay(_walls_and_floor(state.walls), state.target_position, Cell.TARGET)
    on_target = jnp.all(state.box_position == state.target_position)
    codes = _overlay(codes, state.box_position, jnp.where(on_target, Cell.BOX_ON_TARGET, Cell.BOX))
    return _overlay(codes, state.agent_position, Cell.AGENT)


_NAVIGATION_LEGEND = (Cell.WALL, Cell.FLOOR, Cell.AGENT, Cell.GOAL)
_FROZEN_LAKE_LEGEND = (Cell.START, Cell.FROZEN, Cell.HOLE, Cell.GOAL, Cell.AGENT)

register_renderer(Maze, _maze_codes, _NAVIGATION_LEGEND)
register_renderer(
    MiniBehaviorPickPlace,
    _minibehavior_codes,
    (Cell.WALL, Cell.FLOOR, Cell.AGENT, Cell.AGENT_CARRYING, Cell.OBJECT, Cell.TABLE),
)
register_renderer(
    CliffWalking, _cliff_walking_codes, (Cell.FLOOR, Cell.CLIFF, Cell.START, Cell.GOAL, Cell.AGENT)
)
# Same tiles; the random variant keeps its map in the state, gymnax's in the env.
register_renderer(
    FrozenLakeRandom, lambda env, state: _frozen_lake_codes(state.desc, state.position), _FROZEN_LAKE_LEGEND
)
register_renderer(
    frozen_lake.FrozenLake,
    lambda env, state: _frozen_lake_codes(env.desc, state.position),
    _FROZEN_LAKE_LEGEND,
)
register_renderer(
    Sokoban,
    _sokoban_codes,
    (Cell.WALL, Cell.FLOOR, Cell.TARGET, Cell.BOX, Cell.BOX_ON_TARGET, Cell.AGENT),
)
register_renderer(rooms.FourRooms, _gymnax_grid_world_codes, _NAVIGATION_LEGEND)
register_renderer(meta_maze.MetaMaze, _gymnax_grid_world_codes, _NAVIGATION_LEGEND)
