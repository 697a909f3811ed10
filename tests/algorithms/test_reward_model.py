"""The Bradley-Terry reward model on a tiny decoder: the head reads the last real token whatever
the padding, a marker that makes a response preferred is learned and generalises to held-out
pairs, LoRA trains adapters and head only, clear errors on bad data, and the CLI trains,
checkpoints and resumes bit for bit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from offline_lm_settings import OVERRIDES  # noqa: E402  (tests/algorithms/)

from jaxrl_llm import cli
from jaxrl_llm.algorithms import reward_model
from jaxrl_llm.algorithms.lm_task import load_model
from jaxrl_llm.data import offline
from jaxrl_llm.data.jsonl import DatasetFormatError
from jaxrl_llm.models.lora import LoraAdapters
from jaxrl_llm.models.reward_head import init_head, last_real_index, sequence_rewards
from jaxrl_llm.training import CheckpointStore, compose, make_train
from jaxrl_llm.training.metrics import read_metrics

TINY = dict(model="tiny", model_overrides=OVERRIDES, max_prompt_tokens=32, max_completion_tokens=24)
LETTERS = list("abcdefghij")


def marker_pairs(rng: np.random.Generator, count: int) -> list[offline.PreferencePair]:
    """Random 7-letter words; the chosen one has a 'z' at a random place, the rejected one a
    random other letter there (so neither position nor the replaced letter gives it away)."""
    pairs = []
    for _ in range(count):
        word, at = "".join(rng.choice(LETTERS, 6)), int(rng.integers(0, 7))
        other = str(rng.choice(LETTERS))
        pairs.append(offline.PreferencePair("Say a word.", word[:at] + "z" + word[at:], word[:at] + other + word[at:]))
    return pairs


@pytest.fixture(scope="module")
def loaded():
    return load_model(reward_model.RewardModelConfig(**TINY), verbose=False)


def test_last_real_index_with_left_and_right_padding():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], bool)
    np.testing.assert_array_equal(last_real_index(mask), [4, 2, 4, 1])


def test_the_head_reads_the_last_real_token_whatever_the_padding(loaded):
    params = {"decoder": loaded.params, "head": init_head(jax.random.PRNGKey(1), loaded.model_config.hidden_size, 1.0)}
    ids = jnp.array(loaded.tokenizer.encode("Q: 1 + 2?\nA: 3", add_special_tokens=False) + [loaded.tokenizer.eos_token_id])
    n, pad = ids.shape[0], 5
    filler = jnp.full((pad,), 7)  # any id: padded slots must not matter
    tokens = jnp.stack([jnp.concatenate([filler, ids]), jnp.concatenate([ids, filler]), jnp.concatenate([ids, filler + 3])])
    real = jnp.concatenate([jnp.zeros(pad, bool), jnp.ones(n, bool)])
    mask = jnp.stack([real, real[::-1], real[::-1]])
    score = jax.jit(sequence_rewards, static_argnums=1)
    rewards = score(params, loaded.model_config, tokens, mask)
    alone = score(params, loaded.model_config, ids[None], jnp.ones((1, n), bool))
    np.testing.assert_allclose(rewards, jnp.full(3, alone[0]), atol=1e-5)
    assert abs(float(alone[0])) > 1e-3  # a non-trivial reward, not 0 everywhere
    # the reward reads the last real token: changing it changes the reward
    other_end = score(params, loaded.model_config, ids.at[-1].set(ids[0])[None], jnp.ones((1, n), bool))
    assert abs(float(other_end[0] - alone[0])) > 1e-4


def test_a_preference_marker_is_learned_and_generalises_to_held_out_pairs(loaded):
    config = reward_model.RewardModelConfig(
        **TINY, batch_size=16, learning_rate=3e-3, num_updates=30, eval_pairs=32, eval_every=10
    )
    algorithm = reward_model.make_reward_model(config, loaded, marker_pairs(np.random.default_rng(0), 96))
    assert algorithm.frozen.train.tokens.shape[0] == 64 and algorithm.frozen.held_out.tokens.shape[0] == 32
    state, metrics = jax.device_get(jax.jit(make_train(algorithm))(jax.random.PRNGKey(0), algorithm.frozen))
    evaluated = metrics["eval_accuracy"][~np.isnan(metrics["eval_accuracy"])]
    assert len(evaluated) == 4  # updates 0, 10, 20 and the last
    assert evaluated[0] < 0.75, evaluated  # chance before training
    assert evaluated[-1] >= 0.9, evaluated
    assert abs(metrics["loss"][0] - np.log(2.0)) < 0.05  # a small head: rewards start near 0
    assert metrics["loss"][-5:].mean() < 0.3 and metrics["margin_mean"][-1] > 1.0, metrics["loss"]
    # the final parameters, scored outside the loop, agree
    final = reward_model.held_out_accuracy(
        state.train_state.params, algorithm.frozen.held_out, loaded.model_config, pairs_per_pass=8
    )
    assert float(final) >= 0.9


def test_lora_trains_the_adapters_and_the_head_and_micro_batches_change_nothing(loaded):
    results = []
    for micro in (0, 2):
        config = reward_model.RewardModelConfig(
            **TINY, batch_size=4, micro_batch_size=micro, learning_rate=1e-2, num_updates=2, eval_pairs=0, lora_rank=2
        )
        algorithm = reward_model.make_reward_model(config, loaded)
        state, metrics = jax.jit(make_train(algorithm))(jax.random.PRNGKey(0), algorithm.frozen)
        results.append((state.train_state.params, np.asarray(metrics["loss"])))
    assert algorithm.frozen.base is loaded.params and algorithm.frozen.held_out is None
    (whole, whole_loss), (trained, micro_loss) = results
    np.testing.assert_allclose(micro_loss, whole_loss, rtol=1e-5)  # 2 slices, not twice the loss
    chex.assert_trees_all_close(trained, whole, atol=1e-5)  # Adam: ~lr-sized steps of float32 sums
    start = compose(algorithm).init(jax.random.PRNGKey(0)).train_state.params
    assert isinstance(trained["decoder"], LoraAdapters) and "eval_accuracy" not in metrics
    assert not np.allclose(trained["head"]["kernel"], start["head"]["kernel"])
    factors = jax.tree_util.tree_leaves_with_path(trained["decoder"].weights)
    assert all(np.any(b != 0) for path, b in factors if path[-1].key == "b")  # B starts at 0
    weights = reward_model.model_params(trained, loaded.params)  # the base plus the adapters
    assert jax.tree.structure(weights["decoder"]) == jax.tree.structure(loaded.params)


def test_bad_data_fails_with_a_clear_message(loaded, tmp_path):
    with pytest.raises(ValueError, match=r"RewardModelConfig.data_path='.*missing.jsonl' is invalid: file not found"):
        reward_model.RewardModelConfig(**TINY, data_path=str(tmp_path / "missing.jsonl"))
    rewarded = tmp_path / "rewarded.jsonl"
    rewarded.write_text('{"prompt": "What is 1 + 1?", "completion": "#### 2", "reward": 1.0}\n')
    with pytest.raises(DatasetFormatError, match="chosen"):
        reward_model.make_reward_model(reward_model.RewardModelConfig(**TINY, data_path=str(rewarded)), loaded)
    with pytest.raises(ValueError, match="no preference pairs"):
        reward_model.make_reward_model(reward_model.RewardModelConfig(**TINY), loaded, [])
    pairs = marker_pairs(np.random.default_rng(1), 3)
    with pytest.raises(ValueError, match=r"eval_pairs=3 is invalid: the data has 3 preference pairs"):
        reward_model.make_reward_model(reward_model.RewardModelConfig(**TINY, eval_pairs=3), loaded, pairs)
    with pytest.raises(ValueError, match=r"RewardModelConfig.eval_every=0 is invalid"):
        reward_model.RewardModelConfig(**TINY, eval_every=0)


def run_cli(out, *flags):
    overrides = [item for pair in OVERRIDES.items() for item in pair]
    cli.main(["reward-model", "--model", "tiny", "--model-overrides", *overrides, "--max-prompt-tokens", "32",
              "--max-completion-tokens", "24", "--learning-rate", "1e-3", "--eval-every", "2", "--no-progress",
              "--stall-seconds", "0", "--out", str(out), *flags])


def final_state(out, loaded):
    config = reward_model.RewardModelConfig(**TINY)
    like = jax.eval_shape(compose(reward_model.make_reward_model(config, loaded)).init, jax.random.PRNGKey(0))
    store = CheckpointStore(out / "checkpoints")
    step, state = store.latest_step(), store.restore(store.latest_step(), like)
    store.close()
    return step, state


def test_cli_trains_checkpoints_and_resumes_bit_for_bit(loaded, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_cli(straight, "--num-updates", "4")
    run_cli(resumed, "--num-updates", "2")
    assert CheckpointStore(resumed / "checkpoints").latest_step() == 2
    run_cli(resumed, "--num-updates", "4", "--resume")
    (step_a, state_a), (step_b, state_b) = final_state(straight, loaded), final_state(resumed, loaded)
    assert step_a == step_b == 4
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rows, again = read_metrics(straight / "metrics.csv"), read_metrics(resumed / "metrics.csv")
    assert [int(r["step"]) for r in again] == [1, 2, 3, 4]
    for row, other in zip(rows, again, strict=True):
        # the first run also evaluated at its last update (index 1), which the straight one skips
        evaluated = row.pop("eval_accuracy"), other.pop("eval_accuracy")
        assert row == other and (np.isnan(evaluated[0]) or evaluated[0] == evaluated[1])
    assert abs(rows[0]["loss"] - np.log(2.0)) < 0.05
    evaluations = [np.isfinite(r["eval_accuracy"]) for r in read_metrics(straight / "metrics.csv")]
    assert evaluations == [True, False, True, True]  # every 2 updates and at the last
    assert (straight / "learning_curve.png").stat().st_size > 1000
