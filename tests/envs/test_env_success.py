"""`info["success"]`: True exactly on the step that reaches the goal, never on failure or time-out.

Every scripted episode is played through `env.step` (with gymnax's auto-reset) inside one
jitted `lax.scan`, so the flag is checked where the rollout reads it.
"""

import functools

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from envs_test_utils import walls_from_strings
from gymnax.environments.misc.frozen_lake import FROZEN, GOAL, HOLE, START

import jaxrl_llm.envs as envs
from jaxrl_llm.envs import grid
from jaxrl_llm.envs import maze as maze_module
from jaxrl_llm.envs import minibehavior as minibehavior_module
from jaxrl_llm.envs.frozen_lake_random import EnvState as FrozenLakeRandomState

SUCCESS_IDS = [
    "Maze-v0",
    "MiniBehavior-PickPlace-v0",
    "CliffWalking-v0",
    "FrozenLakeRandom-v0",
    "FrozenLake-misc",
]


@functools.partial(jax.jit, static_argnums=0)
def play(env, params, state, actions):
    """Steps `actions` `[T]` from `state`; returns `[T]` reward, terminated, truncated, success."""

    def one_step(state, inputs):
        key, action = inputs
        _, state, reward, terminated, truncated, info = env.step(key, state, action, params)
        return state, (reward, terminated, truncated, info["success"])

    keys = jax.random.split(jax.random.key(0), actions.shape[0])
    _, outcome = jax.lax.scan(one_step, state, (keys, jnp.asarray(actions, jnp.int32)))
    return jax.device_get(outcome)


def assert_success_only_at_end(outcome, reached: bool):
    """`success` is True on the last step iff `reached`, and False on every other step."""
    reward, terminated, truncated, success = outcome
    chex.assert_type(success, bool)
    chex.assert_equal_shape([reward, terminated, truncated, success])
    expected = np.zeros(len(success), bool)
    expected[-1] = reached
    np.testing.assert_array_equal(success, expected)
    assert bool(terminated[-1] or truncated[-1]), "the script must end its episode"
    assert not (terminated[:-1] | truncated[:-1]).any(), "the script must be one episode"


# --- registry --------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", SUCCESS_IDS)
def test_has_success_for_ids_and_instances(env_id):
    assert envs.has_success(env_id)
    env, _ = envs.make(env_id)
    assert envs.has_success(env)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Catch-bsuite", "FourRooms-misc"])
def test_gymnax_builtins_have_no_success_notion(env_id):
    assert not envs.has_success(env_id)
    assert not envs.has_success(gymnax.make(env_id)[0])


def test_frozen_lake_misc_is_gymnax_frozen_lake_plus_success():
    env, params = envs.make("FrozenLake-misc", is_slippery="false", map_name="8x8")
    plain, plain_params = gymnax.make("FrozenLake-misc", is_slippery=False, map_name="8x8")
    assert isinstance(env, type(plain)) and env.name == plain.name == "FrozenLake-misc"
    assert params == plain_params and not env.is_slippery
    np.testing.assert_array_equal(env.desc, plain.desc)
    assert not envs.has_success(plain)  # gymnax's own keeps its registry entry, without the flag


def test_has_success_rejects_unknown_ids():
    with pytest.raises(ValueError, match="Maze-v0"):
        envs.has_success("Maze-v1")


# --- Maze ------------------------------------------------------------------------------

UP, RIGHT, DOWN, LEFT = range(4)  # Maze, MiniBehavior and CliffWalking moves
# A corridor from (0, 0) to (0, 3) around a wall block.
MAZE_WALLS = walls_from_strings(["...#", ".#..", "...#", "####"])
MAZE_START, MAZE_GOAL = (0, 0), (1, 3)


def _maze_state():
    walls, goal = jnp.asarray(MAZE_WALLS), jnp.array(MAZE_GOAL, jnp.int32)
    return maze_module.EnvState(
        time=jnp.int32(0),
        walls=walls,
        agent_position=jnp.array(MAZE_START, jnp.int32),
        goal_position=goal,
        goal_distances=grid.distance_field(~walls, goal),
    )


MAZE_PATH = [RIGHT, RIGHT, DOWN, RIGHT]  # (0,1) (0,2) (1,2) (1,3)


def test_maze_success_on_reaching_the_goal():
    env = envs.Maze(size=4)
    outcome = play(env, env.default_params, _maze_state(), np.array([UP, LEFT] + MAZE_PATH))
    assert_success_only_at_end(outcome, reached=True)
    np.testing.assert_array_equal(outcome[1], [0, 0, 0, 0, 0, 1])


def test_maze_timeout_is_no_success():
    env = envs.Maze(size=4)
    params = env.default_params.replace(max_steps_in_episode=4)
    outcome = play(env, params, _maze_state(), np.array([RIGHT, LEFT, RIGHT, LEFT]))
    assert_success_only_at_end(outcome, reached=False)
    assert outcome[2][-1] and not outcome[1].any()


def test_goal_on_the_last_allowed_step_is_terminated_truncated_and_success():
    env = envs.Maze(size=4)
    params = env.default_params.replace(max_steps_in_episode=len(MAZE_PATH))
    reward, terminated, truncated, success = play(env, params, _maze_state(), np.array(MAZE_PATH))
    assert terminated[-1] and truncated[-1] and success[-1] and not success[:-1].any()


def test_maze_shortest_path_on_generated_mazes():
    """Follow the cached distance field downhill on freshly generated mazes."""
    env, params = envs.make("Maze-v0")
    for seed in range(3):
        _, state = env.reset(jax.random.key(seed), params)
        distances, walls = np.asarray(state.goal_distances), np.asarray(state.walls)
        position, actions = np.asarray(state.agent_position), []
        while distances[tuple(position)] > 0:
            for action, direction in enumerate(np.asarray(grid.DIRECTIONS_URDL)):
                nxt = position + direction
                inside = (0 <= nxt).all() and (nxt < walls.shape).all()
                if (
                    inside
                    and not walls[tuple(nxt)]
                    and distances[tuple(nxt)] == distances[tuple(position)] - 1
                ):
                    position, actions = nxt, actions + [action]
                    break
        assert_success_only_at_end(play(env, params, state, np.array(actions)), reached=True)


# --- MiniBehavior ----------------------------------------------------------------------

PICK, DROP = 4, 5


def _minibehavior_state():
    return minibehavior_module.EnvState(
        time=jnp.int32(0),
        agent_position=jnp.array((1, 1), jnp.int32),
        object_position=jnp.array((1, 2), jnp.int32),
        table_position=jnp.array((1, 5), jnp.int32),
        carrying=jnp.array(False),
    )


def test_minibehavior_success_on_placing_the_object():
    env = envs.MiniBehaviorPickPlace()
    # drop with empty hands, pick, drop on the floor, pick again, carry, place on the table
    actions = [DROP, PICK, DOWN, DROP, UP, PICK, RIGHT, RIGHT, RIGHT, DROP]
    outcome = play(env, env.default_params, _minibehavior_state(), np.array(actions))
    assert_success_only_at_end(outcome, reached=True)
    np.testing.assert_array_equal(outcome[0], outcome[3].astype(np.float32))


@pytest.mark.parametrize(
    "actions",
    [[PICK, RIGHT, DROP, RIGHT], [DROP, PICK, RIGHT, RIGHT]],  # dropped on the floor / still carrying
    ids=["floor-drop", "carrying"],
)
def test_minibehavior_timeout_is_no_success(actions):
    env = envs.MiniBehaviorPickPlace()
    params = env.default_params.replace(max_steps_in_episode=4)
    outcome = play(env, params, _minibehavior_state(), np.array(actions))
    assert_success_only_at_end(outcome, reached=False)
    assert outcome[2][-1] and not outcome[1].any()


# --- CliffWalking ----------------------------------------------------------------------

CLIFF_OPTIMAL = [UP] + [RIGHT] * 11 + [DOWN]


def _cliff_start(env, params):
    return env.reset(jax.random.key(0), params)[1]


def test_cliff_walking_success_despite_negative_return():
    env = envs.CliffWalking()
    params = env.default_params
    # fall off the cliff once (back to the start, episode goes on), then the optimal path
    outcome = play(env, params, _cliff_start(env, params), np.array([RIGHT] + CLIFF_OPTIMAL))
    assert_success_only_at_end(outcome, reached=True)
    assert outcome[0].sum() == -100.0 - 13.0


def test_cliff_walking_timeout_after_falls_is_no_success():
    env = envs.CliffWalking()
    params = env.default_params.replace(max_steps_in_episode=5)
    outcome = play(env, params, _cliff_start(env, params), np.array([RIGHT, RIGHT, UP, RIGHT, DOWN]))
    assert_success_only_at_end(outcome, reached=False)
    assert (outcome[0] == -100.0).sum() == 3


def test_slippery_cliff_walking_success_equals_termination():
    env = envs.CliffWalking(is_slippery=True)
    params = env.default_params
    actions = np.random.default_rng(0).choice([UP, RIGHT, DOWN], size=400, p=[0.2, 0.6, 0.2])
    _, terminated, _, success = play(env, params, _cliff_start(env, params), actions)
    assert terminated.any()
    np.testing.assert_array_equal(success, terminated)


# --- FrozenLakeRandom and FrozenLake-misc ----------------------------------------------

FL_LEFT, FL_DOWN, FL_RIGHT, FL_UP = range(4)
# S H F F / F F F F / F H F F / F F F G
LAKE = np.full((4, 4), FROZEN, np.int32)
LAKE[0, 0], LAKE[0, 1], LAKE[2, 1], LAKE[3, 3] = START, HOLE, HOLE, GOAL


def _lake_state():
    return FrozenLakeRandomState(time=jnp.int32(0), desc=jnp.asarray(LAKE), position=jnp.int32(0))


@pytest.mark.parametrize(
    "actions, reached",
    [
        ([FL_UP, FL_DOWN, FL_DOWN, FL_DOWN, FL_RIGHT, FL_RIGHT, FL_RIGHT], True),  # left column, bottom row
        ([FL_DOWN, FL_RIGHT, FL_DOWN], False),  # (1, 1) then the hole at (2, 1)
        ([FL_RIGHT], False),  # hole next to the start
    ],
)
def test_frozen_lake_random_goal_is_success_hole_is_not(actions, reached):
    env = envs.FrozenLakeRandom()
    outcome = play(env, env.default_params, _lake_state(), np.array(actions))
    assert_success_only_at_end(outcome, reached=reached)
    assert outcome[1][-1]  # both end by termination


def test_frozen_lake_random_timeout_is_no_success():
    env = envs.FrozenLakeRandom()
    params = env.default_params.replace(max_steps_in_episode=3)
    outcome = play(env, params, _lake_state(), np.array([FL_LEFT, FL_UP, FL_DOWN]))
    assert_success_only_at_end(outcome, reached=False)


@pytest.mark.parametrize(
    "actions, reached",
    [
        # gymnax's 4x4 map: SFFF / FHFH / FFFH / HFFG
        ([FL_RIGHT, FL_RIGHT, FL_DOWN, FL_DOWN, FL_DOWN, FL_RIGHT], True),
        ([FL_DOWN, FL_RIGHT], False),  # hole at (1, 1)
        ([FL_LEFT] * 100, False),  # gymnax's 100-step limit
    ],
)
def test_frozen_lake_misc_goal_is_success(actions, reached):
    env, params = envs.make("FrozenLake-misc", is_slippery=False)
    _, state = env.reset(jax.random.key(0), params)
    assert_success_only_at_end(play(env, params, state, np.array(actions)), reached=reached)


# --- random vmapped rollouts of every env ----------------------------------------------

NUM_ENVS, NUM_STEPS, MAX_STEPS = 32, 60, 25


@functools.partial(jax.jit, static_argnums=0)
def random_rollout(env, params, key):
    """`[NUM_STEPS, NUM_ENVS]` rewards, flags and infos of vmapped auto-resetting random play."""
    key_reset, key_steps = jax.random.split(key)
    _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key_reset, NUM_ENVS), params)

    def one_step(state, key):
        key_action, key_step = jax.random.split(key)
        actions = jax.random.randint(key_action, (NUM_ENVS,), 0, env.num_actions)
        step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
        _, state, reward, terminated, truncated, info = step(
            jax.random.split(key_step, NUM_ENVS), state, actions, params
        )
        return state, (reward, terminated, truncated, info)

    return jax.lax.scan(one_step, state, jax.random.split(key_steps, NUM_STEPS))[1]


@pytest.mark.parametrize("env_id", SUCCESS_IDS)
def test_vmapped_success_is_a_bool_flag_of_terminating_steps(env_id):
    env, params = envs.make(env_id)
    params = params.replace(max_steps_in_episode=MAX_STEPS)
    reward, terminated, truncated, info = random_rollout(env, params, jax.random.key(1))
    success = np.asarray(info["success"])
    chex.assert_shape(success, (NUM_STEPS, NUM_ENVS))
    assert success.dtype == np.bool_
    assert not (success & ~np.asarray(terminated)).any()  # success only where an episode terminates
    if env_id == "CliffWalking-v0":
        np.testing.assert_array_equal(success, terminated)
    else:  # reward 1 exactly at the goal / on placing the object; holes terminate with 0
        np.testing.assert_array_equal(success, np.asarray(reward) > 0)
    if env_id in ("FrozenLakeRandom-v0", "FrozenLake-misc"):
        assert success.any() and (np.asarray(terminated) & ~success).any()  # goals and holes both seen
