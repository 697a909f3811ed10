"""CliffWalking-v0: Sutton & Barto's 4 x 12 cliff walk with Gymnasium's dynamics.

Start (3, 0), goal (3, 11), cliff (3, 1..10). Actions: 0 up, 1 right, 2 down, 3 left,
clipped at the border. Every step costs -1; stepping into the cliff costs -100 and puts
the agent back on the start *without* ending the episode; reaching the goal terminates.
This is Gymnasium's `CliffWalking-v1` (non-slippery, identical to the old v0); set
`is_slippery=True` for `CliffWalkingSlippery-v1` (intended move or either perpendicular
one, 1/3 each).

Observation: scalar int32 row-major position `row * 12 + col` (as Gymnasium and gymnax's
FrozenLake); use `jax.nn.one_hot(obs, 48)` for a network input.
Gymnasium sets no step limit; ours defaults to 200 steps (`EnvParams.max_steps_in_episode`).
Info: `fell_off_cliff` (bool); `success` (bool), True exactly on the step that reaches the
goal (every reward is negative, so a return says nothing about success).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from jaxrl_llm.envs import grid

__all__ = ["CliffWalking", "EnvParams", "EnvState"]

NUM_ROWS, NUM_COLS = 4, 12
START_POSITION = (NUM_ROWS - 1, 0)
GOAL_POSITION = (NUM_ROWS - 1, NUM_COLS - 1)
STEP_REWARD, CLIFF_REWARD = -1.0, -100.0


@struct.dataclass
class EnvState(environment.EnvState):
    position: jax.Array  # scalar int32, row * 12 + col


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_steps_in_episode: int = 200


def cliff_mask() -> jax.Array:
    """`[4, 12]` bool, `True` on the cliff cells (3, 1..10)."""
    return jnp.zeros((NUM_ROWS, NUM_COLS), dtype=bool).at[NUM_ROWS - 1, 1:-1].set(True)


class CliffWalking(environment.Environment[EnvState, EnvParams]):
    """Gymnasium's CliffWalking as a gymnax environment; see the module docstring.

    Args:
      is_slippery: move perpendicular to the intended direction 2/3 of the time.
    """

    reports_success = True  # `info["success"]`; see `jaxrl_llm.envs.has_success`

    def __init__(self, is_slippery: bool = False):
        self.is_slippery = is_slippery
        self.shape = (NUM_ROWS, NUM_COLS)
        self.start_index = START_POSITION[0] * NUM_COLS + START_POSITION[1]
        self.goal_index = GOAL_POSITION[0] * NUM_COLS + GOAL_POSITION[1]

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return "CliffWalking-v0"

    @property
    def num_actions(self) -> int:
        return 4

    def step_env(
        self, key: jax.Array, state: EnvState, action: int | jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        action = jnp.asarray(action, dtype=jnp.int32)
        if self.is_slippery:
            action = grid.slip_action(key, action, 1.0 / 3.0)
        target = grid.move(
            grid.to_position(state.position, NUM_COLS),
            grid.DIRECTIONS_URDL[action],
            jnp.ones(self.shape, dtype=bool),
        )
        fell = cliff_mask()[target[0], target[1]]
        position = jnp.where(fell, self.start_index, grid.to_index(target, NUM_COLS))
        state = state.replace(position=position.astype(jnp.int32), time=state.time + 1)
        reward = jnp.where(fell, CLIFF_REWARD, STEP_REWARD).astype(jnp.float32)
        obs = self.observe(key, state, action, params)
        reached_goal = self.is_terminated(state, params)  # the goal is the only terminal state
        return obs, state, reward, reached_goal, {"fell_off_cliff": fell, "success": reached_goal}

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        state = EnvState(time=0, position=jnp.array(self.start_index, dtype=jnp.int32))
        return self.observe(key, state, None, params), state

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        del params
        return state.position == self.goal_index

    def observe(self, key, state: EnvState, action, params) -> jax.Array:
        """Scalar int32 row-major position."""
        del key, action, params
        return state.position

    def action_space(self, params: EnvParams | None = None) -> spaces.Discrete:
        return spaces.Discrete(4)

    def observation_space(self, params: EnvParams) -> spaces.Discrete:
        return spaces.Discrete(NUM_ROWS * NUM_COLS)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        return spaces.Dict(
            {
                "position": spaces.Discrete(NUM_ROWS * NUM_COLS),
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )
