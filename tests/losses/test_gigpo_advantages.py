"""Tests of the jitted GiGPO advantages against the host-side reference of verl-agent's rules."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.losses import gigpo
from jaxrl_llm.losses.gigpo import (
    GiGPOAdvantages,
    anchor_state_group_ids,
    discounted_step_returns,
    gigpo_advantages,
    observation_elements,
)
from jaxrl_llm.losses.reference.gigpo_numpy import gigpo_advantages_reference

FIELDS = ("advantages", "episode_advantages", "step_advantages", "step_returns")
small_gigpo = jax.jit(gigpo_advantages, static_argnames=("normalization", "episode_baseline_over"))


def random_rollout(
    rng,
    num_groups=4,
    group_size=4,
    num_singleton_groups=2,
    num_steps=7,
    num_repeated_states=5,
    unique_state_probability=0.15,
    prefix_mask=True,
):
    """Trajectories in shuffled episode groups, with many repeated states, unique (singleton)
    states, padded steps after the episode end (or holes), and integer-valued rewards."""
    group_of_trajectory = np.concatenate(
        [
            np.repeat(np.arange(num_groups), group_size),
            num_groups + np.arange(num_singleton_groups),  # episode groups of a single trajectory
        ]
    )
    rng.shuffle(group_of_trajectory)
    num_trajectories = group_of_trajectory.size
    states = rng.integers(0, num_repeated_states, size=(num_trajectories, num_steps))
    unique = rng.random(states.shape) < unique_state_probability
    states = np.where(unique, num_repeated_states + np.arange(states.size).reshape(states.shape), states)
    if prefix_mask:
        lengths = rng.integers(0, num_steps + 1, size=num_trajectories)
        lengths[:2] = (num_steps, 1)
        step_mask = np.arange(num_steps)[None] < lengths[:, None]
    else:
        step_mask = rng.random(states.shape) < 0.75
    rewards = rng.choice([0.0, 0.0, 0.0, 1.0, 10.0], size=states.shape).astype(np.float32)
    invalid = rng.random(states.shape) < 0.2
    return {
        "rewards": rewards,
        "step_mask": step_mask,
        "episode_group_ids": group_of_trajectory.astype(np.int32),
        "states": states,
        "invalid": invalid,
    }


def render(states, kind, rng):
    """Observation arrays of several dtypes, equal exactly when the state ids are equal."""
    num_states = int(states.max()) + 1
    if kind == "ids_int32":
        return states.astype(np.int32)
    if kind == "grid_int8":  # 3x3 grid with the agent's cell marked, plus a state-dependent cell
        table = np.zeros((num_states, 3, 3), np.int8)
        table.reshape(num_states, -1)[np.arange(num_states), np.arange(num_states) % 9] = 1
        table[:, 2, 2] += (np.arange(num_states) // 9).astype(np.int8)
        return table[states]
    if kind == "image_uint8":
        table = rng.integers(0, 256, size=(num_states, 4, 4, 3)).astype(np.uint8)
        return table[states]
    if kind == "float32":  # −0.0 and +0.0 must be the same state
        table = rng.normal(size=(num_states, 5)).astype(np.float32)
        table[:, 0] = 0.0
        observations = table[states]
        flip = rng.random(states.shape) < 0.5
        observations[..., 0] = np.where(flip, np.float32(-0.0), np.float32(0.0))
        return observations
    if kind == "bool":
        bits = (np.arange(num_states)[:, None] >> np.arange(12)[None]) & 1
        return bits.astype(bool)[states]
    raise ValueError(kind)


def assert_matches_reference(test, ours, reference, label=""):
    for field in FIELDS:
        np.testing.assert_allclose(
            np.asarray(getattr(ours, field)),
            reference[field],
            rtol=1e-5,
            atol=1e-4,
            err_msg=f"{label} {field}",
        )
    np.testing.assert_array_equal(ours.step_group_sizes, reference["step_group_sizes"], err_msg=label)
    np.testing.assert_array_equal(ours.step_group_ids, reference["step_group_ids"], err_msg=label)
    for name, value in ours.metrics.items():
        test.assertTrue(np.isfinite(np.asarray(value)).all(), f"{label} {name}")


# Every pair of values of the three binary options appears (a covering design of 4 of the 8).
OPTION_COMBINATIONS = [
    ("none", "steps", False),
    ("std", "steps", True),
    ("none", "trajectories", True),
    ("std", "trajectories", False),
]


class GiGPOAdvantagesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_reference_with_and_without_jit(self):
        rng = np.random.default_rng(0)
        rollout = random_rollout(rng)
        anchor_obs = render(rollout["states"], "grid_int8", rng)
        options = dict(
            gamma=0.9,
            step_advantage_weight=0.7,
            normalization="std",
            episode_baseline_over="trajectories",
            invalid_action_penalty=0.1,
        )
        ours = self.variant(functools.partial(gigpo_advantages, num_episode_groups=8, **options))(
            rollout["rewards"],
            rollout["step_mask"],
            rollout["episode_group_ids"],
            anchor_obs,
            invalid_action_mask=rollout["invalid"],
        )
        reference = gigpo_advantages_reference(
            rollout["rewards"],
            rollout["step_mask"],
            rollout["episode_group_ids"],
            anchor_obs,
            invalid_action_mask=rollout["invalid"],
            **options,
        )
        assert_matches_reference(self, ours, reference)
        # The batch must actually exercise repeated and singleton step groups.
        sizes = np.asarray(ours.step_group_sizes)
        self.assertGreater((sizes > 2).sum(), 10)
        self.assertGreater((sizes == 1).sum(), 3)

    def test_matches_reference_for_every_option_with_holes_in_the_step_mask(self):
        rng = np.random.default_rng(0)
        rollout = random_rollout(rng, prefix_mask=False)
        anchor_obs = render(rollout["states"], "grid_int8", rng)

        @jax.jit
        def every_option(rewards, step_mask, episode_group_ids, anchor_obs, invalid):
            return [
                gigpo_advantages(
                    rewards,
                    step_mask,
                    episode_group_ids,
                    anchor_obs,
                    gamma=0.95,
                    normalization=normalization,
                    episode_baseline_over=baseline,
                    invalid_action_mask=invalid if penalty else None,
                    num_episode_groups=8,
                )
                for normalization, baseline, penalty in OPTION_COMBINATIONS
            ]

        results = every_option(
            rollout["rewards"],
            rollout["step_mask"],
            rollout["episode_group_ids"],
            anchor_obs,
            rollout["invalid"],
        )
        for (normalization, baseline, penalty), ours in zip(OPTION_COMBINATIONS, results):
            reference = gigpo_advantages_reference(
                rollout["rewards"],
                rollout["step_mask"],
                rollout["episode_group_ids"],
                anchor_obs,
                gamma=0.95,
                normalization=normalization,
                episode_baseline_over=baseline,
                invalid_action_mask=rollout["invalid"] if penalty else None,
            )
            assert_matches_reference(self, ours, reference, f"{normalization} {baseline} {penalty}")

    def test_observation_dtypes_give_the_reference_groups(self):
        rng = np.random.default_rng(1)
        kinds = ("ids_int32", "grid_int8", "image_uint8", "float32", "bool")
        rollout = random_rollout(rng, prefix_mask=False)
        observations = tuple(render(rollout["states"], kind, rng) for kind in kinds)

        @jax.jit
        def every_kind(episode_group_ids, step_mask, observations):
            return [anchor_state_group_ids(obs, episode_group_ids, step_mask) for obs in observations]

        results = every_kind(rollout["episode_group_ids"], rollout["step_mask"], observations)
        for kind, obs, (group_ids, num_groups) in zip(kinds, observations, results):
            reference = gigpo_advantages_reference(
                rollout["rewards"], rollout["step_mask"], rollout["episode_group_ids"], obs
            )
            np.testing.assert_array_equal(group_ids, reference["step_group_ids"], err_msg=kind)
            self.assertEqual(int(num_groups), reference["step_group_ids"].max() + 1, kind)

    def test_vmap_over_a_batch_of_batches(self):
        rng = np.random.default_rng(2)
        rollouts = [random_rollout(rng) for _ in range(3)]
        stacked = {k: np.stack([r[k] for r in rollouts]) for k in rollouts[0]}
        batched = jax.jit(
            jax.vmap(
                functools.partial(gigpo_advantages, normalization="std", episode_baseline_over="trajectories")
            )
        )(
            stacked["rewards"],
            stacked["step_mask"],
            stacked["episode_group_ids"],
            stacked["states"].astype(np.int32),
            invalid_action_mask=stacked["invalid"],
        )
        for k, rollout in enumerate(rollouts):
            reference = gigpo_advantages_reference(
                rollout["rewards"],
                rollout["step_mask"],
                rollout["episode_group_ids"],
                rollout["states"],
                normalization="std",
                episode_baseline_over="trajectories",
                invalid_action_mask=rollout["invalid"],
            )
            assert_matches_reference(
                self, jax.tree.map(lambda x, k=k: x[k], batched), reference, f"batch {k}"
            )

    def test_grouping_stays_exact_when_every_hash_collides(self):
        rng = np.random.default_rng(3)
        rollout = random_rollout(
            rng,
            num_groups=2,
            group_size=3,
            num_singleton_groups=1,
            num_steps=5,
            num_repeated_states=4,
            unique_state_probability=0.1,
        )
        obs = render(rollout["states"], "image_uint8", rng)
        expected = gigpo_advantages_reference(
            rollout["rewards"], rollout["step_mask"], rollout["episode_group_ids"], obs
        )
        original = gigpo.hash_elements
        try:
            gigpo.hash_elements = lambda elements, seed: jnp.zeros(elements.shape[:-1], jnp.uint32)
            group_ids, num_groups = jax.jit(anchor_state_group_ids)(
                obs, rollout["episode_group_ids"], rollout["step_mask"]
            )
            np.testing.assert_array_equal(group_ids, expected["step_group_ids"])
            self.assertEqual(int(num_groups), expected["step_group_ids"].max() + 1)
            # With too few probe rounds the leftovers become singletons: splits, never false merges.
            truncated, _ = jax.jit(functools.partial(anchor_state_group_ids, max_probe_rounds=2))(
                obs, rollout["episode_group_ids"], rollout["step_mask"]
            )
        finally:
            gigpo.hash_elements = original
        truncated = np.asarray(truncated)
        for group in np.unique(truncated[truncated >= 0]):
            members = np.argwhere(truncated == group)
            self.assertEqual(len({expected["step_group_ids"][tuple(m)] for m in members}), 1)

    # The edge cases below share one input shape ([4, 3], int32 state ids) and the module-level
    # `small_gigpo`, so they reuse compiled programs.

    def test_no_repeated_states_reduces_to_grpo(self):
        rewards = np.array([[1, 0, 0], [0, 0, 10], [1, 1, 0], [0, 0, 0]], np.float32)
        out = small_gigpo(
            rewards,
            np.ones((4, 3), bool),
            np.array([0, 0, 1, 1], np.int32),
            np.arange(12, dtype=np.int32).reshape(4, 3),
            normalization="std",
            episode_baseline_over="trajectories",
        )
        np.testing.assert_array_equal(out.step_advantages, np.zeros_like(out.step_advantages))
        np.testing.assert_array_equal(out.advantages, out.episode_advantages)
        self.assertEqual(float(out.metrics["singleton_step_group_fraction"]), 1.0)

    def test_equal_returns_give_exact_zero_and_no_nan(self):
        rewards = np.full((4, 3), 0.1, np.float32)  # 0.1 is inexact in binary
        states = np.tile(np.arange(3, dtype=np.int32), (4, 1))
        for normalization, baseline in itertools.product(("none", "std"), ("steps", "trajectories")):
            out = small_gigpo(
                rewards,
                np.ones((4, 3), bool),
                np.zeros(4, np.int32),
                states,
                normalization=normalization,
                episode_baseline_over=baseline,
            )
            np.testing.assert_array_equal(out.advantages, np.zeros((4, 3), np.float32))
            self.assertEqual(float(out.metrics["zero_std_step_group_fraction"]), 1.0)

    def test_singleton_episode_groups_get_their_raw_return(self):
        rewards = np.array([[1, 2, 0], [0, 0, 5], [3, 0, 0], [0, 0, 0]], np.float32)
        step_mask = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0]], bool)
        out = small_gigpo(
            rewards,
            step_mask,
            np.arange(4, dtype=np.int32),
            np.arange(12, dtype=np.int32).reshape(4, 3),
            normalization="std",
            episode_baseline_over="trajectories",
        )
        # One trajectory per group: mean 0, std 1 -> R / (1 + 1e-6); a state seen once -> A^S = 0.
        expected = np.where(step_mask, np.array([3.0, 5.0, 3.0, 0.0])[:, None] / (1 + 1e-6), 0.0)
        np.testing.assert_allclose(out.advantages, expected, rtol=1e-6)
        np.testing.assert_array_equal(out.step_advantages, np.zeros((4, 3)))

    def test_everything_padded_is_zero_and_finite(self):
        out = small_gigpo(
            np.ones((4, 3), np.float32),
            np.zeros((4, 3), bool),
            np.zeros(4, np.int32),
            np.zeros((4, 3), np.int32),
            normalization="std",
            episode_baseline_over="trajectories",
        )
        np.testing.assert_array_equal(out.advantages, np.zeros((4, 3)))
        np.testing.assert_array_equal(out.step_group_ids, np.full((4, 3), -1))
        self.assertTrue(all(np.isfinite(np.asarray(v)) for v in out.metrics.values()))

    def test_discounted_returns_skip_masked_steps(self):
        rewards = np.array([[1.0, 5.0, 2.0, 3.0, 7.0]], np.float32)
        step_mask = np.array([[True, False, True, True, False]])
        returns = jax.jit(discounted_step_returns)(rewards, step_mask, 0.5)
        # Kept rows (1, 2, 3): G = 1 + 0.5 (2 + 0.5 · 3) = 2.75, 3.5, 3.
        np.testing.assert_allclose(returns, [[2.75, 0.0, 3.5, 3.0, 0.0]], rtol=1e-6)

    def test_observation_elements_encode_bytes_exactly(self):
        floats = jnp.array([[[0.0, 1.5]], [[-0.0, 1.5]], [[0.0, -1.5]]], jnp.float32)
        elements = observation_elements(floats, num_leading_axes=1)
        self.assertEqual(elements.dtype, jnp.uint32)
        np.testing.assert_array_equal(elements[0], elements[1])
        self.assertFalse(np.array_equal(elements[0], elements[2]))
        signed = observation_elements(jnp.array([[-1, 2, 3]], jnp.int8), num_leading_axes=1)
        self.assertEqual(signed.dtype, jnp.uint8)
        np.testing.assert_array_equal(signed, [[255, 2, 3]])
        with jax.enable_x64(True):
            wide = observation_elements(jnp.array([[2**40 + 1]], jnp.int64), num_leading_axes=1)
            self.assertEqual(wide.shape, (1, 2))  # 8-byte elements become two uint32

    def test_precomputed_returns_equal_to_the_computed_ones_give_identical_output(self):
        rng = np.random.default_rng(4)
        rollout = random_rollout(rng, prefix_mask=False)
        gamma = 0.9
        step_mask = rollout["step_mask"]
        episode_returns = jnp.sum(jnp.where(step_mask, rollout["rewards"], 0.0), axis=-1)
        step_returns = discounted_step_returns(rollout["rewards"], step_mask, gamma)

        @jax.jit
        def every_option(
            rewards, step_mask, episode_group_ids, states, invalid, episode_returns, step_returns
        ):
            outputs = []
            for normalization, baseline, penalty in OPTION_COMBINATIONS:
                run = functools.partial(
                    gigpo_advantages,
                    step_mask=step_mask,
                    episode_group_ids=episode_group_ids,
                    anchor_obs=states,
                    gamma=gamma,
                    normalization=normalization,
                    episode_baseline_over=baseline,
                    invalid_action_mask=invalid if penalty else None,
                    num_episode_groups=8,
                )
                outputs.append(
                    (
                        run(rewards),
                        run(rewards, episode_returns=episode_returns),
                        run(rewards, step_returns=step_returns),
                        run(None, episode_returns=episode_returns, step_returns=step_returns),
                    )
                )
            return outputs

        results = every_option(
            rollout["rewards"],
            step_mask,
            rollout["episode_group_ids"],
            rollout["states"].astype(np.int32),
            rollout["invalid"],
            episode_returns,
            step_returns,
        )
        for option, (computed, *precomputed) in zip(OPTION_COMBINATIONS, results):
            for variant, out in zip(("episode", "step", "both"), precomputed):
                for field in GiGPOAdvantages._fields:
                    chex.assert_trees_all_equal(
                        getattr(out, field),
                        getattr(computed, field),
                        custom_message=f"{option} {variant} {field}",
                    )

    def test_custom_returns_are_used_as_given(self):
        # E.g. length-normalised episode returns and KL-shaped step returns (any values work).
        rng = np.random.default_rng(5)
        rollout = random_rollout(rng, prefix_mask=False)
        anchor_obs = render(rollout["states"], "grid_int8", rng)
        lengths = np.maximum(rollout["step_mask"].sum(-1), 1)
        custom_episode = (np.where(rollout["step_mask"], rollout["rewards"], 0).sum(-1) / lengths).astype(
            np.float32
        )
        custom_steps = rng.normal(size=rollout["rewards"].shape).astype(np.float32)
        custom_steps[rollout["states"] % 3 == 0] = 0.25  # some equal-return step groups
        supplied = [dict(episode_returns=custom_episode), dict(step_returns=custom_steps)]
        supplied.append({**supplied[0], **supplied[1]})

        @jax.jit
        def every_option(rewards, step_mask, episode_group_ids, anchor_obs, invalid):
            return [
                gigpo_advantages(
                    rewards,
                    step_mask,
                    episode_group_ids,
                    anchor_obs,
                    gamma=0.95,
                    normalization=normalization,
                    episode_baseline_over=baseline,
                    invalid_action_mask=invalid if penalty else None,
                    num_episode_groups=8,
                    **returns,
                )
                for normalization, baseline, penalty in OPTION_COMBINATIONS
                for returns in supplied
            ]

        results = iter(
            every_option(
                rollout["rewards"],
                rollout["step_mask"],
                rollout["episode_group_ids"],
                anchor_obs,
                rollout["invalid"],
            )
        )
        for normalization, baseline, penalty in OPTION_COMBINATIONS:
            default = gigpo_advantages_reference(
                rollout["rewards"],
                rollout["step_mask"],
                rollout["episode_group_ids"],
                anchor_obs,
                gamma=0.95,
                normalization=normalization,
                episode_baseline_over=baseline,
                invalid_action_mask=rollout["invalid"] if penalty else None,
            )
            for returns in supplied:
                label = f"{normalization} {baseline} {penalty} {sorted(returns)}"
                reference = gigpo_advantages_reference(
                    rollout["rewards"],
                    rollout["step_mask"],
                    rollout["episode_group_ids"],
                    anchor_obs,
                    gamma=0.95,
                    normalization=normalization,
                    episode_baseline_over=baseline,
                    invalid_action_mask=rollout["invalid"] if penalty else None,
                    **returns,
                )
                assert_matches_reference(self, next(results), reference, label)
                # The supplied values changed the advantages they feed (so they were not ignored).
                changed = "episode_advantages" if "episode_returns" in returns else "step_advantages"
                self.assertGreater(np.abs(reference[changed] - default[changed]).max(), 0.1, label)

    def test_returns_without_rewards_need_both(self):
        args = (np.ones((2, 2), bool), np.zeros(2, np.int32), np.zeros((2, 2), np.int32))
        with self.assertRaisesRegex(ValueError, "episode_returns and step_returns"):
            gigpo_advantages(None, *args, step_returns=np.zeros((2, 2), np.float32))
        out = gigpo_advantages(
            None,
            *args,
            episode_returns=np.array([1.0, 3.0], np.float32),
            step_returns=np.array([[2.0, 1.0], [0.0, 5.0]], np.float32),
        )
        # Same state at every step of one episode group: A^S = G − mean over the four steps (2.0).
        np.testing.assert_allclose(out.step_advantages, [[0.0, -1.0], [-2.0, 3.0]])
        np.testing.assert_allclose(out.episode_advantages, [[-1.0, -1.0], [1.0, 1.0]])

    def test_rejects_unknown_options(self):
        args = (
            np.zeros((2, 2), np.float32),
            np.ones((2, 2), bool),
            np.zeros(2, np.int32),
            np.zeros((2, 2), np.int32),
        )
        with self.assertRaisesRegex(ValueError, "normalization"):
            gigpo_advantages(*args, normalization="mean_std_norm")
        with self.assertRaisesRegex(ValueError, "episode_baseline_over"):
            gigpo_advantages(*args, episode_baseline_over="episodes")
