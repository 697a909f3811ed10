"""Group-relative advantages: GRPO, Dr. GRPO, Lite-PPO batch scaling and RLOO.

Outcome-supervision GRPO (Shao et al. 2024, "DeepSeekMath", arXiv 2402.03300, §4.1.2) samples a
group of G completions per prompt and replaces the critic by the group's own statistics:

    Â_i = (r_i − mean_{j∈g(i)} r_j) / (std_{j∈g(i)} r_j + ε)                  ("group")
    Â_i =  r_i − mean_{j∈g(i)} r_j                                             ("none", Dr. GRPO,
                                                                                arXiv 2503.20783)
    Â_i = (r_i − mean_{j∈g(i)} r_j) / (std_{all j} r_j + ε)                    ("batch", Lite PPO,
                                                                                arXiv 2508.08221,
                                                                                TRL scale_rewards="batch")

RLOO (Ahmadian et al. 2024, arXiv 2402.14740; Kool et al. 2019) uses the leave-one-out mean:

    Â_i = r_i − (1/(n−1)) Σ_{j∈g(i), j≠i} r_j = n/(n−1) · (r_i − mean_g r).

Conventions (verl `compute_grpo_outcome_advantage` / `compute_rloo_outcome_advantage`):

* std is unbiased (N−1), like `torch.std`; ε = 1e-6 is added to the std, not the variance.
* **A group of size 1** has no baseline. verl gives it mean 0 and std 1, so its advantage is the
  raw reward (`singleton_groups="raw_reward"`, the default). `singleton_groups="zero"` gives it
  advantage 0 instead (it carries no relative information).
* **A group whose rewards are all equal gets advantage exactly 0** (mean set to the common value;
  see `segment_stats`). In TRL this is the "my loss is 0" situation: such groups carry no
  policy-gradient signal, and only the KL/entropy terms remain. `metrics["zero_std_group_fraction"]`
  reports how many groups are in that state; if it is near 1 the task is too easy or too hard for
  the current policy (DAPO's dynamic sampling filters such groups out).

**One value per trajectory** (`trajectory_ids`; verl-agent `compute_grpo_outcome_advantage` with
`compute_mean_std_cross_all_data=False`). In multi-turn training a trajectory is split into several
rows (one per turn), all carrying the trajectory's reward. By default every row is a sample, so a
trajectory of k rows counts k times in its group's mean and std (verl-agent's default
`compute_mean_std_cross_all_data=True`). With `trajectory_ids`, rows sharing an id are one sample:
the group statistics (count, mean, std, the batch std, the leave-one-out count and the singleton
rule) count each trajectory once, with the reward of its first valid row (verl-agent dedups rows by
`(uid, traj_uid)` keeping the first), and every valid row of the trajectory gets that trajectory's
advantage. (verl-agent normalises each row's own reward with those statistics; the two agree
whenever the rows of a trajectory carry the same reward, which is how verl-agent places the episode
reward.)

Shapes: `B` samples; `group_ids [B]` integers in `[0, num_groups)` in any order (groups need not be
contiguous or of equal size). `group_advantages_dense` is the `[num_groups, group_size]` layout.
"""

from typing import Optional

import chex
import jax
import jax.numpy as jnp

from jaxrl_llm.losses.names import GROUP_BASELINES, GROUP_NORMALIZATIONS, SINGLETON_RULES
from jaxrl_llm.losses.segment_stats import segment_mean_std

NORMALIZATIONS = GROUP_NORMALIZATIONS
BASELINES = GROUP_BASELINES


def _validate_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed values are {allowed}.")


def group_advantages(
    rewards: chex.Array,
    group_ids: chex.Array,
    num_groups: Optional[int] = None,
    *,
    mask: Optional[chex.Array] = None,
    normalization: str = "group",
    baseline: str = "mean",
    epsilon: float = 1e-6,
    singleton_groups: str = "raw_reward",
    trajectory_ids: Optional[chex.Array] = None,
    num_trajectories: Optional[int] = None,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """Group-relative advantages from scalar rewards and integer group ids (any layout).

    `Â_i = (r_i − b_i) / s_i` with the baseline `b_i` the group mean (`baseline="mean"`) or the
    leave-one-out mean (`"leave_one_out"`, RLOO) and the scale `s_i` the group's unbiased std plus ε
    (`normalization="group"`, GRPO), the batch's unbiased std plus ε (`"batch"`), or 1 (`"none"`,
    Dr. GRPO). Singleton groups follow `singleton_groups` (module docstring); constant groups get 0.

    Args:
      rewards: `[B]` floating scalar reward per sample.
      group_ids: `[B]` integer group (prompt) of each sample, in `[0, num_groups)`.
      num_groups: static upper bound on the number of groups; defaults to `B`.
      mask: optional `[B]` bool, False for padding samples (advantage 0, excluded from statistics).
      normalization: "group", "batch" or "none".
      baseline: "mean" (GRPO) or "leave_one_out" (RLOO).
      epsilon: added to the std.
      singleton_groups: "raw_reward" (verl: mean 0, std 1) or "zero".
      trajectory_ids: optional `[B]` integer trajectory of each row, in `[0, num_trajectories)`,
        unique across the batch. Rows sharing an id count once in every statistic, and every valid
        row of a trajectory gets its advantage (module docstring). All rows of a trajectory must
        share its group id (the first valid row's is used). `None`: every row is a trajectory.
      num_trajectories: static upper bound on `trajectory_ids`; defaults to `B`.

    Returns:
      `(advantages [B], metrics)`; metrics are scalars (with `trajectory_ids` they count
      trajectories, not rows): `zero_std_group_fraction` (among groups
      with ≥ 2 valid samples, the fraction whose rewards are all equal), `zero_std_sample_fraction`
      (TRL's `frac_reward_zero_std`: fraction of valid samples in such groups),
      `singleton_group_fraction`, `num_groups` (non-empty), `reward_mean`, `reward_std` (batch,
      unbiased), `group_std_mean` (mean of per-group stds over groups with ≥ 2 samples),
      `advantage_mean`, `advantage_abs_mean`.
    """
    _validate_choice("normalization", normalization, GROUP_NORMALIZATIONS)
    _validate_choice("baseline", baseline, GROUP_BASELINES)
    _validate_choice("singleton_groups", singleton_groups, SINGLETON_RULES)
    chex.assert_rank([rewards, group_ids], 1)
    chex.assert_equal_shape([rewards, group_ids])
    chex.assert_type(rewards, float)
    chex.assert_type(group_ids, int)
    batch_size = rewards.shape[0]
    num_groups = batch_size if num_groups is None else num_groups
    if mask is None:
        mask = jnp.ones_like(rewards, dtype=bool)
    chex.assert_equal_shape([rewards, mask])
    mask = mask.astype(bool)
    if trajectory_ids is not None:
        # One sample per trajectory: its first valid row. The other rows copy its advantage below.
        first_row = _first_row_of_trajectory(trajectory_ids, mask, num_trajectories)
        row_mask = mask
        mask = mask & (first_row == jnp.arange(batch_size))

    groups = segment_mean_std(rewards, group_ids, mask, num_groups)
    whole_batch = segment_mean_std(rewards, jnp.zeros_like(group_ids), mask, 1)
    count = groups.count[group_ids]
    centred = rewards - groups.mean[group_ids]
    if baseline == "leave_one_out":
        centred = centred * count / jnp.maximum(count - 1.0, 1.0)

    # Scale of each sample; singleton groups use verl's std = 1 under "group" normalization.
    if normalization == "group":
        scale = groups.std[group_ids] + epsilon
        singleton_scale = 1.0 + epsilon
    elif normalization == "batch":
        scale = singleton_scale = whole_batch.std[0] + epsilon
    else:
        scale = singleton_scale = 1.0
    advantages = centred / scale

    if singleton_groups == "raw_reward":  # verl: baseline (mean) 0
        singleton_advantage = rewards / singleton_scale
    else:
        singleton_advantage = jnp.zeros_like(rewards)
    advantages = jnp.where(count == 1, singleton_advantage, advantages)
    advantages = jnp.where(mask, advantages, 0.0)

    metrics = _group_metrics(advantages, mask, groups, whole_batch)
    if trajectory_ids is not None:
        advantages = jnp.where(row_mask, advantages[first_row], 0.0)
    return advantages, metrics


def _first_row_of_trajectory(trajectory_ids, mask, num_trajectories):
    """`[B]` index of the first valid row of each row's trajectory (any index in range if none)."""
    chex.assert_rank(trajectory_ids, 1)
    chex.assert_equal_shape([trajectory_ids, mask])
    chex.assert_type(trajectory_ids, int)
    batch_size = mask.shape[0]
    num_trajectories = batch_size if num_trajectories is None else num_trajectories
    rows = jnp.arange(batch_size)
    first_valid = jax.ops.segment_min(
        jnp.where(mask, rows, batch_size), trajectory_ids, num_segments=num_trajectories
    )
    return jnp.minimum(first_valid[trajectory_ids], batch_size - 1)


def group_advantages_dense(
    rewards: chex.Array,
    *,
    mask: Optional[chex.Array] = None,
    normalization: str = "group",
    baseline: str = "mean",
    epsilon: float = 1e-6,
    singleton_groups: str = "raw_reward",
    trajectory_ids: Optional[chex.Array] = None,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """`group_advantages` for the `[num_groups, group_size]` layout (row g = the samples of prompt g).

    Args:
      rewards: `[G, N]` floating rewards.
      mask: optional `[G, N]` bool, False for padding samples.
      normalization, baseline, epsilon, singleton_groups: as in `group_advantages`.
      trajectory_ids: optional `[G, N]` integer trajectory of each sample, in `[0, G·N)` (see
        `group_advantages`).

    Returns:
      `(advantages [G, N], metrics)`, identical to `group_advantages` on the flattened batch with
      `group_ids = repeat(arange(G), N)`.
    """
    chex.assert_rank(rewards, 2)
    num_groups, group_size = rewards.shape
    group_ids = jnp.repeat(jnp.arange(num_groups, dtype=jnp.int32), group_size)
    flat_mask = None if mask is None else jnp.reshape(mask, (-1,))
    flat_trajectory_ids = None if trajectory_ids is None else jnp.reshape(trajectory_ids, (-1,))
    advantages, metrics = group_advantages(
        jnp.reshape(rewards, (-1,)),
        group_ids,
        num_groups,
        mask=flat_mask,
        normalization=normalization,
        baseline=baseline,
        epsilon=epsilon,
        singleton_groups=singleton_groups,
        trajectory_ids=flat_trajectory_ids,
    )
    return jnp.reshape(advantages, rewards.shape), metrics


def _group_metrics(advantages, mask, groups, whole_batch) -> dict[str, chex.Array]:
    dtype = advantages.dtype
    nonempty = groups.count > 0
    multi = groups.count > 1
    zero_std = multi & groups.is_constant
    num_nonempty = jnp.sum(nonempty).astype(dtype)
    num_multi = jnp.sum(multi).astype(dtype)
    num_valid = jnp.sum(mask).astype(dtype)
    return {
        "zero_std_group_fraction": jnp.sum(zero_std) / jnp.maximum(num_multi, 1.0),
        "zero_std_sample_fraction": jnp.sum(jnp.where(zero_std, groups.count, 0.0))
        / jnp.maximum(num_valid, 1.0),
        "singleton_group_fraction": jnp.sum(groups.count == 1) / jnp.maximum(num_nonempty, 1.0),
        "num_groups": num_nonempty,
        "reward_mean": whole_batch.mean[0],
        "reward_std": whole_batch.std[0],
        "group_std_mean": jnp.sum(jnp.where(multi, groups.std, 0.0)) / jnp.maximum(num_multi, 1.0),
        "advantage_mean": jnp.sum(advantages) / jnp.maximum(num_valid, 1.0),
        "advantage_abs_mean": jnp.sum(jnp.abs(advantages)) / jnp.maximum(num_valid, 1.0),
    }
