"""SAC: losses against float64 numpy transcriptions of the papers' equations, the update's
order and target averaging, config validation, seeds under vmap, and learning tests
(continuous Pendulum-v1, discrete CartPole-v1)."""

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxrl_llm.algorithms.sac import (
    SACConfig,
    cartpole_config,
    critic_loss,
    discrete_sac_actor_loss,
    evaluate,
    discrete_soft_q_target,
    make_sac,
    polyak_update,
    sac_actor_loss,
    sac_gradient_step,
    soft_q_target,
    tanh_gaussian_log_prob,
    temperature_loss,
)
from jaxrl_llm.models.continuous import QEnsemble, TanhGaussianActor
from jaxrl_llm.rollout.replay import Transition
from jaxrl_llm.training import make_train

# ----------------------------------------------------------------------- numpy float64 references


def np_tanh_gaussian_log_prob(u, mean, log_std):
    """log N(u; mean, std) - log(1 - tanh(u)^2), summed over the last axis (direct formula)."""
    std = np.exp(log_std)
    gaussian = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    return (gaussian - np.log(1.0 - np.tanh(u) ** 2)).sum(-1)


def np_soft_q_target(reward, discount, next_q, next_log_prob, alpha):
    return reward + discount * (np.minimum.reduce(next_q, axis=0) - alpha * next_log_prob)


def np_discrete_soft_q_target(reward, discount, next_q, next_logits, alpha):
    log_p = next_logits - np.log(np.exp(next_logits).sum(-1, keepdims=True))
    p = np.exp(log_p)
    value = np.zeros_like(reward)
    for a in range(next_logits.shape[-1]):  # the expectation written out action by action
        value += p[:, a] * (np.min(next_q[:, :, a], axis=0) - alpha * log_p[:, a])
    return reward + discount * value


def f64(x):
    return np.asarray(x, np.float64)


class SACLossTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_tanh_gaussian_log_prob_matches_numpy(self):
        rng = np.random.default_rng(0)
        u = rng.normal(0, 2, (64, 3)).astype(np.float32)
        mean = rng.normal(0, 1, (64, 3)).astype(np.float32)
        log_std = rng.uniform(-2, 1, (64, 3)).astype(np.float32)
        got = self.variant(tanh_gaussian_log_prob)(u, mean, log_std)
        np.testing.assert_allclose(
            got, np_tanh_gaussian_log_prob(f64(u), f64(mean), f64(log_std)), rtol=2e-5, atol=2e-4
        )

    def test_tanh_correction_is_finite_where_the_naive_formula_is_not(self):
        # |u| = 30: 1 - tanh(u)^2 underflows in float32; the softplus form stays exact
        u = jnp.array([[30.0], [-30.0]])
        got = tanh_gaussian_log_prob(u, jnp.zeros_like(u), jnp.zeros_like(u))
        gaussian = -0.5 * 900 - 0.5 * np.log(2 * np.pi)
        correction = 2 * (np.log(2) - 30.0 - np.log1p(np.exp(-60.0)))  # log(1 - tanh(30)^2)
        np.testing.assert_allclose(got, [gaussian - correction] * 2, rtol=1e-6)

    def test_tanh_gaussian_density_integrates_to_one(self):
        # the change of variables is right iff pi(a) integrates to 1 over (-1, 1)
        a = np.linspace(-1 + 1e-6, 1 - 1e-6, 200_001)
        u = np.arctanh(a)[:, None]
        log_p = tanh_gaussian_log_prob(jnp.asarray(u), jnp.full_like(u, 0.3), jnp.full_like(u, -0.5))
        np.testing.assert_allclose(np.trapezoid(np.exp(np.asarray(log_p, np.float64)), a), 1.0, atol=1e-3)

    @chex.variants(with_jit=True, without_jit=True)
    def test_soft_q_target_and_critic_loss_match_numpy(self):
        rng = np.random.default_rng(1)
        reward = rng.normal(size=32).astype(np.float32)
        terminated = rng.random(32) < 0.3
        discount = (0.99 * (1 - terminated)).astype(np.float32)
        next_q = rng.normal(size=(2, 32)).astype(np.float32)
        next_log_prob = rng.normal(size=32).astype(np.float32)
        q = rng.normal(size=(2, 32)).astype(np.float32)
        alpha = np.float32(0.37)
        target = self.variant(soft_q_target)(reward, discount, next_q, next_log_prob, alpha)
        expected = np_soft_q_target(f64(reward), f64(discount), f64(next_q), f64(next_log_prob), 0.37)
        np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-5)
        # a terminated step does not bootstrap: its target is its reward
        np.testing.assert_allclose(np.asarray(target)[terminated], reward[terminated], rtol=1e-6)
        loss = self.variant(critic_loss)(q, target)
        np.testing.assert_allclose(loss, 0.5 * ((f64(q) - expected) ** 2).mean(1).sum(), rtol=1e-5)

    def test_target_has_no_gradient(self):
        grad = jax.grad(lambda nq: soft_q_target(jnp.ones(4), jnp.ones(4), nq, jnp.zeros(4), 0.1).sum())
        np.testing.assert_array_equal(grad(jnp.ones((2, 4))), 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_actor_and_temperature_losses_match_numpy(self):
        rng = np.random.default_rng(2)
        q_pi = rng.normal(size=(2, 16)).astype(np.float32)
        log_prob = rng.normal(size=16).astype(np.float32)
        alpha = np.float32(0.2)
        got = self.variant(sac_actor_loss)(q_pi, log_prob, alpha)
        np.testing.assert_allclose(got, (0.2 * f64(log_prob) - f64(q_pi).min(0)).mean(), rtol=1e-5)
        log_alpha = np.float32(-0.7)
        loss, grad = self.variant(jax.value_and_grad(temperature_loss))(log_alpha, log_prob, -1.0)
        np.testing.assert_allclose(loss, -(-0.7 * (f64(log_prob) - 1.0)).mean(), rtol=1e-5)
        np.testing.assert_allclose(grad, -(f64(log_prob) - 1.0).mean(), rtol=1e-5)

    def test_temperature_rises_when_entropy_is_below_target(self):
        low_entropy_log_prob = jnp.full(8, 2.0)  # entropy estimate -2 < target -1
        grad = jax.grad(temperature_loss)(jnp.float32(0.0), low_entropy_log_prob, -1.0)
        assert grad < 0  # gradient descent increases log alpha
        # and the policy gets no gradient from the temperature loss
        g_logp = jax.grad(temperature_loss, argnums=1)(jnp.float32(0.3), low_entropy_log_prob, -1.0)
        np.testing.assert_array_equal(g_logp, 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_discrete_targets_and_actor_loss_are_exact_expectations(self):
        rng = np.random.default_rng(3)
        B, A = 24, 4
        reward = rng.normal(size=B).astype(np.float32)
        discount = (0.99 * (rng.random(B) > 0.2)).astype(np.float32)
        next_q = rng.normal(size=(2, B, A)).astype(np.float32)
        logits = rng.normal(size=(B, A)).astype(np.float32)
        log_probs = jax.nn.log_softmax(logits)
        target = self.variant(discrete_soft_q_target)(reward, discount, next_q, log_probs, np.float32(0.3))
        expected = np_discrete_soft_q_target(f64(reward), f64(discount), f64(next_q), f64(logits), 0.3)
        np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-5)

        q = rng.normal(size=(2, B, A)).astype(np.float32)
        loss = self.variant(discrete_sac_actor_loss)(q, log_probs, np.float32(0.3))
        lp = f64(logits) - np.log(np.exp(f64(logits)).sum(-1, keepdims=True))
        expected_loss = (np.exp(lp) * (0.3 * lp - f64(q).min(0))).sum(-1).mean()
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
        # Q enters as a constant: no gradient to the critics from the actor loss
        g_q = jax.grad(discrete_sac_actor_loss)(jnp.asarray(q), log_probs, 0.3)
        np.testing.assert_array_equal(g_q, 0.0)
        # the temperature loss takes the exact -H: sum_a pi log pi
        neg_entropy = (np.exp(lp) * lp).sum(-1)
        t_loss = temperature_loss(jnp.float32(0.5), jnp.asarray(neg_entropy, jnp.float32), 0.6 * np.log(A))
        np.testing.assert_allclose(t_loss, -(0.5 * (neg_entropy + 0.6 * np.log(A))).mean(), rtol=1e-5)

    def test_polyak_update(self):
        rng = np.random.default_rng(4)
        online = {"w": rng.normal(size=(3, 5)).astype(np.float32), "b": np.float32(2.0)}
        target = {"w": rng.normal(size=(3, 5)).astype(np.float32), "b": np.float32(-1.0)}
        got = polyak_update(online, target, 0.005)
        np.testing.assert_allclose(got["w"], 0.005 * f64(online["w"]) + 0.995 * f64(target["w"]), rtol=1e-6)
        np.testing.assert_allclose(got["b"], 0.005 * 2.0 + 0.995 * -1.0, rtol=1e-6)
        np.testing.assert_array_equal(polyak_update(online, target, 1.0)["w"], online["w"])  # tau 1 copies
        # n steps towards a fixed online net leave (1 - tau)^n of the initial gap
        t = target
        for _ in range(50):
            t = polyak_update(online, t, 0.1)
        gap = 0.9**50 * (f64(target["w"]) - f64(online["w"]))
        np.testing.assert_allclose(t["w"], f64(online["w"]) + gap, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------- the update


def _tiny_setup(**overrides):
    config = SACConfig(hidden_sizes=(16, 16), batch_size=8, buffer_size=64, **overrides)
    actor, critic = TanhGaussianActor(1, (16, 16)), QEnsemble(2, (16, 16))
    algorithm = make_sac(config, actor, critic)
    train_state, _ = jax.jit(algorithm.init)(jax.random.PRNGKey(0))
    rng = np.random.default_rng(5)
    batch = Transition(
        obs=jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
        action=jnp.asarray(rng.uniform(-1, 1, (8, 1)), jnp.float32),
        reward=jnp.asarray(rng.normal(size=8), jnp.float32),
        next_obs=jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
        terminated=jnp.asarray(rng.random(8) < 0.3),
        truncated=jnp.zeros(8, bool),
    )
    return config, actor, critic, algorithm, train_state, batch


def test_gradient_step_updates_everything_and_polyak_averages_the_new_critic():
    config, actor, critic, algorithm, state, batch = _tiny_setup(target_update_interval=2)
    txs = algorithm.learn.keywords["txs"]
    step = jax.jit(
        lambda s, b, k: sac_gradient_step(
            s,
            b,
            k,
            None,
            actor=actor,
            critic=critic,
            txs=txs,
            config=config,
            discrete=False,
            entropy_target=-1.0,
        )
    )
    s1, m1 = step(state, batch, jax.random.PRNGKey(1))
    changed = lambda a, b: any(
        not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
    assert changed(s1.params["actor"], state.params["actor"])
    assert changed(s1.params["critic"], state.params["critic"])
    assert s1.params["log_alpha"] != state.params["log_alpha"]
    assert int(s1.step) == 1
    # target_update_interval=2: the first step leaves the targets alone, the second averages
    chex.assert_trees_all_equal(s1.target_critic, state.target_critic)
    s2, _ = step(s1, batch, jax.random.PRNGKey(2))
    expected = jax.tree.map(lambda c, t: 0.005 * c + 0.995 * t, s2.params["critic"], s1.target_critic)
    chex.assert_trees_all_close(s2.target_critic, expected, rtol=1e-6, atol=1e-7)
    assert np.isfinite(float(m1["loss"]))
    np.testing.assert_allclose(m1["alpha"], 1.0)  # alpha before its first update


def test_learning_waits_for_learning_starts():
    config, _, _, algorithm, state, batch = _tiny_setup(learning_starts=3)
    rows = jax.tree.map(lambda x: x[:, None], batch)  # [B, 1 gradient step, ...]
    learn = jax.jit(lambda s, k: algorithm.learn(s, rows, k, None))
    for update in range(4):  # frames after this update: 1, 2, 3, 4; SB3 learns once > 3
        new, metrics = learn(state, jax.random.PRNGKey(update))
        assert int(new.updates) == update + 1
        learned = int(new.step) == int(state.step) + 1
        assert learned == (update == 3), update
        assert (float(metrics["loss"]) != 0.0) == learned
        state = new


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("gamma", 1.5, r"SACConfig.gamma=1.5 is invalid: must lie in \[0.0, 1.0\]"),
        ("tau", 0.0, r"SACConfig.tau=0.0 is invalid: must lie in \(0.0, 1.0\]"),
        ("buffer_size", 100, r"SACConfig.buffer_size=100 is invalid: must lie in \[256, inf\]"),
        ("target_entropy_scale", 1.5, r"SACConfig.target_entropy_scale=1.5 is invalid"),
        ("activation", "sigmoid", r"SACConfig.activation='sigmoid' is invalid: must be one of"),
        ("alpha_init", 0.0, r"SACConfig.alpha_init=0.0 is invalid"),
    ],
)
def test_invalid_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        SACConfig(**{field: value})


def test_discrete_flag_must_match_the_action_space():
    with pytest.raises(ValueError, match=r"SACConfig.discrete=True is invalid: Pendulum-v1 has a continuous"):
        make_sac(SACConfig(discrete=True))


def _small_run_config(**overrides):
    settings = dict(
        total_frames=240,
        num_envs=2,
        train_frequency=2,
        gradient_steps=2,
        learning_starts=40,
        batch_size=16,
        buffer_size=1000,
        hidden_sizes=(16, 16),
        eval_interval=80,
        eval_episodes=2,
        max_episode_steps=30,
    )
    return SACConfig(**{**settings, **overrides})


@pytest.mark.slow
@pytest.mark.parametrize("env", ["Pendulum-v1", "CartPole-v1"])
def test_vmap_over_seeds_equals_each_seed_alone(env):
    config = _small_run_config(env=env)
    train = make_train(make_sac(config))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state, metrics = jax.jit(jax.vmap(train))(keys)
    single = jax.jit(train)
    for i in range(2):
        state_i, metrics_i = single(keys[i])
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[i], state.train_state.params),
            state_i.train_state.params,
            rtol=1e-5,
            atol=1e-6,
        )
        for name in ("loss", "episode_return_last100", "eval_return_mean"):
            np.testing.assert_allclose(metrics[name][i], metrics_i[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert not np.allclose(metrics["loss"][0], metrics["loss"][1])  # different seeds differ
    evals = np.asarray(metrics["eval_return_mean"][0])
    assert np.isfinite(evals).sum() == config.total_frames // config.eval_interval  # every 80 frames


# ----------------------------------------------------------------------- learning


@pytest.mark.slow
def test_sac_learns_pendulum():
    config = SACConfig()  # the defaults: 20k frames
    algorithm = make_sac(config)
    start = time.perf_counter()
    state, metrics = jax.jit(make_train(algorithm))(jax.random.PRNGKey(0))
    final = float(evaluate(config, state.train_state.params, jax.random.PRNGKey(123), 20).mean())
    evals = np.asarray(metrics["eval_return_mean"])
    print(
        f"SAC Pendulum: evals {evals[np.isfinite(evals)]}, final greedy {final:.0f}, {time.perf_counter() - start:.0f} s"
    )
    assert final >= -250, final


@pytest.mark.slow
def test_discrete_sac_learns_cartpole():
    config = cartpole_config(total_frames=20_000)
    algorithm = make_sac(config)
    start = time.perf_counter()
    state, metrics = jax.jit(make_train(algorithm))(jax.random.PRNGKey(0))
    final = float(evaluate(config, state.train_state.params, jax.random.PRNGKey(123), 20).mean())
    evals = np.asarray(metrics["eval_return_mean"])
    print(
        f"SAC CartPole: evals {evals[np.isfinite(evals)]}, final greedy {final:.0f}, {time.perf_counter() - start:.0f} s"
    )
    assert final >= 400, final
