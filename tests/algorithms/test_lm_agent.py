"""LM agents: advantages per algorithm, the command line, checkpoint/resume, and a learning test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm.algorithms import lm_agent
from jaxrl_llm.algorithms.configs.lm_agent import LMAgentConfig
from jaxrl_llm.losses.reference.gigpo_numpy import gigpo_advantages_reference
from jaxrl_llm.rollout.agent import AgentRows
from jaxrl_llm.training.checkpoint import CheckpointStore
from jaxrl_llm.training.metrics import read_metrics

SMALL_MODEL = {"hidden_size": "64", "intermediate_size": "256", "num_layers": "2"}  # ~0.1M parameters
SMALL_MODEL_FLAGS = ["--model-overrides", *(text for item in SMALL_MODEL.items() for text in item)]


def _rows(rewards, active, invalid, anchors, group_size) -> AgentRows:
    batch, turns = rewards.shape
    zeros = jnp.zeros((batch, turns), jnp.int32)
    return AgentRows(
        prompt_tokens=jnp.zeros((batch, turns, 2), jnp.int32),
        prompt_mask=jnp.ones((batch, turns, 2), bool),
        answer_tokens=jnp.zeros((batch, turns, 2), jnp.int32),
        answer_mask=jnp.ones((batch, turns, 2), bool),
        answer_logprobs=jnp.zeros((batch, turns, 2)),
        action=zeros,
        valid_action=jnp.asarray(active & ~invalid),
        active=jnp.asarray(active),
        reward=jnp.asarray(rewards, jnp.float32),
        terminated=jnp.zeros((batch, turns), bool),
        success=jnp.zeros((batch, turns), bool),
        anchor_obs=jnp.asarray(anchors),
        group_id=jnp.broadcast_to((jnp.arange(batch) // group_size)[:, None], (batch, turns)),
        trajectory_id=jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, turns)),
        turn=jnp.broadcast_to(jnp.arange(turns)[None], (batch, turns)),
    )


@pytest.mark.parametrize("algorithm", ["gigpo", "grpo", "rloo"])
def test_row_advantages_follow_each_algorithm_on_random_rows(algorithm):
    rng = np.random.default_rng(0)
    groups, group_size, turns = 3, 4, 5
    batch = groups * group_size
    lengths = rng.integers(1, turns + 1, batch)
    active = np.arange(turns)[None] < lengths[:, None]
    rewards = np.where(active, rng.choice([0.0, 0.0, 1.0], (batch, turns)), 0.0)
    invalid = active & (rng.random((batch, turns)) < 0.3)
    anchors = rng.integers(0, 3, (batch, turns, 2)).astype(np.int32)
    config = LMAgentConfig(algorithm=algorithm, num_groups=groups, group_size=group_size, max_turns=turns)
    rows = _rows(rewards, active, invalid, anchors, group_size)
    advantage, _ = jax.jit(lambda r: lm_agent.row_advantages(r, config))(rows)
    episode_group = np.arange(batch) // group_size
    if algorithm == "rloo":  # R_i minus the mean of the other members' returns, then the penalty
        returns = rewards.sum(1)
        totals = np.array([returns[episode_group == g].sum() for g in episode_group])
        baseline = (totals - returns) / (group_size - 1)
        expected = np.where(active, (returns - baseline)[:, None] - 0.1 * invalid, 0.0)
    else:
        expected = gigpo_advantages_reference(
            rewards,
            active,
            episode_group,
            anchors,
            gamma=0.95,
            step_advantage_weight=1.0 if algorithm == "gigpo" else 0.0,
            normalization="none" if algorithm == "gigpo" else "std",
            invalid_action_mask=invalid,
            invalid_action_penalty=0.1,
        )["advantages"]
    np.testing.assert_allclose(np.asarray(advantage), expected, atol=1e-5)


def test_ppo_turn_advantages_are_gae_over_each_episode():
    rng = np.random.default_rng(1)
    batch, turns, gamma, lam = 6, 5, 0.9, 0.8
    lengths = rng.integers(1, turns + 1, batch)
    active = np.arange(turns)[None] < lengths[:, None]
    ends = (np.arange(turns)[None] == lengths[:, None] - 1) & (rng.random(batch) < 0.6)[:, None]  # some cut
    rewards = np.where(active, rng.normal(size=(batch, turns)), 0.0)
    invalid = active & (rng.random((batch, turns)) < 0.3)
    values = rng.normal(size=(batch, turns))
    rows = _rows(rewards, active, invalid, np.zeros((batch, turns, 1), np.int32), 2)._replace(
        terminated=jnp.asarray(ends)
    )
    config = LMAgentConfig(algorithm="ppo", gamma=gamma, gae_lambda=lam)
    advantage, returns = lm_agent.turn_advantages_gae(rows, jnp.asarray(values, jnp.float32), config)
    expected = np.zeros((batch, turns))
    for b in range(batch):
        following = 0.0
        for t in reversed(range(lengths[b])):
            last = t == lengths[b] - 1
            next_value = 0.0 if last else values[b, t + 1]  # a cut episode bootstraps with 0
            delta = rewards[b, t] - 0.1 * invalid[b, t] + gamma * next_value - values[b, t]
            following = delta + (0.0 if last else gamma * lam * following)
            expected[b, t] = following
    np.testing.assert_allclose(np.asarray(advantage), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(returns), np.where(active, expected + values, 0.0), atol=1e-5)


def _cli(tmp_path, *flags):
    from jaxrl_llm import cli

    cli.main(
        [
            "lm-agent",
            "--model",
            "tiny",
            *SMALL_MODEL_FLAGS,
            "--env",
            "Sokoban-v0",
            "--num-groups",
            "2",
            "--group-size",
            "2",
            "--max-turns",
            "3",
            "--sft-warmup-steps",
            "3",
            "--no-progress",
            "--compile-cache",
            "",
            "--out",
            str(tmp_path),
            *flags,
        ]
    )


def test_cli_trains_an_agent_checkpoints_and_resumes(tmp_path):
    _cli(tmp_path, "--num-updates", "2")
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 2
    assert CheckpointStore(tmp_path / "warmup" / "checkpoints").latest_step() == 3
    assert (tmp_path / "learning_curve.png").exists()
    _cli(tmp_path, "--num-updates", "3", "--resume")
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert [int(r["frames"]) for r in rows] == [12, 24, 36]  # 4 episodes x 3 turns per update
    for row in rows:
        assert np.isfinite(row["loss"]) and 0.0 <= row["success_rate"] <= 1.0
        assert 0.0 <= row["invalid_action_fraction"] <= 1.0


def test_cli_explains_an_answer_budget_that_cannot_hold_an_action(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli(tmp_path, "--max-new-tokens", "3")
    assert exit_info.value.code == 2
    assert "max_new_tokens=3 cannot hold the longest answer of Sokoban-v0" in capsys.readouterr().err


@pytest.mark.slow
def test_a_tiny_lm_agent_learns_a_fixed_maze_with_gigpo():
    """A from-scratch decoder, taught the answer format on random-walk transcripts, then GiGPO
    on one fixed 4x4 maze (goal 2 moves away): success rises within 8 updates (seeded)."""
    from jaxrl_llm.training import make_train

    config = LMAgentConfig(
        env="Maze-v0",
        env_kwargs={"size": 4, "layout_seed": 3},
        num_groups=1,
        group_size=8,
        max_turns=6,
        num_updates=8,
        learning_rate=3e-3,
        sft_warmup_steps=90,
        sft_learning_rate=3e-3,
        remat=False,
        model_overrides=SMALL_MODEL,
    )
    run = lm_agent.setup(config, verbose=False)
    algorithm = lm_agent.make_lm_agent(config, run)
    _, metrics = jax.jit(make_train(algorithm))(jax.random.PRNGKey(0), run.base_params)
    success = np.asarray(metrics["success_rate"])
    assert success[-3:].mean() >= success[0] + 0.25, success
    assert np.asarray(metrics["episode_turns_mean"])[-3:].mean() < np.asarray(metrics["episode_turns_mean"])[0]
