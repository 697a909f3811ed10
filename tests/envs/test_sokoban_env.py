"""Sokoban-v0: solvable generated levels, exact gym-sokoban rewards, jit/vmap, rendering.

Few compilations (they dominate the runtime on CPU): one vmapped reset per search depth,
one vmapped `step_env` for all hand-built cases, one jitted random rollout.
"""

import functools
from collections import deque

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from envs_test_utils import walls_from_strings

from jaxrl_llm import envs
from jaxrl_llm.envs import render_image, render_text
from jaxrl_llm.envs.render import PALETTE, Cell, cell_codes, symbol_of
from jaxrl_llm.envs.sokoban import EnvState, Sokoban, fallback_level
from jaxrl_llm.models.char_tokenizer import DEFAULT_ALPHABET

UP, RIGHT, DOWN, LEFT = range(4)
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))  # UP, RIGHT, DOWN, LEFT
NUM_KEYS = 64
ENV = Sokoban()  # one instance: jit caches keyed on the env are reused
PARAMS = ENV.default_params
SHALLOW_DEPTH = 3

# gym-sokoban's reward terms, summed in its order as float32.
STEP, ON, OFF, FINISHED = np.float32(-0.1), np.float32(1.0), np.float32(-1.0), np.float32(10.0)
SOLVING_REWARD = STEP + ON + FINISHED  # a push onto the target solves a one-box level


# --- independent Python reference ------------------------------------------------------


def python_step(walls, agent, box, action):
    """gym-sokoban's push rule on tuples: `(agent, box)` after `action`."""
    d_row, d_col = MOVES[action]
    ahead = (agent[0] + d_row, agent[1] + d_col)
    if walls[ahead]:
        return agent, box
    if ahead != box:
        return ahead, box
    beyond = (box[0] + d_row, box[1] + d_col)
    if walls[beyond]:
        return agent, box
    return ahead, beyond


def solve(walls, agent, box, target):
    """BFS over (player, box) states: fewest moves to put the box on `target`; None if impossible."""
    start = (tuple(int(v) for v in agent), tuple(int(v) for v in box))
    target = tuple(int(v) for v in target)
    steps, queue = {start: 0}, deque([start])
    while queue:
        state = queue.popleft()
        if state[1] == target:
            return steps[state]
        for action in range(4):
            nxt = python_step(walls, *state, action)
            if nxt not in steps:
                steps[nxt] = steps[state] + 1
                queue.append(nxt)
    return None


def connected(free):
    """Whether the `True` cells of `free` form one 4-connected region."""
    cells = list(zip(*np.nonzero(free)))
    seen, queue = {cells[0]}, deque([cells[0]])
    while queue:
        row, col = queue.popleft()
        for d_row, d_col in MOVES:
            nxt = (row + d_row, col + d_col)
            if 0 <= nxt[0] < free.shape[0] and 0 <= nxt[1] < free.shape[1] and free[nxt] and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return len(seen) == len(cells)


def box_distance(states):
    return np.abs(np.asarray(states.box_position) - np.asarray(states.target_position)).sum(-1)


# --- generated levels ------------------------------------------------------------------


def _keys():
    keys = jax.random.split(jax.random.key(0), NUM_KEYS)
    return keys.at[-1].set(keys[0])  # the last level repeats the first key


@functools.cache
def reset_levels(search_depth: int = ENV.search_depth):
    env = ENV if search_depth == ENV.search_depth else Sokoban(search_depth=search_depth)
    return jax.device_get(jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(_keys(), PARAMS))


def _level(states, i):
    return jax.tree.map(lambda leaf: leaf[i], states)


def test_generated_levels_are_solvable_and_start_unsolved():
    obs, states = reset_levels()
    chex.assert_shape(obs, (NUM_KEYS, 4 * 6 * 6))
    for i in range(NUM_KEYS):
        level = _level(states, i)
        walls = level.walls
        assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
        assert connected(~walls)
        for position in (level.agent_position, level.box_position, level.target_position):
            assert not walls[tuple(position)]
        assert tuple(level.agent_position) != tuple(level.box_position)
        assert tuple(level.box_position) != tuple(level.target_position)
        moves = solve(walls, level.agent_position, level.box_position, level.target_position)
        assert moves is not None and moves > 0, f"level {i} is unsolvable"
        channels = obs[i].reshape(4, 6, 6)
        np.testing.assert_array_equal(channels[0], walls)
        assert channels[1:].sum() == 3 and channels[2][tuple(level.box_position)] == 1
    assert int(states.time.max()) == 0


def test_same_key_same_level_and_different_keys_differ():
    _, states = reset_levels()
    levels = [
        np.concatenate([np.asarray(leaf[i]).reshape(-1) for leaf in jax.tree.leaves(states)]).tobytes()
        for i in range(NUM_KEYS)
    ]
    assert levels[0] == levels[-1]
    assert len(set(levels)) >= 0.9 * (NUM_KEYS - 1)
    assert len({np.asarray(states.walls[i]).tobytes() for i in range(NUM_KEYS)}) >= NUM_KEYS // 2


def test_search_depth_pushes_boxes_further():
    shallow = box_distance(reset_levels(SHALLOW_DEPTH)[1])
    deep = box_distance(reset_levels()[1])
    assert shallow.max() <= SHALLOW_DEPTH  # the box moves at most one cell per reverse move
    assert deep.mean() > shallow.mean() + 0.2, (deep.mean(), shallow.mean())
    assert deep.max() > SHALLOW_DEPTH


@pytest.mark.parametrize("shape", [(5, 5), (6, 6), (5, 8), (9, 7)])
def test_fallback_level_is_solvable(shape):
    level = jax.device_get(fallback_level(shape))
    assert level.walls[1:-1, 1:-1].sum() == 0 and level.walls.sum() == 2 * (shape[0] + shape[1]) - 4
    assert solve(level.walls, level.agent_position, level.box_position, level.target_position) > 0


# --- hand-built dynamics and rewards ---------------------------------------------------

# Target (+) at (1, 3), an inner wall at (2, 2).
ROOM = walls_from_strings(["######", "#....#", "#.#..#", "#....#", "#....#", "######"])
TARGET = (1, 3)

# (name, agent, box, action, next agent, next box, reward, terminated)
CASES = [
    ("walk into the outer wall", (3, 1), (4, 4), LEFT, (3, 1), (4, 4), STEP, False),
    ("walk into the inner wall", (3, 2), (4, 4), UP, (3, 2), (4, 4), STEP, False),
    ("plain step", (3, 1), (4, 4), RIGHT, (3, 2), (4, 4), STEP, False),
    ("push box into the outer wall", (3, 2), (3, 1), LEFT, (3, 2), (3, 1), STEP, False),
    ("push box into the inner wall", (4, 2), (3, 2), UP, (4, 2), (3, 2), STEP, False),
    ("push box along the floor", (3, 1), (3, 2), RIGHT, (3, 2), (3, 3), STEP, False),
    ("push box onto the target (solves)", (1, 1), (1, 2), RIGHT, (1, 2), (1, 3), SOLVING_REWARD, True),
    ("push box off the target", (1, 4), (1, 3), LEFT, (1, 3), (1, 2), STEP + OFF, False),
    ("push box on target into the wall", (2, 3), (1, 3), UP, (2, 3), (1, 3), STEP + FINISHED, True),
]


def _state(agent, box, time=0):
    return EnvState(
        time=jnp.int32(time),
        walls=jnp.asarray(ROOM),
        target_position=jnp.array(TARGET, jnp.int32),
        box_position=jnp.array(box, jnp.int32),
        agent_position=jnp.array(agent, jnp.int32),
    )


def test_hand_built_moves_pushes_and_exact_rewards():
    states = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[_state(c[1], c[2]) for c in CASES])
    actions = jnp.array([c[3] for c in CASES])
    step = jax.jit(jax.vmap(ENV.step_env, in_axes=(None, 0, 0, None)))
    obs, next_states, reward, terminated, info = jax.device_get(
        step(jax.random.key(0), states, actions, PARAMS)
    )
    assert reward.dtype == np.float32
    for i, (name, agent, box, _, next_agent, next_box, expected, done) in enumerate(CASES):
        assert tuple(next_states.agent_position[i]) == next_agent, name
        assert tuple(next_states.box_position[i]) == next_box, name
        assert python_step(ROOM, agent, box, CASES[i][3]) == (next_agent, next_box), name
        assert reward[i] == expected, (name, reward[i], expected)  # exactly, as float32
        assert bool(terminated[i]) == done and bool(info["success"][i]) == done, name
        assert int(info["boxes_on_target"][i]) == int(next_box == TARGET), name
        assert bool(info["moved_player"][i]) == (next_agent != agent), name
        assert bool(info["moved_box"][i]) == (next_box != box), name
        assert int(next_states.time[i]) == 1
        channels = obs[i].reshape(4, 6, 6)
        assert channels[2][next_box] == 1 and channels[3][next_agent] == 1 and channels[1][TARGET] == 1
    assert SOLVING_REWARD == pytest.approx(10.9) and STEP + OFF == pytest.approx(-1.1)


# --- jitted random rollout -------------------------------------------------------------

NUM_STEPS = 300


@functools.partial(jax.jit, static_argnums=0)
def random_rollout(env, params, state, key):
    """`[T, N]` states (before each step), actions, rewards, flags and infos of random play."""
    num_envs = state.time.shape[0]

    def one_step(state, key):
        key_action, key_step = jax.random.split(key)
        actions = jax.random.randint(key_action, (num_envs,), 0, env.num_actions)
        step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
        obs, next_state, reward, terminated, truncated, info = step(
            jax.random.split(key_step, num_envs), state, actions, params
        )
        return next_state, (state, obs, actions, reward, terminated, truncated, info)

    return jax.lax.scan(one_step, state, jax.random.split(key, NUM_STEPS))[1]


def test_random_rollout_matches_reference_and_keeps_invariants():
    _, states = reset_levels()
    trajectory = jax.device_get(random_rollout(ENV, PARAMS, states, jax.random.key(1)))
    before, obs, actions, reward, terminated, truncated, info = trajectory
    chex.assert_shape([reward, terminated, truncated, info["success"]], (NUM_STEPS, NUM_KEYS))
    channels = obs.reshape(NUM_STEPS, NUM_KEYS, 4, 6, 6)
    walls, targets, boxes, players = (channels[:, :, c] for c in range(4))
    assert (boxes.sum((-1, -2)) == 1).all() and (players.sum((-1, -2)) == 1).all()
    assert (targets.sum((-1, -2)) == 1).all()
    assert not (players * walls).any() and not (players * boxes).any() and not (boxes * walls).any()
    # Every transition follows the reference rules (after auto-resets the next state is new).
    done = terminated | truncated
    for t in range(NUM_STEPS - 1):
        for n in range(NUM_KEYS):
            walls_tn = before.walls[t, n]
            agent, box = tuple(before.agent_position[t, n]), tuple(before.box_position[t, n])
            expected_agent, expected_box = python_step(walls_tn, agent, box, actions[t, n])
            if not done[t, n]:
                assert tuple(before.agent_position[t + 1, n]) == expected_agent
                assert tuple(before.box_position[t + 1, n]) == expected_box
            assert terminated[t, n] == (expected_box == tuple(before.target_position[t, n]))
    # One box: a push onto the target solves the level, so no other positive reward exists.
    success = info["success"]
    np.testing.assert_array_equal(success, terminated)
    np.testing.assert_array_equal(reward[success], SOLVING_REWARD)
    np.testing.assert_array_equal(reward[~success], STEP)
    assert success.any() and truncated.any()
    np.testing.assert_array_equal(info["boxes_on_target"], success.astype(np.int32))


# --- rendering, registry, validation ---------------------------------------------------

LEGEND = "legend: #=wall .=floor +=target B=box *=box on target A=agent"


@pytest.mark.parametrize(
    "agent, box, second_row",
    [((1, 1), (1, 2), "#AB+.#"), ((1, 2), (1, 3), "#.A*.#"), ((1, 3), (1, 2), "#.BA.#")],
    ids=["box", "box-on-target", "agent-on-target"],
)
def test_render_text_symbols(agent, box, second_row):
    text = render_text(ENV, _state(agent, box))
    expected = ["######", second_row, "#.#..#", "#....#", "#....#", "######", LEGEND]
    assert text.split("\n") == expected


def test_render_image_and_new_cells():
    state = _state((1, 1), (1, 2))
    image = render_image(ENV, state, cell_px=3)
    chex.assert_shape(image, (18, 18, 3))
    assert image.dtype == jnp.uint8
    np.testing.assert_array_equal(image[::3, ::3], PALETTE[np.asarray(cell_codes(ENV, state))])
    assert tuple(image[3, 6]) == tuple(PALETTE[Cell.BOX]) and tuple(image[3, 9]) == tuple(
        PALETTE[Cell.TARGET]
    )
    new = (Cell.BOX, Cell.TARGET, Cell.BOX_ON_TARGET)
    assert [symbol_of(cell) for cell in new] == ["B", "+", "*"]
    assert all(symbol_of(cell) in DEFAULT_ALPHABET for cell in Cell)
    assert len({symbol_of(cell) for cell in Cell}) == len(Cell)


def test_registry_spaces_and_validation():
    env, params = envs.make("Sokoban-v0")
    assert isinstance(env, Sokoban) and isinstance(gymnax.make("Sokoban-v0")[0], Sokoban)
    assert envs.has_success("Sokoban-v0") and env.name == "Sokoban-v0"
    assert params.max_steps_in_episode == 100 and env.search_depth == 30 and env.shape == (6, 6)
    assert env.observation_space(params).shape == (144,)
    assert env.action_space(params).n == env.num_actions == 4
    assert set(env.state_space(params).spaces) == {
        "walls",
        "target_position",
        "box_position",
        "agent_position",
        "time",
    }
    env, params = envs.make("Sokoban-v0", dim_room="7", search_depth="50")  # command-line strings
    assert env.shape == (7, 7) and env.search_depth == 50
    assert Sokoban(dim_room=(5, 8)).observation_space(params).shape == (160,)
    for kwargs, message in [
        ({"dim_room": 4}, "dim_room"),
        ({"dim_room": (6,)}, "dim_room"),
        ({"dim_room": 6.5}, "dim_room"),
        ({"num_boxes": 2}, "num_boxes=1"),
        ({"search_depth": 0}, "search_depth"),
    ]:
        with pytest.raises(ValueError, match=message):
            Sokoban(**kwargs)
