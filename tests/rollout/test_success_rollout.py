"""`Trajectory.success`: the env's own success flag, on the transition that ended the episode."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces
from gymnax.environments.misc.frozen_lake import GOAL, HOLE

from jaxrl_llm import envs
from jaxrl_llm.rollout import Trajectory, episode_success_rate, grouped_rollout, rollout


def uniform_policy(num_actions):
    def policy(params, obs, key):
        action = jax.random.randint(key, (obs.shape[0],), 0, num_actions)
        return action, jnp.full(obs.shape[0], -jnp.log(float(num_actions))), {}

    return policy


def reference_rate(ended: np.ndarray, succeeded: np.ndarray) -> float:
    """Python loop: successes among the finished episodes, NaN when none finished."""
    finished = successes = 0
    for t in range(ended.shape[0]):
        for n in range(ended.shape[1]):
            if ended[t, n]:
                finished += 1
                successes += bool(succeeded[t, n])
    return successes / finished if finished else float("nan")


class AutoResetRolloutTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_frozen_lake_success_belongs_to_the_transition_that_ended_the_episode(self):
        # Slippery 4x4: many short episodes, ending in holes and (rarely) at the goal. After
        # the auto-reset the agent is back on the start, so a flag read from the reset state
        # would always be False.
        env, params = envs.make("FrozenLake-misc")
        run = self.variant(lambda key: rollout(key, env, params, uniform_policy(4), None, 16, 96))
        traj, _ = run(jax.random.key(0))
        chex.assert_shape([traj.success, traj.terminated, traj.reward], (96, 16))
        chex.assert_type(traj.success, bool)
        # independent reference: the tile under the pre-reset final observation
        tile = np.asarray(env.desc).reshape(-1)[np.asarray(traj.next_obs)]
        success = np.asarray(traj.success)
        np.testing.assert_array_equal(success, tile == GOAL)
        np.testing.assert_array_equal(success, np.asarray(traj.reward) == 1.0)
        assert success.any() and (tile == HOLE).any()
        assert not (success & ~np.asarray(traj.terminated)).any()
        np.testing.assert_array_equal(np.asarray(traj.episode_succeeded), success)  # all steps valid
        np.testing.assert_allclose(
            float(episode_success_rate(traj)),
            reference_rate(np.asarray(traj.episode_ended), success),
            rtol=1e-6,
        )

    def test_cliff_walking_success_rate_with_negative_returns(self):
        env, params = envs.make_configured("CliffWalking-v0", max_episode_steps=30)

        def mostly_right(params, obs, key):  # right along the top row, then down to the goal
            n = obs.shape[0]
            explore = jax.random.uniform(key, (n,)) < 0.2
            row, col = obs // 12, obs % 12
            greedy = jnp.where(row == 3, 0, jnp.where(col == 11, 2, 1))
            action = jnp.where(explore, jax.random.randint(key, (n,), 0, 4), greedy)
            return action, jnp.zeros(n), {}

        traj, _ = jax.jit(lambda key: rollout(key, env, params, mostly_right, None, 8, 120))(
            jax.random.key(2)
        )
        ended, success = np.asarray(traj.episode_ended), np.asarray(traj.success)
        returns = np.asarray(traj.episode_return)[ended]
        assert (returns < 0).all()  # `return > 0` would call every episode a failure
        np.testing.assert_array_equal(success, np.asarray(traj.terminated))
        assert success.any() and (ended & ~success).any()  # goals and time-outs
        rate = float(episode_success_rate(traj))
        assert 0.0 < rate < 1.0
        np.testing.assert_allclose(rate, reference_rate(ended, success), rtol=1e-6)


class GroupedRolloutTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_maze_members_succeed_at_most_once_where_the_agent_is_on_the_goal(self):
        env, params = envs.make_configured("Maze-v0", {"size": 4}, max_episode_steps=24)
        run = self.variant(lambda key: grouped_rollout(key, env, params, uniform_policy(4), None, 4, 4, 24))
        traj, _ = run(jax.random.key(1))
        chex.assert_shape([traj.success, traj.valid], (24, 16))
        chex.assert_type(traj.success, bool)
        final = np.asarray(traj.next_obs).reshape(24, 16, 3, 16)
        on_goal = (final[:, :, 1] * final[:, :, 2]).sum(-1) > 0  # agent and goal channels overlap
        np.testing.assert_array_equal(np.asarray(traj.success), on_goal)
        succeeded, ended = np.asarray(traj.episode_succeeded), np.asarray(traj.episode_ended)
        np.testing.assert_array_equal(ended.sum(0), 1)  # every member ends: the limit is the length
        assert succeeded.sum(0).max() == 1 and 0 < succeeded.sum() < 16
        # the per-member success GRPO would use: one flag per episode
        member_success = succeeded.any(0)
        np.testing.assert_array_equal(
            member_success, (np.asarray(traj.reward) * np.asarray(traj.valid)).sum(0) > 0
        )
        np.testing.assert_allclose(float(episode_success_rate(traj)), member_success.mean(), rtol=1e-6)


def test_envs_without_success_store_false():
    env, params = envs.make("CartPole-v1")
    assert not envs.has_success(env)
    traj, _ = jax.jit(lambda key: rollout(key, env, params, uniform_policy(2), None, 8, 64))(
        jax.random.key(0)
    )
    chex.assert_shape(traj.success, (64, 8))
    chex.assert_type(traj.success, bool)
    assert not np.asarray(traj.success).any() and np.asarray(traj.episode_ended).any()
    assert float(episode_success_rate(traj)) == 0.0  # `has_success(env)` says this means "no notion"


@struct.dataclass
class _State(environment.EnvState):
    pass


class _ClaimsSuccess(environment.Environment):
    """Declares `reports_success` but forgets `info["success"]`."""

    reports_success = True

    @property
    def default_params(self):
        return environment.EnvParams(max_steps_in_episode=5)

    def step_env(self, key, state, action, params):
        state = _State(time=state.time + 1)
        return jnp.zeros(1), state, jnp.float32(0.0), jnp.array(False), {}

    def reset_env(self, key, params):
        return jnp.zeros(1), _State(time=0)

    def action_space(self, params=None):
        return spaces.Discrete(2)


def test_declared_success_without_the_info_key_is_an_error():
    env = _ClaimsSuccess()
    with pytest.raises(ValueError, match="reports_success.*info\\['success'\\]"):
        rollout(jax.random.key(0), env, env.default_params, uniform_policy(2), None, 2, 3)


def fake_trajectory(terminated, truncated, success, valid) -> Trajectory:
    zeros = jnp.zeros(terminated.shape)
    return Trajectory(
        obs=zeros,
        action=zeros,
        reward=zeros,
        terminated=jnp.asarray(terminated),
        truncated=jnp.asarray(truncated),
        success=jnp.asarray(success),
        log_prob=zeros,
        next_obs=zeros,
        episode_return=zeros,
        episode_length=zeros,
        valid=jnp.asarray(valid),
        extras={},
    )


class EpisodeSuccessRateTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_a_python_loop(self):
        rate_fn = self.variant(episode_success_rate)
        rng = np.random.default_rng(0)
        for end_probability in (0.05, 0.3, 0.9):
            shape = (13, 7)
            terminated = rng.random(shape) < end_probability
            truncated = rng.random(shape) < end_probability / 2
            success = terminated & (rng.random(shape) < 0.5)
            valid = rng.random(shape) < 0.8  # successes on invalid steps must not count
            ended = (terminated | truncated) & valid
            rate = rate_fn(fake_trajectory(terminated, truncated, success, valid))
            chex.assert_shape(rate, ())
            chex.assert_type(rate, jnp.float32)
            np.testing.assert_allclose(float(rate), reference_rate(ended, success & valid), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_nan_when_no_episode_finished(self):
        shape = (4, 3)
        running = np.zeros(shape, bool)
        # a success on a step that does not count (invalid) is still "no finished episode"
        invalid_success = running.copy()
        invalid_success[1, 2] = True
        traj = fake_trajectory(invalid_success, running, invalid_success, ~invalid_success)
        rate = self.variant(episode_success_rate)(traj)
        assert np.isnan(float(rate))
        all_succeed = fake_trajectory(~running, running, ~running, ~running)
        assert float(self.variant(episode_success_rate)(all_succeed)) == 1.0
