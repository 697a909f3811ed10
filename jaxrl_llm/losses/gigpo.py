"""GiGPO advantages, jit-compiled with fixed shapes (Feng et al. 2025, arXiv 2505.10978, NeurIPS 2025).

Group-in-Group Policy Optimization. A group holds trajectories of the same task and initial state
(`episode_group_ids`, verl-agent's `uid`). For trajectory τ_i with valid steps t, immediate rewards
r_t and anchor observation s_t:

    R(τ_i)  = Σ_t r_t^{(i)}                                               episode return
    A^E_i   = (R(τ_i) − mean_g R) / (std_g R + ε)    or  R(τ_i) − mean_g R  (Eq. 3)
    G_t^{(i)} = r_t + γ G_{t+1}                                            discounted return (Eq. 5)
    A^S_{i,t} = (G_t − mean_{G^S(s_t)} G) / (std_{G^S(s_t)} G + ε)  or  G_t − mean   (Eq. 7)
    A_{i,t}   = A^E_i + ω A^S_{i,t}                                        (Eq. 8)

where the step group G^S(s̃) holds every valid step (j, k) of the same episode group whose anchor
observation s_k^{(j)} equals s̃ exactly (Eq. 4, 6). The scalar A_{i,t} is later broadcast to every
response token of step row (i, t) and fed to the PPO-clip loss (`policy_gradient.py`).

Rules followed exactly from verl-agent (`gigpo/core_gigpo.py`, digest §2.2):

* `normalization="std"` is `mode="mean_std_norm"` (ALFWorld); `"none"` is `mode="mean_norm"`
  (WebShop, Sokoban, GymCards; verl-agent's default). std is unbiased (N−1); ε = 1e-6 is added to it.
* Episode-level statistics (`episode_baseline_over`):
  - `"steps"` (default; verl-agent code, `compute_mean_std_cross_all_data=True`, what produced the
    paper's numbers): every valid step row contributes its copy of the episode return, so a
    trajectory with k steps is counted k times in the group mean and std.
  - `"trajectories"` (paper Eq. 3; verl-agent with `compute_mean_std_cross_all_data=False`): one
    value per trajectory, namely the copy held by its *first* valid step row (verl-agent dedups
    rows by `(uid, traj_uid)` keeping the first; this only matters with the invalid-action penalty).
  In both, each row is normalised with its *own* copy, and a group with a single contributing value
  gets mean 0 and std 1 (its advantage is the raw return).
* Step-level groups are formed **within an episode group only**, by exact equality of the anchor
  observation. A singleton step group gets mean = its own value and std = 1, so A^S = 0.
* Invalid-action penalty (verl-agent `apply_invalid_action_penalty`, coef 0.1): applied *after* the
  discounted returns, it subtracts the coefficient from that row's copy of the episode return and
  from that row's G_t. It is not discounted into earlier steps, and it makes the "episode return"
  differ between rows of the same trajectory.
* Padded steps (`step_mask` False; verl-agent drops rows after `done`) are excluded from every
  statistic and get advantage 0. G_t skips them: a masked step passes G_{t+1} through unchanged,
  which is the recursion over the kept rows that verl-agent runs (for the usual prefix mask, the
  padding after the episode end simply contributes 0).
* Beyond verl-agent: a group whose members are all bitwise equal gets advantage exactly 0 (no ulp
  noise amplified by 1/ε), see `segment_stats.py`. verl-agent's `adjust_batch` row duplication is a
  trainer concern and is not reproduced.

Anchor grouping on device, no host round-trip, no sort and no Python loop over samples
(`anchor_state_group_ids`):

1. Each anchor observation is viewed as unsigned integers of its own width (floats with −0.0
   canonicalised to +0.0, so equality is byte equality, like `tuple(obs.flatten())` except that
   NaN payloads compare equal here), packed into uint32 words.
2. A 32-bit hash of the words (a salted murmur3 finaliser per word, summed, finalised again),
   xor-ed with a hash of the episode group id, gives each row a home slot h and the linear probe
   sequence `h + k` in an open-addressing table of static size ≥ 2·N·T. In each round the smallest
   row index landing in a slot (`segment_min`) is the slot's candidate, and a row joins the
   candidate's group only if **its episode group and all its observation words equal the
   candidate's**. Rows that do not match (their slot is shared with another state) probe the next
   slot in the next round (`lax.while_loop`; 2 rounds in the benchmark, 11k states in 262k rows).
3. Equality is therefore always exact: a hash collision costs an extra round, never a wrong merge
   or split. (Only if `max_probe_rounds` = 64 rounds were exhausted would the remaining rows become
   singletons, i.e. a split, never a merge; at table load ≤ 0.5 that needs dozens of states
   hashing to adjacent slots.)
4. Group statistics use `jax.ops.segment_*` with a static number of segments (`N·T`).

**Precomputed returns.** R(τ_i) and G_t are computed from the immediate rewards as above unless the
caller passes them: `episode_returns [N]` and/or `step_returns [N, T]` (e.g. length-normalised or
KL-shaped returns, or G_t from a value-bootstrapped recursion) are then used as-is in place of
Σ_t r_t and the discounted recursion. They play the role of the values *before* the invalid-action
penalty, which is still applied when `invalid_action_mask` is given; values at padded steps are
ignored. Passing exactly what the function would compute gives identical output.

Shapes: `N` trajectories, `T` max steps; `rewards, step_mask [N, T]`; `episode_group_ids [N]`;
`anchor_obs [N, T, ...]` of any dtype (an integer `[N, T]` array of precomputed state ids works
and is exact). Works under `jit` and `vmap` (e.g. over a leading batch-of-batches axis).
"""

from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from jaxrl_llm.losses.names import GIGPO_EPISODE_BASELINES, GIGPO_NORMALIZATIONS
from jaxrl_llm.losses.segment_stats import segment_mean_std

NORMALIZATIONS = GIGPO_NORMALIZATIONS
EPISODE_BASELINES = GIGPO_EPISODE_BASELINES
_HASH_SEED = 0x3C6EF372


class GiGPOAdvantages(NamedTuple):
    """Output of `gigpo_advantages`; arrays `[N, T]` are 0 (or −1 for ids) at padded steps."""

    advantages: chex.Array  # A = A^E + ω A^S
    episode_advantages: chex.Array  # A^E, per step row
    step_advantages: chex.Array  # A^S
    step_returns: chex.Array  # G_t after the invalid-action penalty (the values grouped for A^S)
    step_group_ids: chex.Array  # int32 anchor-state group of each step, dense in [0, num_step_groups)
    step_group_sizes: chex.Array  # int32 size of the step's anchor-state group
    metrics: dict  # scalars, see `gigpo_advantages`


def _fmix32(h: chex.Array) -> chex.Array:
    """murmur3's 32-bit finaliser: a bijection of uint32 with good avalanche."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def observation_elements(obs: chex.Array, num_leading_axes: int = 2) -> chex.Array:
    """Exact unsigned-integer view of each observation: `[*lead, ...] -> [*lead, D]`.

    Elements keep their width (uint8, uint16 or uint32; 8-byte elements become two uint32), so two
    observations are equal iff their element views are equal, i.e. byte equality. Floats have −0.0
    mapped to +0.0 first (as Python's `0.0 == -0.0`); bools become uint8.
    """
    lead_shape = obs.shape[:num_leading_axes]
    flat = jnp.reshape(obs, lead_shape + (-1,))
    if flat.dtype == jnp.bool_:
        flat = flat.astype(jnp.uint8)
    if jnp.issubdtype(flat.dtype, jnp.floating):
        flat = jnp.where(flat == 0, jnp.zeros((), flat.dtype), flat)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[flat.dtype.itemsize]
    if flat.dtype != unsigned:
        flat = jax.lax.bitcast_convert_type(flat, unsigned)
    if flat.dtype == jnp.uint64:
        flat = jnp.reshape(jax.lax.bitcast_convert_type(flat, jnp.uint32), lead_shape + (-1,))
    return flat


def observation_words(obs: chex.Array, num_leading_axes: int = 2) -> chex.Array:
    """`observation_elements` packed into uint32 words: `[*lead, ...] -> [*lead, W]`.

    1- and 2-byte elements are zero-padded to a multiple of 4 bytes and reinterpreted 4 or 2 to a
    word, so equal observations give equal words and vice versa, and the per-round gathers and
    comparisons of the grouping move W ≈ bytes/4 words per row instead of one element per byte.
    """
    elements = observation_elements(obs, num_leading_axes)
    per_word = 4 // elements.dtype.itemsize
    if per_word == 1:
        return elements
    lead_shape = elements.shape[:num_leading_axes]
    pad = (-elements.shape[-1]) % per_word
    if pad:
        elements = jnp.pad(elements, [(0, 0)] * num_leading_axes + [(0, pad)])
    grouped = jnp.reshape(elements, lead_shape + (elements.shape[-1] // per_word, per_word))
    return jax.lax.bitcast_convert_type(grouped, jnp.uint32)


def hash_elements(elements: chex.Array, seed: int) -> chex.Array:
    """32-bit hash of the last axis of unsigned `elements` `[..., D] -> [...]`, salted by `seed`.

    h = fmix32(D ⊕ seed + Σ_k fmix32(e_k ⊕ fmix32(k·φ + seed))) with wrap-around sums; changing any
    single element always changes the sum (each term is a bijection of its element).
    """
    chex.assert_type(elements, int)
    num_elements = elements.shape[-1]
    positions = jnp.arange(num_elements, dtype=jnp.uint32)
    salts = _fmix32(positions * jnp.uint32(0x9E3779B9) + jnp.uint32(seed))
    total = jnp.sum(_fmix32(elements.astype(jnp.uint32) ^ salts), axis=-1, dtype=jnp.uint32)
    return _fmix32(total + jnp.uint32((num_elements ^ seed) & 0xFFFFFFFF))


def anchor_state_representatives(
    anchor_obs: chex.Array,
    episode_group_ids: chex.Array,
    step_mask: chex.Array,
    max_probe_rounds: int = 64,
) -> chex.Array:
    """Flat row index `[N·T]` of each valid step's group representative (−1 at padded steps).

    The representative is the first row of its group in trajectory-major order, so it can serve
    directly as a segment id in `[0, N·T)`. See `anchor_state_group_ids` for the algorithm.
    """
    chex.assert_rank([episode_group_ids, step_mask], [1, 2])
    chex.assert_type(episode_group_ids, int)
    num_trajectories, num_steps = step_mask.shape
    chex.assert_equal_shape_prefix([anchor_obs, step_mask], 2)
    num_rows = num_trajectories * num_steps
    valid = jnp.reshape(step_mask.astype(bool), (num_rows,))
    episode_of_row = jnp.repeat(episode_group_ids.astype(jnp.int32), num_steps)
    words = jnp.reshape(observation_words(anchor_obs), (num_rows, -1))
    episode_salt = _fmix32(jax.lax.bitcast_convert_type(episode_of_row, jnp.uint32))
    home_slot = hash_elements(words, _HASH_SEED) ^ episode_salt
    table_size = 1 << max(1, (2 * num_rows - 1).bit_length())
    row_index = jnp.arange(num_rows, dtype=jnp.int32)

    def keep_probing(state):
        probe_round, _, unresolved = state
        return (probe_round < max_probe_rounds) & jnp.any(unresolved)

    def probe(state):
        probe_round, representative, unresolved = state
        slot = (home_slot + probe_round.astype(jnp.uint32)) & jnp.uint32(table_size - 1)
        slot = jnp.where(unresolved, slot.astype(jnp.int32), table_size)  # resolved rows: spare slot
        first_row_in_slot = jax.ops.segment_min(row_index, slot, num_segments=table_size + 1)
        candidate = first_row_in_slot[slot]
        safe_candidate = jnp.where(unresolved, candidate, row_index)
        matches = (
            unresolved
            & (episode_of_row[safe_candidate] == episode_of_row)
            & jnp.all(words[safe_candidate] == words, axis=-1)
        )
        representative = jnp.where(matches, candidate, representative)
        return probe_round + 1, representative, unresolved & ~matches

    initial = (jnp.zeros((), jnp.int32), jnp.full((num_rows,), -1, jnp.int32), valid)
    _, representative, unresolved = jax.lax.while_loop(keep_probing, probe, initial)
    representative = jnp.where(unresolved, row_index, representative)

    return jnp.where(valid, representative, -1)


def anchor_state_group_ids(
    anchor_obs: chex.Array,
    episode_group_ids: chex.Array,
    step_mask: chex.Array,
    max_probe_rounds: int = 64,
) -> tuple[chex.Array, chex.Array]:
    """Clusters valid steps by (episode group, exact anchor observation) on device.

    An open-addressing hash table of static size (the next power of two ≥ 2·N·T) is filled in rounds:
    every unresolved row probes slot `(h + k) mod M` in round k (linear probing), the smallest row
    index landing in each slot becomes that slot's candidate (`segment_min`), and a row is resolved
    when its episode group and observation words equal the candidate's **exactly**. All rows of one
    state share their probe sequence, so they resolve together to the same representative, and
    every round resolves at least one state per occupied slot. The hash only decides how many rounds
    are needed (1–3 at the table's load of at most 0.5); it never decides equality.

    Args:
      anchor_obs: `[N, T, ...]` observations of any dtype (or integer state ids `[N, T]`).
      episode_group_ids: `[N]` integer episode group of each trajectory.
      step_mask: `[N, T]` bool, False for padded steps.
      max_probe_rounds: safety bound on the rounds (a state needs k rounds only if k − 1 other
        states of the batch hash to its home slot or the slots just before it; 64 is not reached in
        practice). Rows still unresolved after it become their own singleton group (a split, never a
        false merge).

    Returns:
      `(step_group_ids [N, T] int32, num_step_groups scalar int32)`. Valid steps get dense ids in
      `[0, num_step_groups)`, numbered by first appearance in trajectory-major order; padded steps
      get −1.
    """
    representative = anchor_state_representatives(anchor_obs, episode_group_ids, step_mask, max_probe_rounds)
    return _dense_group_ids(representative, step_mask.shape)


def _dense_group_ids(representative: chex.Array, shape) -> tuple[chex.Array, chex.Array]:
    """Renumbers representatives `[R]` (−1 = padded) as dense group ids `[N, T]` and their count."""
    row_index = jnp.arange(representative.shape[0], dtype=jnp.int32)
    is_representative = representative == row_index
    dense_id_of_representative = jnp.cumsum(is_representative, dtype=jnp.int32) - 1
    group_ids = jnp.where(representative >= 0, dense_id_of_representative[jnp.maximum(representative, 0)], -1)
    num_groups = jnp.sum(is_representative, dtype=jnp.int32)
    return jnp.reshape(group_ids, shape), num_groups


def discounted_step_returns(rewards: chex.Array, step_mask: chex.Array, gamma: float) -> chex.Array:
    """G_t = r_t + γ G_{t+1} over the valid steps of each trajectory (`[N, T] -> [N, T]`).

    Masked steps pass G_{t+1} through unchanged and are reported as 0.
    """
    chex.assert_rank([rewards, step_mask], 2)
    chex.assert_equal_shape([rewards, step_mask])
    chex.assert_type(rewards, float)
    valid = step_mask.astype(bool)

    def backward_step(next_return, inputs):
        reward_t, valid_t = inputs
        return_t = jnp.where(valid_t, reward_t + gamma * next_return, next_return)
        return return_t, jnp.where(valid_t, return_t, 0.0)

    initial = jnp.zeros(rewards.shape[:1], rewards.dtype)
    _, returns_time_major = jax.lax.scan(backward_step, initial, (rewards.T, valid.T), reverse=True)
    return returns_time_major.T


def _normalised(values, stats, segment_ids, valid, normalization, epsilon, singleton_mean_is_self):
    """(x − mean)/(std + ε) or x − mean per member, with GiGPO's singleton conventions."""
    count = stats.count[segment_ids]
    singleton = count == 1
    if singleton_mean_is_self:  # step groups: mean = own value, std = 1 -> exactly 0
        mean = jnp.where(singleton, values, stats.mean[segment_ids])
    else:  # episode groups: mean 0, std 1 -> raw return
        mean = jnp.where(singleton, 0.0, stats.mean[segment_ids])
    centred = values - mean
    if normalization == "std":
        std = jnp.where(singleton, 1.0, stats.std[segment_ids])
        centred = centred / (std + epsilon)
    return jnp.where(valid, centred, 0.0)


def gigpo_advantages(
    rewards: Optional[chex.Array],
    step_mask: chex.Array,
    episode_group_ids: chex.Array,
    anchor_obs: chex.Array,
    *,
    gamma: float = 0.95,
    step_advantage_weight: float = 1.0,
    normalization: str = "none",
    episode_baseline_over: str = "steps",
    invalid_action_mask: Optional[chex.Array] = None,
    invalid_action_penalty: float = 0.1,
    epsilon: float = 1e-6,
    num_episode_groups: Optional[int] = None,
    episode_returns: Optional[chex.Array] = None,
    step_returns: Optional[chex.Array] = None,
) -> GiGPOAdvantages:
    """GiGPO advantage A = A^E + ω A^S per step (module docstring has the equations and rules).

    Args:
      rewards: `[N, T]` immediate environment reward of each step; may be `None` when both
        `episode_returns` and `step_returns` are given.
      step_mask: `[N, T]` bool, True for real steps, False for padding after the episode end.
      episode_group_ids: `[N]` integer episode group (same task and initial state) of each trajectory,
        in `[0, num_episode_groups)`.
      anchor_obs: `[N, T, ...]` anchor observation of each step, any dtype; or `[N, T]` integer ids.
      gamma: discount γ of the step returns (verl-agent: 0.95).
      step_advantage_weight: ω (paper and scripts: 1.0).
      normalization: "none" (`mean_norm`, verl-agent default) or "std" (`mean_std_norm`).
      episode_baseline_over: "steps" (verl-agent code) or "trajectories" (paper Eq. 3).
      invalid_action_mask: optional `[N, T]` bool, True where the step's action was invalid.
      invalid_action_penalty: subtracted from the row's episode-return copy and its G_t where
        `invalid_action_mask` is True (verl-agent: 0.1).
      epsilon: added to the std.
      num_episode_groups: static bound on the episode group ids; defaults to `N`.
      episode_returns: optional `[N]` floating R(τ_i), used as-is instead of Σ_t r_t (before the
        invalid-action penalty).
      step_returns: optional `[N, T]` floating G_t, used as-is instead of the discounted returns of
        `rewards` (before the invalid-action penalty; padded steps are ignored).

    Returns:
      `GiGPOAdvantages`. Metrics: `num_step_groups`, `step_group_size_mean` (over step groups),
      `singleton_step_group_fraction` (paper §5 dynamics), `zero_std_step_group_fraction` (multi-step
      groups whose returns are all equal), `zero_std_episode_group_fraction`,
      `valid_step_count`.
    """
    if normalization not in GIGPO_NORMALIZATIONS:
        raise ValueError(
            f"normalization={normalization!r} is not supported; allowed values are "
            f"{GIGPO_NORMALIZATIONS} ('std' = verl-agent mean_std_norm, 'none' = mean_norm)."
        )
    if episode_baseline_over not in GIGPO_EPISODE_BASELINES:
        raise ValueError(
            f"episode_baseline_over={episode_baseline_over!r} is not supported; allowed "
            f"values are {GIGPO_EPISODE_BASELINES}."
        )
    if rewards is None and (episode_returns is None or step_returns is None):
        raise ValueError("rewards is None: pass both episode_returns and step_returns instead.")
    chex.assert_rank([step_mask, episode_group_ids], [2, 1])
    chex.assert_equal_shape_prefix([step_mask, episode_group_ids], 1)
    chex.assert_type(episode_group_ids, int)
    num_trajectories, num_steps = step_mask.shape
    num_episode_groups = num_trajectories if num_episode_groups is None else num_episode_groups
    valid = step_mask.astype(bool)
    episode_group_ids = episode_group_ids.astype(jnp.int32)

    if rewards is not None:
        chex.assert_rank(rewards, 2)
        chex.assert_equal_shape([rewards, step_mask])
        chex.assert_type(rewards, float)
        rewards = jnp.where(valid, rewards, 0.0)
    if step_returns is None:
        step_returns = discounted_step_returns(rewards, valid, gamma)
    else:
        chex.assert_rank(step_returns, 2)
        chex.assert_equal_shape([step_returns, step_mask])
        chex.assert_type(step_returns, float)
        step_returns = jnp.where(valid, step_returns, 0.0)
    if episode_returns is None:
        episode_returns = jnp.sum(rewards, axis=-1)
    else:
        chex.assert_shape(episode_returns, (num_trajectories,))
        chex.assert_type(episode_returns, float)
    dtype = step_returns.dtype
    row_episode_returns = jnp.broadcast_to(episode_returns[:, None], valid.shape).astype(dtype)
    if invalid_action_mask is not None:
        chex.assert_equal_shape([valid, invalid_action_mask])
        penalty = jnp.where(valid & invalid_action_mask.astype(bool), invalid_action_penalty, 0.0)
        step_returns = step_returns - penalty
        row_episode_returns = row_episode_returns - penalty
    row_episode_returns = jnp.where(valid, row_episode_returns, 0.0)

    # Episode level.
    row_episode_ids = jnp.broadcast_to(episode_group_ids[:, None], valid.shape)
    if episode_baseline_over == "steps":
        episode_stats = segment_mean_std(row_episode_returns, episode_group_ids, valid, num_episode_groups)
    else:
        first_valid_step = jnp.argmax(valid, axis=-1)
        has_steps = jnp.any(valid, axis=-1)
        representative = jnp.take_along_axis(row_episode_returns, first_valid_step[:, None], axis=-1)[:, 0]
        episode_stats = segment_mean_std(representative, episode_group_ids, has_steps, num_episode_groups)
    episode_advantages = _normalised(
        row_episode_returns,
        episode_stats,
        row_episode_ids,
        valid,
        normalization,
        epsilon,
        singleton_mean_is_self=False,
    )

    # Step level.
    # Segment id of a step = flat row index of its group's representative (padded steps: 0, masked
    # out below). The dense renumbering is only needed for the `step_group_ids` output, so XLA drops
    # it when a caller uses only the advantages.
    representative = anchor_state_representatives(anchor_obs, episode_group_ids, valid)
    step_group_ids, num_step_groups = _dense_group_ids(representative, valid.shape)
    step_ids = jnp.reshape(jnp.maximum(representative, 0), valid.shape)
    step_stats = segment_mean_std(
        jnp.reshape(step_returns, (-1,)),
        jnp.reshape(step_ids, (-1,)),
        jnp.reshape(valid, (-1,)),
        num_trajectories * num_steps,
    )
    step_advantages = _normalised(
        step_returns, step_stats, step_ids, valid, normalization, epsilon, singleton_mean_is_self=True
    )

    advantages = jnp.where(valid, episode_advantages + step_advantage_weight * step_advantages, 0.0)
    step_group_sizes = jnp.where(valid, step_stats.count[step_ids], 0).astype(jnp.int32)
    metrics = _gigpo_metrics(step_stats, episode_stats, valid, dtype)
    return GiGPOAdvantages(
        advantages=advantages,
        episode_advantages=episode_advantages,
        step_advantages=step_advantages,
        step_returns=jnp.where(valid, step_returns, 0.0),
        step_group_ids=step_group_ids,
        step_group_sizes=step_group_sizes,
        metrics=metrics,
    )


def _gigpo_metrics(step_stats, episode_stats, valid, dtype) -> dict:
    num_step_groups = jnp.sum(step_stats.count > 0, dtype=jnp.int32)
    num_groups = num_step_groups.astype(dtype)
    multi_step = step_stats.count > 1
    multi_episode = episode_stats.count > 1
    valid_count = jnp.sum(valid).astype(dtype)
    return {
        "num_step_groups": num_step_groups,
        "step_group_size_mean": valid_count / jnp.maximum(num_groups, 1.0),
        "singleton_step_group_fraction": jnp.sum(step_stats.count == 1) / jnp.maximum(num_groups, 1.0),
        "zero_std_step_group_fraction": jnp.sum(multi_step & step_stats.is_constant)
        / jnp.maximum(jnp.sum(multi_step), 1),
        "zero_std_episode_group_fraction": jnp.sum(multi_episode & episode_stats.is_constant)
        / jnp.maximum(jnp.sum(multi_episode), 1),
        "valid_step_count": valid_count,
    }
