"""Host-side reference of verl-agent's GiGPO advantage rules (numpy float64 + Python dicts).

This is the straightforward way the rules are implemented in verl-agent (`gigpo/core_gigpo.py`):
flatten the trajectories into step rows, group rows with dictionaries keyed by the episode group
and the exact observation bytes, and compute each group's statistics separately. It is written
independently of `jaxrl_llm.losses.gigpo` (no shared code) and is the single reference used both by
`tests/losses/test_gigpo.py` and by `benchmarks/gigpo.py`.

It takes the same fixed-shape inputs as `gigpo_advantages` so the two can be compared directly;
rows are visited in verl-agent's order (trajectory-major, then step).
"""

from collections import defaultdict
from typing import Optional

import numpy as np


def _observation_key(observation: np.ndarray) -> bytes:
    """Exact bytes of one observation; floats have −0.0 mapped to +0.0 (as tuple(flatten()) does)."""
    if np.issubdtype(observation.dtype, np.floating):
        observation = np.where(observation == 0, np.zeros((), observation.dtype), observation)
    return np.ascontiguousarray(observation).tobytes()


def _mean_and_unbiased_std(values: list) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1))


def gigpo_advantages_reference(
    rewards: np.ndarray,
    step_mask: np.ndarray,
    episode_group_ids: np.ndarray,
    anchor_obs: np.ndarray,
    *,
    gamma: float = 0.95,
    step_advantage_weight: float = 1.0,
    normalization: str = "none",
    episode_baseline_over: str = "steps",
    invalid_action_mask: Optional[np.ndarray] = None,
    invalid_action_penalty: float = 0.1,
    epsilon: float = 1e-6,
    episode_returns: Optional[np.ndarray] = None,
    step_returns: Optional[np.ndarray] = None,
) -> dict[str, np.ndarray]:
    """verl-agent's GiGPO advantages on `[N, T]` arrays; see `jaxrl_llm.losses.gigpo` for the rules.

    `episode_returns [N]` / `step_returns [N, T]`, when given, replace the per-trajectory sum of the
    rewards / the discounted step returns (before the invalid-action penalty); `rewards` may then be
    None if both are given.

    Returns a dict of float64 `[N, T]` arrays (zeros at padded steps): `advantages`,
    `episode_advantages`, `step_advantages`, `step_returns`; and int `step_group_sizes` and
    `step_group_ids` (clusters numbered by first appearance in row order, −1 at padded steps).
    """
    step_mask = np.asarray(step_mask, dtype=bool)
    num_trajectories, num_steps = step_mask.shape
    if rewards is not None:
        rewards = np.asarray(rewards, dtype=np.float64)
    use_std = normalization == "std"

    # 1. Step rows, trajectory-major (verl-agent's gather_rollout_data order).
    rows = [(i, t) for i in range(num_trajectories) for t in range(num_steps) if step_mask[i, t]]

    # 2. Discounted step returns per trajectory over its kept rows (compute_step_discounted_returns).
    step_return = {}
    episode_return = {}
    for i in range(num_trajectories):
        kept_steps = [t for t in range(num_steps) if step_mask[i, t]]
        running = 0.0
        for t in reversed(kept_steps):
            if step_returns is None:
                running = rewards[i, t] + gamma * running
                step_return[(i, t)] = running
            else:
                step_return[(i, t)] = float(step_returns[i, t])
        if episode_returns is None:
            episode_return[i] = float(sum(rewards[i, t] for t in kept_steps))
        else:
            episode_return[i] = float(episode_returns[i])

    # 3. Per-row episode-return copy; invalid-action penalty after the returns, not discounted.
    row_episode_return = {}
    for i, t in rows:
        row_episode_return[(i, t)] = episode_return[i]
        if invalid_action_mask is not None and invalid_action_mask[i, t]:
            row_episode_return[(i, t)] -= invalid_action_penalty
            step_return[(i, t)] -= invalid_action_penalty

    # 4. Episode-level statistics (episode_norm_reward).
    scores_by_group = defaultdict(list)
    seen_trajectories = set()
    for i, t in rows:
        uid = int(episode_group_ids[i])
        if (uid, i) in seen_trajectories:
            continue
        scores_by_group[uid].append(row_episode_return[(i, t)])
        if episode_baseline_over == "trajectories":
            seen_trajectories.add((uid, i))
    episode_stats = {}
    for uid, scores in scores_by_group.items():
        episode_stats[uid] = (0.0, 1.0) if len(scores) == 1 else _mean_and_unbiased_std(scores)

    # 5. Anchor-state step groups within each episode group (build_step_group).
    rows_by_state = defaultdict(list)
    for i, t in rows:
        rows_by_state[(int(episode_group_ids[i]), _observation_key(anchor_obs[i, t]))].append((i, t))

    # 6. Step-level statistics (step_norm_reward): singleton -> mean = own value, std = 1.
    step_stats = {}
    step_group_size = {}
    step_group_id = {}
    for cluster_index, members in enumerate(rows_by_state.values()):  # first-appearance order
        values = [step_return[row] for row in members]
        if len(values) == 1:
            stats = (values[0], 1.0)
        else:
            stats = _mean_and_unbiased_std(values)
        for row in members:
            step_stats[row] = stats
            step_group_size[row] = len(members)
            step_group_id[row] = cluster_index

    # 7. Combine.
    out = {
        name: np.zeros((num_trajectories, num_steps))
        for name in ("advantages", "episode_advantages", "step_advantages", "step_returns")
    }
    out["step_group_sizes"] = np.zeros((num_trajectories, num_steps), dtype=np.int64)
    out["step_group_ids"] = np.full((num_trajectories, num_steps), -1, dtype=np.int64)
    for i, t in rows:
        mean, std = episode_stats[int(episode_group_ids[i])]
        episode_adv = row_episode_return[(i, t)] - mean
        step_mean, step_std = step_stats[(i, t)]
        step_adv = step_return[(i, t)] - step_mean
        if use_std:
            episode_adv /= std + epsilon
            step_adv /= step_std + epsilon
        out["episode_advantages"][i, t] = episode_adv
        out["step_advantages"][i, t] = step_adv
        out["advantages"][i, t] = episode_adv + step_advantage_weight * step_adv
        out["step_returns"][i, t] = step_return[(i, t)]
        out["step_group_sizes"][i, t] = step_group_size[(i, t)]
        out["step_group_ids"][i, t] = step_group_id[(i, t)]
    return out
