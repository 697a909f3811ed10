"""LM-GRPO's step does no work it does not need: no reference pass when kl_coef is 0 (tiny model)."""

import jax
import numpy as np
import optax
import pytest

from jaxrl_llm.algorithms import lm_grpo
from jaxrl_llm.training import compose

TINY = dict(
    model="tiny",
    arithmetic_kinds=("add",),
    max_operand=9,
    prompts_per_update=2,
    group_size=4,
    max_prompt_tokens=24,
    max_new_tokens=6,
    format_reward_weight=0.0,
)


@pytest.fixture(scope="module")
def tiny_run():
    return lm_grpo.setup(lm_grpo.LMGRPOConfig(**TINY, num_updates=1), verbose=False)


def _run_with(tiny_run, **fields):
    config = lm_grpo.LMGRPOConfig(**TINY, num_updates=1, **fields)
    return lm_grpo.setup(
        config, params=tiny_run.base_params, model_config=tiny_run.model_config, tokenizer=tiny_run.tokenizer
    )


def _batch(run, key, rows=8, prompt_len=5, completion_len=6):
    """Ragged completions after left-padded prompts; reference log-probs far from the policy's."""
    keys = jax.random.split(key, 4)
    tokens = jax.random.randint(keys[0], (rows, prompt_len + completion_len), 0, run.model_config.vocab_size)
    prompt_real = np.arange(rows) % prompt_len + 1  # 1..prompt_len real tokens, left-padded
    prompt_mask = np.arange(prompt_len)[None] >= (prompt_len - prompt_real)[:, None]
    completion_mask = np.arange(completion_len)[None] < (np.arange(rows) % completion_len + 1)[:, None]
    old = -jax.random.uniform(keys[1], (rows, completion_len), minval=0.5, maxval=4.0)
    return lm_grpo.CompletionBatch(
        tokens=tokens,
        mask=jax.numpy.asarray(np.concatenate([prompt_mask, completion_mask], axis=1)),
        completion_mask=jax.numpy.asarray(completion_mask),
        old_log_prob=jax.numpy.where(completion_mask, old, 0.0),
        ref_log_prob=jax.numpy.where(completion_mask, old - 1.5 * jax.random.uniform(keys[2], old.shape), 0.0),
        advantage=jax.random.normal(keys[3], (rows,)),
    )


def test_without_kl_the_step_is_the_same_with_or_without_reference_log_probs(tiny_run):
    """kl_coef 0: a batch without `ref_log_prob` (what `collect` now builds) gives the same new
    parameters and loss as one with the reference computed; with kl_coef > 0 the reference
    changes the step (so the comparison can fail)."""
    with_reference = _batch(tiny_run, jax.random.key(0))
    without_reference = with_reference.replace(ref_log_prob=None)

    def step(run, batch):
        state, _ = lm_grpo.make_lm_grpo(run.config, run, verbose=False).init(jax.random.key(1))
        return jax.jit(
            lambda s, b: lm_grpo.grpo_step(s, b, None, frozen=run.base_params, run=run, tx=optax.sgd(1.0))
        )(state, batch)

    run = _run_with(tiny_run, kl_coef=0.0, micro_batch_size=4)
    (params_ref, metrics_ref), (params_none, metrics_none) = step(run, with_reference), step(run, without_reference)
    for a, b in zip(jax.tree.leaves(params_ref), jax.tree.leaves(params_none)):
        np.testing.assert_array_equal(a, b)
    assert float(metrics_ref["loss"]) == float(metrics_none["loss"])
    assert "kl" not in metrics_none and float(metrics_ref["kl"]) > 0  # the reference was far away

    kl_run = _run_with(tiny_run, kl_coef=0.5, micro_batch_size=4)
    kl_params, _ = step(kl_run, with_reference)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(kl_params), jax.tree.leaves(params_ref)))
    with pytest.raises(ValueError, match="ref_logp is None"):
        step(kl_run, without_reference)


@pytest.mark.parametrize("kl_coef", [0.0, 0.04])
def test_collect_runs_the_reference_pass_only_when_the_loss_has_a_kl_term(tiny_run, monkeypatch, kl_coef):
    calls = []
    original = lm_grpo.reference_log_probs

    def counted(*args, **kwargs):
        calls.append(1)  # once per trace (jit): the reference program is built at all
        return original(*args, **kwargs)

    monkeypatch.setattr(lm_grpo, "reference_log_probs", counted)
    run = _run_with(tiny_run, kl_coef=kl_coef)
    fns = compose(lm_grpo.make_lm_grpo(run.config, run, verbose=False))
    state, metrics = fns.update(fns.init(jax.random.key(0)))
    assert np.isfinite(float(metrics["loss"])) and int(state.train_state.step) == 1
    if kl_coef:
        assert calls and metrics["reference_seconds"] > 0 and np.isfinite(float(metrics["kl"]))
    else:
        assert not calls and metrics["reference_seconds"] < 1e-3 and "kl" not in metrics
