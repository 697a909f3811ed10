"""Per-token KL estimators from sampled-token log-probs (Schulman, "Approximating KL divergence", 2020).

Tokens are sampled from π_θ (or π_old ≈ π_θ). With the log-ratio `d = log π_ref(y) − log π_θ(y)`:

    k1 = −d                    unbiased for KL(π_θ‖π_ref), high variance, can be negative
    k2 = ½ d²                  biased, low variance, ≥ 0 (verl "mse")
    k3 = e^d − d − 1           unbiased, low variance, ≥ 0 (verl "low_var_kl"; GRPO, arXiv 2402.03300)

GRPO adds β·k3 per token to the loss (not to the reward). verl clamps k3 to [−10, 10]
(`kl_penalty(..., "low_var_kl")` in `verl/trainer/ppo/core_algos.py`); since k3 ≥ 0 only the upper
bound is ever active. We additionally clamp `d` to [−20, 20] before the exponential (as recent verl
does): this does not change any clamped value (|d| ≥ 20 already gives k3 > 10) but keeps `e^d`
finite, so log-probs of magnitude 1e4 give a finite loss and finite (zero) gradients instead of
inf/NaN.

Shapes: any, typically `[B, T]`; output has the shape of the inputs.
"""

from typing import Optional

import chex
import jax.numpy as jnp

from jaxrl_llm.losses.names import KL_ESTIMATOR_ALIASES, KL_ESTIMATOR_NAMES, KL_ESTIMATORS

_CANONICAL_ESTIMATOR = {**{name: name for name in KL_ESTIMATORS}, **KL_ESTIMATOR_ALIASES}
_EXP_LOG_RATIO_BOUND = 20.0


def kl_divergence_estimate(
    logp: chex.Array,
    ref_logp: chex.Array,
    estimator: str = "k3",
    k3_clip: Optional[float] = 10.0,
) -> chex.Array:
    """Per-token estimate of KL(π_θ‖π_ref) from log-probs of the sampled tokens.

    Args:
      logp: log π_θ(y_t | ·), any shape (typically `[B, T]`), floating.
      ref_logp: log π_ref(y_t | ·), same shape; treated as a constant by callers (stop-gradient it
        yourself if it is not already a constant).
      estimator: "k1" ("kl"), "k2" ("mse") or "k3" ("low_var_kl"); `names.KL_ESTIMATOR_NAMES`.
      k3_clip: k3 is clamped to `[−k3_clip, k3_clip]` (verl: 10). `None` disables the clamp and the
        guard on `e^d` (exact Schulman k3; can overflow for |d| > ~88 in float32).

    Returns:
      Per-token estimate with the shape of `logp`.
    """
    if estimator not in _CANONICAL_ESTIMATOR:
        raise ValueError(
            f"estimator={estimator!r} is not supported; allowed values are {KL_ESTIMATOR_NAMES}."
        )
    chex.assert_equal_shape([logp, ref_logp])
    chex.assert_type([logp, ref_logp], float)
    kind = _CANONICAL_ESTIMATOR[estimator]
    log_ratio = ref_logp - logp
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * jnp.square(log_ratio)
    if k3_clip is None:
        return jnp.expm1(log_ratio) - log_ratio
    bounded = jnp.clip(log_ratio, -_EXP_LOG_RATIO_BOUND, _EXP_LOG_RATIO_BOUND)
    return jnp.clip(jnp.expm1(bounded) - bounded, -k3_clip, k3_clip)
