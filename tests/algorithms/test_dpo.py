"""Offline DPO on a tiny model: log 2 at the reference, a rising chosen-vs-rejected margin on the
bundled pairs, reproducibility, and the CLI with checkpoint and resume."""

import jax
import numpy as np
import pytest
from offline_lm_settings import OVERRIDES, TINY  # noqa: E402  (tests/algorithms/)

from jaxrl_llm import cli
from jaxrl_llm.algorithms import offline_lm
from jaxrl_llm.algorithms.lm_task import load_model
from jaxrl_llm.data import offline
from jaxrl_llm.training import CheckpointStore, make_train
from jaxrl_llm.training.metrics import read_metrics


@pytest.fixture(scope="module")
def loaded():
    return load_model(offline_lm.DPOConfig(**TINY), verbose=False)


@pytest.fixture(scope="module")
def trained(loaded):
    algorithm = offline_lm.make_dpo(offline_lm.DPOConfig(**TINY), loaded)
    train = jax.jit(make_train(algorithm))
    state, metrics = train(jax.random.PRNGKey(0), algorithm.frozen)
    return algorithm, train, state, jax.device_get(metrics)


def dataset_stats(loaded, algorithm, params):
    """(DPO loss, mean β-margin, reward accuracy) on all the bundled pairs."""
    frozen = algorithm.frozen
    _, metrics = offline_lm.dpo_objective(
        params, frozen.reference, frozen.data, None, config=offline_lm.DPOConfig(**TINY), model_config=loaded.model_config
    )
    return float(metrics["loss"]), float(metrics["margin_mean"]), float(metrics["reward_accuracy"])


def test_dpo_raises_the_margin_of_chosen_over_rejected(loaded, trained):
    algorithm, _, state, metrics = trained
    assert algorithm.frozen.data.tokens.shape[0] == len(offline.read_preference_jsonl(offline.PAIRS_SAMPLE_FILE))
    np.testing.assert_allclose(metrics["loss"][0], np.log(2.0), rtol=1e-6)  # θ = θ_ref: margin 0
    assert metrics["margin_mean"][0] == 0.0 and metrics["reward_accuracy"][0] == 0.0
    loss_before, margin_before, _ = dataset_stats(loaded, algorithm, loaded.params)
    loss_after, margin_after, accuracy_after = dataset_stats(loaded, algorithm, state.train_state.params)
    assert margin_before == 0.0 and margin_after > 0.3, margin_after
    assert loss_after < loss_before - 0.1 and accuracy_after >= 0.65, (loss_after, accuracy_after)
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(state.train_state.params))]
    assert all(moved)


def test_same_seed_same_numbers(trained):
    algorithm, train, state, metrics = trained
    again_state, again = jax.device_get(train(jax.random.PRNGKey(0), algorithm.frozen))
    for name in metrics:
        np.testing.assert_array_equal(again[name], metrics[name])
    for a, b in zip(jax.tree.leaves(again_state.train_state.params), jax.tree.leaves(state.train_state.params)):
        np.testing.assert_array_equal(a, b)
    _, other = jax.device_get(train(jax.random.PRNGKey(1), algorithm.frozen))
    assert not np.array_equal(other["loss"], metrics["loss"])  # another seed draws other pairs


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"DPOConfig.label_smoothing=0.5 is invalid: must lie in \[0.0, 0.5\)"):
        offline_lm.DPOConfig(label_smoothing=0.5)
    with pytest.raises(ValueError, match=r"DPOConfig.batch_size=0 is invalid"):
        offline_lm.DPOConfig(batch_size=0)


def run_cli(*flags):
    overrides = [item for pair in OVERRIDES.items() for item in pair]
    cli.main(["dpo", "--model", "tiny", "--model-overrides", *overrides, "--max-prompt-tokens", "32",
              "--max-completion-tokens", "24", "--no-progress", "--compile-cache", "", "--stall-seconds", "0", *flags])


def test_cli_trains_checkpoints_and_resumes(tmp_path):
    run_cli("--num-updates", "2", "--out", str(tmp_path))
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 2
    run_cli("--num-updates", "3", "--out", str(tmp_path), "--resume")
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    np.testing.assert_allclose(rows[0]["loss"], np.log(2.0), rtol=1e-5)
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 3


def test_a_dataset_sampled_from_the_reference_is_rewarded_by_exact_match(loaded, tmp_path):
    from jaxrl_llm.data import Problem

    problems = [Problem("What is 1 + 1?", "2"), Problem("What is 2 * 3?", "6"), Problem("What is 4 + 0?", "4")]
    samples = offline_lm.sample_rewarded_dataset(
        loaded, problems, jax.random.PRNGKey(0), samples_per_problem=2, max_new_tokens=8, max_prompt_tokens=32
    )
    assert [s.prompt for s in samples] == [p.question for p in problems for _ in range(2)]
    assert all(len(s.completion) <= 8 and s.reward in (0.0, 1.0) for s in samples)
    # a sampled dataset is a training set as it stands (sampled text is read back as written)
    offline.write_jsonl(tmp_path / "sampled.jsonl", [*samples, offline.RewardedCompletion(problems[0].question, "2", 1.0)])
    config = offline_lm.ShiQConfig(**{**TINY, "data_path": str(tmp_path / "sampled.jsonl"), "max_completion_tokens": 9})
    algorithm = offline_lm.make_shiq(config, loaded)
    assert algorithm.frozen.data.tokens.shape[0] == 7


def test_a_sampled_dataset_scored_by_turns_keeps_each_turn_and_its_reward(loaded):
    from jaxrl_llm.data import Problem

    def first_character_then_rest(text, problem):
        return (text[:1], text[1:]), (1.0, float(len(text) > 1))

    problems = [Problem("What is 1 + 1?", "2"), Problem("What is 2 * 3?", "6")]
    samples = offline_lm.sample_rewarded_dataset(
        loaded, problems, jax.random.PRNGKey(1), samples_per_problem=2, max_new_tokens=6, max_prompt_tokens=32,
        score=first_character_then_rest,
    )
    for sample in samples:
        texts, rewards = sample.turns
        assert len(texts) == 2 and "".join(texts) == sample.text and rewards == (1.0, float(len(sample.text) > 1))

    def broken(text, problem):
        return (text + "!",), (1.0,)

    with pytest.raises(ValueError, match="do not join into the text"):
        offline_lm.sample_rewarded_dataset(loaded, problems[:1], jax.random.PRNGKey(1), samples_per_problem=1,
                                           max_new_tokens=4, max_prompt_tokens=32, score=broken)
