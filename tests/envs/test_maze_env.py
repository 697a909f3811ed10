"""Maze-v0: BFS distances, generated-maze properties, and step dynamics by hand."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from envs_test_utils import NUM_RESETS, make_env, python_bfs, reset_batch, walls_from_strings

from jaxrl_llm.envs import grid
from jaxrl_llm.envs.maze import EnvState, Maze, shortest_path_distance

UP, RIGHT, DOWN, LEFT = range(4)

# Agent starts at (0, 0), goal at (0, 3); the only way round the wall is 7 moves.
HAND_MAZE = walls_from_strings(["..#.", "..#.", "#...", "###."])
HAND_START, HAND_GOAL = (0, 0), (0, 3)


class ShortestPathTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_python_bfs_on_random_grids_with_loops(self):
        # Random walls (not mazes): many loops, disconnected regions, starts on walls.
        rng = np.random.default_rng(0)
        walls = rng.random((60, 7, 7)) < 0.35
        starts, goals = rng.integers(0, 7, (60, 2)), rng.integers(0, 7, (60, 2))
        distances = self.variant(jax.vmap(shortest_path_distance))(walls, starts, goals)
        chex.assert_shape(distances, (60,))
        expected = [python_bfs(w, s, g) for w, s, g in zip(walls, starts, goals)]
        np.testing.assert_array_equal(distances, expected)
        assert (np.array(expected) == -1).any() and (np.array(expected) > 3).any()  # both cases covered

    @chex.variants(with_jit=True, without_jit=True)
    def test_hand_maze(self):
        distance = self.variant(shortest_path_distance)
        assert int(distance(HAND_MAZE, jnp.array(HAND_START), jnp.array(HAND_GOAL))) == 7
        enclosed = walls_from_strings([".#..", "#...", "....", "...."])
        assert int(distance(enclosed, jnp.array([0, 0]), jnp.array([3, 3]))) == -1


HAND_ENV = Maze(size=4)  # one instance: `env.step` is jitted with the env static


@pytest.fixture(scope="module")
def reset_states():
    obs, states = reset_batch("Maze-v0")
    chex.assert_shape(obs, (NUM_RESETS, 3 * 6 * 6))
    return states


def test_generated_start_goal_distinct_and_reachable(reset_states):
    positions = zip(reset_states.agent_position, reset_states.goal_position)
    for walls, (start, goal) in zip(reset_states.walls, positions):
        assert not walls[tuple(start)] and not walls[tuple(goal)]
        assert tuple(start) != tuple(goal)
        assert python_bfs(walls, start, goal) > 0


def test_generated_mazes_are_spanning_trees_and_differ(reset_states):
    for walls, goal_distances in zip(reset_states.walls, reset_states.goal_distances):
        free = ~walls
        # Connected (every free cell reaches the goal) and acyclic (edges = cells - 1).
        assert (goal_distances[free] >= 0).all() and (goal_distances[walls] == -1).all()
        edges = (free[1:] & free[:-1]).sum() + (free[:, 1:] & free[:, :-1]).sum()
        assert edges == free.sum() - 1
    assert len({w.tobytes() for w in reset_states.walls}) > NUM_RESETS * 0.9


def test_cached_distance_field_matches_python_bfs(reset_states):
    for i in range(0, NUM_RESETS, 10):
        walls, goal = reset_states.walls[i], reset_states.goal_position[i]
        for cell in zip(*np.nonzero(~walls)):
            assert reset_states.goal_distances[i][cell] == python_bfs(walls, cell, goal)


def _hand_state(time=0):
    return EnvState(
        time=jnp.int32(time),
        walls=jnp.array(HAND_MAZE),
        agent_position=jnp.array(HAND_START, dtype=jnp.int32),
        goal_position=jnp.array(HAND_GOAL, dtype=jnp.int32),
        goal_distances=grid.distance_field(~jnp.array(HAND_MAZE), jnp.array(HAND_GOAL)),
    )


def test_walls_and_border_block_and_goal_terminates():
    env = HAND_ENV
    params = env.default_params
    state, key = _hand_state(), jax.random.key(1)
    # (action, expected position, expected distance to goal)
    script = [
        (UP, (0, 0), 7),  # border
        (RIGHT, (0, 1), 6),
        (RIGHT, (0, 1), 6),  # wall at (0, 2)
        (DOWN, (1, 1), 5),
        (DOWN, (2, 1), 4),
        (RIGHT, (2, 2), 3),
        (RIGHT, (2, 3), 2),
        (UP, (1, 3), 1),
    ]
    for action, position, distance in script:
        key, step_key = jax.random.split(key)
        obs, state, reward, terminated, truncated, info = env.step(step_key, state, action, params)
        np.testing.assert_array_equal(state.agent_position, position)
        assert int(info["distance_to_goal"]) == distance
        assert float(reward) == 0.0 and not terminated and not truncated
        np.testing.assert_array_equal(obs.reshape(3, 4, 4)[1], grid.cell_mask(jnp.array(position), (4, 4)))

    obs, next_state, reward, terminated, truncated, info = env.step(key, state, UP, params)
    assert float(reward) == 1.0 and bool(terminated) and not bool(truncated)
    assert int(info["distance_to_goal"]) == 0
    final = info["final_observation"].reshape(3, 4, 4)
    assert final[1, 0, 3] == 1.0 and final[2, 0, 3] == 1.0  # agent on goal before the auto-reset
    assert int(next_state.time) == 0  # auto-reset
    np.testing.assert_array_equal(obs, env.observe(None, next_state, None, params))


def test_step_limit_truncates_without_terminating():
    env = HAND_ENV
    params = env.default_params.replace(max_steps_in_episode=3)
    state = _hand_state(time=2)
    _, state, reward, terminated, truncated, info = env.step(jax.random.key(0), state, RIGHT, params)
    assert bool(truncated) and not bool(terminated) and float(reward) == 0.0
    assert int(state.time) == 0  # auto-reset
    assert info["final_observation"].reshape(3, 4, 4)[1, 0, 1] == 1.0


def test_spaces_and_validation():
    env, params = make_env("Maze-v0")
    assert isinstance(env, Maze)
    assert params.max_steps_in_episode == 4 * 6 * 6
    assert env.observation_space(params).shape == (108,)
    assert env.action_space(params).n == env.num_actions == 4
    with pytest.raises(ValueError, match="size"):
        Maze(size=1)


def test_a_layout_seed_fixes_maze_start_and_goal_for_every_reset():
    env = Maze(size=5, layout_seed=3)
    params = env.default_params
    _, states = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(
        jax.random.split(jax.random.PRNGKey(0), 4), params
    )
    for leaf in (states.walls, states.agent_position, states.goal_position):
        assert (np.asarray(leaf) == np.asarray(leaf[:1])).all()
    _, expected = Maze(size=5).reset(jax.random.PRNGKey(3), params)  # the maze of that seed
    np.testing.assert_array_equal(states.walls[0], expected.walls)
    np.testing.assert_array_equal(states.goal_position[0], expected.goal_position)
    with pytest.raises(ValueError, match="layout_seed"):
        Maze(size=5, layout_seed=-2)
