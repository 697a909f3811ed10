"""Token-level soft Bellman losses with shifted logits: ShiQ (Clavier et al. 2025, arXiv 2505.11081).

Token MDP: state s_t = prompt ⊕ a_<t, action a_t = the next token, deterministic transitions,
γ = 1, v(terminal) = 0. KL-regularised objective max_π E[Σ_t r_t] − β KL(π‖π_ref), whose optimum
satisfies the soft Bellman equations

    q*(s, a) = r(s, a) + v*(s'),     v*(s) = β log Σ_a π_ref(a|s) exp(q*(s, a)/β),
    π*(a|s)  = π_ref(a|s) exp((q*(s, a) − v*(s))/β).

**Shifted parametrisation** (paper: "easing sampling" + "improved initialisation"; β g = q + β ln π_ref,
with the logits shifted by the reference so the initial model is a consistent Q estimate). With ℓ_θ
the learned logits and ℓ_ref the frozen reference logits,

    q_θ(s, a) = β (ℓ_θ(s, a) − ℓ_ref(s, a))                         (`shifted_q_values`)
    v_θ(s)    = β (LSE_a ℓ_θ(s, a) − LSE_a ℓ_ref(s, a))             (`shifted_state_values`)
    q_θ(s, a) − v_θ(s) = β log(π_θ / π_ref)(a|s),   π_θ = softmax(ℓ_θ)  (`implied_log_policy`)

so π_θ ∝ π_ref exp(q_θ/β) is the optimal-policy form for *any* θ, inference is a plain softmax of
the learned logits (no reference model, no temperature), and at θ = θ_ref q_θ ≡ v_θ ≡ 0.

Residuals on a batch of token sequences (`[B, T]`, `mask` marks the tokens that are actions; t⁺ is
the next action position of the same row, v_θ(s_{t⁺}) := 0 when there is none):

    one-step     δ_t = q_θ(s_t, a_t) − r_t − v_θ(s_{t⁺})
    multi-step   Δ_t = Σ_{k ≥ t, k action} δ_k                        (reverse cumulative sum)
                     = v_θ(s_t) + Σ_{k ≥ t} [β log(π_θ/π_ref)(a_k|s_k) − r_k]      (telescoped)

With one sequence-level reward R on the last action token, Δ at the first action is
v_θ(s_0) + β log(π_θ/π_ref)(y|x) − R: DRO's residual (`losses/preference.py::dro_loss`) with the
value read from the logits instead of a value head. Both residuals vanish for every t exactly at
ℓ_θ = ℓ_ref + q*/β (unique when every visited state's actions are all visited), and the multi-step one
propagates a sparse final reward to every token in one step.

    L = one_step_coef · agg(½ δ²) + multi_step_coef · agg(½ Δ²)       (`shiq_loss`)

with `agg` the masked aggregation of `policy_gradient.aggregate_loss` (token-mean by default).

**Choices where the available paper text is silent.** Only the abstract, the OpenReview page and a
third-party summary (EmergentMind, alphaXiv overview) of arXiv 2505.11081 could be read; the body of
§2–3 was not retrievable (see /work/shared/papers/rl-methods.md §3 for the same limitation). Verified
from those: the reparametrisation β g = q + β ln π_ref, optimal policy = softmax of the learned logits,
logits shifted by the reference for initialisation, a multi-step extension that sums consecutive
Bellman equations, off-policy/offline training with token-, turn- or sequence-level rewards.
Chosen here (each is an argument):
* targets: full-gradient consistency loss by default (the residual is a function of θ only, like
  PCL/DRO, no target network); `stop_gradient_targets=True` gives the Q-learning-style semi-gradient
  where only q_θ(s_t, a_t) is differentiated: δ_t = q_t − sg[r_t + v_{t⁺}] and
  Δ_t = q_t − sg[q_t − Δ_t] (same value).
* residual: multi-step only by default (`one_step_coef=0`, `multi_step_coef=1`); any mix is allowed.
* ½ in front of the squares (gradient δ ∇δ); normalisation over t by `loss_agg_mode`, default
  "token-mean" (each Bellman equation weighted equally); the minimiser does not depend on it.
* rewards: on the action token that ends the unit they score (`sequence_reward_to_tokens` puts a
  sequence reward on the last action token, `turn_rewards_to_tokens` a turn's reward on the last
  action token of that turn); rewards at non-action positions are ignored.
* non-action tokens inside a row (tool outputs between agent turns) are part of the transition: the
  next state of an action is the next action position of the row. The last action of a row is
  terminal (v = 0); truncated rows should be dropped or given a terminal reward.
* the logits carry no temperature (inference is softmax(ℓ_θ)); β is the only scale.

Shapes: all per-token inputs `[B, T]`, aligned so entry t is about action a_t taken in state s_t:
`target_logits` ℓ(s_t, a_t) and `logsumexp` LSE ℓ(s_t, ·) are what
`models.logprobs.token_logit_stats` / `completion_logit_stats` return. Masked positions may hold any
garbage (non-finite included): they are replaced before any arithmetic.
"""

from typing import Optional, Union

import chex
import jax
import jax.numpy as jnp

from jaxrl_llm.losses.policy_gradient import aggregate_loss

__all__ = [
    "implied_log_policy",
    "next_action_values",
    "sequence_reward_to_tokens",
    "shifted_q_values",
    "shifted_state_values",
    "shiq_loss",
    "shiq_residuals",
    "turn_rewards_to_tokens",
]

Scalar = Union[float, chex.Array]


def _valid(mask: chex.Array) -> chex.Array:
    return mask.astype(bool) if mask.dtype == bool else mask > 0


def shifted_q_values(target_logits: chex.Array, ref_target_logits: chex.Array, beta: Scalar) -> chex.Array:
    """q_θ(s_t, a_t) = β (ℓ_θ(s_t, a_t) − ℓ_ref(s_t, a_t)); any shape."""
    chex.assert_equal_shape([target_logits, ref_target_logits])
    return beta * (target_logits - ref_target_logits)


def shifted_state_values(logsumexp: chex.Array, ref_logsumexp: chex.Array, beta: Scalar) -> chex.Array:
    """v_θ(s_t) = β (LSE ℓ_θ(s_t, ·) − LSE ℓ_ref(s_t, ·)); any shape."""
    chex.assert_equal_shape([logsumexp, ref_logsumexp])
    return beta * (logsumexp - ref_logsumexp)


def implied_log_policy(target_logits: chex.Array, logsumexp: chex.Array) -> chex.Array:
    """log π_θ(a_t|s_t) = ℓ_θ(s_t, a_t) − LSE ℓ_θ(s_t, ·): the policy is a plain softmax of the learned
    logits (on a full `[..., V]` logit array this is `jax.nn.log_softmax`)."""
    chex.assert_equal_shape([target_logits, logsumexp])
    return target_logits - logsumexp


def _next_action_index(mask: chex.Array) -> chex.Array:
    """`[B, T]` int: index of the next action position after t in the same row, T when there is none."""
    valid = _valid(mask)
    num_columns = mask.shape[-1]
    own_index = jnp.where(valid, jnp.arange(num_columns), num_columns)
    # index of the first action at or after t, then shift by one column to get "strictly after t"
    first_at_or_after = jax.lax.cummin(own_index, axis=1, reverse=True)
    return jnp.pad(first_at_or_after[:, 1:], ((0, 0), (0, 1)), constant_values=num_columns)


def next_action_values(values: chex.Array, mask: chex.Array) -> chex.Array:
    """v(s_{t⁺}) `[B, T]`: `values` at the next action position of the row, 0 when t is the last action."""
    chex.assert_rank([values, mask], 2)
    chex.assert_equal_shape([values, mask])
    padded = jnp.pad(jnp.where(_valid(mask), values, 0.0), ((0, 0), (0, 1)))
    return jnp.take_along_axis(padded, _next_action_index(mask), axis=1)


def sequence_reward_to_tokens(rewards: chex.Array, mask: chex.Array) -> chex.Array:
    """`[B]` sequence rewards -> `[B, T]`: R on the last action token of each row, 0 elsewhere (and on
    all-masked rows)."""
    chex.assert_rank([rewards, mask], [1, 2])
    valid = _valid(mask)
    is_last = valid & (_next_action_index(mask) == mask.shape[-1])
    return jnp.where(is_last, rewards[:, None], 0.0).astype(jnp.result_type(rewards, jnp.float32))


def turn_rewards_to_tokens(turn_rewards: chex.Array, turn_ids: chex.Array, mask: chex.Array) -> chex.Array:
    """`[B, K]` per-turn rewards -> `[B, T]`: turn k's reward on the last action token of turn k.

    Args:
      turn_rewards: `[B, K]` reward of each agent turn.
      turn_ids: `[B, T]` int turn index in `[0, K)` of each token (any value at non-action tokens).
      mask: `[B, T]` action tokens.
    """
    chex.assert_rank([turn_rewards, turn_ids, mask], [2, 2, 2])
    chex.assert_equal_shape([turn_ids, mask])
    valid = _valid(mask)
    num_turns = turn_rewards.shape[1]
    turn_ids = jnp.clip(turn_ids, 0, num_turns - 1)
    padded_ids = jnp.pad(jnp.where(valid, turn_ids, -1), ((0, 0), (0, 1)), constant_values=-1)
    next_turn = jnp.take_along_axis(padded_ids, _next_action_index(mask), axis=1)
    is_turn_end = valid & (next_turn != turn_ids)
    reward = jnp.take_along_axis(turn_rewards, turn_ids, axis=1)
    return jnp.where(is_turn_end, reward, 0.0).astype(jnp.result_type(turn_rewards, jnp.float32))


def shiq_residuals(
    target_logits: chex.Array,
    logsumexp: chex.Array,
    ref_target_logits: chex.Array,
    ref_logsumexp: chex.Array,
    rewards: chex.Array,
    mask: chex.Array,
    *,
    beta: Scalar,
    stop_gradient_targets: bool = False,
) -> dict[str, chex.Array]:
    """One-step δ_t and multi-step Δ_t residuals `[B, T]` (module docstring), 0 at masked positions.

    Args:
      target_logits: `[B, T]` ℓ_θ(s_t, a_t), raw (un-normalised) logit of the taken token.
      logsumexp: `[B, T]` LSE_a ℓ_θ(s_t, a).
      ref_target_logits, ref_logsumexp: the same for the frozen reference (treated as constant).
      rewards: `[B, T]` reward r_t of action a_t (see `sequence_reward_to_tokens`,
        `turn_rewards_to_tokens`); ignored at masked positions.
      mask: `[B, T]` 0/1 action tokens.
      beta: KL temperature β > 0.
      stop_gradient_targets: differentiate only q_θ(s_t, a_t) (semi-gradient) instead of the whole
        residual.

    Returns:
      dict with `one_step`, `multi_step` residuals and the `q`, `v`, `next_v`, `log_ratio`
      (log π_θ/π_ref of the taken token) arrays, all `[B, T]`, 0 where masked.
    """
    chex.assert_rank([target_logits, logsumexp, ref_target_logits, ref_logsumexp, rewards, mask], 2)
    chex.assert_equal_shape([target_logits, logsumexp, ref_target_logits, ref_logsumexp, rewards, mask])
    chex.assert_type([target_logits, logsumexp], float)
    valid = _valid(mask)

    def clean(x):
        return jnp.where(valid, x, 0.0)

    target_logits, logsumexp = clean(target_logits), clean(logsumexp)
    ref_target_logits = jax.lax.stop_gradient(clean(ref_target_logits))
    ref_logsumexp = jax.lax.stop_gradient(clean(ref_logsumexp))
    rewards = jax.lax.stop_gradient(clean(rewards)).astype(target_logits.dtype)

    q = shifted_q_values(target_logits, ref_target_logits, beta)
    v = shifted_state_values(logsumexp, ref_logsumexp, beta)
    next_v = next_action_values(v, valid)
    one_step = clean(q - rewards - next_v)
    # Δ_t = Σ_{k ≥ t} δ_k over actions of the row: masked δ are 0, so a plain reverse cumsum works
    multi_step = clean(jnp.cumsum(one_step[:, ::-1], axis=1)[:, ::-1])
    if stop_gradient_targets:
        one_step = q - jax.lax.stop_gradient(q - one_step)
        multi_step = q - jax.lax.stop_gradient(q - multi_step)
    return {
        "one_step": one_step,
        "multi_step": multi_step,
        "q": q,
        "v": v,
        "next_v": next_v,
        "log_ratio": clean(implied_log_policy(target_logits, logsumexp) - (ref_target_logits - ref_logsumexp)),
    }


def shiq_loss(
    target_logits: chex.Array,
    logsumexp: chex.Array,
    ref_target_logits: chex.Array,
    ref_logsumexp: chex.Array,
    rewards: chex.Array,
    mask: chex.Array,
    *,
    beta: Scalar,
    one_step_coef: Scalar = 0.0,
    multi_step_coef: Scalar = 1.0,
    stop_gradient_targets: bool = False,
    loss_agg_mode: str = "token-mean",
    norm_constant: Optional[Scalar] = None,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """ShiQ loss L = one_step_coef · agg(½ δ²) + multi_step_coef · agg(½ Δ²) (module docstring).

    Arguments as in `shiq_residuals`, plus `loss_agg_mode` / `norm_constant` of
    `policy_gradient.aggregate_loss` (the normalisation over t and rows).

    Returns:
      `(loss, info)`: scalar loss; `info` holds scalar diagnostics `one_step_loss`,
      `multi_step_loss`, `q_mean`, `v_mean`, `log_ratio_mean` (token means over actions, the last
      an estimate of the per-token KL(π_θ‖π_ref) on on-policy data) and `initial_value_mean` (v_θ at
      the first action of non-empty rows).
    """
    residuals = shiq_residuals(
        target_logits,
        logsumexp,
        ref_target_logits,
        ref_logsumexp,
        rewards,
        mask,
        beta=beta,
        stop_gradient_targets=stop_gradient_targets,
    )
    one_step_loss = aggregate_loss(0.5 * jnp.square(residuals["one_step"]), mask, loss_agg_mode, norm_constant)
    multi_step_loss = aggregate_loss(
        0.5 * jnp.square(residuals["multi_step"]), mask, loss_agg_mode, norm_constant
    )
    loss = one_step_coef * one_step_loss + multi_step_coef * multi_step_loss

    valid = _valid(mask)
    weights = valid.astype(residuals["q"].dtype)
    num_actions = jnp.maximum(weights.sum(), 1.0)
    is_first = valid & (jnp.cumsum(valid, axis=1) == 1)
    num_rows = jnp.maximum(is_first.sum(), 1)

    def token_mean(x):
        return jax.lax.stop_gradient(jnp.sum(x * weights) / num_actions)

    info = {
        "one_step_loss": jax.lax.stop_gradient(one_step_loss),
        "multi_step_loss": jax.lax.stop_gradient(multi_step_loss),
        "q_mean": token_mean(residuals["q"]),
        "v_mean": token_mean(residuals["v"]),
        "log_ratio_mean": token_mean(residuals["log_ratio"]),
        "initial_value_mean": jax.lax.stop_gradient(jnp.sum(jnp.where(is_first, residuals["v"], 0.0)) / num_rows),
    }
    return loss, info
