"""The last-100-episodes mean equals a plain list of finished episodes, across calls."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm.algorithms.ppo import PPOConfig, make_train
from jaxrl_llm.rollout import recent_returns_add, recent_returns_init, recent_returns_mean
from jaxrl_llm.rollout.trajectory import Trajectory


def fake_trajectory(ended: np.ndarray, returns: np.ndarray) -> Trajectory:
    zeros = jnp.zeros(ended.shape)
    return Trajectory(
        obs=zeros,
        action=zeros,
        reward=zeros,
        terminated=jnp.asarray(ended),
        truncated=jnp.zeros_like(ended),
        success=jnp.zeros_like(ended),
        log_prob=zeros,
        next_obs=zeros,
        episode_return=jnp.asarray(returns, jnp.float32),
        episode_length=zeros,
        valid=jnp.ones_like(ended),
        extras={},
    )


class RecentReturnsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.filterwarnings("ignore")
    def test_matches_a_list_of_finished_episodes(self):
        rng = np.random.default_rng(0)
        add = self.variant(recent_returns_add)
        stats, finished = recent_returns_init(window=10), []
        self.assertTrue(np.isnan(recent_returns_mean(stats)))
        # calls with no, few and more than `window` finished episodes
        for probability in (0.0, 0.1, 0.9, 0.05, 0.0, 0.5):
            ended = rng.random((6, 4)) < probability
            returns = np.where(ended, rng.normal(size=(6, 4)), 0.0).astype(np.float32)
            stats = add(stats, fake_trajectory(ended, returns))
            finished += list(returns[ended])  # time-major order, as a rollout delivers them
            if finished:
                np.testing.assert_allclose(recent_returns_mean(stats), np.mean(finished[-10:]), rtol=1e-5)
        self.assertEqual(int(stats.count), min(len(finished), 10))


def test_ppo_logs_a_value_every_update_once_an_episode_ended():
    config = PPOConfig(total_frames=4 * 128 * 6, max_episode_steps=400)  # episodes span updates later on
    _, metrics = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    recent = np.asarray(metrics["episode_return_last100"])
    assert np.isfinite(recent).all()
