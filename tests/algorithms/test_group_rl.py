"""GRPO / GiGPO on multi-step environments: config checks, advantages wiring, learning."""

import jax
import numpy as np
import pytest

from jaxrl_llm.algorithms import group_rl
from jaxrl_llm.algorithms.group_rl import GroupRLConfig


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("algorithm", "ppo", r"GroupRLConfig.algorithm='ppo' is invalid: must be one of \['grpo', 'gigpo'\]"),
        ("normalization", "batch", r"GroupRLConfig.normalization='batch' is invalid"),
        ("group_size", 0, r"GroupRLConfig.group_size=0 is invalid: must lie in \[1, inf\]"),
        ("loss_agg_mode", "mean", r"GroupRLConfig.loss_agg_mode='mean' is invalid"),
    ],
)
def test_invalid_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        GroupRLConfig(**{field: value})


@pytest.fixture(scope="module")
def small_batches():
    """One GRPO and one GiGPO batch from the same grouped rollout key and params."""
    out = {}
    for algorithm in ("grpo", "gigpo"):
        config = GroupRLConfig(
            algorithm=algorithm, num_groups=4, group_size=4, episode_steps=10, env_kwargs={"size": 4}
        )
        algo = group_rl.make_group_rl(config)
        train_state, collect_state = algo.init(jax.random.PRNGKey(0))
        _, batch, metrics = algo.collect(collect_state, train_state.params, jax.random.PRNGKey(1))
        out[algorithm] = batch, metrics
    return out


def test_grpo_advantage_is_the_group_normalised_return_on_every_valid_step(small_batches):
    batch, metrics = small_batches["grpo"]
    valid = np.asarray(batch.valid)
    advantage = np.asarray(batch.advantage)
    assert (advantage[~valid] == 0).all()
    per_row = np.array([np.unique(advantage[i][valid[i]]) for i in range(16)], dtype=object)
    assert all(len(u) == 1 for u in per_row)  # constant along a trajectory
    # group-normalised: zero mean within each group of 4 (float tolerance)
    np.testing.assert_allclose(np.array([u[0] for u in per_row]).reshape(4, 4).sum(1), 0.0, atol=1e-5)
    assert 0.0 <= float(metrics["zero_std_group_fraction"]) <= 1.0


def test_gigpo_shares_rollout_and_adds_step_level_signal(small_batches):
    grpo_batch, _ = small_batches["grpo"]
    gigpo_batch, metrics = small_batches["gigpo"]
    np.testing.assert_array_equal(np.asarray(grpo_batch.action), np.asarray(gigpo_batch.action))
    valid = np.asarray(gigpo_batch.valid)
    assert (np.asarray(gigpo_batch.advantage)[~valid] == 0).all()
    assert float(metrics["num_step_groups"]) > 0
    assert float(metrics["singleton_step_group_fraction"]) < 1.0  # states repeat inside a group


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "gigpo"])
def test_solves_a_small_fixed_maze(algorithm):
    """FrozenLake 4x4, non-slippery: a fixed small maze with holes (random policy: ~1% success)."""
    config = GroupRLConfig(
        algorithm=algorithm,
        env="FrozenLake-misc",
        env_kwargs={"is_slippery": False},
        episode_steps=16,
        num_groups=8,
        total_frames=80 * 64 * 16,
    )
    _, metrics = jax.jit(group_rl.make_train(config))(jax.random.PRNGKey(0))
    success = np.asarray(metrics["success_rate"])
    assert success[:5].mean() < 0.2
    assert success[-20:].mean() >= 0.95, success[-20:]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "gigpo"])
def test_improves_on_random_small_mazes(algorithm):
    config = GroupRLConfig(
        algorithm=algorithm,
        env_kwargs={"size": 4},
        episode_steps=16,
        num_groups=8,
        total_frames=120 * 64 * 16,
    )
    _, metrics = jax.jit(group_rl.make_train(config))(jax.random.PRNGKey(0))
    success = np.asarray(metrics["success_rate"])
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    first, last = success[:10].mean(), success[-20:].mean()
    assert last >= first + 0.15, (first, last)


def test_success_comes_from_the_environment():
    """CliffWalking's returns are all negative, yet reaching the goal is success; CartPole has
    no notion of success, so no success_rate is logged and the curve follows the return."""
    cliff = group_rl.make_group_rl(
        GroupRLConfig(env="CliffWalking-v0", num_groups=2, group_size=2, episode_steps=8)
    )
    assert cliff.progress_metric == "success_rate"
    cartpole = group_rl.make_group_rl(
        GroupRLConfig(env="CartPole-v1", num_groups=2, group_size=2, episode_steps=8)
    )
    assert cartpole.progress_metric == "episode_return_mean"
    train_state, collect_state = cartpole.init(jax.random.PRNGKey(0))
    _, _, metrics = cartpole.collect(collect_state, train_state.params, jax.random.PRNGKey(1))
    assert "success_rate" not in metrics
