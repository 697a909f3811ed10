"""Sequence-level preference and offline-regression losses: DPO (and cDPO), ORPO, DRO, and the
Bradley-Terry loss of a scalar reward model.

All take **summed** sequence log-probs `[B]` (Σ_t log π(y_t | x, y_<t) over the completion tokens,
e.g. `(logprobs * completion_mask).sum(-1)`), never a model. They return `(loss, info)` with the
scalar batch mean and per-example diagnostics.

**DPO** (Rafailov et al. 2023, arXiv 2305.18290, Eq. 7), pairs (x, y_w ≻ y_l):

    h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)]
    ℓ = −(1 − ε) log σ(β h) − ε log σ(−β h)

* ε = `label_smoothing` is conservative DPO (cDPO, Mitchell 2023: labels flipped with probability ε);
  ε = 0 is the plain sigmoid loss. This is TRL's `loss_type="sigmoid"` and Tunix's `dpo_loss_fn`.
* reference-free (`ref_*_logps=None`): log π_ref := 0, h = log π_θ(y_w) − log π_θ(y_l) (TRL
  `reference_free=True`; Tunix without a reference model).
* implicit rewards β(log π_θ − log π_ref) of each side are returned for logging.

**ORPO** (Hong et al. 2024, arXiv 2403.07691, Eqs. 2–7), no reference model:

    P(y|x)   = exp( (1/|y|) Σ_t log π_θ(y_t|x, y_<t) )          (length-normalised likelihood)
    odds(y)  = P / (1 − P),   log odds = log P − log(1 − P)
    L_SFT    = −(1/|y_w|) Σ_t log π_θ(y_w,t)
    L_OR     = −log σ( log odds(y_w) − log odds(y_l) )
    L        = L_SFT + λ L_OR

* `length_normalized_odds=True` is the paper's (and TRL's `ORPOTrainer`'s) P; `False` feeds the
  summed log-prob into the odds (Tunix's `dpo_loss_fn(algorithm="orpo")`, which keeps the length-
  normalised L_SFT); λ = `lambda_orpo` (Tunix and TRL default 0.1).
* `label_smoothing` ε applies to L_OR like DPO's (Tunix): −(1−ε) log σ(r) − ε log σ(−r).
* log(1 − P) is computed as log(−expm1(log P)) with log P clamped to ≤ −1e-6, so a certain sequence
  (log P = 0) gives a large but finite odds instead of inf.

**DRO** (Richemond et al. 2024, "Offline Regularised Reinforcement Learning for LLM Alignment",
arXiv 2405.19107), single completions with a scalar reward R(x, y) and a value V(x):

    ℓ = ½ ( V(x) + β log π_θ(y|x)/π_ref(y|x) − R(x, y) )²

minimised jointly in θ and V (both receive gradients). At the optimum V = V*(x) = β log E_ref[e^{R/β}]
and π_θ = π* ∝ π_ref e^{R/β}. ShiQ's multi-step residual at the first token with one final reward
is this residual with V = v_θ(x) read from the logits (`losses/bellman.py`).

**Bradley-Terry reward model** (InstructGPT, Ouyang et al. 2022; margin: Llama 2, Touvron et al.
2023; HelpSteer3-Preference, arXiv 2505.11475), scalar rewards r of the two responses of a pair:

    Δ = r(x, y_c) − r(x, y_r)
    ℓ = −log σ(Δ − m)          (m = 0: plain BT; m > 0: Llama 2's margin from the rating)

Shapes: `[B]` for every argument (pairs for DPO/ORPO/BT, completions for DRO).
"""

from typing import Optional, Union

import chex
import jax
import jax.numpy as jnp

__all__ = ["bradley_terry_loss", "dpo_loss", "dro_loss", "orpo_log_odds_ratio", "orpo_loss"]

Scalar = Union[float, chex.Array]
_MAX_LOG_LIKELIHOOD = -1e-6


def _smoothed_sigmoid_loss(logits: chex.Array, label_smoothing: Scalar) -> chex.Array:
    """−(1 − ε) log σ(z) − ε log σ(−z), elementwise."""
    return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits) - label_smoothing * jax.nn.log_sigmoid(-logits)


def dpo_loss(
    chosen_logps: chex.Array,
    rejected_logps: chex.Array,
    ref_chosen_logps: Optional[chex.Array] = None,
    ref_rejected_logps: Optional[chex.Array] = None,
    *,
    beta: Scalar = 0.1,
    label_smoothing: Scalar = 0.0,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """DPO sigmoid loss (cDPO with `label_smoothing` > 0; reference-free with no `ref_*`), batch mean.

    Args:
      chosen_logps, rejected_logps: `[B]` summed log π_θ of the chosen / rejected completions.
      ref_chosen_logps, ref_rejected_logps: `[B]` the same under π_ref (constant); both or neither.
      beta: β > 0.
      label_smoothing: ε in [0, 0.5).

    Returns:
      `(loss, info)` with `[B]` arrays `losses`, `chosen_rewards`, `rejected_rewards`, `margins`
      (β h) and scalars `accuracy` (fraction with chosen reward > rejected reward), `margin_mean`.
    """
    if (ref_chosen_logps is None) != (ref_rejected_logps is None):
        raise ValueError("Pass both ref_chosen_logps and ref_rejected_logps, or neither (reference-free DPO).")
    chex.assert_rank([chosen_logps, rejected_logps], 1)
    chex.assert_equal_shape([chosen_logps, rejected_logps])
    chex.assert_type([chosen_logps, rejected_logps], float)
    chosen_log_ratio, rejected_log_ratio = chosen_logps, rejected_logps
    if ref_chosen_logps is not None:
        chex.assert_equal_shape([chosen_logps, ref_chosen_logps, ref_rejected_logps])
        chosen_log_ratio = chosen_logps - jax.lax.stop_gradient(ref_chosen_logps)
        rejected_log_ratio = rejected_logps - jax.lax.stop_gradient(ref_rejected_logps)
    chosen_rewards = beta * chosen_log_ratio
    rejected_rewards = beta * rejected_log_ratio
    margins = chosen_rewards - rejected_rewards
    losses = _smoothed_sigmoid_loss(margins, label_smoothing)
    info = {
        "losses": losses,
        "chosen_rewards": jax.lax.stop_gradient(chosen_rewards),
        "rejected_rewards": jax.lax.stop_gradient(rejected_rewards),
        "margins": jax.lax.stop_gradient(margins),
        "accuracy": jnp.mean(margins > 0),
        "margin_mean": jax.lax.stop_gradient(jnp.mean(margins)),
    }
    return jnp.mean(losses), info


def orpo_log_odds_ratio(
    chosen_log_likelihood: chex.Array, rejected_log_likelihood: chex.Array
) -> chex.Array:
    """log odds(y_w) − log odds(y_l) from log P(y_w), log P(y_l) `[B]` (each ≤ 0), with
    log odds = log P − log(1 − P)."""

    def log_odds(log_p):
        log_p = jnp.minimum(log_p, _MAX_LOG_LIKELIHOOD)
        return log_p - jnp.log(-jnp.expm1(log_p))

    return log_odds(chosen_log_likelihood) - log_odds(rejected_log_likelihood)


def orpo_loss(
    chosen_logps: chex.Array,
    rejected_logps: chex.Array,
    chosen_lengths: chex.Array,
    rejected_lengths: chex.Array,
    *,
    lambda_orpo: Scalar = 0.1,
    label_smoothing: Scalar = 0.0,
    length_normalized_odds: bool = True,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """ORPO loss L_SFT + λ L_OR (module docstring), batch mean.

    Args:
      chosen_logps, rejected_logps: `[B]` summed log π_θ of the chosen / rejected completions.
      chosen_lengths, rejected_lengths: `[B]` completion token counts (clamped to ≥ 1).
      lambda_orpo: λ, the weight of the odds-ratio term.
      label_smoothing: ε of the odds-ratio term.
      length_normalized_odds: P = exp(mean log-prob) (paper, TRL) or exp(summed log-prob) (Tunix).

    Returns:
      `(loss, info)` with `[B]` arrays `losses`, `sft_losses`, `odds_ratio_losses`, `log_odds_ratio`
      and scalar `accuracy` (fraction with log odds ratio > 0).
    """
    chex.assert_rank([chosen_logps, rejected_logps, chosen_lengths, rejected_lengths], 1)
    chex.assert_equal_shape([chosen_logps, rejected_logps, chosen_lengths, rejected_lengths])
    chex.assert_type([chosen_logps, rejected_logps], float)
    chosen_lengths = jnp.maximum(chosen_lengths, 1).astype(chosen_logps.dtype)
    rejected_lengths = jnp.maximum(rejected_lengths, 1).astype(rejected_logps.dtype)
    chosen_mean_logp = chosen_logps / chosen_lengths
    if length_normalized_odds:
        log_odds_ratio = orpo_log_odds_ratio(chosen_mean_logp, rejected_logps / rejected_lengths)
    else:
        log_odds_ratio = orpo_log_odds_ratio(chosen_logps, rejected_logps)
    sft_losses = -chosen_mean_logp
    odds_ratio_losses = _smoothed_sigmoid_loss(log_odds_ratio, label_smoothing)
    losses = sft_losses + lambda_orpo * odds_ratio_losses
    info = {
        "losses": losses,
        "sft_losses": jax.lax.stop_gradient(sft_losses),
        "odds_ratio_losses": jax.lax.stop_gradient(odds_ratio_losses),
        "log_odds_ratio": jax.lax.stop_gradient(log_odds_ratio),
        "accuracy": jnp.mean(log_odds_ratio > 0),
    }
    return jnp.mean(losses), info


def dro_loss(
    logps: chex.Array,
    ref_logps: chex.Array,
    values: chex.Array,
    rewards: chex.Array,
    *,
    beta: Scalar = 0.1,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """DRO squared loss ½ (V(x) + β log π_θ(y|x)/π_ref(y|x) − R)², batch mean.

    Args:
      logps: `[B]` summed log π_θ(y|x) (differentiated).
      ref_logps: `[B]` summed log π_ref(y|x) (constant).
      values: `[B]` V(x) (differentiated: a value head, or v_θ(x) from the logits).
      rewards: `[B]` R(x, y) (constant).
      beta: β > 0 (DRO's τ).

    Returns:
      `(loss, info)` with `[B]` arrays `losses`, `residuals` and scalar `log_ratio_mean`.
    """
    chex.assert_rank([logps, ref_logps, values, rewards], 1)
    chex.assert_equal_shape([logps, ref_logps, values, rewards])
    chex.assert_type([logps, values], float)
    log_ratio = logps - jax.lax.stop_gradient(ref_logps)
    residuals = values + beta * log_ratio - jax.lax.stop_gradient(rewards)
    losses = 0.5 * jnp.square(residuals)
    info = {
        "losses": losses,
        "residuals": jax.lax.stop_gradient(residuals),
        "log_ratio_mean": jax.lax.stop_gradient(jnp.mean(log_ratio)),
    }
    return jnp.mean(losses), info


def bradley_terry_loss(
    chosen_reward: chex.Array,
    rejected_reward: chex.Array,
    margin: Optional[chex.Array] = None,
    mask: Optional[chex.Array] = None,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Bradley-Terry loss of a reward model, mean over the (unmasked) pairs:

        ℓ = (1 / Σ_b w_b) Σ_b w_b · −log σ(r_c,b − r_r,b − m_b)

    with w = `mask` (1 for every pair by default) and m = `margin` (0 by default). −log σ(z) is
    computed as softplus(−z), finite and with a finite gradient for any |z|; all pairs masked
    gives 0 (and zero gradients).

    Args:
      chosen_reward, rejected_reward: `[B]` scalar rewards r(x, y_c), r(x, y_r) (differentiated).
      margin: `[B]` or scalar m ≥ 0 the chosen reward must beat the rejected one by (constant).
      mask: `[B]` bool (or 0/1) marks the pairs that count.

    Returns:
      `(loss, info)` with `[B]` arrays `losses` (0 where masked) and `margins` (Δ = r_c − r_r)
      and scalars over the unmasked pairs: `accuracy` (fraction with Δ > 0; a tie counts as
      wrong, as RM-Bench and J1 count it) and `margin_mean` (mean Δ).
    """
    chex.assert_rank([chosen_reward, rejected_reward], 1)
    chex.assert_equal_shape([chosen_reward, rejected_reward])
    chex.assert_type([chosen_reward, rejected_reward], float)
    margins = chosen_reward - rejected_reward
    shifted = margins if margin is None else margins - jax.lax.stop_gradient(margin)
    weights = jnp.ones_like(margins) if mask is None else jnp.asarray(mask).astype(margins.dtype)
    chex.assert_equal_shape([margins, weights])
    count = jnp.maximum(weights.sum(), 1.0)
    losses = weights * jax.nn.softplus(-shifted)  # −log σ(z) = softplus(−z)
    margins = jax.lax.stop_gradient(margins)
    info = {
        "losses": jax.lax.stop_gradient(losses),
        "margins": margins,
        "accuracy": jnp.sum(weights * (margins > 0)) / count,
        "margin_mean": jnp.sum(weights * margins) / count,
    }
    return losses.sum() / count, info
