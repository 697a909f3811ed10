"""GRPO on language models: wiring, errors, learning (tiny model); SmolLM2 end to end is in
test_lm_readme_command.py."""

import re
import subprocess
import sys
from functools import partial

import jax
import numpy as np
import optax
import pytest

from jaxrl_llm.algorithms import lm_grpo, lm_sft
from jaxrl_llm.algorithms.lm_task import LoadedModel
from jaxrl_llm.data import Problem
from jaxrl_llm.models.llama_config import LlamaConfig
from jaxrl_llm.training import CheckpointStore, compose, train_on_host
from jaxrl_llm.training.metrics import read_metrics

TINY = dict(
    model="tiny",
    arithmetic_kinds=("add",),
    max_operand=9,
    prompts_per_update=4,
    group_size=4,
    max_prompt_tokens=24,
    max_new_tokens=4,
    format_reward_weight=0.0,
)


@pytest.fixture(scope="module")
def tiny_run():
    return lm_grpo.setup(lm_grpo.LMGRPOConfig(**TINY, num_updates=2, learning_rate=1e-3))


def test_updates_are_finite_and_advance(tiny_run):
    fns = compose(lm_grpo.make_lm_grpo(tiny_run.config, tiny_run))
    state = fns.init(jax.random.PRNGKey(0))
    for _ in range(2):
        state, metrics = fns.update(state)
    assert int(state.collect_state.update) == 2 and int(state.train_state.step) == 2
    assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["accuracy"] <= 1.0
    assert 1 <= metrics["completion_length_mean"] <= 4
    assert 0.0 <= metrics["zero_std_group_fraction"] <= 1.0


def test_rewards_exact_match_plus_format(tiny_run):
    run = lm_grpo.setup(
        lm_grpo.LMGRPOConfig(**{**TINY, "format_reward_weight": 0.5}),
        params=tiny_run.base_params,
        model_config=tiny_run.model_config,
        tokenizer=tiny_run.tokenizer,
    )
    reward, correct = lm_grpo.rewards_of(run, ["#### 7", "7", "#### 8", "nothing"], ["7"] * 4)
    np.testing.assert_allclose(reward, [1.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(correct, [1, 1, 0, 0])


def test_long_prompt_and_bad_config_are_explained(tiny_run):
    with pytest.raises(ValueError, match="raise --max-prompt-tokens"):
        lm_grpo.encode_prompts(tiny_run.tokenizer, [Problem("x" * 100, "1")], 24)
    with pytest.raises(ValueError, match=r"LMGRPOConfig.task='math' is invalid"):
        lm_grpo.LMGRPOConfig(task="math")
    with pytest.raises(ValueError, match=r"LMGRPOConfig.temperature=0.0 is invalid"):
        lm_grpo.LMGRPOConfig(temperature=0.0)


def test_lora_trains_only_adapters(tiny_run):
    run = lm_grpo.setup(
        lm_grpo.LMGRPOConfig(**TINY, lora_rank=2, learning_rate=1e-2),
        params=tiny_run.base_params,
        model_config=tiny_run.model_config,
        tokenizer=tiny_run.tokenizer,
    )
    fns = compose(lm_grpo.make_lm_grpo(run.config, run))
    state = fns.init(jax.random.PRNGKey(1))
    before = jax.tree.map(np.asarray, state.train_state.params)
    for _ in range(3):
        state, metrics = fns.update(state)
    after = state.train_state.params
    assert np.isfinite(metrics["loss"])
    assert type(after).__name__ == "LoraAdapters"  # the trainable state holds adapters only
    leaves_changed = [
        not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
    ]
    assert any(leaves_changed) or metrics["zero_std_group_fraction"] == 1.0


def _random_completion_batch(run, key, rows=8, prompt_len=5, completion_len=6):
    """Ragged completions after left-padded prompts, random sampler/reference log-probs."""
    keys = jax.random.split(key, 5)
    vocab = run.model_config.vocab_size
    tokens = jax.random.randint(keys[0], (rows, prompt_len + completion_len), 0, vocab)
    prompt_lengths = jax.random.randint(keys[1], (rows,), 1, prompt_len + 1)
    completion_lengths = jax.random.randint(keys[2], (rows,), 1, completion_len + 1).at[0].set(1)
    prompt_mask = np.arange(prompt_len)[None] >= prompt_len - np.asarray(prompt_lengths)[:, None]
    completion_mask = np.arange(completion_len)[None] < np.asarray(completion_lengths)[:, None]
    old = -jax.random.uniform(keys[3], (rows, completion_len), minval=0.5, maxval=4.0)
    return lm_grpo.CompletionBatch(
        tokens=tokens,
        mask=jax.numpy.asarray(np.concatenate([prompt_mask, completion_mask], axis=1)),
        completion_mask=jax.numpy.asarray(completion_mask),
        old_log_prob=jax.numpy.where(completion_mask, old, 0.0),
        ref_log_prob=jax.numpy.where(completion_mask, old - 0.1, 0.0),
        advantage=jax.random.normal(keys[4], (rows,)),
    )


@pytest.mark.parametrize(
    "mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "token-sum-norm"]
)
def test_microbatched_step_equals_the_full_batch_step(tiny_run, mode):
    """Gradient accumulation over 4 slices of 2 rows gives the one-pass gradient and loss
    (SGD with step 1, so the parameter change is the gradient)."""
    batch = _random_completion_batch(tiny_run, jax.random.key(3))
    results = []
    for micro_batch_size in (0, 2):
        config = lm_grpo.LMGRPOConfig(
            **{**TINY, "prompts_per_update": 2, "max_new_tokens": 6},
            loss_agg_mode=mode,
            micro_batch_size=micro_batch_size,
            learning_rate=1e-2,
            kl_coef=0.1,
        )
        run = lm_grpo.setup(
            config,
            params=tiny_run.base_params,
            model_config=tiny_run.model_config,
            tokenizer=tiny_run.tokenizer,
        )
        state, _ = lm_grpo.make_lm_grpo(config, run).init(jax.random.PRNGKey(0))
        step = jax.jit(
            lambda s, b: lm_grpo.grpo_step(s, b, None, frozen=run.base_params, run=run, tx=optax.sgd(1.0))
        )
        new_state, metrics = step(state, batch)
        results.append((new_state.params, metrics))
    (full_params, full_metrics), (micro_params, micro_metrics) = results
    np.testing.assert_allclose(micro_metrics["loss"], full_metrics["loss"], rtol=1e-5, atol=1e-7)
    for full, micro in zip(jax.tree.leaves(full_params), jax.tree.leaves(micro_params)):
        np.testing.assert_allclose(micro, full, rtol=1e-5, atol=1e-7)
    changed = [
        not np.allclose(a, b)
        for a, b in zip(jax.tree.leaves(full_params), jax.tree.leaves(tiny_run.base_params))
    ]
    assert any(changed)


def test_micro_batch_size_must_divide_the_batch():
    with pytest.raises(ValueError, match="micro_batch_size=3 must divide"):
        lm_grpo.LMGRPOConfig(**TINY, micro_batch_size=3)


def test_length_buckets_pad_to_the_longest_rounded_up(tiny_run):
    problems = [Problem("1 + 2?", "3"), Problem("What is 11 + 12?", "23")]
    tokens, mask = lm_grpo.encode_prompts(tiny_run.tokenizer, problems, 200, pad_to_multiple_of=16)
    longest = int(mask.sum(1).max())
    assert tokens.shape[1] == -(-longest // 16) * 16 and mask[:, -1].all()
    full, _ = lm_grpo.encode_prompts(tiny_run.tokenizer, problems, 200)
    np.testing.assert_array_equal(full[:, -tokens.shape[1] :], tokens)
    config = lm_grpo.LMGRPOConfig(**{**TINY, "max_new_tokens": 64}, length_bucket=16)
    completion_mask = np.zeros((3, 64), bool)
    completion_mask[1, :17] = True
    assert lm_grpo.completion_width(config, completion_mask) == 32
    assert lm_grpo.completion_width(config, np.zeros((3, 64), bool)) == 16
    assert (
        lm_grpo.completion_width(lm_grpo.LMGRPOConfig(**TINY, length_bucket=0), completion_mask[:, :4]) == 4
    )


@pytest.mark.slow
def test_grpo_raises_training_accuracy_of_a_warmed_up_tiny_model_and_keeps_held_out():
    """Tiny from-scratch LM: brief supervised warm-up on additions, then GRPO: accuracy on the
    training prompts rises; on held-out pairs it does not fall."""
    pairs = [(a, b) for a in range(12) for b in range(12)]
    np.random.default_rng(0).shuffle(pairs)
    problem = lambda ab: Problem(f"What is {ab[0]} + {ab[1]}?", str(ab[0] + ab[1]))
    held_out, train = [problem(p) for p in pairs[:36]], [problem(p) for p in pairs[36:]]
    config = lm_grpo.LMGRPOConfig(
        model="tiny",
        prompts_per_update=16,
        group_size=8,
        max_prompt_tokens=24,
        max_new_tokens=4,
        num_updates=80,
        learning_rate=2e-4,
        format_reward_weight=0.0,
    )
    run = lm_grpo.setup(config, problems=train)
    sft_config = lm_sft.SFTConfig(
        model="tiny",
        num_updates=120,
        batch_size=32,
        learning_rate=1e-3,
        max_prompt_tokens=24,
        max_target_tokens=4,
    )
    loaded = LoadedModel(run.base_params, run.model_config, run.tokenizer)
    warm, sft_metrics = train_on_host(lm_sft.make_sft(sft_config, loaded, train), jax.random.PRNGKey(0))
    params, losses = warm.train_state.params, sft_metrics["loss"]
    assert float(losses[-20:].mean()) < float(losses[:20].mean())
    run = lm_grpo.setup(
        config, params=params, model_config=run.model_config, tokenizer=run.tokenizer, problems=train
    )
    accuracy = lambda p: lm_grpo.evaluate_accuracy(
        run, p, held_out, temperature=1.0, samples=64, batch_size=96
    )
    before = accuracy(params)
    fns = compose(lm_grpo.make_lm_grpo(config, run))
    state = fns.init(jax.random.PRNGKey(0))
    train_accuracy = []
    for _ in range(config.num_updates):
        state, metrics = fns.update(state)
        train_accuracy.append(metrics["accuracy"])
    after = accuracy(state.train_state.params)
    assert np.mean(train_accuracy[-20:]) > np.mean(train_accuracy[:20]) + 0.05
    # Held out (2304 samples, sampling std ~0.005): 0.069 -> 0.079 before the decode rewrite and
    # 0.069 -> 0.066 after it (same seed; a few flipped samples change the trajectory): at this
    # budget the gain on unseen pairs is within noise, so the test asks only that it not fall.
    assert after >= before - 0.015, (before, after)


def test_default_tasks_fit_the_default_prompt_budget_of_the_tiny_model():
    """`jaxrl-llm lm-grpo --model tiny` on defaults: every generated problem (incl. word
    problems, long in characters) fits max_prompt_tokens."""
    run = lm_grpo.setup(lm_grpo.LMGRPOConfig(model="tiny"))
    tokens, mask = lm_grpo.encode_prompts(
        run.tokenizer, run.problems, run.config.max_prompt_tokens, run.config.length_bucket
    )
    assert tokens.shape[0] == len(run.problems) and mask[:, -1].all()


# A 2-layer config small enough to compute `activation_bytes` by hand (float32).
HAND = LlamaConfig(
    vocab_size=100, hidden_size=8, intermediate_size=16, num_layers=2, num_heads=2, num_kv_heads=1
)


def test_activation_bytes_match_hand_computed_values():
    # T = 4 + 2 = 6 tokens.  One layer per row: T (4 B (4 D + 7 F) + 4 B 2 H T)
    #   = 6 (4 (32 + 112) + 96) = 4032.  Logits: 4 arrays x 4 B x min(N, chunk) x V = 16 x 2 x 100 = 3200.
    # Stored: L layers + logits = 2 x 4032 + 3200 = 11264 per row.
    # Remat: L T D 4 B = 384 layer inputs + max(one layer, logits) = 384 + 4032 = 4416 per row.
    assert lm_grpo.activation_bytes(HAND, 3, 4, 2, remat=False) == 3 * 11264
    assert lm_grpo.activation_bytes(HAND, 3, 4, 2, remat=True) == 3 * 4416
    # a long completion is projected LOGPROB_CHUNK positions at a time
    long = lm_grpo.activation_bytes(HAND, 1, 4, 200, remat=False)
    layer = 204 * (4 * (4 * 8 + 7 * 16) + 4 * 2 * 2 * 204)
    assert long == 2 * layer + 16 * lm_grpo.LOGPROB_CHUNK * 100


def test_auto_micro_batch_size_is_the_largest_divisor_within_budget():
    per_row = 11264  # the hand-computed stored-activation bytes of one row above
    choose = lambda budget: lm_grpo.auto_micro_batch_size(HAND, 12, 4, 2, budget, remat=False)
    assert choose(5 * per_row) == 4  # divisors of 12: 1 2 3 4 6 12
    assert choose(6 * per_row) == 6
    assert choose(1e12) == 12
    assert choose(1) == 1  # nothing fits: one row at a time is the least there is


def test_default_smollm2_batch_runs_in_two_slices_under_the_default_budget():
    """64 rows x (64 + 64) tokens on SmolLM2's shapes with remat: per row 30 x 128 x 576 x 4
    (layer inputs) + max(128 (4 (4 x 576 + 7 x 1536) + 8 x 9 x 128), 16 x 32 x 49152) = 34.0 MB;
    64 rows = 2.18 GB > 2 GiB, 32 rows fit."""
    smollm2 = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9, num_kv_heads=3
    )
    config = lm_grpo.LMGRPOConfig()
    assert config.micro_batch_size == 0 and config.remat and config.memory_budget_gb == 2.0
    assert lm_grpo.activation_bytes(smollm2, 1, 64, 64, remat=True) == 34_013_184
    assert lm_grpo.num_microbatches(config, smollm2, config.batch_size, 64, 64) == 2
    explicit = lm_grpo.LMGRPOConfig(micro_batch_size=8)
    assert lm_grpo.num_microbatches(explicit, smollm2, config.batch_size, 64, 64) == 8


@pytest.mark.parametrize("remat", [True, False])
def test_activation_estimate_tracks_xla_buffers_per_row(tiny_run, remat):
    """The row-dependent part of XLA's temp buffers for the step (8 minus 4 rows) against the
    estimate for 4 rows: within the margin the budget is meant to have."""
    config = lm_grpo.LMGRPOConfig(**TINY, lora_rank=2, remat=remat, memory_budget_gb=1e3)  # one slice
    run = lm_grpo.setup(
        config, params=tiny_run.base_params, model_config=tiny_run.model_config, tokenizer=tiny_run.tokenizer
    )
    state, _ = lm_grpo.make_lm_grpo(config, run).init(jax.random.PRNGKey(0))
    tx = lm_grpo.make_optimizer(config)
    step = jax.jit(lambda s, base, b: lm_grpo.grpo_step(s, b, None, frozen=base, run=run, tx=tx))

    def temp_bytes(rows):
        batch = _random_completion_batch(run, jax.random.key(0), rows=rows, prompt_len=32, completion_len=32)
        compiled = step.lower(state, run.base_params, batch).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    measured = temp_bytes(8) - temp_bytes(4)
    estimated = lm_grpo.activation_bytes(run.model_config, 4, 32, 32, remat)
    assert 0.6 <= estimated / measured <= 1.5, (estimated, measured)


def test_remat_step_equals_the_stored_activation_step(tiny_run):
    batch = _random_completion_batch(tiny_run, jax.random.key(4))
    results = []
    for remat in (False, True):
        config = lm_grpo.LMGRPOConfig(**{**TINY, "prompts_per_update": 2, "max_new_tokens": 6}, remat=remat)
        run = lm_grpo.setup(
            config,
            params=tiny_run.base_params,
            model_config=tiny_run.model_config,
            tokenizer=tiny_run.tokenizer,
        )
        state, _ = lm_grpo.make_lm_grpo(config, run).init(jax.random.PRNGKey(0))
        step = jax.jit(partial(lm_grpo.grpo_step, key=None, run=run, tx=optax.sgd(1.0)))
        new_state, _ = step(state, batch, frozen=run.base_params)
        results.append(new_state.params)
    for stored, recomputed in zip(*map(jax.tree.leaves, results)):
        np.testing.assert_allclose(recomputed, stored, rtol=1e-5, atol=1e-7)


def test_setup_says_what_it_loads_and_can_be_quiet(capsys):
    config = lm_grpo.LMGRPOConfig(**TINY)
    lm_grpo.setup(config)
    err = capsys.readouterr().err
    assert "loading tiny ..." in err and re.search(r"loaded tiny in \d+\.\d s", err)
    lm_grpo.setup(config, verbose=False)
    assert capsys.readouterr().err == ""


def test_supervised_warm_up_shows_a_progress_bar(tiny_run, capsys):
    problems = [Problem("What is 1 + 2?", "3"), Problem("What is 2 + 2?", "4")]
    config = lm_grpo.LMGRPOConfig(**TINY, sft_warmup_steps=3)
    loaded = LoadedModel(tiny_run.base_params, tiny_run.model_config, tiny_run.tokenizer)
    params = lm_grpo.warm_up(config, loaded, problems, verbose=True)
    assert not np.array_equal(jax.tree.leaves(params)[0], jax.tree.leaves(tiny_run.base_params)[0])
    assert re.search(r"supervised warm-up: 100%.*3/3", capsys.readouterr().err)
    lm_grpo.warm_up(config, loaded, problems, verbose=False)
    assert capsys.readouterr().err == ""


def test_warm_up_is_checkpointed_and_not_rerun_on_resume(tiny_run, tmp_path, monkeypatch):
    problems = [Problem("What is 1 + 2?", "3"), Problem("What is 2 + 2?", "4")]
    config = lm_grpo.LMGRPOConfig(**TINY, sft_warmup_steps=3)
    given = dict(
        params=tiny_run.base_params, model_config=tiny_run.model_config, tokenizer=tiny_run.tokenizer
    )
    first = lm_grpo.setup(config, **given, problems=problems, verbose=False, warmup_dir=tmp_path / "warmup")
    assert CheckpointStore(tmp_path / "warmup" / "checkpoints").latest_step() == 3

    def no_training(*args, **kwargs):
        raise AssertionError("the warm-up trained again on resume")

    monkeypatch.setattr(lm_sft, "sft_step", no_training)
    again = lm_grpo.setup(
        config, **given, problems=problems, verbose=False, warmup_dir=tmp_path / "warmup", resume=True
    )
    for a, b in zip(jax.tree.leaves(first.base_params), jax.tree.leaves(again.base_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(AssertionError, match="trained again"):  # the patch is live: a new run trains
        lm_grpo.setup(config, **given, problems=problems, verbose=False, warmup_dir=tmp_path / "other")


def test_sft_command_trains_and_lowers_the_loss(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxrl_llm.cli",
            "sft",
            "--model",
            "tiny",
            "--arithmetic-kinds",
            "add",
            "--max-operand",
            "9",
            "--max-prompt-tokens",
            "24",
            "--max-target-tokens",
            "4",
            "--num-updates",
            "30",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.csv")]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 30


def test_data_path_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"data_path='/nope/gsm8k.jsonl' is invalid: file not found"):
        lm_grpo.LMGRPOConfig(task="gsm8k", data_path="/nope/gsm8k.jsonl")
    existing = tmp_path / "train.jsonl"
    existing.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n')
    with pytest.raises(ValueError, match="only read by the gsm8k task.*add --task gsm8k"):
        lm_grpo.LMGRPOConfig(data_path=str(existing))
    assert lm_grpo.LMGRPOConfig(task="gsm8k", data_path=str(existing)).data_path == str(existing)


@pytest.mark.parametrize("model", ["/nope/model.gguf", "./missing_dir", "~/missing.gguf"])
def test_a_missing_model_path_says_file_not_found(model):
    with pytest.raises(ValueError, match="file not found: /") as error:
        lm_grpo.setup(lm_grpo.LMGRPOConfig(model=model), verbose=False)
    assert isinstance(error.value, FileNotFoundError)  # both, for library callers
    assert "smollm2-135m-instruct" not in str(error.value)  # no registry list for a path


def test_an_unknown_model_name_lists_the_registry():
    with pytest.raises(ValueError, match="expected one of .*smollm2-135m-instruct.*'tiny'"):
        lm_grpo.setup(lm_grpo.LMGRPOConfig(model="smollm3"), verbose=False)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "/nope/model.gguf"], "file not found: /nope/model.gguf"),
        (["--data-path", "/nope/gsm8k.jsonl"], "add --task gsm8k"),
        (["--task", "gsm8k", "--data-path", "/nope/gsm8k.jsonl"], "file not found"),
    ],
)
def test_cli_reports_model_and_data_mistakes_in_one_line(tmp_path, capsys, flags, message):
    from jaxrl_llm import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["lm-grpo", *flags, "--out", str(tmp_path / "run"), "--no-progress", "--compile-cache", ""])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_model_overrides_become_typed_values():
    from jaxrl_llm.algorithms.lm_task import parse_overrides

    parsed = parse_overrides({"remat": "True", "hidden_size": "64", "rope_theta": "1e5", "dtype": "bfloat16"})
    assert parsed == {"remat": True, "hidden_size": 64, "rope_theta": 100000.0, "dtype": "bfloat16"}
    assert isinstance(parsed["hidden_size"], int)
