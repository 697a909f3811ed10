"""Offline ShiQ on a tiny model: q = v = 0 at the start, learning, reproducibility, exact
micro-batching, inference as a plain softmax of the learned logits, LoRA, and the CLI."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from offline_lm_settings import OVERRIDES, TINY  # noqa: E402  (tests/algorithms/)

from jaxrl_llm import cli
from jaxrl_llm.algorithms import offline_lm
from jaxrl_llm.algorithms.lm_task import load_model
from jaxrl_llm.losses.bellman import implied_log_policy
from jaxrl_llm.models.llama import forward, positions_from_mask
from jaxrl_llm.models.logprobs import token_logit_stats
from jaxrl_llm.models.lora import LoraAdapters
from jaxrl_llm.training import CheckpointStore, compose, make_train
from jaxrl_llm.training.metrics import read_metrics


@pytest.fixture(scope="module")
def loaded():
    return load_model(offline_lm.ShiQConfig(**TINY), verbose=False)


@pytest.fixture(scope="module")
def trained(loaded):
    """(algorithm, final loop state, metrics) of 16 updates."""
    algorithm = offline_lm.make_shiq(offline_lm.ShiQConfig(**TINY), loaded)
    state, metrics = jax.jit(make_train(algorithm))(jax.random.PRNGKey(0), algorithm.frozen)
    return algorithm, state, jax.device_get(metrics)


def test_starts_at_q_equal_v_equal_zero_then_learns(loaded, trained):
    algorithm, state, metrics = trained
    for name in ("q_mean", "v_mean", "log_ratio_mean", "initial_value_mean"):
        assert metrics[name][0] == 0.0, name  # θ = θ_ref: the shifted Q-values are 0
    # at q = v = 0 the multi-step residual is −R on every token of a rewarded completion
    assert metrics["loss"][0] > 0 and np.all(np.isfinite(metrics["loss"]))
    before = dataset_loss_of(loaded, algorithm, loaded.params)
    after = dataset_loss_of(loaded, algorithm, state.train_state.params)
    assert after < 0.75 * before, (before, after)
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(state.train_state.params))]
    assert all(moved)
    assert int(state.train_state.step) == 16 and int(state.collect_state.update) == 16


def dataset_loss_of(loaded, algorithm, params):
    config, frozen = offline_lm.ShiQConfig(**TINY), algorithm.frozen
    loss, _ = offline_lm.shiq_objective(
        params, frozen.reference, frozen.data, None, config=config, model_config=loaded.model_config
    )
    return float(loss)


def test_the_policy_moves_towards_rewarded_completions(loaded, trained):
    """π* ∝ π_ref e^{R/β}: the log-ratio of rewarded completions rises against unrewarded ones."""
    algorithm, state, _ = trained
    data = algorithm.frozen.data

    def completion_logps(params):
        stats = offline_lm.completion_logit_stats(params, loaded.model_config, data.tokens, data.mask, data.num_prompt_tokens)
        return np.asarray(stats.logprob.sum(-1))

    gain = completion_logps(state.train_state.params) - completion_logps(loaded.params)
    rewarded = np.asarray(data.rewards).sum(-1) == 1.0
    assert gain[rewarded].mean() > gain[~rewarded].mean() + 0.5, (gain[rewarded].mean(), gain[~rewarded].mean())


def test_inference_is_a_plain_softmax_of_the_learned_logits(loaded, trained):
    _, state, _ = trained
    params, data = state.train_state.params, trained[0].frozen.data
    tokens, mask = data.tokens[:4], data.mask[:4]
    stats = token_logit_stats(params, loaded.model_config, tokens, mask)
    logits, _ = forward(params, loaded.model_config, tokens, positions_from_mask(mask), mask=mask)
    log_softmax = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1], -1), tokens[:, 1:, None], -1)[..., 0]
    defined = np.asarray(mask[:, 1:] & mask[:, :-1])  # a real token after a real token
    np.testing.assert_allclose(
        np.asarray(implied_log_policy(stats.target_logit, stats.logsumexp))[:, 1:][defined],
        np.asarray(log_softmax)[defined],
        rtol=1e-5,
        atol=1e-5,
    )


def test_same_seed_same_numbers_and_micro_batches_give_the_same_update(loaded, trained):
    algorithm, state, metrics = trained
    again_state, again = jax.device_get(jax.jit(make_train(algorithm))(jax.random.PRNGKey(0), algorithm.frozen))
    np.testing.assert_array_equal(again["loss"], metrics["loss"])
    for a, b in zip(jax.tree.leaves(again_state.train_state.params), jax.tree.leaves(state.train_state.params)):
        np.testing.assert_array_equal(a, b)
    # 4 micro-batches of 2 rows: the same updates (the loss of update 2 is after the same update 1)
    micro = offline_lm.make_shiq(offline_lm.ShiQConfig(**{**TINY, "num_updates": 2, "micro_batch_size": 2}), loaded)
    fns = compose(micro)
    micro_state, micro_losses = fns.init(jax.random.PRNGKey(0)), []
    update = jax.jit(fns.update)
    for _ in range(2):
        micro_state, micro_metrics = update(micro_state, micro.frozen)
        micro_losses.append(float(micro_metrics["loss"]))
    np.testing.assert_allclose(micro_losses, metrics["loss"][:2], rtol=1e-5)


def test_lora_trains_only_the_adapters_and_keeps_the_reference(loaded):
    config = offline_lm.ShiQConfig(**{**TINY, "lora_rank": 2, "learning_rate": 1e-2, "num_updates": 3})
    algorithm = offline_lm.make_shiq(config, loaded)
    fns = compose(algorithm)
    state = fns.init(jax.random.PRNGKey(1))
    assert isinstance(state.train_state.params, LoraAdapters)
    update = jax.jit(fns.update)
    for _ in range(3):
        state, metrics = update(state, algorithm.frozen)
    assert np.isfinite(metrics["loss"]) and metrics["log_ratio_mean"] != 0.0
    assert algorithm.frozen.reference is loaded.params


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"ShiQConfig.beta=0.0 is invalid"):
        offline_lm.ShiQConfig(beta=0.0)
    with pytest.raises(ValueError, match=r"ShiQConfig.loss_agg_mode='mean' is invalid: must be one of"):
        offline_lm.ShiQConfig(loss_agg_mode="mean")
    with pytest.raises(ValueError, match=r"one_step_coef=0.0 and multi_step_coef=0.0 are invalid"):
        offline_lm.ShiQConfig(multi_step_coef=0.0)
    with pytest.raises(ValueError, match=r"ShiQConfig.data_path='/nope.jsonl' is invalid: file not found"):
        offline_lm.ShiQConfig(data_path="/nope.jsonl")
    with pytest.raises(ValueError, match=r"micro_batch_size=3 is invalid: must divide batch_size=8"):
        offline_lm.ShiQConfig(micro_batch_size=3)


def run_cli(*flags):
    overrides = [item for pair in OVERRIDES.items() for item in pair]
    cli.main(["shiq", "--model", "tiny", "--model-overrides", *overrides, "--max-prompt-tokens", "32",
              "--max-completion-tokens", "24", "--no-progress", "--compile-cache", "", "--stall-seconds", "0", *flags])


def test_cli_trains_checkpoints_and_resumes(tmp_path, capsys):
    run_cli("--num-updates", "2", "--out", str(tmp_path))
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 2
    run_cli("--num-updates", "3", "--out", str(tmp_path), "--resume")
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 3
    assert "wrote" in capsys.readouterr().out


def test_cli_reports_a_malformed_dataset_in_one_line(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "1 + 1?", "completion": "#### 2"}\n')
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--data-path", str(data), "--out", str(tmp_path / "run"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{data}:1: field 'reward' is missing" in err and "Traceback" not in err
