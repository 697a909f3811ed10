"""DQN: TD targets and losses vs numpy, target updates, epsilon, seeds under vmap, resume,
offline pretraining on a chain with a known optimal Q, and a CartPole learning test."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from jaxrl_llm import envs
from jaxrl_llm.algorithms import dqn
from jaxrl_llm.algorithms.configs.dqn import DQNConfig
from jaxrl_llm.algorithms.offline import pretrain_offline, starting_from
from jaxrl_llm.rollout import Transition, evaluate_policy
from jaxrl_llm.training import CheckpointStore, TrainingInterrupted, make_train, run
from jaxrl_llm.training.metrics import read_metrics

# ----------------------------------------------------------------------------- pure pieces


def numpy_targets(reward, terminated, next_q_target, gamma, next_q_online=None):
    reward, next_q_target = np.float64(reward), np.float64(next_q_target)
    if next_q_online is None:
        next_value = next_q_target.max(-1)
    else:
        next_value = next_q_target[np.arange(len(reward)), np.argmax(next_q_online, -1)]
    return reward + gamma * (1.0 - np.float64(terminated)) * next_value


class TargetsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_dqn_and_double_dqn_targets_match_numpy(self):
        rng = np.random.default_rng(0)
        reward = rng.normal(size=32).astype(np.float32)
        terminated = rng.random(32) < 0.3
        next_q_target = rng.normal(size=(32, 5)).astype(np.float32)
        next_q_online = rng.normal(size=(32, 5)).astype(np.float32)
        target = self.variant(dqn.q_learning_target, static_argnums=3)
        np.testing.assert_allclose(
            target(reward, terminated, next_q_target, 0.97),
            numpy_targets(reward, terminated, next_q_target, 0.97),
            rtol=1e-6,
        )
        double = target(reward, terminated, next_q_target, 0.97, next_q_online)
        np.testing.assert_allclose(
            double, numpy_targets(reward, terminated, next_q_target, 0.97, next_q_online), rtol=1e-6
        )
        # the online argmax differs from the target argmax on most rows: the two targets differ
        assert (np.argmax(next_q_online, -1) != np.argmax(next_q_target, -1)).sum() > 16
        assert not np.allclose(double, target(reward, terminated, next_q_target, 0.97))
        np.testing.assert_array_equal(np.asarray(double)[terminated], reward[terminated])

    @chex.variants(with_jit=True, without_jit=True)
    def test_huber_and_mse_losses_match_numpy(self):
        delta = np.array([-3.0, -1.0, -0.5, 0.0, 0.25, 1.0, 2.5], np.float32)
        q, target = delta + 1.5, np.full_like(delta, 1.5)
        loss = self.variant(dqn.td_loss, static_argnums=2)
        d = np.float64(delta)
        huber = np.where(np.abs(d) <= 1.0, 0.5 * d**2, np.abs(d) - 0.5)
        np.testing.assert_allclose(loss(q, target, "huber"), huber, rtol=1e-6)
        np.testing.assert_allclose(loss(q, target, "mse"), d**2, rtol=1e-6)

    def test_epsilon_schedule(self):
        frames = jnp.array([0, 999, 1000, 4000, 8000, 20000])
        epsilon = dqn.linear_epsilon(frames, 1.0, 0.04, 8000.0, learning_starts=1000)
        np.testing.assert_allclose(epsilon, [1.0, 1.0, 0.88, 0.52, 0.04, 0.04], rtol=1e-6)
        np.testing.assert_allclose(dqn.linear_epsilon(jnp.array([0, 5]), 0.5, 0.1, 0.0), [0.5, 0.1])


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("loss", "l1", r"DQNConfig.loss='l1' is invalid: must be one of \['huber', 'mse'\]"),
        ("tau", 0.0, r"DQNConfig.tau=0.0 is invalid: must lie in \(0.0, 1.0\]"),
        ("buffer_size", 100, r"DQNConfig.buffer_size=100 is invalid: must lie in \[256, inf\]"),
        ("target_update_interval", 0, r"DQNConfig.target_update_interval=0 is invalid"),
        ("exploration_final_eps", 1.5, r"DQNConfig.exploration_final_eps=1.5 is invalid"),
    ],
)
def test_invalid_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        DQNConfig(**{field: value})


def test_continuous_actions_are_refused():
    with pytest.raises(ValueError, match="discrete action space.*Pendulum-v1"):
        dqn.make_dqn(DQNConfig(env="Pendulum-v1"))


# ----------------------------------------------------------------------------- target network


def random_batch(key, batch_size, steps, obs_dim=4, num_actions=2):
    keys = jax.random.split(key, 4)
    shape = (batch_size, steps)
    transitions = Transition(
        obs=jax.random.normal(keys[0], (*shape, obs_dim)),
        action=jax.random.randint(keys[1], shape, 0, num_actions),
        reward=jax.random.normal(keys[2], shape),
        next_obs=jax.random.normal(keys[3], (*shape, obs_dim)),
        terminated=jnp.zeros(shape, bool),
        truncated=jnp.zeros(shape, bool),
    )
    return dqn.offline_batch(transitions)


SMALL = dict(hidden_sizes=(16,), batch_size=8, learning_rate=1e-2)


@pytest.mark.parametrize("tau, interval", [(1.0, 3), (0.25, 2)])
def test_target_updates_hard_and_polyak(tau, interval):
    config = DQNConfig(tau=tau, target_update_interval=interval, **SMALL)
    algorithm = dqn.make_dqn(config)
    learn = jax.jit(lambda s, b: algorithm.learn(s, b, jax.random.PRNGKey(0), None))
    state, _ = algorithm.init(jax.random.PRNGKey(0))
    target = jax.tree.map(np.float64, state.params)
    for step in range(1, 8):
        state, metrics = learn(state, random_batch(jax.random.PRNGKey(step), 8, 1))
        assert int(state.step) == step == int(metrics["gradient_steps"])
        if step % interval == 0:
            target = jax.tree.map(lambda t, p: tau * np.float64(p) + (1 - tau) * t, target, state.params)
        for got, want, online in zip(
            jax.tree.leaves(state.target_params), jax.tree.leaves(target), jax.tree.leaves(state.params)
        ):
            if tau == 1.0:  # a hard update is an exact copy, and nothing moves in between
                np.testing.assert_array_equal(got, np.float32(want))
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
            if step % interval:
                assert not np.array_equal(got, online)


def test_learn_is_a_no_op_before_learning_starts():
    algorithm = dqn.make_dqn(DQNConfig(**SMALL))
    state, _ = algorithm.init(jax.random.PRNGKey(0))
    batch = random_batch(jax.random.PRNGKey(1), 8, 3)
    inactive = batch.replace(active=jnp.zeros_like(batch.active))
    same, metrics = algorithm.learn(state, inactive, jax.random.PRNGKey(2), None)
    chex.assert_trees_all_equal(same, state)
    assert float(metrics["loss"]) == 0.0 and float(metrics["gradient_steps"]) == 0.0
    moved, metrics = algorithm.learn(state, batch, jax.random.PRNGKey(2), None)
    assert int(moved.step) == 3 and float(metrics["loss"]) > 0


# ----------------------------------------------------------------------------- whole runs

TINY = dict(
    total_frames=12 * 64,  # 12 updates
    num_envs=2,
    train_frequency=32,
    gradient_steps=8,
    batch_size=16,
    buffer_size=512,
    learning_starts=128,
    hidden_sizes=(32, 32),
    target_update_interval=16,
    eval_every=4,
    eval_episodes=2,
)


def test_metrics_epsilon_and_buffer_accounting():
    config = DQNConfig(**TINY)
    _, metrics = jax.jit(dqn.make_train(config))(jax.random.PRNGKey(0))
    metrics = jax.tree.map(np.asarray, metrics)
    assert {"loss", "q_mean", "td_abs_mean", "grad_norm", "gradient_steps", "epsilon", "buffer_size"} <= set(
        metrics
    )
    assert {"episode_return_mean", "episode_return_last100", "episodes", "eval_return_mean"} <= set(metrics)
    starts = np.arange(config.num_updates) * config.frames_per_update
    np.testing.assert_allclose(
        metrics["epsilon"],
        dqn.linear_epsilon(starts, 1.0, 0.04, 0.16 * config.total_frames, config.learning_starts),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(metrics["buffer_size"], np.minimum(starts + 64, 512))
    # learning starts once more than 128 frames were collected: update 3 (192 frames)
    np.testing.assert_array_equal(metrics["gradient_steps"], np.maximum(np.arange(1, 13) - 2, 0) * 8)
    assert (metrics["loss"][:2] == 0).all() and (metrics["loss"][2:] > 0).all()
    evaluated = np.isfinite(metrics["eval_return_mean"])
    np.testing.assert_array_equal(np.flatnonzero(evaluated), [0, 4, 8, 11])  # every 4 and the last
    assert (metrics["eval_return_mean"][evaluated] >= 8).all()  # CartPole lasts >= 8 steps


def test_vmap_over_seeds_matches_single_runs():
    config = DQNConfig(
        double_q=True,
        loss="mse",
        tau=0.5,
        target_update_interval=4,
        **{k: v for k, v in TINY.items() if k not in ("target_update_interval",)},
    )
    train = dqn.make_train(config)
    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    states, metrics = jax.jit(jax.vmap(train))(keys)
    single = jax.jit(train)
    for i in range(2):
        state, m = single(keys[i])
        for a, b in zip(jax.tree.leaves(state.train_state), jax.tree.leaves(states.train_state), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b)[i], rtol=2e-5, atol=1e-6)
        for name in ("loss", "epsilon", "episodes", "gradient_steps"):
            np.testing.assert_allclose(m[name], metrics[name][i], rtol=2e-5, atol=1e-6)
    assert not np.allclose(metrics["loss"][0], metrics["loss"][1])


class InterruptingWriter:
    """A MetricsWriter whose `flush` raises KeyboardInterrupt on its `at`-th call (Ctrl-C)."""

    def __init__(self, real, at):
        self.real, self.at, self.calls = real, at, 0

    def __call__(self, *args, **kwargs):
        writer = self.real(*args, **kwargs)
        outer = self
        original = writer.flush

        def flush():
            original()
            outer.calls += 1
            if outer.calls == outer.at:
                raise KeyboardInterrupt

        writer.flush = flush
        return writer


def assert_same_state(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_run_interrupted_then_resumed_is_bitwise_identical(tmp_path, monkeypatch):
    import jaxrl_llm.training.loop as loop

    config = DQNConfig(**{**TINY, "eval_episodes": 0})
    kwargs = dict(seed=3, checkpoint_every=2, progress=False, checkpoint_seconds=1e9, checkpoint_overhead=0.0)
    reference = run(dqn.make_dqn(config), {"algorithm": "dqn"}, tmp_path / "a", **kwargs)

    monkeypatch.setattr(loop, "MetricsWriter", InterruptingWriter(loop.MetricsWriter, at=3))
    with pytest.raises(TrainingInterrupted):
        run(dqn.make_dqn(config), {"algorithm": "dqn"}, tmp_path / "b", **kwargs)
    monkeypatch.undo()
    assert CheckpointStore(tmp_path / "b" / "checkpoints").latest_step() == 6
    resumed = run(dqn.make_dqn(config), {"algorithm": "dqn"}, tmp_path / "b", resume=True, **kwargs)
    assert_same_state(reference, resumed)  # params, target, optimiser, replay buffer, env states, key
    rows_a, rows_b = (
        read_metrics(tmp_path / "a" / "metrics.csv"),
        read_metrics(tmp_path / "b" / "metrics.csv"),
    )
    assert [r["step"] for r in rows_b] == list(range(1, 13))
    np.testing.assert_array_equal([r["loss"] for r in rows_a], [r["loss"] for r in rows_b])


@pytest.mark.slow
def test_run_extended_budget_equals_the_longer_run(tmp_path):
    """A run to 6 updates extended to 12 equals a run to 12. With exploration_fraction 0
    and a constant learning rate nothing in the updates depends on the budget (epsilon's
    decay and an annealed learning rate do: their schedules stretch with total_frames)."""
    fixed = {**TINY, "exploration_fraction": 0.0, "anneal_lr": False, "eval_episodes": 0}
    long, short = DQNConfig(**fixed), DQNConfig(**{**fixed, "total_frames": 6 * 64})
    kwargs = dict(seed=1, checkpoint_every=4, progress=False)
    reference = run(dqn.make_dqn(long), {"algorithm": "dqn"}, tmp_path / "a", **kwargs)
    run(dqn.make_dqn(short), {"algorithm": "dqn", "total_frames": 384}, tmp_path / "b", **kwargs)
    extended = run(
        dqn.make_dqn(long), {"algorithm": "dqn", "total_frames": 768}, tmp_path / "b", resume=True, **kwargs
    )
    assert_same_state(reference.train_state, extended.train_state)
    assert_same_state(reference.collect_state, extended.collect_state)


# ----------------------------------------------------------------------------- offline pretraining


@struct.dataclass
class ChainState(environment.EnvState):
    position: jax.Array


@struct.dataclass
class ChainParams(environment.EnvParams):
    max_steps_in_episode: int = 20


class Chain(environment.Environment):
    """Cells 0..4 observed one-hot, start at 0; action 1 moves right, 0 moves left (floor 0);
    reaching cell 4 gives reward 1 and terminates. With discount g:
    Q*(s, right) = g^(3 - s), Q*(s, left) = g * V*(max(s - 1, 0)), V*(s) = g^(3 - s)."""

    size = 5

    @property
    def default_params(self):
        return ChainParams()

    def step_env(self, key, state, action, params):
        position = jnp.clip(state.position + 2 * action - 1, 0, self.size - 1)
        reached = position == self.size - 1
        state = ChainState(time=state.time + 1, position=position)
        return self.get_obs(state), state, reached.astype(jnp.float32), reached, {}

    def reset_env(self, key, params):
        state = ChainState(time=0, position=jnp.int32(0))
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jax.nn.one_hot(state.position, self.size)

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(0.0, 1.0, (self.size,), jnp.float32)


envs.register("DQNTestChain-v0", Chain)
GAMMA = 0.9


def chain_dataset():
    """Every (cell, action) of cells 0..3 once: 8 transitions."""
    cells, actions = np.repeat(np.arange(4), 2), np.tile([0, 1], 4)
    following = np.clip(cells + 2 * actions - 1, 0, 4)
    one_hot = lambda c: np.eye(5, dtype=np.float32)[c]
    return Transition(
        obs=one_hot(cells),
        action=actions.astype(np.int32),
        reward=(following == 4).astype(np.float32),
        next_obs=one_hot(following),
        terminated=following == 4,
        truncated=np.zeros(8, bool),
    )


def optimal_q():
    value = GAMMA ** (3 - np.arange(4.0))
    left = GAMMA * value[np.maximum(np.arange(4) - 1, 0)]
    return np.stack([left, value], -1)  # [cell, action]


CHAIN = dict(
    env="DQNTestChain-v0",
    gamma=GAMMA,
    loss="mse",
    anneal_lr=False,  # an annealed rate would reach 0 after the online budget's 16 gradient steps
    hidden_sizes=(32, 32),
    batch_size=32,
    learning_rate=3e-3,
    target_update_interval=50,
    num_envs=2,
    train_frequency=8,
    gradient_steps=4,
    total_frames=4 * 16,
    buffer_size=64,
    learning_starts=0,
    exploration_initial_eps=0.05,
    exploration_final_eps=0.05,
    eval_every=1,
    eval_episodes=2,
)


def test_offline_pretraining_learns_the_optimal_q_then_continues_online():
    dataset = chain_dataset()
    algorithm = dqn.make_dqn(DQNConfig(**CHAIN), prefill=dataset)
    state, _ = algorithm.init(jax.random.PRNGKey(0))
    env, env_params = envs.make("DQNTestChain-v0")
    network = dqn.QNetwork(2, (32, 32), "relu")
    assert np.abs(np.asarray(network.apply(state.params, dataset.obs[::2])) - optimal_q()).max() > 0.3

    state, metrics = pretrain_offline(
        algorithm,
        state,
        dataset,
        3000,
        32,
        jax.random.PRNGKey(2),
        steps_per_call=100,
        to_batch=dqn.offline_batch,
    )
    assert metrics["loss"].shape == (30,) and int(state.step) == 3000
    assert float(metrics["loss"][-1]) < 1e-3 < float(metrics["loss"][0])
    q = np.asarray(network.apply(state.params, dataset.obs[::2]))
    np.testing.assert_allclose(q, optimal_q(), atol=0.03)
    assert (q.argmax(-1) == 1).all()  # greedy: always right
    returns = evaluate_policy(
        jax.random.PRNGKey(1), env, env_params, dqn.greedy_action(network), state.params, 2, 20
    )
    np.testing.assert_array_equal(returns, 1.0)

    # online from the pretrained state, with the dataset already in the buffer
    online = starting_from(algorithm, state)
    final, metrics = jax.jit(make_train(online))(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(metrics["eval_return_mean"], 1.0)  # the pretrained policy from update 0
    np.testing.assert_array_equal(metrics["buffer_size"], [24, 40, 56, 64])  # 8 prefilled + 16 per update
    # learning resumes once the buffer holds batch_size (32) transitions: from update 1
    np.testing.assert_array_equal(metrics["gradient_steps"], 3000 + 4 * np.arange(4))
    assert int(final.train_state.step) == 3012


# ----------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_dqn_solves_cartpole_on_its_defaults():
    """The defaults (zoo's CartPole settings + anneal_lr): the greedy policy reaches a mean
    return >= 475 over 10 evaluation episodes within the 50k-frame budget. Measured on seeds
    0-7: first at 7.7k-38.4k frames; the final policy is at 500 for 5 of the 8 seeds (DQN's
    greedy policy on CartPole keeps swinging), so only reaching the bar is asserted."""
    config = DQNConfig()
    _, metrics = jax.jit(dqn.make_train(config))(jax.random.PRNGKey(0))
    evals = np.asarray(metrics["eval_return_mean"])
    assert np.isfinite(evals).sum() == 21  # every 10 updates and the last of 195
    assert np.nanmax(evals) >= 475, evals[np.isfinite(evals)]
    assert evals[0] < 100  # the untrained network at update 0
