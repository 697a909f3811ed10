"""GRPO on language models: wiring, errors, learning (tiny model), SmolLM2 end to end."""

import json
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from jaxrl_llm.algorithms import lm_grpo, lm_sft
from jaxrl_llm.data import Problem
from jaxrl_llm.training import CheckpointStore
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
    fns = lm_grpo.make_train_functions(tiny_run)
    state = fns.init(jax.random.PRNGKey(0))
    for _ in range(2):
        state, metrics = fns.update(state)
    assert int(state.update) == 2 and int(state.train_state.step) == 2
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
    fns = lm_grpo.make_train_functions(run)
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


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
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
        fns = lm_grpo.make_train_functions(run)
        state = fns.init(jax.random.PRNGKey(0)).train_state
        step = jax.jit(
            lambda s, b: lm_grpo.grpo_step((s, run.base_params), b, None, run=run, tx=optax.sgd(1.0))
        )
        (new_state, _), metrics = step(state, batch)
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
def test_grpo_raises_held_out_accuracy_of_a_warmed_up_tiny_model():
    """Tiny from-scratch LM: brief supervised warm-up on additions, then GRPO; held-out pairs."""
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
        num_updates=60,
        learning_rate=2e-4,
        format_reward_weight=0.0,
    )
    run = lm_grpo.setup(config, problems=train)
    params, losses = lm_sft.supervised_finetune(
        run.base_params,
        run.model_config,
        run.tokenizer,
        train,
        steps=300,
        batch_size=32,
        learning_rate=1e-3,
        seed=0,
        max_prompt_tokens=24,
        max_target_tokens=4,
    )
    assert float(losses[-20:].mean()) < float(losses[:20].mean())
    run = lm_grpo.setup(
        config, params=params, model_config=run.model_config, tokenizer=run.tokenizer, problems=train
    )
    accuracy = lambda p: lm_grpo.evaluate_accuracy(
        run, p, held_out, temperature=1.0, samples=16, batch_size=96
    )
    before = accuracy(params)
    fns = lm_grpo.make_train_functions(run)
    state = fns.init(jax.random.PRNGKey(0))
    train_accuracy = []
    for _ in range(config.num_updates):
        state, metrics = fns.update(state)
        train_accuracy.append(metrics["accuracy"])
    after = accuracy(state.train_state.params)
    assert np.mean(train_accuracy[-20:]) > np.mean(train_accuracy[:20]) + 0.05
    assert after >= before + 0.07, (before, after)


@pytest.mark.slow
def test_smollm2_grpo_steps_checkpoint_and_resume(tmp_path):
    """The bundled SmolLM2-135M: GRPO with LoRA, a checkpoint, a killed-run-style resume."""
    args = [
        sys.executable,
        "-m",
        "jaxrl_llm.cli",
        "lm-grpo",
        "--model",
        "smollm2-135m-instruct",
        "--task",
        "gsm8k",
        "--prompts-per-update",
        "2",
        "--group-size",
        "2",
        "--max-prompt-tokens",
        "160",
        "--max-new-tokens",
        "12",
        "--lora-rank",
        "4",
        "--learning-rate",
        "1e-4",
        "--checkpoint-every",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    first = subprocess.run([*args, "--num-updates", "2"], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 2
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_updates"] = 3  # extend the stored budget by one update, then resume
    (tmp_path / "config.json").write_text(json.dumps(config))
    second = subprocess.run(
        [*args, "--num-updates", "3", "--resume"], capture_output=True, text=True, timeout=900
    )
    assert second.returncode == 0, second.stderr[-3000:]
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["kl"]) for r in rows)
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 3


def test_default_tasks_fit_the_default_prompt_budget_of_the_tiny_model():
    """`jaxrl-llm lm-grpo --model tiny` on defaults: every generated problem (incl. word
    problems, long in characters) fits max_prompt_tokens."""
    run = lm_grpo.setup(lm_grpo.LMGRPOConfig(model="tiny"))
    tokens, mask = lm_grpo.encode_prompts(
        run.tokenizer, run.problems, run.config.max_prompt_tokens, run.config.length_bucket
    )
    assert tokens.shape[0] == len(run.problems) and mask[:, -1].all()
