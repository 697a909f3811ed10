"""PPO's clipped actor-critic loss (Schulman et al. 2017, arXiv 1707.06347).

    ρ = exp(log π(a|s) − log π_old(a|s))
    L = mean ℓ + c_v L_V − c_e mean H,   ℓ = max(−Â ρ, −Â clip(ρ, 1 − ε, 1 + ε)) = −min(ρ Â, clip(ρ) Â)
    L_V = ½ mean max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²)

The clipped surrogate ℓ is `policy_gradient.ppo_clip_token_loss` (the single implementation of the
PPO-clip family), applied to all samples as one row with symmetric ε and no log-ratio clamp.
"""

from __future__ import annotations

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from jaxrl_llm.losses.policy_gradient import aggregate_loss, ppo_clip_token_loss


def clipped_value_loss(
    values: jax.Array, old_values: jax.Array, targets: jax.Array, clip_eps: float
) -> jax.Array:
    """½ mean max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²), as in PPO2 / PureJaxRL."""
    chex.assert_equal_shape([values, old_values, targets])
    clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum((values - targets) ** 2, (clipped - targets) ** 2).mean()


def _coefficient(preferred_name, preferred, alias_name, alias):
    if preferred is not None and alias is not None:
        raise TypeError(f"ppo_loss got both {preferred_name}= and its alias {alias_name}=; pass one.")
    value = preferred if preferred is not None else alias
    if value is None:
        raise TypeError(f"ppo_loss is missing the coefficient {preferred_name} (alias {alias_name}).")
    return value


def ppo_loss(
    log_prob: jax.Array,
    old_log_prob: jax.Array,
    advantages: jax.Array,
    values: jax.Array,
    old_values: jax.Array,
    targets: jax.Array,
    entropy: jax.Array,
    clip_eps: float,
    value_coef: Optional[float] = None,
    entropy_coef: Optional[float] = None,
    *,
    vf_coef: Optional[float] = None,
    ent_coef: Optional[float] = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L = −mean min(ρ A, clip(ρ, 1±ε) A) + c_v L_V − c_e mean H, with ρ = π/π_old.

    All inputs share one shape (e.g. a flat minibatch `[B]`); advantages are used as given
    (normalise them before calling if wanted); old log-probs and advantages are constants.

    Args:
      log_prob, old_log_prob: log π and log π_old of the taken actions.
      advantages: Â.
      values, old_values, targets: V, V_old and the return targets R (see `clipped_value_loss`).
      entropy: per-sample policy entropy H.
      clip_eps: ε, for both the ratio and the value clip.
      value_coef: c_v (positional 9th argument; `vf_coef=` is accepted as an alias).
      entropy_coef: c_e (positional 10th argument; `ent_coef=` is accepted as an alias).

    Returns:
      `(loss, metrics)` with metrics `loss`, `policy_loss`, `value_loss`, `entropy`, `approx_kl`
      (k3 estimate of KL(π_old‖π): mean of ρ − 1 − log ρ) and `clip_fraction` (|ρ − 1| > ε).
    """
    value_coef = _coefficient("value_coef", value_coef, "vf_coef", vf_coef)
    entropy_coef = _coefficient("entropy_coef", entropy_coef, "ent_coef", ent_coef)
    chex.assert_equal_shape([log_prob, old_log_prob, advantages, values, old_values, targets])

    def as_row(x):  # every sample as one token of a single row: [1, N]
        return jnp.reshape(x, (1, -1))

    ones = jnp.ones((1, log_prob.size), log_prob.dtype)
    surrogate, info = ppo_clip_token_loss(
        as_row(log_prob),
        as_row(old_log_prob),
        as_row(advantages),
        ones,
        eps_low=clip_eps,
        log_ratio_clip=float("inf"),  # PPO has no clamp of the log-ratio
    )
    policy_loss = aggregate_loss(surrogate, ones, "token-mean")
    value_loss = clipped_value_loss(values, old_values, targets, clip_eps)
    entropy_mean = entropy.mean()
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy_mean
    ratio = jax.lax.stop_gradient(info["ratio"])
    log_ratio = jax.lax.stop_gradient(info["log_ratio"])
    metrics = {
        "loss": loss,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy_mean,
        "approx_kl": ((ratio - 1.0) - log_ratio).mean(),  # k3 estimator of KL(π_old‖π)
        "clip_fraction": (jnp.abs(ratio - 1.0) > clip_eps).mean(),
    }
    return loss, metrics
