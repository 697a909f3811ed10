"""Sokoban-v0: push the box onto its target in a procedurally generated room (gym-sokoban's rules).

Every reset draws a new level entirely in JAX (fixed shapes, bounded `lax.scan`s and one
bounded `lax.while_loop`), so resets jit, vmap and sit inside a jitted rollout:

1. Topology: a random walk inside the outer wall ring carves floor with small brushes
   (a cell, a line of three cells across or down, a 2x2 block); the floor is connected.
2. Solved state: the target goes on a random floor cell, the box on the target, and the
   player on a random floor cell next to it from which it can pull the box (the cell
   beyond is floor too: where the player stands after a solving push), or on any other
   floor cell if there is none.
3. Reverse play: the player makes `search_depth` random moves into free floor cells
   (uniform, except that a move that pulls the box gets its score raised by
   `PULL_BONUS`); when the box is directly behind the player (opposite to the move) it
   is pulled along into the player's old cell. The level is the state seen during this
   play whose box is farthest (Manhattan distance) from the target, later states winning
   ties; the box is never on its target. Every pull played backwards is a legal push, so
   every level is solvable by construction.
4. A draw whose reverse play never moves the box off its target (a tiny topology) is
   redrawn, at most `MAX_ATTEMPTS` times per reset; if all fail, the reset falls back to
   a fixed solvable level (`fallback_level`: an empty room, target in the top-left
   interior corner, box diagonally next to it, player in the bottom-right interior corner).

Only one box (`num_boxes=1`) is supported.

Actions: 0 up, 1 right, 2 down, 3 left. Walking into a wall is a no-op; walking into the box
pushes it one cell if the cell beyond it is floor, otherwise the step is a no-op.
Reward (gym-sokoban's): -0.1 every step; +1.0 more when a push puts the box onto the
target; -1.0 more when a push moves it off the target; +10.0 more when all boxes are on
targets, which also sets `terminated`. The solving push thus earns -0.1 + 1.0 + 10.0 = 10.9.
Observation: float32 `[4*H*W]`, the channels walls / targets / boxes / player (each `[H, W]`,
row-major) flattened in that order.
Info: `boxes_on_target` (int32, after the move), `moved_player` and `moved_box` (bool: the
step moved the player / pushed the box), `success` (bool), True exactly on the step that
leaves every box on a target (never at the time limit). All read before any auto-reset.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from jaxrl_llm.envs import grid

__all__ = [
    "MAX_ATTEMPTS",
    "EnvParams",
    "EnvState",
    "Sokoban",
    "carve_room",
    "fallback_level",
    "generate_level",
    "reverse_play",
]

# gym-sokoban's reward scheme.
STEP_PENALTY = -0.1
BOX_ON_TARGET_REWARD = 1.0
BOX_OFF_TARGET_PENALTY = -1.0
FINISHED_REWARD = 10.0

MAX_ATTEMPTS = 8  # level draws per reset before the fixed fallback level
# Reverse play favours pulling: the move that pulls the box gets this added to its score.
PULL_BONUS = 0.25
TURN_PROBABILITY = 0.3  # chance that the topology walker picks a new random direction
# Brushes the topology walker carves with, as 4 offsets each (repeats pad the small ones).
BRUSHES = jnp.array(
    [
        [[0, 0], [0, 0], [0, 0], [0, 0]],  # one cell
        [[0, -1], [0, 0], [0, 1], [0, 0]],  # horizontal line of three
        [[-1, 0], [0, 0], [1, 0], [0, 0]],  # vertical line of three
        [[0, 0], [0, 1], [1, 0], [1, 1]],  # 2x2 block
    ],
    dtype=jnp.int32,
)


@struct.dataclass
class EnvState(environment.EnvState):
    """Room layout and positions (one box and one target)."""

    walls: jax.Array  # [H, W] bool
    target_position: jax.Array  # [2] int32 (row, col)
    box_position: jax.Array  # [2] int32 (row, col)
    agent_position: jax.Array  # [2] int32 (row, col), the player


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_steps_in_episode: int = 100


def _interior_bounds(shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """Lowest and highest `(row, col)` inside the outer wall ring."""
    return jnp.ones(2, jnp.int32), jnp.array(shape, jnp.int32) - 2


def carve_room(walk: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Room topology by a random walk inside the outer wall ring.

    The walker starts on a random interior cell with a random direction. Each step it
    turns to a new random direction with probability `TURN_PROBABILITY`, moves one cell
    (clipped to the interior) and carves one of `BRUSHES` there (clipped too). Every
    carved cell touches the walker's path, so the floor is connected.

    Args:
      walk: `[S + 1, 3]` float in [0, 1). Row 0: start row, start col, start direction;
        row `t` > 0: turn, new direction, brush of step `t`.
      shape: `(H, W)` of the room, both >= 3.

    Returns:
      `[H, W]` bool, `True` on walls.
    """
    low, high = _interior_bounds(shape)
    first = walk[0]
    start = low + jnp.floor(first[:2] * (high - low + 1)).astype(jnp.int32)
    start_direction = jnp.floor(first[2] * 4).astype(jnp.int32)

    def step(carry, draws):
        free, position, direction = carry
        turn, new_direction, brush = draws
        direction = jnp.where(
            turn < TURN_PROBABILITY, jnp.floor(new_direction * 4).astype(jnp.int32), direction
        )
        position = jnp.clip(position + grid.DIRECTIONS_URDL[direction], low, high)
        cells = jnp.clip(position + BRUSHES[jnp.floor(brush * len(BRUSHES)).astype(jnp.int32)], low, high)
        return (free.at[cells[:, 0], cells[:, 1]].set(True), position, direction), None

    initial = (grid.cell_mask(start, shape), start, start_direction)
    (free, _, _), _ = jax.lax.scan(step, initial, walk[1:])
    return ~free


def reverse_play(
    walls: jax.Array, target: jax.Array, agent: jax.Array, move_scores: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Random reverse play from the solved state (box on `target`), pulling the box.

    Each step the player moves into the free 4-neighbour (floor, not the box) with the
    highest score, the move that pulls the box getting `PULL_BONUS` more (otherwise a
    uniform choice among the free ones; no move if none is free); if the box was directly
    behind the player, it is pulled into the player's old cell.

    Args:
      walls: `[H, W]` bool with a wall ring (so every move stays inside the grid).
      target: `[2]` int32, the target, where the box starts.
      agent: `[2]` int32 start of the player, a floor cell other than `target`.
      move_scores: `[D, 4]` float in [0, 1), one score per step and direction.

    Returns:
      `(agent, box, distance)` of the best state seen (largest box-target Manhattan
      distance, later states winning ties); `distance` is 0 if the box never left
      its target.
    """

    def step(carry, scores):
        agent, box, best = carry
        destinations = agent + grid.DIRECTIONS_URDL  # [4, 2]
        free = ~walls[destinations[:, 0], destinations[:, 1]] & jnp.any(destinations != box, axis=1)
        pulls = jnp.all(agent - grid.DIRECTIONS_URDL == box, axis=1)  # moving away from the box
        direction = jnp.argmax(jnp.where(free, scores + PULL_BONUS * pulls, -1.0))
        can_move = free.any()
        moved = jnp.where(can_move, destinations[direction], agent)
        pulled = can_move & jnp.all(box == agent - grid.DIRECTIONS_URDL[direction])
        box = jnp.where(pulled, agent, box)
        distance = jnp.abs(box - target).sum()
        best = jax.tree.map(
            lambda new, old: jnp.where(distance >= best[2], new, old), (moved, box, distance), best
        )
        return (moved, box, best), None

    start = (agent, target, jnp.int32(0))
    (_, _, best), _ = jax.lax.scan(step, (agent, target, start), move_scores)
    return best


def fallback_level(shape: tuple[int, int]) -> EnvState:
    """The fixed solvable level a reset falls back to when every draw failed.

    An empty room (walls only on the outer ring), the target in the top-left interior
    corner `(1, 1)`, the box at `(2, 2)` and the player in the bottom-right interior
    corner; solvable for any interior of at least 3x3 (push up, then left).
    """
    walls = jnp.ones(shape, bool).at[1:-1, 1:-1].set(False)
    return EnvState(
        time=0,
        walls=walls,
        target_position=jnp.array([1, 1], jnp.int32),
        box_position=jnp.array([2, 2], jnp.int32),
        agent_position=jnp.array(shape, jnp.int32) - 2,
    )


def _walk_steps(shape: tuple[int, int]) -> int:
    """Topology walk length: 1.5 steps per interior cell (about 2/3 of the interior is floor)."""
    return 3 * (shape[0] - 2) * (shape[1] - 2) // 2


def _draw_level(uniforms: jax.Array, shape: tuple[int, int], search_depth: int) -> tuple[EnvState, jax.Array]:
    """One level draw from a flat vector of uniforms; returns it and whether it is valid."""
    walk_size = 3 * (_walk_steps(shape) + 1)
    placement_size = shape[0] * shape[1]
    walk = uniforms[:walk_size].reshape(-1, 3)
    placement = uniforms[walk_size : walk_size + placement_size].reshape(shape)
    move_scores = uniforms[walk_size + placement_size :].reshape(search_depth, 4)
    walls = carve_room(walk, shape)
    floor = ~walls
    target = grid.top_cells(placement, floor, 1)[0]
    ahead = target + grid.DIRECTIONS_URDL
    beyond = jnp.clip(target + 2 * grid.DIRECTIONS_URDL, 0, jnp.array(shape) - 1)
    pull_start = floor[ahead[:, 0], ahead[:, 1]] & floor[beyond[:, 0], beyond[:, 1]]
    pullable = jnp.zeros(shape, bool).at[ahead[:, 0], ahead[:, 1]].set(pull_start)
    # Scores are < 1, so a cell the player can pull from wins whenever there is one.
    agent = grid.top_cells(placement + 2.0 * pullable, floor & ~grid.cell_mask(target, shape), 1)[0]
    agent, box, distance = reverse_play(walls, target, agent, move_scores)
    enough_floor = (~walls).sum() >= 3  # `top_cells` needs two floor cells; a pull needs three
    level = EnvState(time=0, walls=walls, target_position=target, box_position=box, agent_position=agent)
    return level, jnp.logical_and(enough_floor, distance > 0)


def generate_level(
    key: jax.Array, shape: tuple[int, int], search_depth: int, max_attempts: int = MAX_ATTEMPTS
) -> EnvState:
    """A random solvable level with its box off the target (see the module docstring).

    Draws up to `max_attempts` levels (each from one `jax.random.uniform` call on
    `fold_in(key, attempt)`) until one moved the box off its target; `fallback_level`
    if none did.

    Args:
      key: PRNG key.
      shape: `(H, W)` room size including the wall ring, both >= 5.
      search_depth: number of reverse-play moves, >= 1.
      max_attempts: level draws before the fallback (0 gives the fallback).
    """
    num_uniforms = 3 * (_walk_steps(shape) + 1) + shape[0] * shape[1] + 4 * search_depth

    def draw(carry):
        attempt, _, _ = carry
        uniforms = jax.random.uniform(jax.random.fold_in(key, attempt), (num_uniforms,))
        level, valid = _draw_level(uniforms, shape, search_depth)
        return attempt + 1, level, valid

    def keep_drawing(carry):
        attempt, _, valid = carry
        return jnp.logical_and(~valid, attempt < max_attempts)

    fallback = fallback_level(shape)
    _, level, valid = jax.lax.while_loop(keep_drawing, draw, (jnp.int32(0), fallback, jnp.array(False)))
    return jax.tree.map(lambda drawn, fixed: jnp.where(valid, drawn, fixed), level, fallback)


def _room_shape(dim_room) -> tuple[int, int]:
    """`dim_room` (int or `(rows, cols)`) -> `(rows, cols)`, validated."""
    shape = (dim_room, dim_room) if isinstance(dim_room, int) else dim_room
    valid = (
        isinstance(shape, (tuple, list))
        and len(shape) == 2
        and all(isinstance(side, int) and not isinstance(side, bool) and side >= 5 for side in shape)
    )
    if not valid:
        raise ValueError(
            "Sokoban: `dim_room` must be an int >= 5 (a square room) or a pair (rows, cols) of "
            f"ints >= 5, counting the outer wall ring; got {dim_room!r}."
        )
    return tuple(shape)


class Sokoban(environment.Environment[EnvState, EnvParams]):
    """Single-box Sokoban on random levels; see the module docstring for spaces and rewards.

    Args:
      dim_room: room size including the outer wall ring: an int >= 5 for a square room,
        or a pair `(rows, cols)` of ints >= 5 (constructor only; `make`'s command-line
        conversion takes an int).
      num_boxes: number of boxes; only 1 is supported.
      search_depth: reverse-play moves per level draw (>= 1); larger pushes the box
        further from its target on average (harder levels, slower resets).
    """

    reports_success = True  # `info["success"]`; see `jaxrl_llm.envs.has_success`

    def __init__(self, dim_room: int | tuple[int, int] = 6, num_boxes: int = 1, search_depth: int = 30):
        self.shape = _room_shape(dim_room)
        if num_boxes != 1 or isinstance(num_boxes, bool):
            raise ValueError(f"Sokoban: only `num_boxes=1` is supported, got {num_boxes!r}.")
        if not isinstance(search_depth, int) or isinstance(search_depth, bool) or search_depth < 1:
            raise ValueError(f"Sokoban: `search_depth` must be an int >= 1, got {search_depth!r}.")
        self.num_boxes = num_boxes
        self.search_depth = search_depth

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return "Sokoban-v0"

    @property
    def num_actions(self) -> int:
        return 4

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        direction = grid.DIRECTIONS_URDL[jnp.asarray(action, dtype=jnp.int32)]
        agent, box, target = state.agent_position, state.box_position, state.target_position
        ahead = agent + direction  # inside the grid: the player is always inside the wall ring
        beyond = jnp.clip(ahead + direction, 0, jnp.array(self.shape, jnp.int32) - 1)
        box_ahead = jnp.all(ahead == box)
        push = box_ahead & ~state.walls[beyond[0], beyond[1]]
        moved_player = ~state.walls[ahead[0], ahead[1]] & (~box_ahead | push)
        new_box = jnp.where(push, beyond, box)
        was_on_target, on_target = jnp.all(box == target), jnp.all(new_box == target)
        reward = (
            jnp.float32(STEP_PENALTY)
            + jnp.where(on_target & ~was_on_target, BOX_ON_TARGET_REWARD, 0.0)
            + jnp.where(was_on_target & ~on_target, BOX_OFF_TARGET_PENALTY, 0.0)
            + jnp.where(on_target, FINISHED_REWARD, 0.0)  # all (the one) boxes on targets
        ).astype(jnp.float32)
        state = state.replace(
            agent_position=jnp.where(moved_player, ahead, agent).astype(jnp.int32),
            box_position=new_box.astype(jnp.int32),
            time=state.time + 1,
        )
        solved = self.is_terminated(state, params)
        info = {
            "boxes_on_target": on_target.astype(jnp.int32),
            "moved_player": moved_player,
            "moved_box": push,
            "success": solved,
        }
        return self.observe(key, state, action, params), state, reward, solved, info

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        state = generate_level(key, self.shape, self.search_depth)
        return self.observe(key, state, None, params), state

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        del params
        return jnp.all(state.box_position == state.target_position)

    def observe(self, key, state: EnvState, action, params) -> jax.Array:
        """Flat float32 `[4*H*W]`: walls, targets, boxes, player channels."""
        del key, action, params
        shape = self.shape
        return grid.flat_channels(
            state.walls,
            grid.cell_mask(state.target_position, shape),
            grid.cell_mask(state.box_position, shape),
            grid.cell_mask(state.agent_position, shape),
        )

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(4)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (4 * self.shape[0] * self.shape[1],), jnp.float32)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        highest = jnp.array(self.shape, jnp.int32) - 1
        position = spaces.Box(0, highest, (2,), jnp.int32)
        return spaces.Dict(
            {
                "walls": spaces.Box(0, 1, self.shape, jnp.bool_),
                "target_position": position,
                "box_position": position,
                "agent_position": position,
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )
