"""HetNet-v0: SINR, rates and reward against a float64 numpy model written here, plus the API.

Every test shares a few jitted, vmapped functions per environment (batch `NUM_ENVS`) so the
module compiles each program once.
"""

import functools
import math

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm import envs
from jaxrl_llm.envs.hetnet import HetNet, draw_fading_power

NUM_ENVS = 64
ENV = HetNet()  # K = 20 users, S = 4 small cells, Rician fading
SMALL = HetNet(num_users=3, num_small_cells=2, fading="rayleigh")


@functools.cache
def batched(env):
    """Jitted `(reset, step)` vmapped over `NUM_ENVS` keys / states / actions (params shared)."""
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    return reset, step


@functools.cache
def reset_batch(env, seed=0):
    keys = jax.random.split(jax.random.key(seed), NUM_ENVS)
    return jax.device_get(batched(env)[0](keys, env.default_params))


def step_batch(env, states, actions, seed=1):
    keys = jax.random.split(jax.random.key(seed), NUM_ENVS)
    return jax.device_get(
        batched(env)[1](keys, states, jnp.asarray(actions, jnp.float32), env.default_params)
    )


def random_actions(env, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.uniform(-1.0, 1.0, (NUM_ENVS, env.num_actions))).astype(np.float32)


def row(tree, i):
    return jax.tree.map(lambda x: np.asarray(x)[i], tree)


# --------------------------------------------------------------------------- numpy reference


def received_power_mw(state) -> np.ndarray:
    """`[K, C]` received power in mW with TR 36.814's numbers written out (default params)."""
    users = np.asarray(state.user_positions, np.float64)
    cells = np.asarray(state.cell_positions, np.float64)
    shadowing = np.asarray(state.shadowing_db, np.float64)
    fading = np.asarray(state.fading_power, np.float64)
    power = np.zeros((len(users), len(cells)))
    for k, user in enumerate(users):
        for j, cell in enumerate(cells):
            distance_km = math.hypot(*(user - cell)) / 1000.0
            if j == 0:  # macro: 46 dBm, 128.1 + 37.6 log10(R[km]), R >= 35 m
                loss = 128.1 + 37.6 * math.log10(max(distance_km, 0.035))
                tx_dbm = 46.0
            else:  # pico: 30 dBm, 140.7 + 36.7 log10(R[km]), R >= 10 m
                loss = 140.7 + 36.7 * math.log10(max(distance_km, 0.010))
                tx_dbm = 30.0
            power[k, j] = 10.0 ** ((tx_dbm - loss - shadowing[k, j]) / 10.0) * fading[k, j]
    return power


def numpy_step(state, action, num_users, num_cells):
    """SINR, rates (Mbit/s), shares, loads, association and reward of one state and action."""
    bandwidth = 10e6
    noise_mw = 10.0 ** ((-174.0 + 9.0 + 10.0 * math.log10(bandwidth)) / 10.0)
    action = np.clip(np.asarray(action, np.float64).reshape(num_users, num_cells + 1), -1.0, 1.0)
    association = [int(np.argmax(action[k, :num_cells])) for k in range(num_users)]
    weights = (action[:, num_cells] + 1.0) / 2.0
    shares = np.zeros(num_users)
    for k in range(num_users):
        cell_total = sum(weights[i] for i in range(num_users) if association[i] == association[k])
        shares[k] = weights[k] / max(1.0, cell_total)
    loads = [sum(shares[k] for k in range(num_users) if association[k] == j) for j in range(num_cells)]
    power = received_power_mw(state)
    sinr = np.zeros(num_users)
    for k in range(num_users):
        serving = association[k]
        interference = sum(loads[j] * power[k, j] for j in range(num_cells) if j != serving)
        sinr[k] = power[k, serving] / (interference + noise_mw)
    rates = shares * bandwidth * np.log2(1.0 + sinr) / 1e6
    demand = np.asarray(state.demand_mbps, np.float64)
    reward = np.sum(np.log(1.0 + rates)) - 1.0 * np.sum(rates < demand)
    return {
        "sinr": sinr,
        "rate": rates,
        "share": shares,
        "load": np.array(loads),
        "association": np.array(association),
        "reward": reward,
    }


def numpy_observation(state, num_users) -> np.ndarray:
    power = received_power_mw(state)
    tx_dbm = np.where(np.arange(power.shape[1]) == 0, 46.0, 30.0)
    gain_db = 10.0 * np.log10(power) - tx_dbm  # 10 log10 G = received - transmitted
    demand = np.asarray(state.demand_mbps, np.float64)
    last_rate = np.asarray(state.last_rate_mbps, np.float64)
    return np.concatenate([((gain_db + 100.0) / 20.0).reshape(-1), demand / 10.0, last_rate / 10.0])


# --------------------------------------------------------------------------- tests


def test_defaults_are_the_documented_constants():
    params = ENV.default_params
    assert (ENV.num_users, ENV.num_small_cells, ENV.fading) == (20, 4, "rician")
    assert params.max_steps_in_episode == 100 and params.rician_k == 2.0
    assert (params.macro_pl0_db, params.macro_pl_exponent, params.small_pl0_db, params.small_pl_exponent) == (
        128.1,
        3.76,
        140.7,
        3.67,
    )
    assert (params.macro_tx_power_dbm, params.small_tx_power_dbm, params.bandwidth_hz) == (46.0, 30.0, 10e6)
    assert (params.noise_psd_dbm_per_hz, params.noise_figure_db) == (-174.0, 9.0)


@pytest.mark.parametrize("env", [ENV, SMALL], ids=["K20-S4-rician", "K3-S2-rayleigh"])
def test_sinr_rates_reward_and_observation_match_numpy(env):
    _, states = reset_batch(env)
    actions = random_actions(env, seed=2)
    obs, next_states, reward, terminated, truncated, info = step_batch(env, states, actions)
    for i in range(16):
        expected = numpy_step(row(states, i), actions[i], env.num_users, env.num_cells)
        np.testing.assert_array_equal(info["association"][i], expected["association"])
        np.testing.assert_allclose(info["share"][i], expected["share"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(info["load"][i], expected["load"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(10.0 ** (info["sinr_db"][i] / 10.0), expected["sinr"], rtol=1e-4)
        np.testing.assert_allclose(info["rate_mbps"][i], expected["rate"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(reward[i], expected["reward"], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(info["unmet_demand"][i], expected["rate"] < states.demand_mbps[i])
        # The observation shows the next state's channel and this step's rates.
        next_state = row(next_states, i)
        np.testing.assert_allclose(next_state.last_rate_mbps, expected["rate"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(obs[i], numpy_observation(next_state, env.num_users), rtol=1e-4, atol=1e-4)
    assert not terminated.any() and not truncated.any()


def test_reset_observation_matches_numpy():
    obs, states = reset_batch(ENV)
    for i in range(4):
        np.testing.assert_allclose(
            obs[i], numpy_observation(row(states, i), ENV.num_users), rtol=1e-4, atol=1e-4
        )


def test_actions_outside_the_box_are_clipped():
    _, states = reset_batch(ENV)
    actions = random_actions(ENV, seed=3, scale=3.0)
    assert (np.abs(actions) > 1.0).mean() > 0.5
    outside = step_batch(ENV, states, actions)
    clipped = step_batch(ENV, states, np.clip(actions, -1.0, 1.0))
    chex.assert_trees_all_equal(outside, clipped)
    # weights at the bounds: a clipped share of -3 is weight 0, so that user's rate is 0
    share_values = actions.reshape(NUM_ENVS, ENV.num_users, ENV.num_cells + 1)[..., -1]
    assert (outside[5]["rate_mbps"][share_values <= -1.0] == 0.0).all()


def good_actions(states, env) -> np.ndarray:
    """Each user on its strongest cell (max received power), all weights 1 (equal shares)."""
    actions = -np.ones((NUM_ENVS, env.num_users, env.num_cells + 1), np.float32)
    for i in range(NUM_ENVS):
        best = received_power_mw(row(states, i)).argmax(axis=1)
        actions[i, np.arange(env.num_users), best] = 1.0
    actions[..., -1] = 1.0
    return actions.reshape(NUM_ENVS, -1)


def test_strongest_cell_with_fair_shares_beats_random_actions():
    _, states = reset_batch(ENV)
    good = step_batch(ENV, states, good_actions(states, ENV))
    random = step_batch(ENV, states, random_actions(ENV, seed=4))
    good_reward, random_reward = good[2], random[2]
    assert good_reward.mean() > random_reward.mean() + 10.0
    assert (good_reward > random_reward).mean() >= 0.95
    # equal shares: 1 / (users of the cell) each, every serving cell fully loaded
    counts = np.stack([np.bincount(a, minlength=ENV.num_cells) for a in good[5]["association"]])
    np.testing.assert_allclose(
        good[5]["share"], 1.0 / np.take_along_axis(counts, good[5]["association"], 1), rtol=1e-6
    )
    np.testing.assert_allclose(good[5]["load"], (counts > 0).astype(np.float32), rtol=1e-6)
    assert good[5]["unmet_demand"].mean() < random[5]["unmet_demand"].mean()


@pytest.mark.parametrize("env", [ENV, SMALL], ids=["K20-S4", "K3-S2"])
def test_shapes_and_dtypes(env):
    params = env.default_params
    num_users, num_cells = env.num_users, env.num_small_cells + 1
    obs, states = reset_batch(env)
    assert env.observation_space(params).shape == (num_users * (num_cells + 2),)
    space = env.action_space(params)
    assert space.shape == (num_users * (num_cells + 1),) == (env.num_actions,)
    assert (space.low, space.high) == (-1.0, 1.0)
    chex.assert_shape(obs, (NUM_ENVS, *env.observation_space(params).shape))
    chex.assert_type(obs, jnp.float32)
    chex.assert_shape([states.user_positions], (NUM_ENVS, num_users, 2))
    chex.assert_shape([states.cell_positions], (NUM_ENVS, num_cells, 2))
    chex.assert_shape([states.shadowing_db, states.fading_power], (NUM_ENVS, num_users, num_cells))
    chex.assert_shape([states.demand_mbps, states.last_rate_mbps], (NUM_ENVS, num_users))
    obs, _, reward, terminated, truncated, info = step_batch(env, states, random_actions(env, seed=5))
    chex.assert_shape([reward, terminated, truncated], (NUM_ENVS,))
    chex.assert_type([reward, terminated, truncated], [jnp.float32, jnp.bool_, jnp.bool_])
    chex.assert_shape(
        [info["rate_mbps"], info["sinr_db"], info["share"], info["association"], info["unmet_demand"]],
        (NUM_ENVS, num_users),
    )
    chex.assert_shape(info["load"], (NUM_ENVS, num_cells))
    chex.assert_type([info["association"], info["unmet_demand"]], [jnp.int32, jnp.bool_])
    chex.assert_tree_all_finite((obs, reward, info["rate_mbps"]))
    assert (info["load"] <= 1.0 + 1e-6).all() and (info["rate_mbps"] >= 0).all()
    for space_name, space in env.state_space(params).spaces.items():
        if space_name != "time":
            assert getattr(states, space_name).shape[1:] == space.shape


def test_reset_draws_positions_in_the_square():
    params = ENV.default_params
    _, states = reset_batch(ENV)
    half = params.area_side_m / 2
    users, cells = np.asarray(states.user_positions), np.asarray(states.cell_positions)
    assert (np.abs(users) <= half).all() and (np.abs(cells) <= half).all()
    np.testing.assert_array_equal(cells[:, 0], 0.0)  # the MBS at the centre
    # spread over the square, different in every episode
    assert users.min() < -0.9 * half and users.max() > 0.9 * half
    assert np.abs(users.mean()) < 0.05 * half and np.abs(cells[:, 1:].mean()) < 0.1 * half
    assert len(np.unique(users[:, 0, 0])) == NUM_ENVS and len(np.unique(cells[:, 1, 0])) == NUM_ENVS
    assert (np.asarray(states.time) == 0).all() and (np.asarray(states.last_rate_mbps) == 0).all()
    demand = np.asarray(states.demand_mbps)
    assert (demand >= params.demand_min_mbps).all() and (demand <= params.demand_max_mbps).all()
    shadowing = np.asarray(states.shadowing_db)
    np.testing.assert_allclose(shadowing[..., 0].std(), 8.0, rtol=0.1)
    np.testing.assert_allclose(shadowing[..., 1:].std(), 10.0, rtol=0.1)


def test_fading_changes_between_steps_while_positions_do_not():
    _, states = reset_batch(ENV)
    actions = random_actions(ENV, seed=6)
    _, first, *_ = step_batch(ENV, states, actions, seed=7)
    _, second, *_ = step_batch(ENV, first, actions, seed=8)
    for before, after in [(states, first), (first, second)]:
        for name in ("user_positions", "cell_positions", "shadowing_db", "demand_mbps"):
            np.testing.assert_array_equal(getattr(after, name), getattr(before, name))
        assert (np.asarray(after.fading_power) != np.asarray(before.fading_power)).all()
        np.testing.assert_array_equal(after.time, before.time + 1)


DRAW_FADING = jax.jit(draw_fading_power, static_argnums=1)  # one compile for both K-factors


@pytest.mark.parametrize("fading, rician_k, variance", [("rician", 2.0, 5.0 / 9.0), ("rayleigh", 0.0, 1.0)])
def test_fading_power_moments(fading, rician_k, variance):
    """E|h|^2 = 1 and Var|h|^2 = (2K + 1) / (K + 1)^2 (Rayleigh: |h|^2 ~ Exp(1))."""
    power = DRAW_FADING(jax.random.key(0), (200_000,), rician_k)
    assert power.dtype == jnp.float32
    power = np.asarray(power, np.float64)
    assert (power >= 0).all()
    np.testing.assert_allclose(power.mean(), 1.0, atol=0.01)
    np.testing.assert_allclose(power.var(), variance, rtol=0.03)
    if fading == "rayleigh":  # P(|h|^2 > 1) = e^-1
        np.testing.assert_allclose((power > 1.0).mean(), math.exp(-1.0), atol=0.005)


@pytest.mark.parametrize(
    "env, max_steps, num_steps", [(ENV, 100, 103), (SMALL, 5, 12)], ids=["K20-S4", "K3-S2"]
)
def test_vmapped_rollout_truncates_at_the_step_limit(env, max_steps, num_steps):
    """Random actions through the jitted, vmapped `step` (with gymnax's auto-reset)."""
    params = env.default_params.replace(max_steps_in_episode=max_steps)
    _, state = reset_batch(env)
    step = batched(env)[1]
    keys = jax.random.split(jax.random.key(9), num_steps)
    outcomes, positions = [], []
    for t in range(num_steps):
        positions.append(state.user_positions)
        actions = random_actions(env, seed=10 + t)
        obs, state, reward, terminated, truncated, _ = step(
            jax.random.split(keys[t], NUM_ENVS), state, actions, params
        )
        outcomes.append((reward, terminated, truncated))
        chex.assert_tree_all_finite((obs, reward))
    reward, terminated, truncated = (np.stack(x) for x in zip(*jax.device_get(outcomes)))
    positions = np.stack(jax.device_get(positions))
    assert not terminated.any()
    expected = (np.arange(num_steps) % max_steps) == max_steps - 1
    np.testing.assert_array_equal(truncated, np.broadcast_to(expected[:, None], truncated.shape))
    # positions are fixed within an episode and redrawn by the auto-reset
    np.testing.assert_array_equal(
        positions[:max_steps], np.broadcast_to(positions[0], positions[:max_steps].shape)
    )
    assert (positions[max_steps] != positions[max_steps - 1]).all()


def test_registered_and_configurable_through_make():
    assert "HetNet-v0" in envs.registered_envs()
    env, params = envs.make("HetNet-v0", num_users="5", num_small_cells=2, fading="rayleigh")
    assert isinstance(env, HetNet) and env.name == "HetNet-v0"
    assert (env.num_users, env.num_small_cells, env.fading) == (5, 2, "rayleigh")
    assert env.action_space(params).shape == (20,) and env.observation_space(params).shape == (25,)
    plain, plain_params = gymnax.make("HetNet-v0")
    assert type(plain) is HetNet and plain_params == params == ENV.default_params
    assert not envs.has_success("HetNet-v0")
    _, configured = envs.make_configured("HetNet-v0", max_episode_steps=7)
    assert configured.max_steps_in_episode == 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_users": 0}, "num_users=0"),
        ({"num_small_cells": -1}, "num_small_cells=-1"),
        ({"fading": "nakagami"}, "fading='nakagami'.*rician"),
    ],
)
def test_bad_constructor_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HetNet(**kwargs)
