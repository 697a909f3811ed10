"""PPO-clip policy-gradient losses for language models (GRPO, DAPO, Dr. GRPO, GSPO) and loss aggregation.

Per token (Schulman et al. 2017, arXiv 1707.06347; GRPO arXiv 2402.03300 Eq. 3):

    ρ_{i,t} = exp(log π_θ(y_{i,t}) − log π_old(y_{i,t}))
    ℓ_{i,t} = max(−Â_{i,t} ρ_{i,t},  −Â_{i,t} clip(ρ_{i,t}, 1 − ε_low, 1 + ε_high))

* **Clip-higher** (DAPO, arXiv 2503.14476): ε_low = 0.2, ε_high = 0.28.
* **Dual clip** (Ye et al. 2020, arXiv 1912.09729; verl `clip_ratio_c` = 3): for Â < 0,
  ℓ = min(ℓ, −Â·c), which bounds the loss when ρ ≫ 1 on a negative-advantage token.
* **Sequence-level ratio** (GSPO, arXiv 2507.18071):
  s_i = exp((1/|o_i|) Σ_t log(π_θ/π_old)(y_{i,t})) replaces ρ_{i,t} for every token of sequence i
  (`importance_sampling_level="sequence"`). GSPO-token (`"sequence_token"`) uses
  s_{i,t} = sg[s_i] · π_θ(y_{i,t}) / sg[π_θ(y_{i,t})]: same value as s_i, gradient s_i ∇log π_θ(y_{i,t})
  per token, so per-token advantages can differ (this is verl's `compute_policy_loss_gspo`).
* The log-ratio is clamped to [−20, 20] before the exponential (verl does the same), so log-probs of
  magnitude 1e4 never produce inf/NaN in the loss or its gradient.

Total loss (all terms use the same aggregation):

    L = agg(ℓ) + β · agg(w ⊙ KL_k(π_θ‖π_ref)) − c_H · agg(H)

* w_{i,t} = 1 by default (`kl_bias_correction=False`): verl `dp_actor`, and TRL `GRPOTrainer` with
  `use_bias_correction_kl=False` (TRL 1.9's default).
* `kl_bias_correction=True`: w_{i,t} = the importance ratio of ℓ (ρ_{i,t}; s_i at sequence level),
  **not** stop-gradiented. This is TRL 1.16's default `use_bias_correction_kl=True`
  (DeepSeek-V3.2, arXiv 2512.02556), where `_compute_loss` multiplies the per-token k3 by
  `coef_1 = exp(log_importance_weights)` before adding β times it to the per-token loss. Tokens are
  sampled from π_old, so at token level E_old[ρ·k3] = E_θ[k3] = KL(π_θ‖π_ref) and its gradient is
  the reverse-KL gradient (at sequence level s_i is only broadcast onto the per-token KL); without w the k3 term's expected gradient at ρ = 1 is that of KL(π_ref‖π_θ). The
  correction changes the gradient even where ρ = 1 (∇ρ = ρ ∇log π_θ).
* `agg` is linear in the per-token loss, so agg(ℓ) + β agg(w·KL) = agg(ℓ + β w·KL): TRL's
  "add β·KL per token, then aggregate" is the same value and gradient.

`agg` (`aggregate_loss`), with mask m_{i,t} ∈ {0, 1}, B rows, T = mask.shape[-1] columns:

| mode                        | formula                              | equals                                     |
|-----------------------------|--------------------------------------|--------------------------------------------|
| "token-mean"                | Σ_i Σ_t m ℓ / Σ_i Σ_t m              | verl `token-mean`; TRL `bnpo`; TRL `dapo`   |
|                             |                                      | with norm_constant = global active tokens  |
|                             |                                      | / (processes · accumulated micro-batches)  |
|                             |                                      | (see below)                                |
| "seq-mean-token-mean"       | (1/B) Σ_i (Σ_t m ℓ / Σ_t m)          | verl `seq-mean-token-mean`; TRL `grpo`      |
|                             |                                      | (DeepSeekMath GRPO)                        |
| "seq-mean-token-sum"        | (1/B) Σ_i Σ_t m ℓ                    | verl `seq-mean-token-sum`                   |
| "seq-mean-token-sum-norm"   | (1/B) Σ_i Σ_t m ℓ / C                | TRL `dr_grpo` with C = max_completion_length|
|                             |                                      | (Dr. GRPO paper, arXiv 2503.20783)         |
| "token-sum-norm"            | Σ_i Σ_t m ℓ / C                      | verl `seq-mean-token-sum-norm` as verl      |
|                             |                                      | actually implements it (no 1/B)            |

Notes on the table (each row is checked numerically in tests/losses/test_policy_gradient.py against
independent float64 numpy transcriptions of verl's `agg_loss` and TRL's `GRPOTrainer._compute_loss`):

* verl's `seq-mean-token-sum-norm` computes `sum(seq_losses) / loss_mask.shape[-1]`, i.e. it does
  *not* take the mean over sequences its name promises; it is B times TRL's `dr_grpo` and B times
  our mode of the same name. We keep the name's meaning (and TRL's/the paper's value) and expose
  verl's literal value as "token-sum-norm". The two differ by the constant B only.
* C (`norm_constant`) defaults to `mask.shape[-1]` like verl; pass a fixed max completion length to
  keep it constant across batches, as Dr. GRPO intends.
* TRL `dapo` divides each micro-batch's token sum by `num_items_in_batch / num_processes`, where
  `num_items_in_batch` counts the active tokens of the whole accumulated global batch (TRL 1.16
  multiplies this by gradient_accumulation_steps / steps_per_generation, 1 by default), **sums** the
  gradients of its k accumulated micro-batches and averages them over processes: an exact token
  mean over the global batch. Without accumulation (k = 1), use "token-mean" with
  `norm_constant = global_tokens / num_devices` (e.g. a `psum` of `mask.sum()` divided by the axis
  size) under `shard_map` + `pmean` of gradients, or plain "token-mean" on the global batch under a
  global-view `jit`. **With accumulation over k micro-batches**, our
  `training.gradient_steps.accumulated_gradients` takes the **mean** (not the sum) of the k
  micro-batch gradients, so the denominator needs the extra factor k:
  `norm_constant = global_tokens / (num_devices · k)`, which is what
  `training.gradient_steps.microbatch_norm_constant("token-mean", global_tokens / num_devices, k)`
  returns; with `global_tokens / num_devices` alone the loss and gradient come out k times too
  small. TRL `bnpo` and verl `token-mean` are the local (per-micro-batch) token mean; verl then
  averages micro-batch losses, which is not an exact global token mean.
* **Equality with TRL's `GRPOTrainer._compute_loss`** (1.16; value and gradient) holds with
  `kl_bias_correction` equal to TRL's `use_bias_correction_kl` (TRL 1.16 default True, ours False),
  `kl_estimator="k3"`, `k3_clip=None` (TRL does not clamp k3), `dual_clip_c=None`, the table's
  aggregation for the `loss_type`, log-ratios within ±`log_ratio_clip`, and TRL's `delta`,
  vLLM importance-sampling correction, off-policy mask and entropy mask off. TRL's entropy bonus
  (`entropy_coef`) is always a micro-batch token mean (divided by the accumulation steps) whatever
  the `loss_type`, so it matches ours only with "token-mean" (use `entropy_coef=0` otherwise).
  "sequence_token" (GSPO-token) has no TRL counterpart.
* **Fully masked rows** (no valid token) contribute 0 in every mode and, in the seq-mean modes,
  **count in the denominator B** (TRL `clamp(min=1)` semantics; verl-agent's vendored verl divides
  0/0 there and produces NaN; newer verl excludes such rows from the denominator instead). Pass
  `norm_constant` = the number of non-empty rows to get the newer-verl behaviour. No mode divides by
  zero: token counts are clamped to ≥ 1.

Shapes: `logp, old_logp, mask [B, T]`; `advantages [B]` (broadcast over tokens) or `[B, T]`;
optional `ref_logp, entropy [B, T]`. Masked positions may hold any finite or non-finite garbage:
they are replaced before any arithmetic.
"""

from typing import Optional, Union

import chex
import jax
import jax.numpy as jnp

from jaxrl_llm.losses.kl import kl_divergence_estimate
from jaxrl_llm.losses.names import IMPORTANCE_SAMPLING_LEVELS, LOSS_AGG_MODES

__all__ = [
    "IMPORTANCE_SAMPLING_LEVELS",
    "LOSS_AGG_MODES",
    "aggregate_loss",
    "policy_gradient_loss",
    "ppo_clip_token_loss",
]

Scalar = Union[float, chex.Array]


def aggregate_loss(
    loss_mat: chex.Array,
    mask: chex.Array,
    mode: str = "token-mean",
    norm_constant: Optional[Scalar] = None,
) -> chex.Array:
    """Reduce a per-token loss `[B, T]` to a scalar; see the module table for the formulas.

    Args:
      loss_mat: `[B, T]` per-token loss.
      mask: `[B, T]` 0/1 (bool or float) mask of valid tokens.
      mode: one of `LOSS_AGG_MODES`.
      norm_constant: replaces the default denominator of the mode: the active token count for
        "token-mean" (TRL `dapo`: global tokens / (processes · accumulated micro-batches), see the
        module docstring), the number of rows B for
        "seq-mean-token-mean" and "seq-mean-token-sum", and C (default `T = mask.shape[-1]`) for
        "seq-mean-token-sum-norm" and "token-sum-norm". May be a traced scalar.

    Returns:
      Scalar loss. All-masked rows contribute 0; nothing is NaN when every token is masked.
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg_mode={mode!r} is not supported; allowed values are {LOSS_AGG_MODES}.")
    chex.assert_rank([loss_mat, mask], 2)
    chex.assert_equal_shape([loss_mat, mask])
    chex.assert_type(loss_mat, float)
    weights = mask.astype(loss_mat.dtype)
    masked = jnp.where(weights > 0, loss_mat, 0.0) * weights
    num_rows, num_columns = loss_mat.shape

    if mode == "token-mean":
        denominator = jnp.maximum(jnp.sum(weights), 1.0) if norm_constant is None else norm_constant
        return jnp.sum(masked) / denominator
    if mode in ("seq-mean-token-sum-norm", "token-sum-norm"):
        length_constant = num_columns if norm_constant is None else norm_constant
        total = jnp.sum(masked) / length_constant
        return total / num_rows if mode == "seq-mean-token-sum-norm" else total

    row_sums = jnp.sum(masked, axis=-1)
    if mode == "seq-mean-token-mean":
        row_values = row_sums / jnp.maximum(jnp.sum(weights, axis=-1), 1.0)
    else:  # "seq-mean-token-sum"
        row_values = row_sums
    denominator = num_rows if norm_constant is None else norm_constant
    return jnp.sum(row_values) / denominator


def _masked_mean(values: chex.Array, weights: chex.Array) -> chex.Array:
    return jnp.sum(jnp.where(weights > 0, values, 0.0) * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _masked_max(values: chex.Array, weights: chex.Array) -> chex.Array:
    """Max over valid entries; 0 when nothing is valid."""
    largest = jnp.max(jnp.where(weights > 0, values, -jnp.inf), initial=-jnp.inf)
    return jnp.where(jnp.any(weights > 0), largest, 0.0)


def ppo_clip_token_loss(
    logp: chex.Array,
    old_logp: chex.Array,
    advantages: chex.Array,
    mask: chex.Array,
    *,
    eps_low: Scalar = 0.2,
    eps_high: Optional[Scalar] = None,
    dual_clip_c: Optional[Scalar] = None,
    importance_sampling_level: str = "token",
    log_ratio_clip: float = 20.0,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Per-token PPO-clip loss ℓ_{i,t} (module docstring) with clip-higher, dual clip and GSPO ratios.

    Args:
      logp: `[B, T]` log π_θ of the sampled tokens (differentiated).
      old_logp: `[B, T]` log π_old of the same tokens (treated as constant).
      advantages: `[B]` or `[B, T]` (treated as constant).
      mask: `[B, T]` 0/1 mask of valid tokens.
      eps_low: lower clip range, ρ ≥ 1 − eps_low.
      eps_high: upper clip range, ρ ≤ 1 + eps_high; defaults to `eps_low` (symmetric PPO).
      dual_clip_c: if given (> 1, verl: 3.0), ℓ = min(ℓ, −Â·c) where Â < 0.
      importance_sampling_level: "token" (PPO/GRPO), "sequence" (GSPO) or "sequence_token"
        (GSPO-token).
      log_ratio_clip: the log-ratio is clamped to `[−log_ratio_clip, log_ratio_clip]` before `exp`.

    Returns:
      `(loss_mat [B, T], token_info)`: `loss_mat` is zero at masked positions; `token_info` holds
      `[B, T]` arrays `ratio`, `log_ratio`, `clipped` (the clipped branch is active),
      `dual_clipped`, `clipped_low` (ρ < 1 − ε_low and Â < 0), `clipped_high` (ρ > 1 + ε_high and
      Â > 0).
    """
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(
            f"importance_sampling_level={importance_sampling_level!r} is not supported; "
            f"allowed values are {IMPORTANCE_SAMPLING_LEVELS}."
        )
    if isinstance(dual_clip_c, (int, float)) and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1 (verl uses 3.0); got {dual_clip_c}.")
    chex.assert_rank([logp, old_logp, mask], 2)
    chex.assert_rank(advantages, {1, 2})
    chex.assert_equal_shape([logp, old_logp, mask])
    chex.assert_type([logp, old_logp, advantages], float)
    eps_high = eps_low if eps_high is None else eps_high
    valid = mask.astype(logp.dtype) > 0
    if advantages.ndim == 1:
        chex.assert_equal_shape_prefix([advantages, logp], 1)
        advantages = advantages[:, None]
    advantages = jnp.broadcast_to(jax.lax.stop_gradient(advantages), logp.shape)
    advantages = jnp.where(valid, advantages, 0.0)

    token_log_ratio = jnp.where(valid, logp - jax.lax.stop_gradient(old_logp), 0.0)
    if importance_sampling_level == "token":
        log_ratio = token_log_ratio
    else:
        lengths = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True), 1).astype(logp.dtype)
        sequence_log_ratio = jnp.sum(token_log_ratio, axis=-1, keepdims=True) / lengths
        if importance_sampling_level == "sequence":
            log_ratio = jnp.broadcast_to(sequence_log_ratio, logp.shape)
        else:
            safe_logp = jnp.where(valid, logp, 0.0)
            log_ratio = (
                jax.lax.stop_gradient(sequence_log_ratio) + safe_logp - jax.lax.stop_gradient(safe_logp)
            )
        log_ratio = jnp.where(valid, log_ratio, 0.0)
    log_ratio = jnp.clip(log_ratio, -log_ratio_clip, log_ratio_clip)
    ratio = jnp.exp(log_ratio)

    unclipped_loss = -advantages * ratio
    clipped_loss = -advantages * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss_mat = jnp.maximum(unclipped_loss, clipped_loss)
    clipped = clipped_loss > unclipped_loss
    if dual_clip_c is not None:
        dual_bound = -advantages * dual_clip_c
        dual_clipped = (advantages < 0) & (loss_mat > dual_bound)
        loss_mat = jnp.where(advantages < 0, jnp.minimum(loss_mat, dual_bound), loss_mat)
    else:
        dual_clipped = jnp.zeros_like(valid)
    loss_mat = jnp.where(valid, loss_mat, 0.0)

    token_info = {
        "ratio": ratio,
        "log_ratio": log_ratio,
        "clipped": clipped & valid,
        "dual_clipped": dual_clipped & valid,
        "clipped_low": (ratio < 1.0 - eps_low) & (advantages < 0) & valid,
        "clipped_high": (ratio > 1.0 + eps_high) & (advantages > 0) & valid,
    }
    return loss_mat, token_info


def policy_gradient_loss(
    logp: chex.Array,
    old_logp: chex.Array,
    advantages: chex.Array,
    mask: chex.Array,
    *,
    ref_logp: Optional[chex.Array] = None,
    entropy: Optional[chex.Array] = None,
    eps_low: Scalar = 0.2,
    eps_high: Optional[Scalar] = None,
    dual_clip_c: Optional[Scalar] = None,
    importance_sampling_level: str = "token",
    kl_coef: Scalar = 0.0,
    kl_estimator: str = "k3",
    k3_clip: Optional[float] = 10.0,
    kl_bias_correction: bool = False,
    entropy_coef: Scalar = 0.0,
    loss_agg_mode: str = "token-mean",
    norm_constant: Optional[Scalar] = None,
    log_ratio_clip: float = 20.0,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """GRPO/DAPO/Dr. GRPO/GSPO actor loss `L = agg(ℓ) + β agg(w·KL) − c_H agg(H)` (module docstring).

    Recipes: GRPO (DeepSeekMath) = `loss_agg_mode="seq-mean-token-mean", kl_coef=0.04`;
    DAPO = `eps_high=0.28, loss_agg_mode="token-mean", kl_coef=0`; Dr. GRPO =
    `loss_agg_mode="seq-mean-token-sum-norm", norm_constant=max_len, kl_coef=0` with
    `normalization="none"` advantages; verl/GiGPO defaults = `dual_clip_c=3, token-mean, k3 0.01,
    entropy_coef=0.001`; GSPO = `importance_sampling_level="sequence"`, ε ≈ 3e-4/4e-4,
    `seq-mean-token-mean`.

    Args:
      logp, old_logp, advantages, mask: as in `ppo_clip_token_loss`.
      ref_logp: optional `[B, T]` log π_ref (constant); required when `kl_coef` is not 0.
      entropy: optional `[B, T]` per-token policy entropy (differentiable if you want the bonus to
        act); required when `entropy_coef` is not 0.
      eps_low, eps_high, dual_clip_c, importance_sampling_level, log_ratio_clip: see
        `ppo_clip_token_loss`.
      kl_coef: β. kl_estimator: "k1", "k2" or "k3" (see `kl.py`); k3_clip: verl's clamp of k3.
      kl_bias_correction: multiply the per-token KL estimate by the (differentiable) importance
        ratio of the policy term before aggregating, as TRL's `use_bias_correction_kl` (default
        True in TRL 1.16); False (default) is verl's and older TRL's loss.
      entropy_coef: c_H (the entropy is a bonus: it is subtracted).
      loss_agg_mode, norm_constant: see `aggregate_loss`.

    Returns:
      `(loss, metrics)`. Metrics (scalars, token-masked means unless stated): `pg_loss`,
      `pg_clipfrac` (verl: clipped branch active), `pg_clipfrac_lower` (dual clip active),
      `clip_ratio_low`, `clip_ratio_high`, `clip_ratio_region` (TRL definitions), `ppo_kl` (verl:
      mean of log π_old − log π_θ, k1), `approx_kl` (k3 of π_old vs π_θ: mean of ρ − 1 − log ρ),
      `ratio_mean`, `ratio_max`, `token_count`, and when given `kl` (masked mean of the per-token
      KL term, ratio-weighted with `kl_bias_correction` as TRL logs it) / `kl_loss`, `entropy` /
      `entropy_loss`.
    """
    if isinstance(kl_coef, (int, float)) and kl_coef != 0 and ref_logp is None:
        raise ValueError("kl_coef is not 0 but ref_logp is None; pass the reference log-probs.")
    if isinstance(entropy_coef, (int, float)) and entropy_coef != 0 and entropy is None:
        raise ValueError("entropy_coef is not 0 but entropy is None; pass per-token entropies.")
    loss_mat, token_info = ppo_clip_token_loss(
        logp,
        old_logp,
        advantages,
        mask,
        eps_low=eps_low,
        eps_high=eps_high,
        dual_clip_c=dual_clip_c,
        importance_sampling_level=importance_sampling_level,
        log_ratio_clip=log_ratio_clip,
    )
    weights = mask.astype(logp.dtype)
    pg_loss = aggregate_loss(loss_mat, mask, loss_agg_mode, norm_constant)
    loss = pg_loss

    info = jax.lax.stop_gradient(token_info)
    ratio, log_ratio = info["ratio"], info["log_ratio"]
    region = info["clipped_low"] | info["clipped_high"]
    metrics = {
        "pg_loss": pg_loss,
        "pg_clipfrac": _masked_mean(info["clipped"].astype(logp.dtype), weights),
        "pg_clipfrac_lower": _masked_mean(info["dual_clipped"].astype(logp.dtype), weights),
        "clip_ratio_low": _masked_mean(info["clipped_low"].astype(logp.dtype), weights),
        "clip_ratio_high": _masked_mean(info["clipped_high"].astype(logp.dtype), weights),
        "clip_ratio_region": _masked_mean(region.astype(logp.dtype), weights),
        "ppo_kl": _masked_mean(-log_ratio, weights),
        "approx_kl": _masked_mean(jnp.expm1(log_ratio) - log_ratio, weights),
        "ratio_mean": _masked_mean(ratio, weights),
        "ratio_max": _masked_max(ratio, weights),
        "token_count": jnp.sum(weights),
    }

    if ref_logp is not None:
        chex.assert_equal_shape([logp, ref_logp])
        valid = weights > 0
        safe_logp = jnp.where(valid, logp, 0.0)
        safe_ref = jnp.where(valid, jax.lax.stop_gradient(ref_logp), 0.0)
        kl_mat = kl_divergence_estimate(safe_logp, safe_ref, kl_estimator, k3_clip)
        if kl_bias_correction:
            kl_mat = kl_mat * token_info["ratio"]  # 1 at masked positions, where kl_mat is 0
        kl_loss = aggregate_loss(kl_mat, mask, loss_agg_mode, norm_constant)
        loss = loss + kl_coef * kl_loss
        metrics["kl"] = _masked_mean(jax.lax.stop_gradient(kl_mat), weights)
        metrics["kl_loss"] = kl_loss
    if entropy is not None:
        chex.assert_equal_shape([logp, entropy])
        entropy_loss = aggregate_loss(entropy, mask, loss_agg_mode, norm_constant)
        loss = loss - entropy_coef * entropy_loss
        metrics["entropy"] = _masked_mean(jax.lax.stop_gradient(entropy), weights)
        metrics["entropy_loss"] = entropy_loss
    return loss, metrics
