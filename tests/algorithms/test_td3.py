"""TD3: target smoothing and clipped double-Q against float64 numpy, delayed actor/target
updates, config validation, a Pendulum-v1 learning test and bit-exact resume through
`training.run`."""

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxrl_llm.algorithms.td3 import (
    TD3Config,
    critic_loss,
    evaluate,
    make_td3,
    smoothed_target_action,
    td3_actor_loss,
    td3_target,
)
from jaxrl_llm.config import to_dict
from jaxrl_llm.rollout.replay import Transition
from jaxrl_llm.training import make_train, run


def f64(x):
    return np.asarray(x, np.float64)


def np_smoothed_target(mu, eps, sigma, c):
    out = np.empty_like(mu)
    for i, j in np.ndindex(mu.shape):  # element by element, as eq. 14 reads
        noise = min(max(sigma * eps[i, j], -c), c)
        out[i, j] = min(max(mu[i, j] + noise, -1.0), 1.0)
    return out


class TD3LossTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_smoothed_target_and_clipped_double_q_match_numpy(self):
        rng = np.random.default_rng(0)
        B, A = 64, 2
        mu = rng.uniform(-1, 1, (B, A)).astype(np.float32)
        eps = rng.normal(0, 3, (B, A)).astype(np.float32)  # wide: both clips are exercised
        got = self.variant(smoothed_target_action, static_argnums=(2, 3))(mu, eps, 0.2, 0.5)
        expected = np_smoothed_target(f64(mu), f64(eps), 0.2, 0.5)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        noise = np.abs(f64(eps) * 0.2)
        assert (noise > 0.5).any() and (np.abs(f64(mu) + f64(eps) * 0.2) > 1).any()  # clips were active
        assert np.abs(np.asarray(got) - f64(mu)).max() <= 0.5 + 1e-6

        reward = rng.normal(size=B).astype(np.float32)
        terminated = rng.random(B) < 0.25
        discount = (0.98 * (1 - terminated)).astype(np.float32)
        next_q = rng.normal(size=(2, B)).astype(np.float32)
        target = self.variant(td3_target)(reward, discount, next_q)
        expected_y = f64(reward) + f64(discount) * np.minimum(f64(next_q[0]), f64(next_q[1]))
        np.testing.assert_allclose(target, expected_y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(target)[terminated], reward[terminated], rtol=1e-6)
        q = rng.normal(size=(2, B)).astype(np.float32)
        np.testing.assert_allclose(
            self.variant(critic_loss)(q, target), 0.5 * ((f64(q) - expected_y) ** 2).mean(1).sum(), rtol=1e-5
        )
        np.testing.assert_allclose(self.variant(td3_actor_loss)(q), -f64(q[0]).mean(), rtol=1e-5)


def _setup(**overrides):
    settings = dict(hidden_sizes=(16, 16), batch_size=8, buffer_size=64, learning_starts=0)
    config = TD3Config(**{**settings, **overrides})
    algorithm = make_td3(config)
    state, _ = jax.jit(algorithm.init)(jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    k = config.gradient_steps
    batch = Transition(
        obs=jnp.asarray(rng.normal(size=(8, k, 3)), jnp.float32),
        action=jnp.asarray(rng.uniform(-1, 1, (8, k, 1)), jnp.float32),
        reward=jnp.asarray(rng.normal(size=(8, k)), jnp.float32),
        next_obs=jnp.asarray(rng.normal(size=(8, k, 3)), jnp.float32),
        terminated=jnp.asarray(rng.random((8, k)) < 0.3),
        truncated=jnp.zeros((8, k), bool),
    )
    return config, algorithm, state, batch


def _changed(a, b) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("policy_delay", [2, 3])
def test_actor_and_targets_move_exactly_every_policy_delay_critic_steps(policy_delay):
    config, algorithm, state, batch = _setup(policy_delay=policy_delay)
    learn = jax.jit(lambda s, k: algorithm.learn(s, batch, k, None))
    for step in range(1, 3 * policy_delay + 1):
        new, metrics = learn(state, jax.random.PRNGKey(step))
        due = step % policy_delay == 0
        assert _changed(new.params["critic"], state.params["critic"]), step  # every step
        assert _changed(new.params["actor"], state.params["actor"]) == due, step
        assert _changed(new.target_params, state.target_params) == due, step
        assert float(metrics["actor_updated"]) == float(due)
        if due:  # Polyak average of the *new* online networks
            expected = jax.tree.map(lambda o, t: 0.005 * o + 0.995 * t, new.params, state.target_params)
            chex.assert_trees_all_close(new.target_params, expected, rtol=1e-6, atol=1e-7)
        state = new
    assert int(state.step) == 3 * policy_delay


def test_delay_counts_gradient_steps_across_updates():
    # 3 gradient steps per update, delay 2: actor steps at critic steps 2, 4, 6 -> 1, 2 of 3
    config, algorithm, state, batch = _setup(gradient_steps=3, policy_delay=2)
    learn = jax.jit(lambda s, k: algorithm.learn(s, batch, k, None))
    state, m1 = learn(state, jax.random.PRNGKey(0))
    state, m2 = learn(state, jax.random.PRNGKey(1))
    np.testing.assert_allclose([m1["actor_updated"], m2["actor_updated"]], [1 / 3, 2 / 3], rtol=1e-6)
    assert int(state.step) == 6


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("policy_delay", 0, r"TD3Config.policy_delay=0 is invalid: must lie in \[1, inf\]"),
        ("noise_clip", -0.1, r"TD3Config.noise_clip=-0.1 is invalid"),
        ("tau", 1.5, r"TD3Config.tau=1.5 is invalid: must lie in \(0.0, 1.0\]"),
        ("hidden_sizes", (), r"TD3Config.hidden_sizes=\(\) is invalid"),
    ],
)
def test_invalid_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        TD3Config(**{field: value})


def test_discrete_env_is_refused():
    with pytest.raises(ValueError, match=r"TD3Config.env='CartPole-v1' is invalid: TD3 needs a continuous"):
        make_td3(TD3Config(env="CartPole-v1"))


@pytest.mark.slow
def test_td3_learns_pendulum():
    config = TD3Config()  # the defaults: 20k frames
    start = time.perf_counter()
    state, metrics = jax.jit(make_train(make_td3(config)))(jax.random.PRNGKey(0))
    final = float(evaluate(config, state.train_state.params, jax.random.PRNGKey(123), 20).mean())
    evals = np.asarray(metrics["eval_return_mean"])
    print(
        f"TD3 Pendulum: evals {evals[np.isfinite(evals)]}, final greedy {final:.0f}, {time.perf_counter() - start:.0f} s"
    )
    assert final >= -250, final


@pytest.mark.slow
def test_resume_through_run_is_bit_identical(tmp_path):
    # with a ReaCritic critic (DDPG's resume is this code path too): its noise and dropout
    # keys must come back exactly as well
    small = dict(
        hidden_sizes=(16, 16),
        batch_size=16,
        buffer_size=500,
        learning_starts=50,
        num_envs=2,
        gradient_steps=2,
        eval_interval=100,
        eval_episodes=2,
        max_episode_steps=40,
        critic="reacritic",
        reacritic_width=8,
        reacritic_steps=2,
        reacritic_depth=1,
    )
    short, long = TD3Config(total_frames=200, **small), TD3Config(total_frames=400, **small)
    options = dict(seed=3, checkpoint_every=30, progress=False, stall_seconds=0)

    def go(config, out, resume=False):
        return run(make_td3(config), {"algorithm": "td3", **to_dict(config)}, out, resume=resume, **options)

    whole = go(long, tmp_path / "whole")
    go(short, tmp_path / "split")  # 100 updates: stops inside a 30-update chunk
    resumed = go(long, tmp_path / "split", resume=True)
    chex.assert_trees_all_equal(resumed.train_state, whole.train_state)
    chex.assert_trees_all_equal(resumed.collect_state, whole.collect_state)
    assert int(whole.train_state.updates) == long.num_updates
    rows = (tmp_path / "split" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + long.num_updates  # header + one row per update, none repeated
