"""evaluate_policy: one masked episode per slot, known returns, jit/vmap."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from jaxrl_llm.rollout import evaluate_episodes, evaluate_policy


@struct.dataclass
class WalkState(environment.EnvState):
    position: jax.Array


@struct.dataclass
class WalkParams(environment.EnvParams):
    max_steps_in_episode: int = 20


class Walk(environment.Environment):
    """A line of cells 0..goal, starting at cell `start` (drawn from {0, 1} when `random_start`).

    Action 1 moves right (reward 1 per move, +10 and termination on reaching `goal`),
    action 0 stays (reward 0). The time limit `max_steps_in_episode` truncates.
    """

    def __init__(self, goal=4, random_start=False):
        super().__init__()
        self.goal = goal
        self.random_start = random_start

    @property
    def default_params(self):
        return WalkParams()

    def step_env(self, key, state, action, params):
        position = state.position + action
        reached = position >= self.goal
        reward = action.astype(jnp.float32) + 10.0 * reached
        state = WalkState(time=state.time + 1, position=position)
        return self.get_obs(state), state, reward, reached, {}

    def reset_env(self, key, params):
        start = jax.random.randint(key, (), 0, 2) if self.random_start else jnp.int32(0)
        state = WalkState(time=0, position=start)
        return self.get_obs(state), state

    def get_obs(self, state):
        return jnp.stack([state.position, state.time]).astype(jnp.float32)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(0.0, 100.0, (2,), jnp.float32)


def go_right(params, obs, key):
    return jnp.ones((obs.shape[0],), jnp.int32)


def stay(params, obs, key):
    return jnp.zeros((obs.shape[0],), jnp.int32)


class EvaluateTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_known_returns_count_one_episode_each(self):
        env = Walk(goal=4)
        evaluate = self.variant(evaluate_policy, static_argnums=(1, 3, 5, 6))
        # 4 moves then termination: 4 + 10; later steps (auto-reset episodes) are masked out
        returns = evaluate(jax.random.PRNGKey(0), env, env.default_params, go_right, None, 3, 12)
        np.testing.assert_array_equal(returns, [14.0, 14.0, 14.0])
        assert returns.shape == (3,) and returns.dtype == jnp.float32

    def test_truncation_and_unfinished_episodes(self):
        env = Walk(goal=4)
        params = env.default_params.replace(max_steps_in_episode=6)
        stats = evaluate_episodes(jax.random.PRNGKey(0), env, params, stay, None, 2, 10)
        np.testing.assert_array_equal(stats.returns, [0.0, 0.0])
        np.testing.assert_array_equal(stats.lengths, [6, 6])  # truncated by the time limit
        assert bool(stats.finished.all())
        stats = evaluate_episodes(jax.random.PRNGKey(0), env, env.default_params, go_right, None, 2, 3)
        np.testing.assert_array_equal(stats.returns, [3.0, 3.0])  # cut by max_steps: partial return
        assert not bool(stats.finished.any())

    def test_random_starts_and_vmap_over_keys(self):
        env = Walk(goal=4, random_start=True)
        run = lambda key: evaluate_episodes(key, env, env.default_params, go_right, None, 16, 10)
        stats = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(3), 2))
        # from cell 0: 4 moves (return 14); from cell 1: 3 moves (return 13)
        np.testing.assert_array_equal(stats.returns, 10.0 + stats.lengths)
        assert set(np.asarray(stats.returns).ravel().tolist()) == {13.0, 14.0}
        single = run(jax.random.split(jax.random.PRNGKey(3), 2)[1])
        np.testing.assert_array_equal(single.returns, stats.returns[1])
