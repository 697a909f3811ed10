"""Tests of jaxrl_llm.losses.group_advantages against float64 numpy transcriptions of verl's rules."""

from collections import defaultdict
import functools
import itertools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.losses.group_advantages import group_advantages, group_advantages_dense

# ----------------------------------------------------------------------------------------------
# Independent float64 references (verl `compute_grpo_outcome_advantage`,
# `compute_rloo_outcome_advantage`, TRL `scale_rewards="batch"`), written with dicts per group.
# ----------------------------------------------------------------------------------------------


def reference_group_advantages(rewards, group_ids, mask, normalization, baseline, epsilon, singleton_groups):
    rewards = np.asarray(rewards, np.float64)
    by_group = defaultdict(list)
    for i, g in enumerate(group_ids):
        if mask[i]:
            by_group[int(g)].append(rewards[i])
    valid_rewards = rewards[np.asarray(mask, bool)]
    batch_std = valid_rewards.std(ddof=1) if valid_rewards.size > 1 else 0.0
    out = np.zeros_like(rewards)
    for i, g in enumerate(group_ids):
        if not mask[i]:
            continue
        members = np.asarray(by_group[int(g)])
        n = members.size
        if n == 1:
            if singleton_groups == "zero":
                continue
            mean, group_std = 0.0, 1.0  # verl: a single response gets mean 0 and std 1
        else:
            mean, group_std = members.mean(), members.std(ddof=1)
        centred = rewards[i] - mean
        if baseline == "leave_one_out" and n > 1:
            centred = rewards[i] - (members.sum() - rewards[i]) / (n - 1)
        if normalization == "group":
            centred /= group_std + epsilon
        elif normalization == "batch":
            centred /= batch_std + epsilon
        out[i] = centred
    return out


def reference_by_trajectory(rewards, group_ids, trajectory_ids, mask, **options):
    """verl's `compute_mean_std_cross_all_data=False`: dedup rows by trajectory (keeping the first valid
    row), compute the group advantages over one sample per trajectory, copy them to every valid row."""
    first_row = {}
    for i, trajectory in enumerate(trajectory_ids):
        if mask[i] and int(trajectory) not in first_row:
            first_row[int(trajectory)] = i
    kept = list(first_row.values())
    deduped = reference_group_advantages(
        np.asarray(rewards)[kept], np.asarray(group_ids)[kept], np.ones(len(kept), bool), **options
    )
    advantage_of = {trajectory: deduped[n] for n, trajectory in enumerate(first_row)}
    return np.array([advantage_of[int(t)] if mask[i] else 0.0 for i, t in enumerate(trajectory_ids)])


def random_multi_turn_batch(rng, num_groups=6, max_trajectories=4, max_turns=4):
    """Rows of multi-turn trajectories (1..max_turns rows each), shuffled. Rows of a trajectory carry
    its episode reward, except in two trajectories (only the first valid row's reward counts).
    Includes single-trajectory groups with several rows and a constant-reward group."""
    rows = []  # (reward, group, trajectory)
    trajectory = 0
    for group in range(num_groups):
        num_trajectories = 1 if group < 2 else int(rng.integers(2, max_trajectories + 1))
        constant = group == 2
        for _ in range(num_trajectories):
            reward = np.float32(0.1) if constant else np.float32(rng.normal())
            for _ in range(int(rng.integers(1, max_turns + 1))):
                rows.append((reward, group, trajectory))
            trajectory += 1
    order = rng.permutation(len(rows))
    rewards = np.array([rows[i][0] for i in order], np.float32)
    group_ids = np.array([rows[i][1] for i in order], np.int32)
    trajectory_ids = np.array([rows[i][2] for i in order], np.int32)
    mask = rng.random(len(rows)) > 0.15
    mask[trajectory_ids == 0] = False  # a trajectory whose rows are all masked
    # Two trajectories whose rows disagree: one in its first valid row, one in its last.
    multi_row = [t for t in np.unique(trajectory_ids) if (mask & (trajectory_ids == t)).sum() > 1]
    multi_row = [t for t in multi_row if group_ids[trajectory_ids == t][0] != 2]
    for which, trajectory in zip((0, -1), multi_row[:2]):
        rewards[np.flatnonzero(mask & (trajectory_ids == trajectory))[which]] += 1.0
    return rewards, group_ids, trajectory_ids, mask


def random_groups(rng, batch_size, num_groups):
    """Shuffled group ids with ragged sizes (incl. singletons) and some constant-reward groups."""
    group_ids = rng.integers(0, num_groups, size=batch_size)
    rewards = rng.normal(size=batch_size).astype(np.float32)
    constant_groups = rng.choice(num_groups, size=max(1, num_groups // 4), replace=False)
    for g in constant_groups:
        rewards[group_ids == g] = np.float32(0.1)  # 0.1 is not exact in binary: catches ulp noise
    return rewards, group_ids.astype(np.int32)


class GroupAdvantagesTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_float64_reference(self):
        rng = np.random.default_rng(0)
        rewards, group_ids = random_groups(rng, batch_size=40, num_groups=12)
        mask = rng.random(40) > 0.1
        options = list(
            itertools.product(("group", "batch", "none"), ("mean", "leave_one_out"), ("raw_reward", "zero"))
        )

        def every_option(rewards, group_ids, mask):  # one compile for all option combinations
            return [
                group_advantages(
                    rewards,
                    group_ids,
                    12,
                    mask=mask,
                    normalization=normalization,
                    baseline=baseline,
                    singleton_groups=singleton_groups,
                )
                for normalization, baseline, singleton_groups in options
            ]

        results = self.variant(every_option)(rewards, group_ids, mask)
        for (normalization, baseline, singleton_groups), (advantages, metrics) in zip(options, results):
            expected = reference_group_advantages(
                rewards, group_ids, mask, normalization, baseline, 1e-6, singleton_groups
            )
            np.testing.assert_allclose(
                advantages,
                expected,
                rtol=2e-5,
                atol=2e-5,
                err_msg=f"{normalization=} {baseline=} {singleton_groups=}",
            )
            self.assertTrue(all(np.isfinite(np.asarray(v)).all() for v in metrics.values()))

    @chex.variants(with_jit=True, without_jit=True)
    def test_equal_rewards_give_exact_zero(self):
        # Float32 means of equal non-representable values are off by an ulp; divided by 1e-6 that
        # would be an advantage of order 1e-2. It must be exactly 0.
        rewards = jnp.array([0.1, 0.1, 0.1, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 0.7, 0.7], jnp.float32)
        group_ids = jnp.array([0, 0, 0, 1, 1, 1, 1, 2, 2], jnp.int32)
        options = list(itertools.product(("group", "batch", "none"), ("mean", "leave_one_out")))

        def every_option(rewards, group_ids):
            return [
                group_advantages(rewards, group_ids, 3, normalization=normalization, baseline=baseline)
                for normalization, baseline in options
            ]

        for advantages, metrics in self.variant(every_option)(rewards, group_ids):
            np.testing.assert_array_equal(advantages, np.zeros(9, np.float32))
            self.assertEqual(float(metrics["zero_std_group_fraction"]), 1.0)
            self.assertEqual(float(metrics["zero_std_sample_fraction"]), 1.0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_singleton_groups(self):
        rewards = jnp.array([2.0, -1.0, 0.0, 1.0], jnp.float32)
        group_ids = jnp.array([0, 1, 2, 2], jnp.int32)
        raw, metrics = self.variant(functools.partial(group_advantages, num_groups=3))(rewards, group_ids)
        # verl: mean 0, std 1 (+eps): the raw reward.
        np.testing.assert_allclose(raw[:2], [2.0 / (1 + 1e-6), -1.0 / (1 + 1e-6)], rtol=1e-7)
        np.testing.assert_allclose(
            raw[2:], [-0.5 / (np.sqrt(0.5) + 1e-6), 0.5 / (np.sqrt(0.5) + 1e-6)], rtol=1e-6
        )
        self.assertAlmostEqual(float(metrics["singleton_group_fraction"]), 2 / 3, places=6)
        zero, _ = self.variant(functools.partial(group_advantages, num_groups=3, singleton_groups="zero"))(
            rewards, group_ids
        )
        np.testing.assert_array_equal(zero[:2], [0.0, 0.0])
        none_norm, _ = self.variant(functools.partial(group_advantages, num_groups=3, normalization="none"))(
            rewards, group_ids
        )
        np.testing.assert_array_equal(none_norm, [2.0, -1.0, -0.5, 0.5])

    @chex.variants(with_jit=True, without_jit=True)
    def test_dense_layout_equals_flat_layout(self):
        rng = np.random.default_rng(1)
        rewards = rng.integers(0, 2, size=(6, 4)).astype(np.float32)  # binary: many zero-std groups
        mask = rng.random((6, 4)) > 0.2
        dense, dense_metrics = self.variant(group_advantages_dense)(rewards, mask=mask)
        flat, flat_metrics = jax.jit(functools.partial(group_advantages, num_groups=6))(
            jnp.asarray(rewards).reshape(-1), jnp.repeat(jnp.arange(6), 4), mask=mask.reshape(-1)
        )
        np.testing.assert_array_equal(dense, np.asarray(flat).reshape(6, 4))
        # metrics such as the advantage mean are ~1e-8 sums whose value depends on reduction order
        chex.assert_trees_all_close(dense_metrics, flat_metrics, rtol=1e-6, atol=1e-6)

    def test_metrics_on_handmade_batch(self):
        rewards = jnp.array([1.0, 1.0, 0.0, 1.0, 5.0, 3.0, 3.0], jnp.float32)
        group_ids = jnp.array([0, 0, 1, 1, 2, 3, 3], jnp.int32)
        _, metrics = group_advantages(rewards, group_ids, 5)
        # Groups with >= 2 samples: 0 (constant), 1, 3 (constant); group 2 is a singleton.
        self.assertAlmostEqual(float(metrics["zero_std_group_fraction"]), 2 / 3, places=6)
        self.assertAlmostEqual(float(metrics["zero_std_sample_fraction"]), 4 / 7, places=6)
        self.assertAlmostEqual(float(metrics["singleton_group_fraction"]), 1 / 4, places=6)
        self.assertEqual(float(metrics["num_groups"]), 4.0)
        self.assertAlmostEqual(float(metrics["group_std_mean"]), np.sqrt(0.5) / 3, places=6)

    def test_vmap_over_batches(self):
        rng = np.random.default_rng(2)
        batches = [random_groups(rng, 24, 6) for _ in range(3)]
        rewards = jnp.stack([r for r, _ in batches])
        group_ids = jnp.stack([g for _, g in batches])
        batched, _ = jax.jit(jax.vmap(functools.partial(group_advantages, num_groups=6)))(rewards, group_ids)
        for k, (r, g) in enumerate(batches):
            single, _ = group_advantages(r, g, 6)
            np.testing.assert_allclose(batched[k], single, rtol=1e-6, atol=1e-6)

    def test_all_masked_and_empty_inputs_are_finite(self):
        rewards = jnp.array([1.0, 2.0, 3.0], jnp.float32)
        advantages, metrics = group_advantages(rewards, jnp.zeros(3, jnp.int32), 2, mask=jnp.zeros(3, bool))
        np.testing.assert_array_equal(advantages, np.zeros(3))
        self.assertTrue(all(np.isfinite(np.asarray(v)) for v in metrics.values()))

    def test_gradient_matches_finite_differences_in_float64(self):
        with jax.enable_x64(True):
            rng = np.random.default_rng(3)
            rewards = jnp.asarray(rng.normal(size=10))
            group_ids = jnp.asarray([0, 0, 0, 1, 1, 1, 1, 2, 3, 3])
            weights = jnp.asarray(rng.normal(size=10))

            @jax.jit
            def objective(r):
                advantages, _ = group_advantages(r, group_ids, 4, normalization="group")
                return jnp.sum(weights * advantages)

            grad = jax.grad(objective)(rewards)
            step = 1e-6
            numeric = np.array(
                [
                    (objective(rewards.at[i].add(step)) - objective(rewards.at[i].add(-step))) / (2 * step)
                    for i in range(10)
                ]
            )
            np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)
            # Constant groups: gradient stays finite (guarded sqrt).
            constant = jnp.ones(10)
            self.assertTrue(np.isfinite(jax.grad(objective)(constant)).all())

    @chex.variants(with_jit=True, without_jit=True)
    def test_one_sample_per_trajectory_matches_deduplicated_reference(self):
        rng = np.random.default_rng(4)
        rewards, group_ids, trajectory_ids, mask = random_multi_turn_batch(rng)
        num_trajectories = int(trajectory_ids.max()) + 1
        options = list(
            itertools.product(("group", "batch", "none"), ("mean", "leave_one_out"), ("raw_reward", "zero"))
        )

        def every_option(rewards, group_ids, trajectory_ids, mask):
            return [
                group_advantages(
                    rewards,
                    group_ids,
                    6,
                    mask=mask,
                    normalization=normalization,
                    baseline=baseline,
                    singleton_groups=singleton_groups,
                    trajectory_ids=trajectory_ids,
                    num_trajectories=num_trajectories,
                )
                for normalization, baseline, singleton_groups in options
            ]

        results = self.variant(every_option)(rewards, group_ids, trajectory_ids, mask)
        for (normalization, baseline, singleton_groups), (advantages, metrics) in zip(options, results):
            label = f"{normalization=} {baseline=} {singleton_groups=}"
            expected = reference_by_trajectory(
                rewards,
                group_ids,
                trajectory_ids,
                mask,
                normalization=normalization,
                baseline=baseline,
                epsilon=1e-6,
                singleton_groups=singleton_groups,
            )
            np.testing.assert_allclose(advantages, expected, rtol=2e-5, atol=2e-5, err_msg=label)
            # Equal-reward groups give exactly 0; rows of a trajectory share one advantage.
            np.testing.assert_array_equal(np.asarray(advantages)[group_ids == 2], 0.0, err_msg=label)
            for trajectory in np.unique(trajectory_ids[mask]):
                rows = mask & (trajectory_ids == trajectory)
                np.testing.assert_array_equal(advantages[rows], advantages[rows][0], err_msg=label)
            self.assertTrue(all(np.isfinite(np.asarray(v)).all() for v in metrics.values()), label)
        # The deduplication matters on this batch: row-level statistics give other advantages.
        row_level, _ = group_advantages(rewards, group_ids, 6, mask=mask)
        self.assertGreater(np.abs(np.asarray(results[0][0]) - np.asarray(row_level)).max(), 1e-2)

    def test_trajectory_statistics_on_a_handmade_batch(self):
        # Group 0: trajectory 0 has three rows (reward 1), trajectory 1 one row (reward 0).
        # Group 1: a single trajectory of two rows: a singleton group, not a group of two.
        rewards = jnp.array([1.0, 0.0, 1.0, 1.0, 3.0, 3.0], jnp.float32)
        group_ids = jnp.array([0, 0, 0, 0, 1, 1], jnp.int32)
        trajectory_ids = jnp.array([0, 1, 0, 0, 2, 2], jnp.int32)
        advantages, metrics = jax.jit(group_advantages, static_argnums=2)(
            rewards, group_ids, 2, trajectory_ids=trajectory_ids
        )
        scale = np.sqrt(0.5) + 1e-6  # mean 0.5 and unbiased std sqrt(0.5) over the two trajectories
        expected = [0.5 / scale, -0.5 / scale, 0.5 / scale, 0.5 / scale, 3.0 / (1 + 1e-6), 3.0 / (1 + 1e-6)]
        np.testing.assert_allclose(advantages, expected, rtol=1e-6)
        self.assertAlmostEqual(float(metrics["singleton_group_fraction"]), 0.5, places=6)
        # Counting rows instead (verl's default): mean 0.75 over four rows in group 0.
        rows, _ = group_advantages(rewards, group_ids, 2)
        np.testing.assert_allclose(rows[:4], np.array([0.25, -0.75, 0.25, 0.25]) / (0.5 + 1e-6), rtol=1e-6)

    def test_one_row_per_trajectory_ids_change_nothing(self):
        rng = np.random.default_rng(5)
        rewards, group_ids = random_groups(rng, batch_size=30, num_groups=8)
        mask = rng.random(30) > 0.1
        for normalization in ("group", "batch", "none"):
            plain = group_advantages(rewards, group_ids, 8, mask=mask, normalization=normalization)
            permuted_ids = rng.permutation(30).astype(np.int32)
            by_trajectory = group_advantages(
                rewards, group_ids, 8, mask=mask, normalization=normalization, trajectory_ids=permuted_ids
            )
            chex.assert_trees_all_equal(plain, by_trajectory)

    def test_dense_layout_passes_trajectory_ids(self):
        rng = np.random.default_rng(6)
        rewards = rng.integers(0, 3, size=(4, 6)).astype(np.float32)
        trajectory_ids = np.repeat(np.arange(12, dtype=np.int32), 2).reshape(4, 6)  # two rows each
        rewards = np.repeat(rewards[:, ::2], 2, axis=1)
        dense, _ = jax.jit(group_advantages_dense)(rewards, trajectory_ids=trajectory_ids)
        flat, _ = group_advantages(
            rewards.reshape(-1), np.repeat(np.arange(4), 6), 4, trajectory_ids=trajectory_ids.reshape(-1)
        )
        np.testing.assert_array_equal(dense, np.asarray(flat).reshape(4, 6))
        expected = reference_by_trajectory(
            rewards.reshape(-1),
            np.repeat(np.arange(4), 6),
            trajectory_ids.reshape(-1),
            np.ones(24, bool),
            normalization="group",
            baseline="mean",
            epsilon=1e-6,
            singleton_groups="raw_reward",
        )
        np.testing.assert_allclose(np.asarray(dense).reshape(-1), expected, rtol=2e-5, atol=2e-5)

    def test_all_masked_trajectories_are_zero_and_finite(self):
        advantages, metrics = group_advantages(
            jnp.array([1.0, 2.0, 3.0]),
            jnp.zeros(3, jnp.int32),
            2,
            mask=jnp.zeros(3, bool),
            trajectory_ids=jnp.array([0, 0, 1], jnp.int32),
        )
        np.testing.assert_array_equal(advantages, np.zeros(3))
        self.assertTrue(all(np.isfinite(np.asarray(v)) for v in metrics.values()))

    def test_rejects_unknown_options(self):
        with self.assertRaisesRegex(ValueError, "normalization"):
            group_advantages(jnp.zeros(2), jnp.zeros(2, jnp.int32), normalization="global")
        with self.assertRaises(AssertionError):
            group_advantages(jnp.zeros(2), jnp.zeros(2, jnp.float32))
