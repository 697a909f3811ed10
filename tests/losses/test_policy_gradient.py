"""Tests of jaxrl_llm.losses.policy_gradient, including a numerical cross-library check.

The first section holds independent float64 numpy transcriptions of the two reference libraries'
documented formulas (verl `core_algos.compute_policy_loss` + `agg_loss` + `dp_actor` total loss, as
vendored in verl-agent; TRL `GRPOTrainer._compute_loss` for `loss_type` grpo / bnpo / dr_grpo /
dapo, including TRL 1.16's `use_bias_correction_kl`, read in trl-1.16.0's
`trl/trainer/grpo_trainer.py` and `grpo_config.py`). They share no code with the JAX implementation
under test.
"""

import functools
import itertools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.losses.policy_gradient import (
    LOSS_AGG_MODES,
    aggregate_loss,
    policy_gradient_loss,
    ppo_clip_token_loss,
)
from jaxrl_llm.training.gradient_steps import accumulated_gradients, microbatch_norm_constant

# ==============================================================================================
# verl (verl/trainer/ppo/core_algos.py, verl/workers/actor/dp_actor.py), float64 numpy.
# ==============================================================================================


def verl_masked_mean(values, mask):
    return (values * mask).sum() / (mask.sum() + 1e-8)


def verl_agg_loss(loss_mat, loss_mask, loss_agg_mode):
    if loss_agg_mode == "token-mean":
        return verl_masked_mean(loss_mat, loss_mask)
    if loss_agg_mode == "seq-mean-token-sum":
        return np.mean(np.sum(loss_mat * loss_mask, axis=-1))
    if loss_agg_mode == "seq-mean-token-mean":
        return np.mean(np.sum(loss_mat * loss_mask, axis=-1) / np.sum(loss_mask, axis=-1))
    if loss_agg_mode == "seq-mean-token-sum-norm":
        return np.sum(np.sum(loss_mat * loss_mask, axis=-1)) / loss_mask.shape[-1]
    raise ValueError(loss_agg_mode)


def verl_policy_loss_matrix(old_log_prob, log_prob, advantages, cliprange_low, cliprange_high, clip_ratio_c):
    ratio = np.exp(log_prob - old_log_prob)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * np.clip(ratio, 1 - cliprange_low, 1 + cliprange_high)
    clip_pg_losses1 = np.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = np.minimum(pg_losses3, clip_pg_losses1)
    return np.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)


def verl_low_var_kl(log_prob, ref_log_prob):
    kl = ref_log_prob - log_prob
    return np.clip(np.exp(kl) - kl - 1, -10, 10)


def verl_actor_loss(
    batch, loss_agg_mode, cliprange_low, cliprange_high, clip_ratio_c, entropy_coeff, kl_loss_coef
):
    mask = batch["mask"]
    pg = verl_agg_loss(
        verl_policy_loss_matrix(
            batch["old_logp"],
            batch["logp"],
            batch["advantages"][:, None],
            cliprange_low,
            cliprange_high,
            clip_ratio_c,
        ),
        mask,
        loss_agg_mode,
    )
    entropy = verl_agg_loss(batch["entropy"], mask, loss_agg_mode)
    kl = verl_agg_loss(verl_low_var_kl(batch["logp"], batch["ref_logp"]), mask, loss_agg_mode)
    return pg - entropy_coeff * entropy + kl_loss_coef * kl


# ==============================================================================================
# TRL (trl/trainer/grpo_trainer.py `_compute_loss`, GRPOConfig.loss_type docs), float64 numpy.
# ==============================================================================================


def trl_per_token_loss(
    batch,
    epsilon_low,
    epsilon_high,
    beta,
    importance_sampling_level="token",
    use_bias_correction_kl=False,
):
    """TRL's per-token loss; `use_bias_correction_kl` (TRL 1.16 default True) multiplies the k3 by
    the importance weight coef_1 = exp(log_importance_weights) before β·KL is added per token."""
    logp, old, mask = batch["logp"], batch["old_logp"], batch["mask"]
    log_ratio = logp - old
    if importance_sampling_level == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / np.maximum(mask.sum(-1), 1.0))[:, None]
    coef_1 = np.exp(log_ratio)
    if beta != 0.0:
        d = batch["ref_logp"] - logp
        per_token_kl = np.exp(d) - d - 1
        if use_bias_correction_kl:
            per_token_kl = per_token_kl * coef_1
    coef_2 = np.clip(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    advantages = batch["advantages"][:, None]
    per_token_loss = -np.minimum(coef_1 * advantages, coef_2 * advantages)
    per_token_loss = np.broadcast_to(per_token_loss, logp.shape)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    return per_token_loss


def trl_aggregate(
    per_token_loss, mask, loss_type, max_completion_length=None, num_items_in_batch=None, num_processes=1
):
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / np.maximum(mask.sum(-1), 1.0)).mean()
    if loss_type == "bnpo":
        return (per_token_loss * mask).sum() / max(mask.sum(), 1.0)
    if loss_type == "dr_grpo":
        return (per_token_loss * mask).sum() / (per_token_loss.shape[0] * max_completion_length)
    if loss_type == "dapo":
        return (per_token_loss * mask).sum() / (num_items_in_batch / num_processes)
    raise ValueError(loss_type)


# ==============================================================================================
# Helpers.
# ==============================================================================================


def random_batch(rng, batch_size=6, length=9, allow_empty_rows=False, log_ratio_scale=0.4):
    lengths = rng.integers(0 if allow_empty_rows else 1, length + 1, size=batch_size)
    if allow_empty_rows:
        lengths[0] = 0
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.float32)
    old_logp = -rng.exponential(1.5, size=(batch_size, length))
    logp = old_logp + rng.normal(0, log_ratio_scale, size=(batch_size, length))
    ref_logp = old_logp + rng.normal(0, 0.3, size=(batch_size, length))
    return {
        "logp": logp.astype(np.float32),
        "old_logp": old_logp.astype(np.float32),
        "ref_logp": ref_logp.astype(np.float32),
        "advantages": rng.normal(size=batch_size).astype(np.float32),
        "entropy": rng.uniform(0, 3, size=(batch_size, length)).astype(np.float32),
        "mask": mask,
    }


def as_float64(batch):
    return {k: np.asarray(v, np.float64) for k, v in batch.items()}


def our_loss(batch, **kwargs):
    return policy_gradient_loss(
        batch["logp"],
        batch["old_logp"],
        batch["advantages"],
        batch["mask"],
        ref_logp=batch.get("ref_logp"),
        entropy=batch.get("entropy"),
        **kwargs,
    )


# ==============================================================================================
# Tests.
# ==============================================================================================


class CrossLibraryAggregationTest(chex.TestCase):
    """Each documented equivalence of the module table, checked on random ragged batches."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_trl_loss_types(self):
        rng = np.random.default_rng(0)
        batch = random_batch(rng, batch_size=8, length=11, allow_empty_rows=True)
        max_completion_length = 16  # a constant larger than this batch's padded length
        settings = dict(eps_low=0.2, eps_high=0.28, kl_coef=0.04, kl_estimator="k3", k3_clip=None)
        ours = {
            "grpo": dict(loss_agg_mode="seq-mean-token-mean"),
            "bnpo": dict(loss_agg_mode="token-mean"),
            "dr_grpo": dict(loss_agg_mode="seq-mean-token-sum-norm", norm_constant=max_completion_length),
        }

        def every_mode(batch):
            no_entropy = {k: v for k, v in batch.items() if k != "entropy"}
            return {name: our_loss(no_entropy, **settings, **extra)[0] for name, extra in ours.items()}

        results = self.variant(every_mode)(batch)
        trl_tokens = trl_per_token_loss(as_float64(batch), 0.2, 0.28, beta=0.04)
        for loss_type in ours:
            expected = trl_aggregate(
                trl_tokens,
                batch["mask"].astype(np.float64),
                loss_type,
                max_completion_length=max_completion_length,
            )
            np.testing.assert_allclose(results[loss_type], expected, rtol=2e-5, err_msg=loss_type)

    def test_trl_dapo_over_processes_and_accumulation_steps(self):
        # TRL dapo: every micro-batch divides its token sum by num_items_in_batch / num_processes
        # (num_items_in_batch = active tokens of the whole accumulated global batch); gradients are
        # summed over accumulation steps and averaged over processes (DDP).
        rng = np.random.default_rng(1)
        num_processes, accumulation_steps, rows_per_micro_batch = 2, 3, 4
        batch = random_batch(rng, batch_size=num_processes * accumulation_steps * rows_per_micro_batch)
        global_tokens = float(batch["mask"].sum())
        trl_tokens = trl_per_token_loss(as_float64(batch), 0.2, 0.2, beta=0.0)

        def micro_batches(array):
            return array.reshape(num_processes, accumulation_steps, rows_per_micro_batch, -1)

        trl_objective = np.mean(
            [
                sum(
                    trl_aggregate(
                        micro_batches(trl_tokens)[p, k],
                        micro_batches(batch["mask"])[p, k],
                        "dapo",
                        num_items_in_batch=global_tokens,
                        num_processes=num_processes,
                    )
                    for k in range(accumulation_steps)
                )
                for p in range(num_processes)
            ]
        )
        settings = dict(eps_low=0.2, loss_agg_mode="token-mean")
        no_extras = {k: v for k, v in batch.items() if k not in ("entropy", "ref_logp")}
        jitted_loss = jax.jit(
            lambda batch, norm_constant: our_loss(batch, **settings, norm_constant=norm_constant)[0]
        )
        global_view = jitted_loss(no_extras, None)
        np.testing.assert_allclose(global_view, trl_objective, rtol=2e-5)

        sharded = {
            k: micro_batches(np.asarray(v))
            if np.ndim(v) == 2
            else v.reshape(num_processes, accumulation_steps, rows_per_micro_batch)
            for k, v in no_extras.items()
        }
        per_shard = [
            jitted_loss({k: v[p, k_] for k, v in sharded.items()}, global_tokens / num_processes)
            for p in range(num_processes)
            for k_ in range(accumulation_steps)
        ]
        np.testing.assert_allclose(np.sum(per_shard) / num_processes, trl_objective, rtol=2e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_verl_loss_agg_modes_and_actor_loss(self):
        rng = np.random.default_rng(2)
        batch = random_batch(rng, batch_size=7, length=10)  # verl's seq-mean-token-mean NaNs on empty rows
        settings = dict(
            eps_low=0.2, eps_high=0.28, dual_clip_c=3.0, kl_coef=0.01, kl_estimator="k3", entropy_coef=0.001
        )
        ours_for_verl = {
            "token-mean": "token-mean",
            "seq-mean-token-mean": "seq-mean-token-mean",
            "seq-mean-token-sum": "seq-mean-token-sum",
            "seq-mean-token-sum-norm": "token-sum-norm",  # verl's implementation has no 1/B
        }

        def every_mode(batch):
            return {
                verl_mode: our_loss(batch, loss_agg_mode=mode, **settings)[0]
                for verl_mode, mode in ours_for_verl.items()
            }

        results = self.variant(every_mode)(batch)
        for verl_mode in ours_for_verl:
            expected = verl_actor_loss(as_float64(batch), verl_mode, 0.2, 0.28, 3.0, 0.001, 0.01)
            np.testing.assert_allclose(results[verl_mode], expected, rtol=2e-5, err_msg=verl_mode)

        # Our name-faithful "seq-mean-token-sum-norm" is verl's value divided by the number of rows.
        ours = our_loss(batch, loss_agg_mode="seq-mean-token-sum-norm", **settings)[0]
        np.testing.assert_allclose(ours * 7, results["seq-mean-token-sum-norm"], rtol=1e-6)

    def test_gspo_sequence_ratio_matches_trl_sequence_level(self):
        rng = np.random.default_rng(3)
        batch = random_batch(rng, batch_size=6, length=8, log_ratio_scale=0.05)
        no_extras = {k: v for k, v in batch.items() if k not in ("entropy", "ref_logp")}
        trl_tokens = trl_per_token_loss(as_float64(batch), 3e-3, 4e-3, 0.0, "sequence")
        expected = trl_aggregate(trl_tokens, batch["mask"].astype(np.float64), "grpo")
        for level in ("sequence", "sequence_token"):
            loss, _ = jax.jit(
                functools.partial(
                    our_loss,
                    eps_low=3e-3,
                    eps_high=4e-3,
                    importance_sampling_level=level,
                    loss_agg_mode="seq-mean-token-mean",
                )
            )(no_extras)
            np.testing.assert_allclose(loss, expected, rtol=2e-5, err_msg=level)


class TRLBiasCorrectedKLTest(chex.TestCase):
    """`kl_bias_correction` against TRL 1.16's `use_bias_correction_kl` (on, TRL's default, and off)."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_values_match_trl_with_and_without_the_correction(self):
        rng = np.random.default_rng(13)
        ragged = random_batch(rng, batch_size=6, length=9, allow_empty_rows=True)  # row 0 all masked
        single_token = random_batch(rng, batch_size=4, length=1)
        single_token["mask"] = np.ones_like(single_token["mask"])
        max_completion_length = 12
        modes = {
            "grpo": dict(loss_agg_mode="seq-mean-token-mean"),
            "bnpo": dict(loss_agg_mode="token-mean"),
            "dr_grpo": dict(loss_agg_mode="seq-mean-token-sum-norm", norm_constant=max_completion_length),
        }
        settings = list(itertools.product(modes, (False, True), ("token", "sequence")))

        def every_setting(batch):
            no_entropy = {k: v for k, v in batch.items() if k != "entropy"}
            return [
                our_loss(
                    no_entropy,
                    eps_low=0.2,
                    eps_high=0.28,
                    kl_coef=0.1,
                    k3_clip=None,
                    kl_bias_correction=correction,
                    importance_sampling_level=level,
                    **modes[loss_type],
                )[0]
                for loss_type, correction, level in settings
            ]

        for name, batch in (("ragged", ragged), ("single_token", single_token)):
            results = self.variant(every_setting)(batch)
            expected = {
                (loss_type, correction, level): trl_aggregate(
                    trl_per_token_loss(as_float64(batch), 0.2, 0.28, 0.1, level, correction),
                    batch["mask"].astype(np.float64),
                    loss_type,
                    max_completion_length=max_completion_length,
                )
                for loss_type, correction, level in settings
            }
            for setting, ours in zip(settings, results):
                np.testing.assert_allclose(ours, expected[setting], rtol=2e-5, err_msg=f"{name} {setting}")
            # The two TRL settings differ by far more than the tolerance, so a flag that did nothing
            # (or always applied the correction) would fail above.
            for loss_type, level in itertools.product(modes, ("token", "sequence")):
                gap = abs(expected[(loss_type, True, level)] - expected[(loss_type, False, level)])
                self.assertGreater(gap, 1e-3 * abs(expected[(loss_type, False, level)]), (name, loss_type))

    def test_gradients_match_finite_differences_of_trl_in_float64(self):
        with jax.enable_x64(True):
            rng = np.random.default_rng(14)
            batch = as_float64(random_batch(rng, batch_size=5, length=6, allow_empty_rows=True))
            del batch["entropy"]
            # Keep log-ratios away from the clip kinks so central differences are valid.
            batch["logp"] = batch["old_logp"] + rng.choice([-0.6, -0.1, 0.05, 0.12, 0.5], size=(5, 6))
            mask = batch["mask"]
            settings = list(itertools.product((False, True), ("token", "sequence")))

            def ours(logp):  # [num_settings]
                return jnp.stack(
                    [
                        our_loss(
                            {**batch, "logp": logp},
                            eps_low=0.2,
                            eps_high=0.28,
                            kl_coef=0.1,
                            k3_clip=None,
                            kl_bias_correction=correction,
                            importance_sampling_level=level,
                            loss_agg_mode="seq-mean-token-mean",
                        )[0]
                        for correction, level in settings
                    ]
                )

            def trl(logp):
                shifted = {**batch, "logp": logp}
                return np.array(
                    [
                        trl_aggregate(
                            trl_per_token_loss(shifted, 0.2, 0.28, 0.1, level, correction), mask, "grpo"
                        )
                        for correction, level in settings
                    ]
                )

            jacobian = np.asarray(jax.jit(jax.jacrev(ours))(jnp.asarray(batch["logp"])))  # [S, B, T]
            np.testing.assert_allclose(jax.jit(ours)(batch["logp"]), trl(batch["logp"]), rtol=1e-12)
            numeric = np.zeros_like(jacobian)
            step = 1e-6
            for index in zip(*np.nonzero(mask)):
                shift = np.zeros_like(batch["logp"])
                shift[index] = step
                numeric[(slice(None),) + index] = (
                    trl(batch["logp"] + shift) - trl(batch["logp"] - shift)
                ) / (2 * step)
            for s, setting in enumerate(settings):
                np.testing.assert_allclose(
                    jacobian[s], numeric[s], rtol=1e-6, atol=1e-8, err_msg=str(setting)
                )

            # On-policy (ρ = 1) the corrected value equals the plain one, but its gradient does not:
            # ∇(ρ·k3) − ∇k3 = k3·∇ρ = k3 per token, weighted by β / (B·|o_i|) in seq-mean-token-mean.
            on_policy = jnp.asarray(batch["old_logp"])
            values = jax.jit(ours)(on_policy)
            gradients = np.asarray(jax.jit(jax.jacrev(ours))(on_policy))
            plain, corrected = settings.index((False, "token")), settings.index((True, "token"))
            np.testing.assert_allclose(values[corrected], values[plain], rtol=1e-12)
            d = batch["ref_logp"] - batch["old_logp"]
            lengths = np.maximum(mask.sum(-1, keepdims=True), 1.0)
            expected_gap = 0.1 * (np.exp(d) - d - 1) * mask / (5 * lengths)
            np.testing.assert_allclose(
                gradients[corrected] - gradients[plain], expected_gap, rtol=1e-9, atol=1e-15
            )
            self.assertGreater(np.abs(expected_gap).max(), 1e-4)


class DapoGradientAccumulationTest(chex.TestCase):
    """The "dapo" recipe under `training.gradient_steps` accumulation (mean over micro-batches)."""

    def test_accumulated_gradient_equals_trl_dapo_on_the_full_batch(self):
        num_processes, num_microbatches, rows_per_microbatch = 2, 3, 2
        batch_size, length, features, vocab = num_processes * num_microbatches * rows_per_microbatch, 5, 3, 4
        eps_low, eps_high, beta = 0.2, 0.28, 0.05
        with jax.enable_x64(True):
            rng = np.random.default_rng(15)
            lengths = rng.integers(1, length + 1, size=batch_size)
            lengths[1], lengths[4] = 0, 1  # an all-masked row and a length-1 row
            mask = (np.arange(length)[None] < lengths[:, None]).astype(np.float64)
            x = rng.normal(size=(batch_size, length, features))
            tokens = rng.integers(0, vocab, size=(batch_size, length))
            params = 0.5 * rng.normal(size=(features, vocab))

            def token_logp(params, x, tokens):  # a linear softmax policy over a small vocabulary
                log_probs = jax.nn.log_softmax(x @ params)
                return jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]

            start = np.asarray(token_logp(params, x, tokens))
            data = {
                "x": x,
                "tokens": tokens,
                "old_logp": start + rng.normal(0, 0.3, size=start.shape),
                "ref_logp": start + rng.normal(0, 0.3, size=start.shape),
                "advantages": rng.normal(size=batch_size),
                "mask": mask,
            }
            global_tokens = mask.sum()

            def trl_dapo_full_batch(params):
                # TRL 1.16 `dapo` on the whole batch in one process without accumulation:
                # Σ m·(−min(ρA, clip(ρ)A) + β·ρ·k3) / num_items_in_batch (use_bias_correction_kl=True).
                logp = token_logp(params, x, tokens)
                coef_1 = jnp.exp(logp - data["old_logp"])
                d = data["ref_logp"] - logp
                per_token_kl = (jnp.exp(d) - d - 1) * coef_1
                coef_2 = jnp.clip(coef_1, 1 - eps_low, 1 + eps_high)
                advantages = data["advantages"][:, None]
                per_token = -jnp.minimum(coef_1 * advantages, coef_2 * advantages) + beta * per_token_kl
                return jnp.sum(per_token * mask) / global_tokens

            expected = np.asarray(jax.grad(trl_dapo_full_batch)(params))

            def accumulated_then_averaged_over_processes(norm_constant):
                def loss_fn(params, micro):
                    return policy_gradient_loss(
                        token_logp(params, micro["x"], micro["tokens"]),
                        micro["old_logp"],
                        micro["advantages"],
                        micro["mask"],
                        ref_logp=micro["ref_logp"],
                        eps_low=eps_low,
                        eps_high=eps_high,
                        kl_coef=beta,
                        k3_clip=None,
                        kl_bias_correction=True,
                        loss_agg_mode="token-mean",
                        norm_constant=norm_constant,
                    )

                shards = jax.tree.map(lambda a: a.reshape(num_processes, -1, *a.shape[1:]), data)
                per_process = [
                    accumulated_gradients(
                        loss_fn, params, jax.tree.map(lambda a: a[p], shards), num_microbatches
                    )[0]
                    for p in range(num_processes)
                ]
                return np.mean(per_process, axis=0)  # the pmean of gradients over processes

            dapo_norm_constant = global_tokens / num_processes  # TRL: num_items_in_batch / num_processes
            exact = accumulated_then_averaged_over_processes(
                microbatch_norm_constant("token-mean", dapo_norm_constant, num_microbatches)
            )
            np.testing.assert_allclose(exact, expected, rtol=1e-5, atol=1e-8)
            # Without the accumulation factor the gradient is num_microbatches times too small.
            uncorrected = accumulated_then_averaged_over_processes(dapo_norm_constant)
            np.testing.assert_allclose(uncorrected * num_microbatches, expected, rtol=1e-5, atol=1e-8)
            self.assertGreater(np.abs(uncorrected - expected).max(), 0.1 * np.abs(expected).max())


class PolicyGradientLossTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_all_masked_row_and_garbage_at_masked_positions(self):
        rng = np.random.default_rng(4)
        batch = random_batch(rng, batch_size=5, length=6, allow_empty_rows=True)
        garbage = dict(batch)
        for key in ("logp", "old_logp", "ref_logp", "entropy"):
            garbage[key] = np.where(batch["mask"] > 0, batch[key], np.nan).astype(np.float32)
        garbage["logp"][0, :] = -np.inf

        modes = ("token-mean", "seq-mean-token-mean", "token-sum-norm")

        def every_mode(batch):
            return {
                mode: our_loss(batch, loss_agg_mode=mode, kl_coef=0.1, entropy_coef=0.01) for mode in modes
            }

        every_mode_variant = self.variant(every_mode)
        clean = every_mode_variant(batch)
        dirty = every_mode_variant(garbage)
        for mode in modes:
            loss, metrics = dirty[mode]
            self.assertTrue(np.isfinite(loss), mode)
            self.assertTrue(all(np.isfinite(np.asarray(v)) for v in metrics.values()), mode)
            np.testing.assert_allclose(loss, clean[mode][0], rtol=1e-6, err_msg=mode)

        grads = jax.grad(lambda lp: our_loss({**garbage, "logp": lp}, kl_coef=0.1)[0])(garbage["logp"])
        self.assertTrue(np.isfinite(grads).all())
        np.testing.assert_array_equal(grads[0], np.zeros(6))

    @chex.variants(with_jit=True, without_jit=True)
    def test_empty_row_contributes_zero_and_counts_in_seq_mean_denominators(self):
        rng = np.random.default_rng(12)
        loss_mat = rng.normal(size=(4, 5)).astype(np.float32)
        mask = (rng.random((4, 5)) < 0.7).astype(np.float32)
        mask[:, 0] = 1.0
        mask[2] = 0.0  # empty row
        kept = [0, 1, 3]

        def every_mode(loss_mat, mask):
            return [aggregate_loss(loss_mat, mask, mode) for mode in LOSS_AGG_MODES]

        with_empty = self.variant(every_mode)(loss_mat, mask)
        row_sums = (loss_mat * mask).sum(-1)[kept]
        row_means = row_sums / mask.sum(-1)[kept]
        expected = [
            row_sums.sum() / mask.sum(),
            row_means.sum() / 4,
            row_sums.sum() / 4,
            row_sums.sum() / 5 / 4,
            row_sums.sum() / 5,
        ]
        np.testing.assert_allclose(with_empty, expected, rtol=1e-6)

    def test_everything_masked_is_zero_not_nan(self):
        batch = random_batch(np.random.default_rng(5), batch_size=3, length=4)
        batch["mask"] = np.zeros_like(batch["mask"])
        every_mode = jax.jit(
            lambda batch: [
                our_loss(batch, loss_agg_mode=mode, kl_coef=0.1, entropy_coef=0.01) for mode in LOSS_AGG_MODES
            ]
        )
        for loss, metrics in every_mode(batch):
            self.assertEqual(float(loss), 0.0)
            self.assertTrue(all(np.isfinite(np.asarray(v)) for v in metrics.values()))

    @chex.variants(with_jit=True, without_jit=True)
    def test_length_one_sequences(self):
        batch = random_batch(np.random.default_rng(6), batch_size=4, length=1)
        batch["mask"] = np.ones_like(batch["mask"])

        def every_mode(batch):
            return [our_loss(batch, loss_agg_mode=mode)[0] for mode in LOSS_AGG_MODES]

        losses = self.variant(every_mode)(batch)
        # With one token per row every mode is the mean of the per-token losses (C = T = 1).
        np.testing.assert_allclose(losses[:4], np.full(4, losses[0]), rtol=1e-6)
        np.testing.assert_allclose(losses[4], 4 * losses[0], rtol=1e-6)

    def test_large_magnitude_log_probs_give_finite_loss_and_grads(self):
        rng = np.random.default_rng(7)
        batch = random_batch(rng, batch_size=4, length=5)
        batch["logp"] = np.where(rng.random((4, 5)) < 0.5, -1e4, 0.0).astype(np.float32)
        batch["old_logp"] = np.where(rng.random((4, 5)) < 0.5, -1e4, -2e4).astype(np.float32)
        batch["ref_logp"] = np.where(rng.random((4, 5)) < 0.5, -1e4, 0.0).astype(np.float32)
        combos = list(
            itertools.product(
                ("token", "sequence", "sequence_token"), ("token-mean", "seq-mean-token-mean"), (None, 3.0)
            )
        )

        def loss_of(logp, entropy, level, mode, dual):
            return our_loss(
                {**batch, "logp": logp, "entropy": entropy},
                importance_sampling_level=level,
                loss_agg_mode=mode,
                dual_clip_c=dual,
                kl_coef=0.01,
                entropy_coef=0.001,
            )[0]

        @jax.jit
        def losses_and_grads(logp, entropy):
            return [
                (loss_of(logp, entropy, *combo), jax.grad(loss_of, argnums=(0, 1))(logp, entropy, *combo))
                for combo in combos
            ]

        for combo, (loss, grads) in zip(combos, losses_and_grads(batch["logp"], batch["entropy"])):
            self.assertTrue(np.isfinite(loss), combo)
            self.assertTrue(all(np.isfinite(g).all() for g in grads), combo)

    def test_gradients_match_finite_differences_in_float64(self):
        with jax.enable_x64(True):
            rng = np.random.default_rng(8)
            batch = as_float64(random_batch(rng, batch_size=4, length=6, allow_empty_rows=True))
            # Keep log-ratios away from the clip kinks so central differences are valid.
            log_ratio = rng.choice([-0.6, -0.1, 0.05, 0.12, 0.5], size=batch["logp"].shape)
            batch["logp"] = batch["old_logp"] + log_ratio
            batch["advantages"][1] = -2.0  # a negative advantage with ρ > c·... exercised below
            combos = [(mode, "token", None) for mode in LOSS_AGG_MODES] + [
                ("token-mean", "token", 1.5),
                ("seq-mean-token-mean", "sequence", 1.5),
                ("seq-mean-token-sum-norm", "sequence_token", None),
            ]

            def every_objective(logp):  # [num_combos]
                return jnp.stack(
                    [
                        our_loss(
                            {**batch, "logp": logp},
                            loss_agg_mode=mode,
                            importance_sampling_level=level,
                            dual_clip_c=dual,
                            eps_low=0.2,
                            eps_high=0.28,
                            kl_coef=0.05,
                            entropy_coef=0.01,
                        )[0]
                        for mode, level, dual in combos
                    ]
                )

            logp = jnp.asarray(batch["logp"])
            jacobian = np.asarray(jax.jit(jax.jacrev(every_objective))(logp))  # [C, B, T]
            step = 1e-6
            valid_positions = list(zip(*np.nonzero(batch["mask"])))
            perturbations = np.zeros((len(valid_positions),) + logp.shape)
            for n, index in enumerate(valid_positions):
                perturbations[(n,) + index] = step
            plus = jax.jit(jax.vmap(every_objective))(logp + perturbations)
            minus = jax.jit(jax.vmap(every_objective))(logp - perturbations)
            numeric = np.zeros_like(jacobian)
            for n, index in enumerate(valid_positions):
                numeric[(slice(None),) + index] = (plus[n] - minus[n]) / (2 * step)
            for c, combo in enumerate(combos):
                np.testing.assert_allclose(jacobian[c], numeric[c], rtol=1e-6, atol=1e-8, err_msg=str(combo))

    def test_gspo_token_gradient_equals_gspo_with_sequence_advantages(self):
        # GSPO paper: with one advantage per sequence, GSPO-token and GSPO have the same gradient.
        rng = np.random.default_rng(9)
        batch = random_batch(rng, batch_size=5, length=7, log_ratio_scale=0.02)
        no_extras = {k: v for k, v in batch.items() if k not in ("entropy", "ref_logp")}

        def loss_of(logp, level):
            return our_loss(
                {**no_extras, "logp": logp},
                eps_low=3e-3,
                eps_high=4e-3,
                importance_sampling_level=level,
                loss_agg_mode="seq-mean-token-mean",
            )[0]

        gradient = jax.jit(jax.grad(loss_of), static_argnums=1)
        sequence = gradient(batch["logp"], "sequence")
        sequence_token = gradient(batch["logp"], "sequence_token")
        np.testing.assert_allclose(sequence_token, sequence, rtol=1e-5, atol=1e-8)

    def test_clip_higher_and_dual_clip_on_handmade_tokens(self):
        log_ratio = np.log(np.array([[1.25, 1.25, 0.5, 10.0]], np.float32))
        advantages = np.array([[1.0, -1.0, -1.0, -1.0]], np.float32)
        mask = np.ones((1, 4), np.float32)
        old = np.zeros((1, 4), np.float32)
        symmetric, info = ppo_clip_token_loss(log_ratio, old, advantages, mask, eps_low=0.2)
        # A>0, ρ=1.25 > 1.2: clipped to -1.2; A<0, ρ=1.25: unclipped 1.25; A<0, ρ=0.5: clipped 0.8.
        np.testing.assert_allclose(symmetric, [[-1.2, 1.25, 0.8, 10.0]], rtol=1e-6)
        np.testing.assert_array_equal(info["clipped"], [[True, False, True, False]])
        np.testing.assert_array_equal(info["clipped_high"], [[True, False, False, False]])
        np.testing.assert_array_equal(info["clipped_low"], [[False, False, True, False]])
        higher, _ = ppo_clip_token_loss(log_ratio, old, advantages, mask, eps_low=0.2, eps_high=0.28)
        np.testing.assert_allclose(higher[0, 0], -1.25, rtol=1e-6)  # DAPO clip-higher: not clipped
        dual, info = ppo_clip_token_loss(log_ratio, old, advantages, mask, eps_low=0.2, dual_clip_c=3.0)
        np.testing.assert_allclose(dual, [[-1.2, 1.25, 0.8, 3.0]], rtol=1e-6)  # bounded by -A·c
        np.testing.assert_array_equal(info["dual_clipped"], [[False, False, False, True]])
        _, metrics = policy_gradient_loss(log_ratio, old, advantages[:, 0], mask * 0 + 1, dual_clip_c=3.0)
        # A = 1 broadcast to every token: ρ = 1.25, 1.25, 10 are above 1 + ε.
        self.assertAlmostEqual(float(metrics["pg_clipfrac"]), 0.75, places=6)

    def test_vmap_over_a_leading_axis(self):
        rng = np.random.default_rng(10)
        batches = [random_batch(rng, batch_size=3, length=5) for _ in range(4)]
        stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)
        fn = functools.partial(
            our_loss, loss_agg_mode="seq-mean-token-mean", kl_coef=0.01, entropy_coef=0.01, dual_clip_c=3.0
        )
        batched, batched_metrics = jax.jit(jax.vmap(fn))(stacked)
        for k, batch in enumerate(batches):
            loss, metrics = jax.jit(fn)(batch)
            np.testing.assert_allclose(batched[k], loss, rtol=1e-6)
            np.testing.assert_allclose(batched_metrics["pg_clipfrac"][k], metrics["pg_clipfrac"])

    def test_aggregate_loss_rejects_unknown_mode_and_missing_inputs(self):
        with self.assertRaisesRegex(ValueError, "loss_agg_mode"):
            aggregate_loss(jnp.zeros((2, 3)), jnp.ones((2, 3)), "sum")
        batch = random_batch(np.random.default_rng(11), 2, 3)
        with self.assertRaisesRegex(ValueError, "ref_logp"):
            policy_gradient_loss(
                batch["logp"], batch["old_logp"], batch["advantages"], batch["mask"], kl_coef=0.1
            )
        with self.assertRaisesRegex(ValueError, "dual_clip_c"):
            ppo_clip_token_loss(
                batch["logp"], batch["old_logp"], batch["advantages"], batch["mask"], dual_clip_c=0.5
            )
