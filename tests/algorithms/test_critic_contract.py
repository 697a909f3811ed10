"""The critic contract (see `algorithms.sac`): every critic call gets per-row keys, MLP
critics ignore them, the keys of a row do not depend on how the batch is split over
devices, and SAC (vmapped over seeds, and discrete) and PPO train with a ReaCritic critic under
jit; the `--critic` flags of the CLI."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm import cli
from jaxrl_llm.algorithms import ppo, sac
from jaxrl_llm.algorithms.off_policy import critic_keys
from jaxrl_llm.models import ActorCritic
from jaxrl_llm.models.continuous import DiscreteQEnsemble, QEnsemble
from jaxrl_llm.training import make_train

TINY_REACRITIC = {"critic": "reacritic", "reacritic_width": 8, "reacritic_steps": 2, "reacritic_depth": 1}
TINY_OFF_POLICY = {
    "total_frames": 48,
    "num_envs": 2,
    "train_frequency": 2,
    "gradient_steps": 2,
    "learning_starts": 16,
    "batch_size": 8,
    "buffer_size": 256,
    "hidden_sizes": (16, 16),
    "eval_interval": 0,
    "max_episode_steps": 30,
    **TINY_REACRITIC,
}


def test_mlp_critics_ignore_the_keys():
    obs, action = jnp.ones((4, 3)), jnp.ones((4, 1))
    keys_a, keys_b = jax.random.split(jax.random.PRNGKey(0), 4), jax.random.split(jax.random.PRNGKey(1), 4)
    for module, args in [
        (QEnsemble(2, (8,)), (obs, action)),
        (DiscreteQEnsemble(3, 2, (8,)), (obs,)),
        (ActorCritic(2, hidden_sizes=(8,)), (obs,)),
    ]:
        params = jax.jit(module.init)(jax.random.PRNGKey(2), *args, keys_a)
        apply = jax.jit(module.apply)
        chex.assert_trees_all_equal(apply(params, *args, keys_a), apply(params, *args, keys_b))
        chex.assert_trees_all_equal(apply(params, *args), apply(params, *args, keys_b))


def test_row_keys_do_not_depend_on_the_device_split():
    # 4 "devices" (a vmapped named axis) of 3 rows each draw the keys of one device's 12 rows
    key = jax.random.PRNGKey(7)
    single = critic_keys(key, 12, None, 3)
    split = jax.vmap(lambda _: critic_keys(key, 3, "data", 3), axis_name="data")(jnp.arange(4))
    for one, sharded in zip(single, split, strict=True):
        np.testing.assert_array_equal(one, sharded.reshape(one.shape))
    assert len({tuple(np.asarray(k).ravel()) for k in single}) == 3  # a fresh key per pass


def test_sac_with_reacritic_under_jit_and_vmap_over_seeds():
    config = sac.SACConfig(**TINY_OFF_POLICY)
    train = make_train(sac.make_sac(config))
    state, metrics = jax.jit(jax.vmap(train))(jax.random.split(jax.random.PRNGKey(0), 2))
    loss = np.asarray(metrics["loss"])
    assert loss.shape == (2, config.num_updates)
    assert np.isfinite(loss).all() and (loss[:, -1] != 0).all()  # learned after learning_starts
    assert not np.allclose(loss[0], loss[1])  # different seeds differ
    critic = state.train_state.params["critic"]["params"]["critics"]
    chex.assert_shape(critic["step_embedding"], (2, 2, 2, 8))  # [seeds, K, H, h]


def test_discrete_sac_with_reacritic_under_jit():
    # (TD3 with ReaCritic: tests/training/parallel_check.py's td3 case, under jit on 1 and 8 devices)
    train = jax.jit(make_train(sac.make_sac(sac.SACConfig(env="CartPole-v1", **TINY_OFF_POLICY))))
    _, metrics = train(jax.random.PRNGKey(0))
    _, again = train(jax.random.PRNGKey(0))
    loss = np.asarray(metrics["loss"])
    assert np.isfinite(loss).all() and loss[-1] != 0
    np.testing.assert_array_equal(loss, np.asarray(again["loss"]))  # same seed, same numbers


def test_ppo_with_a_reacritic_value_head_under_jit():
    config = ppo.PPOConfig(
        env="Pendulum-v1",
        total_frames=2 * 2 * 16,
        num_envs=2,
        num_steps=16,
        num_minibatches=2,
        update_epochs=2,
        **TINY_REACRITIC,
    )
    train = jax.jit(make_train(ppo.make_ppo(config)))
    state, metrics = train(jax.random.PRNGKey(0))
    loss = np.asarray(metrics["loss"])
    assert loss.shape == (config.num_updates,) and np.isfinite(loss).all()
    assert "step_embedding" in state.train_state.params["params"]["critic"]["core"]
    np.testing.assert_array_equal(loss, np.asarray(train(jax.random.PRNGKey(0))[1]["loss"]))


@pytest.mark.parametrize("command", ["sac", "td3", "ppo"])
def test_cli_critic_flags(monkeypatch, command):
    seen = []
    monkeypatch.setattr(cli, "_train", lambda name, make, config, run, **kw: seen.append(config))
    env = "CartPole-v1" if command == "ppo" else "Pendulum-v1"
    argv = ["--env", env, "--critic", "reacritic", "--reacritic-steps", "8", "--reacritic-depth", "1"]
    cli.main([command, *argv, "--reacritic-width", "32"])
    (config,) = seen
    assert (config.critic, config.reacritic_steps, config.reacritic_depth, config.reacritic_width) == (
        "reacritic",
        8,
        1,
        32,
    )


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "critic",
            "transformer",
            r"SACConfig.critic='transformer' is invalid: must be one of \['mlp', 'reacritic'\]",
        ),
        ("reacritic_steps", 0, r"SACConfig.reacritic_steps=0 is invalid: must lie in \[1, inf\]"),
        ("reacritic_depth", -1, r"SACConfig.reacritic_depth=-1 is invalid"),
        ("reacritic_width", 30, r"SACConfig.reacritic_width=30 is invalid: must be a multiple of the 4"),
    ],
)
def test_invalid_critic_fields_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        sac.SACConfig(**{field: value})
