"""LORO: the prior's text interface (sentences, parsers, heuristics), its stored transitions
(s_{t+1} follows a_t, truncation is not termination), the batched LM prior, pretraining and the
baselines' initial states, reproducibility, LORO vs online RL on CartPole with the heuristic
prior, and the CLI end to end."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm import envs
from jaxrl_llm.algorithms import loro
from jaxrl_llm.algorithms.configs.loro import PRIOR_ENVS, LOROConfig
from jaxrl_llm.envs.describe_state import EXPERT_PREFIX, TEXT_ENVS, text_interface
from jaxrl_llm.rollout import Transition
from jaxrl_llm.rollout import prior as prior_lib
from jaxrl_llm.rollout.prior import collect_episodes, heuristic_prior, load_episodes, save_episodes

# ----------------------------------------------------------------------------- text interface


def interface(env_id, max_steps=None, **kwargs):
    env, env_params = envs.make_configured(env_id, kwargs, max_steps)
    return text_interface(env_id, env, env_params), env, env_params


def test_cartpole_sentence_is_the_papers():
    text, _, _ = interface("CartPole-v1")
    assert text.describe(np.array([0.01234, -0.2, 0.05, 0.3], np.float32)) == (
        "The cart is positioned at 0.012, with a velocity of 0.20 towards the left. The pole is tilted "
        "at 0.05 radians, rotating at 0.30 radians per second towards the right."
    )
    assert text.describe(np.array([-1.5, 0.5, -0.1, -1.25])) == (
        "The cart is positioned at -1.500, with a velocity of 0.50 towards the right. The pole is "
        "tilted at 0.10 radians, rotating at 1.25 radians per second towards the left."
    )
    assert text.system.startswith(EXPERT_PREFIX) and "'1' to push the cart to the left" in text.system
    user = text.user(np.zeros(4))
    assert user.endswith("Reply 1 to push the cart left or 2 to push it right. Reply with the action only.")
    assert text.user(np.zeros(4), think=True).endswith("Think step by step, then end with your answer.")


def test_pendulum_and_grid_sentences():
    text, _, _ = interface("Pendulum-v1")
    assert text.describe(np.array([math.cos(0.5), math.sin(0.5), -1.234])) == (
        "The pendulum is at 0.500 radians from upright (0 is upright, positive is counterclockwise), "
        "rotating clockwise at 1.23 radians per second."
    )
    assert text.describe(np.array([-1.0, 0.0, 2.0])).startswith("The pendulum is at 3.142 radians")
    assert "counterclockwise at 2.00" in text.describe(np.array([-1.0, 0.0, 2.0]))

    lake, _, _ = interface("FrozenLake-misc")
    assert lake.describe(np.array(6)) == "You are at row 1, column 2."
    big_lake, _, _ = interface("FrozenLake-misc", map_name="8x8")
    assert big_lake.describe(np.array(9)) == "You are at row 1, column 1."
    # the rules give start and goal but no hole: the official prompt's oracle coordinates are gone
    assert "the goal is at row 3, column 3" in lake.system
    for row, col in [(1, 1), (1, 3), (2, 3), (3, 0)]:
        assert f"row {row}, column {col}" not in lake.system and f"({row},{col})" not in lake.system
    assert "Reply 1 to move left, 2 down, 3 right or 4 up." in lake.user(np.array(0))

    cliff, _, _ = interface("CliffWalking-v0")
    assert cliff.describe(np.array(36)) == "You are at row 3, column 0."
    assert cliff.describe(np.array(47)) == "You are at row 3, column 11."
    assert "columns 1 to 10) are a cliff" in cliff.system


def test_discrete_parsers():
    cart, _, _ = interface("CartPole-v1")
    parse = lambda reply, think=False: cart.parse(reply, think).action
    for reply, action in [("2", 1), ("'1'", 0), ("Action: 2.", 1), ("2.0", 1), (" 1\n", 0)]:
        assert parse(reply) == action, reply
    for reply in ["3", "0", "0.5", "", "-1", "push left or push right", "leftover"]:
        assert parse(reply) is None, reply
    assert parse("You should push left.") == 0 and parse("RIGHT!") == 1  # no number: one action word
    # which number counts: the first for an answer-only prompt, the last after reasoning
    reasoning = "The pole is tilted at 0.05 radians to the right, so I push right: 2"
    assert parse(reasoning) is None and parse(reasoning, think=True) == 1
    assert parse("1. Push left.\n2.") == 0 and parse("1. Push left.\n2.", think=True) == 1

    cliff, _, _ = interface("CliffWalking-v0")
    assert [cliff.parse(r).action for r in ["1", "2", "3", "4", "5", "move up"]] == [0, 1, 2, 3, None, 0]
    lake, _, _ = interface("FrozenLake-misc")
    assert [lake.parse(r).action for r in ["1", "4", "go down"]] == [0, 3, 1]


def test_torque_parser_clips_out_of_range_values():
    pendulum, _, _ = interface("Pendulum-v1")
    parse = pendulum.parse
    assert parse("<1.5>") == (1.5, False)
    assert parse("I apply <-0.25> now") == (-0.25, False)
    assert parse("<-3>") == (-2.0, True) and parse("<+2.5>") == (2.0, True)
    assert parse("torque 0.7") == (0.7, False)
    assert parse("<1.0> or rather <-0.5>") == (1.0, False)
    assert parse("<1.0> or rather <-0.5>", True) == (-0.5, False)
    assert parse("angle 3, torque <0.5>") == (0.5, False)  # the bracketed number wins
    assert parse("no idea").action is None and parse("").action is None


def test_the_config_lists_the_environments_with_a_text_interface():
    assert set(PRIOR_ENVS) == set(TEXT_ENVS)
    with pytest.raises(ValueError, match=r"LOROConfig.env='Acrobot-v1' is invalid"):
        LOROConfig(env="Acrobot-v1")
    with pytest.raises(
        ValueError, match=r"LOROConfig.pretrain_episodes=11 is invalid: must lie in \[1, 10\]"
    ):
        LOROConfig(prior_episodes=10, pretrain_episodes=11)
    with pytest.raises(ValueError, match=r"LOROConfig.arms=\('loro', 'sft'\) is invalid"):
        LOROConfig(arms=("loro", "sft"))


def test_heuristics():
    cart, _, _ = interface("CartPole-v1")
    obs = jnp.array([[0.0, 0.0, 0.05, -1.0], [0.0, 0.0, -0.02, 1.0]])
    np.testing.assert_array_equal(cart.heuristic(obs, jax.random.PRNGKey(0)), [1, 0])  # towards the lean

    pendulum, _, _ = interface("Pendulum-v1")
    torque = pendulum.heuristic(jnp.array([[math.cos(0.1), math.sin(0.1), 0.0], [-1.0, 0.0, 1.0]]), None)
    assert torque.shape == (2, 1) and torque[0, 0] < 0  # balance: push back towards upright
    assert torque[1, 0] == 2.0  # hanging, turning counterclockwise: pump energy along the motion

    cliff, _, _ = interface("CliffWalking-v0")
    at = lambda text, cell: np.asarray(text.heuristic(jnp.full((64,), cell), jax.random.PRNGKey(0)))
    np.testing.assert_array_equal(at(cliff, 36), 0)  # the start: right is the cliff, go up
    np.testing.assert_array_equal(at(cliff, 2 * 12 + 5), 1)  # down would be the cliff
    lake, _, _ = interface("FrozenLake-misc")
    assert set(at(lake, 0).tolist()) == {1, 2}  # down or right, at random


# ----------------------------------------------------------------------------- stored transitions


def test_stored_transitions_follow_the_actions_and_keep_truncation_apart(tmp_path):
    """The heuristic (ended by the pole at 25-62 steps) with a 40-step limit: some episodes
    terminate, the others are truncated at the limit."""
    text, env, env_params = interface("CartPole-v1", max_steps=40)
    episodes = collect_episodes(jax.random.PRNGKey(0), env, env_params, heuristic_prior(text), 10, num_envs=4)
    t, index = episodes.transitions, episodes.episode
    assert episodes.num_episodes == 10 and t.obs.shape == (len(index), 4) and episodes.decisions == len(index)
    assert episodes.parse_failures == 0
    np.testing.assert_array_equal(np.bincount(index), episodes.lengths)
    np.testing.assert_array_equal(index, np.sort(index))  # episode-major
    truncated_episodes = terminated_episodes = 0
    for e in range(10):
        rows = np.flatnonzero(index == e)
        obs, next_obs = t.obs[rows], t.next_obs[rows]
        assert np.abs(obs[0]).max() <= 0.05  # s_0, the reset state, is stored
        np.testing.assert_array_equal(next_obs[:-1], obs[1:])  # s_{t+1} is the next observation
        assert (np.abs(next_obs - obs).max(-1) > 0).all()  # ... not s_t again
        # a_t is the prior's action *in s_t* (the official code paired it with s_{t+1})
        np.testing.assert_array_equal(t.action[rows], (obs[:, 2] > 0).astype(np.int32))
        done = t.terminated[rows] | t.truncated[rows]
        assert not done[:-1].any() and done[-1]
        assert episodes.returns[e] == t.reward[rows].sum() == len(rows)
        last = next_obs[-1]
        fell = abs(last[2]) > env_params.theta_threshold_radians or abs(last[0]) > env_params.x_threshold
        if len(rows) == 40 and not fell:  # the step limit: truncated, not terminated
            assert t.truncated[rows][-1] and not t.terminated[rows][-1]
            truncated_episodes += 1
        else:
            assert t.terminated[rows][-1] and not t.truncated[rows][-1] and fell
            terminated_episodes += 1
    assert truncated_episodes >= 2 and terminated_episodes >= 2  # both cases were exercised

    first = episodes.first(3)
    assert len(first.reward) == episodes.lengths[:3].sum()
    save_episodes(tmp_path / "episodes.npz", episodes)
    loaded = load_episodes(tmp_path / "episodes.npz")
    jax.tree.map(np.testing.assert_array_equal, loaded.transitions, episodes.transitions)
    assert loaded.summary() == episodes.summary()


def test_lm_prior_samples_all_environments_in_one_call_per_step(monkeypatch):
    """The tiny random model: one `generate` per step for all environments (finished ones
    inactive), failed parses replaced by random actions and counted."""
    from jaxrl_llm.models import load

    params, model_config, tokenizer = load("tiny", key=jax.random.PRNGKey(0))
    text, env, env_params = interface("CartPole-v1", max_steps=3)
    calls, generate = [], prior_lib.generate

    def counting_generate(params, config, tokens, mask, key, *args, **kwargs):
        calls.append((tokens.shape[0], int(np.asarray(kwargs["active"]).sum())))
        return generate(params, config, tokens, mask, key, *args, **kwargs)

    monkeypatch.setattr(prior_lib, "generate", counting_generate)
    act = prior_lib.lm_prior(
        text,
        params,
        model_config,
        tokenizer,
        max_new_tokens=4,
        temperature=1.0,
        top_p=1.0,
        pad_to_multiple_of=256,
    )
    episodes = collect_episodes(jax.random.PRNGKey(1), env, env_params, act, 4, num_envs=3)
    # 2 rounds of 3 steps; the second round has 1 active environment of 3
    assert calls == [(3, 3)] * 3 + [(3, 1)] * 3
    assert episodes.decisions == 12 and len(episodes.replies) == 12
    failures = sum(text.parse(reply).action is None for reply in episodes.replies)
    assert episodes.parse_failures == failures > 0  # a random model rarely says "1" or "2" first
    assert set(np.unique(episodes.transitions.action)) <= {0, 1}
    np.testing.assert_array_equal(episodes.lengths, 3)
    assert episodes.transitions.truncated.sum() == 4 and not episodes.transitions.terminated.any()


# ----------------------------------------------------------------------------- learners


def test_learner_dataset_maps_torques_into_the_unit_box():
    config = LOROConfig(env="Pendulum-v1")
    data = Transition(
        obs=np.zeros((3, 3), np.float32),
        action=np.array([[2.0], [-1.0], [0.0]], np.float32),
        reward=np.zeros(3),
        next_obs=np.zeros((3, 3), np.float32),
        terminated=np.zeros(3, int),
        truncated=np.array([0, 0, 1]),
    )
    out = loro.learner_dataset(config, data)
    np.testing.assert_allclose(out.action, [[1.0], [-0.5], [0.0]])
    assert out.terminated.dtype == bool and out.truncated[-1] and out.reward.dtype == np.float32


def test_summarize_counts_the_papers_evaluations():
    nan = math.nan
    metrics = {
        "eval_return_mean": [5.0, nan, 7.0, nan, 9.0],  # update 0 evaluates the initial parameters
        "episode_return_mean": [nan, 10.0, nan, 20.0, 30.0],
        "episodes": [0, 1, 0, 2, 1],
    }
    summary = loro.summarize(metrics, eval_every=2)
    assert summary["cumulative_eval_return"] == 16.0 and summary["evaluations"] == 2
    assert summary["initial_eval_return"] == 5.0 and summary["final_eval_return"] == 9.0
    assert summary["cumulative_train_return"] == 10.0 + 40.0 + 30.0 and summary["train_episodes"] == 4
    # DQN (updates 0, 100, 200, ... and the last) and SAC (99, 199, ...) both count one evaluation
    # per window of 100 updates; in a DQN run extended from 300 to 400 updates, 299 gave way to 300
    dqn_like = np.full(400, nan)
    dqn_like[[0, 100, 200, 299, 300, 399]] = [1.0, 2.0, 3.0, 100.0, 4.0, 5.0]
    np.testing.assert_array_equal(loro.evaluation_points(dqn_like, 100), [100, 200, 300, 399])
    assert loro.summarize({**metrics, "eval_return_mean": dqn_like}, 100)["cumulative_eval_return"] == 14.0
    sac_like = np.full(400, nan)
    sac_like[[99, 199, 299, 399]] = 1.0
    np.testing.assert_array_equal(loro.evaluation_points(sac_like, 100), [99, 199, 299, 399])


def small_config(**overrides):
    settings = dict(
        env="CartPole-v1",
        prior_epsilon=0.3,
        prior_episodes=10,
        pretrain_episodes=10,
        total_frames=1000,
        eval_every=200,
        eval_episodes=4,
        batch_size=64,
        hidden_sizes=(64, 64),
        learning_rate=1e-3,
        pretrain_steps=3000,
    )
    return LOROConfig(**{**settings, **overrides})


def buffer_items(collect_state):
    """Items written into a (never full, here) replay buffer."""
    state = collect_state.buffer_state
    assert not state.is_full
    return int(state.current_index)


def test_arms_start_paired_and_differ_only_by_pretraining_or_buffer():
    config = small_config(pretrain_steps=40, total_frames=200)
    prior = loro.collect_prior(config)
    key = jax.random.PRNGKey(3)
    states = {arm: loro.make_loro(config, prior, arm).init(key) for arm in ("online", "mix")}
    states["loro"] = jax.jit(loro.make_loro(config, prior, "loro").init)(key)  # pretraining compiles
    (online, online_collect), (mix, mix_collect), (warm, warm_collect) = (
        states[a] for a in ("online", "mix", "loro")
    )
    # same network and environments at the start; LORO has taken K offline gradient steps
    jax.tree.map(np.testing.assert_array_equal, mix.params, online.params)
    jax.tree.map(np.testing.assert_array_equal, warm_collect.rollout_state, online_collect.rollout_state)
    assert int(online.step) == 0 and int(warm.step) == 40
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), warm.params, online.params)
    assert min(jax.tree.leaves(moved)) > 0
    # LORO starts from an empty buffer, Mix from the first n prior episodes
    assert buffer_items(online_collect) == buffer_items(warm_collect) == 0
    assert buffer_items(mix_collect) == len(prior.first(config.pretrain_episodes).reward)


def test_sac_arms_on_pendulum():
    config = LOROConfig(
        env="Pendulum-v1",
        prior_episodes=2,
        pretrain_episodes=1,
        max_episode_steps=20,
        pretrain_steps=30,
        total_frames=200,
        batch_size=16,
        hidden_sizes=(16, 16),
    )
    prior = loro.collect_prior(config)
    assert prior.summary()["length_mean"] == 20 and prior.transitions.action.shape == (40, 1)
    key = jax.random.PRNGKey(0)
    warm, _ = jax.jit(loro.make_loro(config, prior, "loro").init)(key)
    assert int(warm.step) == 30 and int(warm.updates) == 30
    _, mix_collect = loro.make_loro(config, prior, "mix").init(key)
    assert buffer_items(mix_collect) == 20
    stored = np.asarray(mix_collect.buffer_state.experience.action[0, :20])
    np.testing.assert_allclose(stored, prior.first(1).action / 2.0, atol=1e-6)  # unit box


# ----------------------------------------------------------------------------- learning


@pytest.fixture(scope="module")
def cartpole_runs():
    """LORO and online RL, 3 seeds each (vmapped), 1000 frames after 3000 pretraining steps on
    10 episodes of the epsilon-0.3 heuristic (mean return ~43)."""
    config = small_config()
    prior = loro.collect_prior(config)
    keys = jax.random.split(jax.random.PRNGKey(100), 3)
    runs = {}
    for arm in ("loro", "online"):
        _, metrics = jax.jit(jax.vmap(loro.make_train(config, prior, arm)))(keys)
        runs[arm] = jax.device_get(metrics)
    return config, prior, keys, runs


def test_loro_is_reproducible(cartpole_runs):
    config, prior, keys, runs = cartpole_runs
    again = loro.collect_prior(config)
    jax.tree.map(np.testing.assert_array_equal, again.transitions, prior.transitions)
    _, metrics = jax.jit(jax.vmap(loro.make_train(config, again, "loro")))(keys)  # rebuilt from scratch
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(metrics), runs["loro"])
    assert not np.array_equal(runs["loro"]["loss"], runs["online"]["loss"])


def test_loro_beats_online_rl_early_on_cartpole(cartpole_runs):
    """Cumulative evaluation return over the first 1000 frames (5 evaluations of 4 episodes),
    mean over 3 seeds. Measured on 4 sets of 3 seeds (these keys are the first, the closest):
    LORO 397, 481, 269, 425; online 223, 57, 64, 101."""
    _, prior, _, runs = cartpole_runs
    assert 30 < prior.returns.mean() < 60
    data = prior.transitions  # epsilon 0.3: half the random actions differ from the heuristic's
    assert 0.08 < np.mean(data.action != (data.obs[:, 2] > 0)) < 0.25
    cumulative = {
        arm: np.array(
            [loro.summarize(jax.tree.map(lambda x: x[i], m), 200)["cumulative_eval_return"] for i in range(3)]
        )
        for arm, m in runs.items()
    }
    print({arm: c.tolist() for arm, c in cumulative.items()})
    assert cumulative["loro"].mean() > 1.25 * cumulative["online"].mean(), cumulative


# ----------------------------------------------------------------------------- command line


def test_cli_runs_the_experiment_and_resumes(tmp_path, capsys):
    from jaxrl_llm.cli import main
    from jaxrl_llm.training.metrics import read_metrics

    out = tmp_path / "loro"
    args = [
        "loro",
        "--env", "CartPole-v1",
        "--prior", "heuristic",
        "--prior-epsilon", "0.3",
        "--arms", "loro", "prior", "random",
        "--prior-episodes", "4",
        "--pretrain-episodes", "2",
        "--pretrain-steps", "50",
        "--eval-every", "100",
        "--eval-episodes", "2",
        "--batch-size", "32",
        "--hidden-sizes", "32", "32",
        "--out", str(out),
        "--no-progress",
        "--compile-cache", "",
    ]  # fmt: skip
    main([*args, "--total-frames", "300"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"loro", "prior", "random"}
    assert summary["loro"]["evaluations"] == 3 and summary["prior"]["evaluations"] == 3
    prior_summary = json.loads((out / "prior" / "summary.json").read_text())
    assert prior_summary["episodes"] == 4 and prior_summary["parse_failure_rate"] == 0.0
    assert summary["prior"]["cumulative_eval_return"] == pytest.approx(3 * prior_summary["return_mean"])
    for name in ("summary.md", "comparison.png", "prior/episodes.npz", "loro/learning_curve.png"):
        assert (out / name).exists(), name
    assert len(read_metrics(out / "loro" / "metrics.csv")) == 300
    assert (out / "loro" / "checkpoints").is_dir()
    prior_file = (out / "prior" / "episodes.npz").read_bytes()

    main([*args, "--total-frames", "400", "--resume"])  # a larger budget extends the run
    assert len(read_metrics(out / "loro" / "metrics.csv")) == 400
    assert (out / "prior" / "episodes.npz").read_bytes() == prior_file  # reused, not collected again
    assert json.loads((out / "summary.json").read_text())["loro"]["evaluations"] == 4
    with pytest.raises(SystemExit):  # a new run does not overwrite an experiment by accident
        main([*args, "--total-frames", "300"])
    assert "is not empty" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_prior_plays_a_few_cartpole_steps(smollm2):
    params, model_config, tokenizer = smollm2
    text, env, env_params = interface("CartPole-v1", max_steps=2)
    act = prior_lib.lm_prior(text, params, model_config, tokenizer, max_new_tokens=8)
    episodes = collect_episodes(jax.random.PRNGKey(0), env, env_params, act, 2)
    assert episodes.decisions == 4 and len(episodes.replies) == 4
    assert episodes.parse_failures == sum(text.parse(reply).action is None for reply in episodes.replies)
    print(episodes.summary(), episodes.replies)
