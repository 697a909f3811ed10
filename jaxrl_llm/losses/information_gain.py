"""L2T's dense process reward and credit assignment (Wang et al. 2025, "Learning to Think",
arXiv 2505.10425, NeurIPS 2025), as pure functions of arrays; a length-penalty baseline reward.

A completion i is a session of K_i episodes (`rollout.episode_spans`). Definition 4.1 / Eq. 3:

    r_{i,k}^prg = [J_r(π_θ(·|s_k, z_k)) − J_r(π_θ(·|s_k))]  −  β [I(θ_k; s_k) − I(θ_{k−1}; s_{k−1})]
                   fitting information gain ΔJ_{i,k}          compression penalty C_{i,k}
                                                              (`models.compression_penalty`)

**J_r (open in the paper, §4.6 of the digest).** The paper calls J_r the "predicted correctness
probability" obtained from "two forward passes". We take it as a number per prefix: the model's
teacher-forced probability of the gold answer forced after the prefix (e.g. `…</episode_k>
The answer is 42`). `answer_score` turns the answer tokens' log-probs into J_r with
`kind="prob"` (default: exp Σ_a log π(y_a), the literal probability), `"geometric_mean_prob"`
(exp of the mean, insensitive to the answer's length), `"log_prob"` (Σ_a log π(y_a)) or
`"mean_log_prob"`. `fitting_gain` takes J_r at the K + 1 boundaries (before the first episode,
then after each one) and returns ΔJ_{i,k} = J_{i,k} − J_{i,k−1}. The released code uses a PRM's
step scores instead; any per-boundary score can be passed.

**Paper credit assignment (§4.3, Algorithm 1; `variant="paper"`).** For a valid row i with K_i ≥ 1
valid episodes, tokens t ∈ k of episode k, old-policy log-probs log p_old(z_{i,t}):

    R_{i,k}  = r_i^out / K_i + α r_{i,k}^prg                                   (episode reward)
    w_{i,t}  = −log p_old(z_{i,t})                                               (surprise, ≥ 0)
    r_{i,t}  = w_{i,t} / Σ_{t'∈k} w_{i,t'} · R_{i,k}                            (token reward)
    r̃_i     = TruncMean_95%({r_{i,t} : t in an episode})
    Â_i      = (r̃_i − mean_{j∈g(i)} r̃_j) / (std_{j∈g(i)} r̃_j + ε_std)
    A_{i,t}  = Â_i · r_{i,t} / r̃_i

Choices where the paper is ambiguous (each is a parameter or stated here):

* "∝ −log p" does not say what happens when an episode's surprise sums to 0 (every token had
  probability 1, or the episode has no token): such an episode spreads R_{i,k} uniformly over its
  tokens (and an empty one drops it). Surprise is clamped at 0 (log-probs ≤ 0 up to rounding).
* "TruncMean_95%" is read as the symmetric trimmed mean that keeps the central 95%: the
  ⌊n · trim_fraction / 2⌋ smallest and as many largest of the row's n episode-token rewards are
  dropped (`trim_fraction=0.05`; nothing is dropped for n < 40), like
  `scipy.stats.trim_mean(x, 0.025)`. Tokens outside every episode (index −1) are not in the set.
* The group statistics follow GRPO/verl (`losses.group_advantages`): unbiased std, ε_std = 1e-6
  added to the std, a group whose r̃ are all equal gets Â = 0 exactly, a singleton group gets
  Â_i = r̃_i (verl's mean 0, std 1). Rows with no episode token are padding: Â = 0, excluded
  from the statistics.
* **Guard for r̃_i ≈ 0**: where |r̃_i| ≤ `ratio_epsilon` the ratio r_{i,t}/r̃_i is replaced by 1
  (the row falls back to the GRPO broadcast A_{i,t} = Â_i on its episode tokens). Note that the
  literal formula flips the sign of a token reward when r̃_i < 0; we keep it. `ratio_clip`
  optionally clips |r_{i,t}/r̃_i| (off by default, not in the paper).
* Tokens outside every episode (e.g. the answer after `</think>`) have r_{i,t} = 0, so the literal
  A_{i,t} is 0 (`outside_tokens="zero"`); `"sequence"` gives them Â_i instead.

**Released-code variant (ML-TASA/L2T `verl/workers/reward_manager/l2t.py` + verl GRPO;
`variant="code"`).** With per-episode step scores s_{i,k} (the PRM's) and e_{i,k} the position of
the last token of `</episode_k>`, `fill_episode_deltas` writes s_{i,k} − s_{i,k−1} on the tokens
[e_{i,k−1}, e_{i,k}) for k ≥ 2 (episode 1 gets nothing), then the last valid token is overwritten
with the outcome (it lies after e_{i,K}, so no delta is lost); verl's GRPO sums the token rewards:

    score_i = r_i^out + Σ_{k=2}^{K_i} (s_{i,k} − s_{i,k−1}) · (e_{i,k} − e_{i,k−1})     if format ok
    score_i = r_i^out − 0.01                                                      otherwise
    A_{i,t} = (score_i − mean_g score) / (std_g score + 1e-6)     on every valid response token

The caller passes the differences Δs_{i,k} as `process_rewards` (the first is ignored, as in the
code) and `episode_ends`; α, the surprise weights, the truncated mean and the rescaling are not
used, and the compression penalty is off (the code accepts `info_decay` and never uses it).
"Format ok" is `format_ok` when given, else K_i > 0 (the code also fails the format when its
regex counts of `</episode_k>` and of parsed episodes differ; compute that on the host).

Shapes: `B` completions, `T` completion tokens, `K` episode slots; `token_episode [B, T]` in
[−1, K) and `episode_mask [B, K]` from `rollout.episode_spans`; `group_ids [B]` in
`[0, num_groups)`.
"""

from __future__ import annotations

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from jaxrl_llm.losses.group_advantages import group_advantages

__all__ = [
    "CREDIT_VARIANTS",
    "J_R_KINDS",
    "LENGTH_PENALTY_KINDS",
    "OUTSIDE_TOKEN_RULES",
    "answer_score",
    "code_sequence_scores",
    "episode_rewards",
    "fitting_gain",
    "l2t_advantages",
    "length_penalty_rewards",
    "process_rewards",
    "spread_to_tokens",
    "truncated_mean",
]

J_R_KINDS = ("prob", "geometric_mean_prob", "log_prob", "mean_log_prob")
CREDIT_VARIANTS = ("paper", "code")
OUTSIDE_TOKEN_RULES = ("zero", "sequence")
LENGTH_PENALTY_KINDS = ("kimi", "linear")
CODE_FORMAT_PENALTY = 0.01  # l2t.py: `reward -= 0.01` on a format mismatch


def _validate(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed values are {allowed}.")


# ----------------------------------------------------------------------------------------------
# (a) Fitting gain.
# ----------------------------------------------------------------------------------------------


def answer_score(answer_logprobs: chex.Array, answer_mask: chex.Array, kind: str = "prob") -> chex.Array:
    """J_r of each prefix from the teacher-forced log-probs of the forced gold answer.

    Args:
      answer_logprobs: `[..., A]` log π(y_a | prefix, y_{<a}) of the A answer tokens.
      answer_mask: `[..., A]` valid answer tokens.
      kind: one of `J_R_KINDS`: "prob" exp Σ_a, "geometric_mean_prob" exp mean_a,
        "log_prob" Σ_a, "mean_log_prob" mean_a (means over valid tokens, ≥ 1 counted).

    Returns:
      `[...]` J_r values.
    """
    _validate("kind", kind, J_R_KINDS)
    chex.assert_equal_shape([answer_logprobs, answer_mask])
    chex.assert_type(answer_logprobs, float)
    weights = answer_mask.astype(answer_logprobs.dtype)
    total = jnp.sum(jnp.where(weights > 0, answer_logprobs, 0.0), axis=-1)
    mean = total / jnp.maximum(jnp.sum(weights, axis=-1), 1.0)
    return {"prob": jnp.exp(total), "geometric_mean_prob": jnp.exp(mean), "log_prob": total,
            "mean_log_prob": mean}[kind]


def fitting_gain(boundary_values: chex.Array, episode_mask: chex.Array) -> chex.Array:
    """ΔJ_{i,k} = J_{i,k} − J_{i,k−1} per episode, 0 on invalid slots.

    Args:
      boundary_values: `[B, K + 1]` J_r after the prompt (column 0) and after each episode.
      episode_mask: `[B, K]` valid episodes.

    Returns:
      `[B, K]` fitting information gains.
    """
    chex.assert_rank([boundary_values, episode_mask], 2)
    chex.assert_type(boundary_values, float)
    chex.assert_equal(boundary_values.shape, (episode_mask.shape[0], episode_mask.shape[1] + 1))
    gain = boundary_values[:, 1:] - boundary_values[:, :-1]
    return jnp.where(episode_mask.astype(bool), gain, 0.0)


def process_rewards(
    fitting_gains: chex.Array, penalties: Optional[chex.Array], episode_mask: chex.Array
) -> chex.Array:
    """r^prg_{i,k} = ΔJ_{i,k} − C_{i,k} (Eq. 3); `penalties` already include β (None: no penalty)."""
    chex.assert_rank([fitting_gains, episode_mask], 2)
    chex.assert_equal_shape([fitting_gains, episode_mask])
    reward = fitting_gains if penalties is None else fitting_gains - penalties
    return jnp.where(episode_mask.astype(bool), reward, 0.0)


# ----------------------------------------------------------------------------------------------
# (b) Credit assignment.
# ----------------------------------------------------------------------------------------------


def episode_rewards(
    outcome: chex.Array, process_reward: chex.Array, episode_mask: chex.Array, alpha: float = 0.8
) -> chex.Array:
    """R_{i,k} = r_i^out / K_i + α r^prg_{i,k} on valid episodes (K_i ≥ 1 counted), 0 elsewhere. `[B, K]`."""
    chex.assert_rank(outcome, 1)
    chex.assert_rank([process_reward, episode_mask], 2)
    chex.assert_equal_shape([process_reward, episode_mask])
    valid = episode_mask.astype(bool)
    count = jnp.maximum(jnp.sum(valid, axis=1), 1).astype(process_reward.dtype)
    return jnp.where(valid, outcome[:, None] / count[:, None] + alpha * process_reward, 0.0)


def _per_token_episode(values_bk: chex.Array, token_episode: chex.Array) -> chex.Array:
    """values[b, token_episode[b, t]] (0 where the index is −1)."""
    gathered = jnp.take_along_axis(values_bk, jnp.maximum(token_episode, 0), axis=1)
    return jnp.where(token_episode >= 0, gathered, 0.0)


def _episode_sums(values_bt: chex.Array, token_episode: chex.Array, num_episodes: int) -> chex.Array:
    segment = jnp.where(token_episode >= 0, token_episode, num_episodes)
    sums = jax.vmap(lambda v, s: jax.ops.segment_sum(v, s, num_episodes + 1))(values_bt, segment)
    return sums[:, :num_episodes]


def spread_to_tokens(
    episode_reward: chex.Array,
    token_episode: chex.Array,
    mask: chex.Array,
    old_logp: Optional[chex.Array] = None,
) -> chex.Array:
    """r_{i,t} = w_{i,t} / Σ_{t'∈k} w_{i,t'} · R_{i,k}, w = max(−log p_old, 0) (uniform when None
    or when an episode's surprise sums to 0); 0 outside episodes. `[B, T]`."""
    chex.assert_rank([episode_reward, token_episode, mask], 2)
    chex.assert_equal_shape([token_episode, mask])
    chex.assert_type(token_episode, int)
    dtype = episode_reward.dtype
    inside = mask.astype(bool) & (token_episode >= 0)
    index = jnp.where(inside, token_episode, -1)
    ones = inside.astype(dtype)
    if old_logp is None:
        surprise = ones
    else:
        chex.assert_equal_shape([old_logp, mask])
        surprise = jnp.where(inside, jnp.maximum(-jnp.where(inside, old_logp, 0.0), 0.0), 0.0).astype(dtype)
    num_episodes = episode_reward.shape[1]
    surprise_sum = _episode_sums(surprise, index, num_episodes)
    count = _episode_sums(ones, index, num_episodes)
    weight_sum = jnp.where(surprise_sum > 0, surprise_sum, count)
    per_token = _per_token_episode(episode_reward / jnp.maximum(weight_sum, jnp.finfo(dtype).tiny), index)
    token_weight = jnp.where(_per_token_episode(surprise_sum, index) > 0, surprise, ones)
    return jnp.where(inside, token_weight * per_token, 0.0)


def truncated_mean(values: chex.Array, mask: chex.Array, trim_fraction: float = 0.05) -> chex.Array:
    """Symmetric trimmed mean per row: drop ⌊n·trim_fraction/2⌋ smallest and largest of the n
    valid values, average the rest (0 for a row with no valid value). `[B, T] -> [B]`."""
    if not 0.0 <= trim_fraction < 1.0:
        raise ValueError(f"trim_fraction must be in [0, 1), got {trim_fraction}")
    chex.assert_rank([values, mask], 2)
    chex.assert_equal_shape([values, mask])
    chex.assert_type(values, float)
    valid = mask.astype(bool)
    count = jnp.sum(valid, axis=1)
    cut = jnp.floor(count * (trim_fraction / 2.0)).astype(count.dtype)
    ordered = jnp.sort(jnp.where(valid, values, jnp.inf), axis=1)  # valid values first, ascending
    rank = jnp.arange(values.shape[1])[None, :]
    keep = (rank >= cut[:, None]) & (rank < (count - cut)[:, None])
    kept = jnp.sum(keep, axis=1)
    total = jnp.sum(jnp.where(keep, ordered, 0.0), axis=1)
    return total / jnp.maximum(kept, 1).astype(values.dtype)


def code_sequence_scores(
    outcome: chex.Array,
    score_deltas: chex.Array,
    episode_mask: chex.Array,
    episode_ends: chex.Array,
    format_ok: Optional[chex.Array] = None,
    format_penalty: float = CODE_FORMAT_PENALTY,
) -> chex.Array:
    """The released code's per-response score (module docstring): `[B]`.

    score_i = r^out_i + Σ_{k≥2} Δs_{i,k} (e_{i,k} − e_{i,k−1}) if the format is ok, else
    r^out_i − format_penalty.
    """
    chex.assert_rank(outcome, 1)
    chex.assert_rank([score_deltas, episode_mask, episode_ends], 2)
    chex.assert_equal_shape([score_deltas, episode_mask, episode_ends])
    valid = episode_mask.astype(bool)
    if format_ok is None:
        format_ok = jnp.any(valid, axis=1)
    span = (episode_ends[:, 1:] - episode_ends[:, :-1]).astype(score_deltas.dtype)
    both = valid[:, 1:] & valid[:, :-1]
    dense = jnp.sum(jnp.where(both, score_deltas[:, 1:] * span, 0.0), axis=1)
    return jnp.where(format_ok.astype(bool), outcome + dense, outcome - format_penalty)


def l2t_advantages(
    outcome: chex.Array,
    process_reward: chex.Array,
    episode_mask: chex.Array,
    token_episode: chex.Array,
    mask: chex.Array,
    group_ids: chex.Array,
    num_groups: Optional[int] = None,
    *,
    variant: str = "paper",
    old_logp: Optional[chex.Array] = None,
    episode_ends: Optional[chex.Array] = None,
    format_ok: Optional[chex.Array] = None,
    alpha: float = 0.8,
    trim_fraction: float = 0.05,
    std_epsilon: float = 1e-6,
    ratio_epsilon: float = 1e-6,
    ratio_clip: Optional[float] = None,
    outside_tokens: str = "zero",
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Token advantages `[B, T]` of L2T's credit assignment (`variant="paper"` or `"code"`).

    Args:
      outcome: `[B]` r^out (e.g. 0/1 correctness).
      process_reward: `[B, K]` paper: r^prg = ΔJ − C (`process_rewards`); code: the step-score
        differences Δs (first column ignored).
      episode_mask: `[B, K]` valid episodes (the first K_i slots of row i).
      token_episode: `[B, T]` episode of each completion token, −1 outside.
      mask: `[B, T]` valid completion tokens.
      group_ids: `[B]` group (prompt) of each completion; `num_groups` static bound (default B).
      variant: one of `CREDIT_VARIANTS`.
      old_logp: `[B, T]` log p_old of the sampled tokens (paper; None: uniform weights).
      episode_ends: `[B, K]` last token position of each episode (code; required).
      format_ok: `[B]` bool (code; default K_i > 0).
      alpha, trim_fraction, std_epsilon, ratio_epsilon, ratio_clip, outside_tokens: see the
        module docstring.

    Returns:
      `(advantages [B, T], aux)` with aux: "token_rewards" `[B, T]` (paper) or the code's
      per-token broadcast of the score, "sequence_rewards" `[B]` (r̃ or score),
      "sequence_advantages" `[B]` (Â), "row_valid" `[B]`.
    """
    _validate("variant", variant, CREDIT_VARIANTS)
    _validate("outside_tokens", outside_tokens, OUTSIDE_TOKEN_RULES)
    chex.assert_rank([outcome, group_ids], 1)
    chex.assert_rank([process_reward, episode_mask, token_episode, mask], 2)
    chex.assert_equal_shape([process_reward, episode_mask])
    chex.assert_equal_shape([token_episode, mask])
    chex.assert_equal_shape_prefix([outcome, process_reward, token_episode, group_ids], 1)
    chex.assert_type(process_reward, float)
    chex.assert_type([token_episode, group_ids], int)
    mask = mask.astype(bool)
    episode_mask = episode_mask.astype(bool)
    dtype = process_reward.dtype
    outcome = outcome.astype(dtype)

    if variant == "code":
        if episode_ends is None:
            raise ValueError("variant='code' needs episode_ends (the code spreads Δs over e_k − e_{k−1} tokens)")
        scores = code_sequence_scores(outcome, process_reward, episode_mask, episode_ends, format_ok)
        row_valid = jnp.any(mask, axis=1)
        seq_adv, _ = group_advantages(scores, group_ids, num_groups, mask=row_valid, epsilon=std_epsilon)
        advantages = jnp.where(mask, seq_adv[:, None], 0.0)
        aux = {
            "token_rewards": jnp.where(mask, scores[:, None], 0.0),
            "sequence_rewards": scores,
            "sequence_advantages": seq_adv,
            "row_valid": row_valid,
        }
        return advantages, aux

    inside = mask & (token_episode >= 0)
    index = jnp.where(inside, token_episode, -1)
    rewards_k = episode_rewards(outcome, process_reward, episode_mask, alpha)
    token_rewards = spread_to_tokens(rewards_k, index, mask, old_logp)
    row_valid = jnp.any(inside, axis=1)
    r_tilde = truncated_mean(token_rewards, inside, trim_fraction)
    seq_adv, _ = group_advantages(r_tilde, group_ids, num_groups, mask=row_valid, epsilon=std_epsilon)
    small = jnp.abs(r_tilde) <= ratio_epsilon
    ratio = token_rewards / jnp.where(small, 1.0, r_tilde)[:, None]
    ratio = jnp.where(small[:, None], 1.0, ratio)
    if ratio_clip is not None:
        ratio = jnp.clip(ratio, -ratio_clip, ratio_clip)
    advantages = jnp.where(inside, seq_adv[:, None] * ratio, 0.0)
    if outside_tokens == "sequence":
        advantages = jnp.where(mask & ~inside, seq_adv[:, None], advantages)
    aux = {
        "token_rewards": token_rewards,
        "sequence_rewards": r_tilde,
        "sequence_advantages": seq_adv,
        "row_valid": row_valid,
    }
    return advantages, aux


# ----------------------------------------------------------------------------------------------
# (c) Length-penalty baseline.
# ----------------------------------------------------------------------------------------------


def length_penalty_rewards(
    outcome: chex.Array,
    lengths: chex.Array,
    group_ids: chex.Array,
    num_groups: Optional[int] = None,
    *,
    kind: str = "kimi",
    coef: float = 1.0,
    budget: Optional[float] = None,
    mask: Optional[chex.Array] = None,
) -> chex.Array:
    """Outcome reward plus a length penalty: the "length penalty" baseline of L2T's Table 1.

    The paper does not specify its length-penalty baseline; two common forms (`kind`):

    * "kimi" (Kimi k1.5, arXiv 2501.12599 §2.3.3), per group g with shortest/longest lengths
      m_g / M_g:  λ_i = 0.5 − (|y_i| − m_g) / (M_g − m_g)  (λ_i = 0 when M_g = m_g), and
      r_i = r^out_i + coef · (λ_i if r^out_i > 0 else min(0, λ_i)).
    * "linear": r_i = r^out_i − coef · |y_i| / budget (`budget` required, e.g. the max length).

    Args:
      outcome: `[B]` r^out; lengths: `[B]` completion lengths (tokens); group_ids: `[B]`.
      mask: optional `[B]` valid rows (others get 0 and do not enter min/max).

    Returns:
      `[B]` rewards.
    """
    _validate("kind", kind, LENGTH_PENALTY_KINDS)
    chex.assert_rank([outcome, lengths, group_ids], 1)
    chex.assert_equal_shape([outcome, lengths, group_ids])
    chex.assert_type(outcome, float)
    valid = jnp.ones(outcome.shape, bool) if mask is None else mask.astype(bool)
    length = lengths.astype(outcome.dtype)
    if kind == "linear":
        if budget is None or budget <= 0:
            raise ValueError("kind='linear' needs a positive budget")
        return jnp.where(valid, outcome - coef * length / budget, 0.0)
    num_groups = outcome.shape[0] if num_groups is None else num_groups
    longest = jax.ops.segment_max(jnp.where(valid, length, -jnp.inf), group_ids, num_groups)[group_ids]
    shortest = -jax.ops.segment_max(jnp.where(valid, -length, -jnp.inf), group_ids, num_groups)[group_ids]
    spread = longest - shortest
    lam = jnp.where(spread > 0, 0.5 - (length - shortest) / jnp.where(spread > 0, spread, 1.0), 0.0)
    bonus = jnp.where(outcome > 0, lam, jnp.minimum(0.0, lam))
    return jnp.where(valid, outcome + coef * bonus, 0.0)
