"""Replay buffer: FIFO overwrite order, sampling only written slots, can_sample, priorities."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm.rollout import (
    PrioritizedSample,
    Transition,
    example_transition,
    importance_weights,
    make_replay_buffer,
    run_steps,
    reset,
    transitions_from_trajectory,
)


def item(value):
    """Items whose every leaf encodes `value` (an int array `[n]`)."""
    value = jnp.asarray(value)
    return {"id": value.astype(jnp.int32), "obs": jnp.stack([value, -value], -1).astype(jnp.float32)}


EXAMPLE = {"id": jnp.zeros((), jnp.int32), "obs": jnp.zeros((2,), jnp.float32)}


def stored_ids(buffer, state):
    """The ids in the ring, oldest first (reads the flashbax state's single row)."""
    ids = np.asarray(state.experience["id"])[0]
    size = int(buffer.size(state))
    start = int(state.current_index) if bool(state.is_full) else 0
    return [int(ids[(start + i) % buffer.capacity]) for i in range(size)]


class ReplayTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_wraparound_overwrites_oldest_first(self):
        buffer = make_replay_buffer(capacity=7, min_size=1, sample_batch_size=4, add_batch_size=3)
        add = self.variant(buffer.add)
        state = buffer.init(EXAMPLE)
        for start in (1, 4, 7):  # ids 1..9 into 7 slots: 1 and 2 are overwritten
            state = add(state, item(np.arange(start, start + 3)))
        assert int(buffer.size(state)) == 7
        assert bool(state.is_full)
        assert stored_ids(buffer, state) == [3, 4, 5, 6, 7, 8, 9]
        # slot order: 8, 9 wrote slots 0, 1 after 3..7 stayed in 2..6
        np.testing.assert_array_equal(np.asarray(state.experience["id"])[0], [8, 9, 3, 4, 5, 6, 7])
        state = add(state, item(np.arange(10, 13)))
        assert stored_ids(buffer, state) == [6, 7, 8, 9, 10, 11, 12]

    @chex.variants(with_jit=True, without_jit=True)
    def test_samples_only_written_slots(self):
        buffer = make_replay_buffer(capacity=64, min_size=1, sample_batch_size=256, add_batch_size=5)
        add, sample = self.variant(buffer.add), self.variant(buffer.sample)
        state = buffer.init(EXAMPLE)
        state = add(state, item(np.arange(101, 106)))
        state = add(state, item(np.arange(201, 206)))  # 10 of 64 slots written; the rest hold zeros
        seen = set()
        for i in range(8):
            drawn = sample(state, jax.random.PRNGKey(i))
            ids = np.asarray(drawn["id"])
            np.testing.assert_array_equal(np.asarray(drawn["obs"])[:, 0], ids)  # leaves stay paired
            seen |= set(ids.tolist())
        written = set(range(101, 106)) | set(range(201, 206))
        assert seen == written  # never an empty slot, and every written slot is reachable

    @chex.variants(with_jit=True, without_jit=True)
    def test_can_sample_threshold(self):
        buffer = make_replay_buffer(capacity=10, min_size=5, sample_batch_size=2, add_batch_size=2)
        add, can_sample = self.variant(buffer.add), self.variant(buffer.can_sample)
        state = buffer.init(EXAMPLE)
        ready = []
        for i in range(8):  # sizes 2, 4, 6, 8, 10, 10, ...
            ready.append(bool(can_sample(state)))
            state = add(state, item([i, i]))
        ready.append(bool(can_sample(state)))
        assert ready == [False, False, False, True, True, True, True, True, True]

    def test_add_checks_batch_size_and_casts_dtypes(self):
        buffer = make_replay_buffer(capacity=8, min_size=1, sample_batch_size=2, add_batch_size=2)
        state = buffer.init(EXAMPLE)
        with pytest.raises(ValueError, match="add_batch_size=2"):
            buffer.add(state, item([1, 2, 3]))
        state = buffer.add(state, {"id": np.array([1, 2]), "obs": np.ones((2, 2))})  # int64/float64 in
        assert state.experience["obs"].dtype == jnp.float32

    def test_prefill_keeps_the_newest_capacity_items(self):
        buffer = make_replay_buffer(capacity=6, min_size=6, sample_batch_size=2, add_batch_size=2)
        state = buffer.prefill(buffer.init(EXAMPLE), item(np.arange(1, 11)))
        assert stored_ids(buffer, state) == [5, 6, 7, 8, 9, 10]
        assert bool(buffer.can_sample(state))
        state = buffer.add(state, item([11, 12]))
        assert stored_ids(buffer, state) == [7, 8, 9, 10, 11, 12]

    def test_invalid_arguments_name_the_field(self):
        with pytest.raises(ValueError, match="min_size"):
            make_replay_buffer(capacity=4, min_size=5, sample_batch_size=1, add_batch_size=1)
        with pytest.raises(ValueError, match="add_batch_size"):
            make_replay_buffer(capacity=4, min_size=1, sample_batch_size=1, add_batch_size=5)
        with pytest.raises(ValueError, match="capacity"):
            make_replay_buffer(capacity=0, min_size=1, sample_batch_size=1, add_batch_size=1)

    def test_vmaps_over_independent_buffers(self):
        buffer = make_replay_buffer(capacity=4, min_size=1, sample_batch_size=3, add_batch_size=2)
        states = jax.vmap(lambda _: buffer.init(EXAMPLE))(jnp.arange(2))
        states = jax.vmap(buffer.add)(states, jax.vmap(item)(jnp.array([[1, 2], [3, 4]])))
        drawn = jax.jit(jax.vmap(buffer.sample))(states, jax.random.split(jax.random.PRNGKey(0), 2))
        assert set(np.asarray(drawn["id"][0]).tolist()) <= {1, 2}
        assert set(np.asarray(drawn["id"][1]).tolist()) <= {3, 4}


def test_prioritized_sampling_is_proportional_to_priority():
    """alpha = 1: P(i) = p_i / sum p. 40,000 stratified draws; the tolerance 0.015 is over 6
    standard deviations of a frequency even for independent draws (sd <= 0.0025)."""
    buffer = make_replay_buffer(
        capacity=8,
        min_size=1,
        sample_batch_size=1000,
        add_batch_size=4,
        prioritized=True,
        priority_exponent=1.0,
    )
    add, sample, set_priorities = jax.jit(buffer.add), jax.jit(buffer.sample), jax.jit(buffer.set_priorities)
    state = add(buffer.init(EXAMPLE), item([0, 1, 2, 3]))
    first = sample(state, jax.random.PRNGKey(0))
    assert isinstance(first, PrioritizedSample)
    np.testing.assert_allclose(first.probabilities, 0.25, rtol=1e-6)  # new items share the max priority
    priorities = np.array([1.0, 2.0, 3.0, 4.0])
    state = set_priorities(state, jnp.arange(4), jnp.asarray(priorities))
    draws = jax.jit(jax.vmap(buffer.sample, in_axes=(None, 0)))(
        state, jax.random.split(jax.random.PRNGKey(1), 40)
    )
    ids = np.asarray(draws.experience["id"]).ravel()
    np.testing.assert_array_equal(ids, np.asarray(draws.indices).ravel())  # ids were written at 0..3
    frequencies = np.bincount(ids, minlength=8) / ids.size
    expected = np.concatenate([priorities / priorities.sum(), np.zeros(4)])
    np.testing.assert_allclose(frequencies, expected, atol=0.015)
    np.testing.assert_allclose(
        np.asarray(draws.probabilities).ravel(), expected[ids], rtol=1e-5
    )  # reported P(i) matches
    # importance weights (N P(i))^-beta / max: the rarest item gets weight 1
    weights = importance_weights(jnp.asarray(expected[:4]), 4, 1.0)
    np.testing.assert_allclose(weights, (4 * expected[:4]) ** -1.0 / (4 * expected[0]) ** -1.0, rtol=1e-6)


def test_prioritized_new_items_get_the_max_priority_and_overwrite_fifo():
    buffer = make_replay_buffer(
        capacity=4,
        min_size=1,
        sample_batch_size=2000,
        add_batch_size=2,
        prioritized=True,
        priority_exponent=1.0,
    )
    add, sample = jax.jit(buffer.add), jax.jit(buffer.sample)
    state = add(buffer.init(EXAMPLE), item([1, 2]))
    state = jax.jit(buffer.set_priorities)(state, jnp.array([0, 1]), jnp.array([1.0, 3.0]))
    state = add(state, item([3, 4]))  # enter with priority 3 (the max recorded)
    state = add(state, item([5, 6]))  # overwrite 1 and 2, also priority 3
    drawn = sample(state, jax.random.PRNGKey(0))
    ids = np.asarray(drawn.experience["id"])
    assert set(ids.tolist()) == {3, 4, 5, 6}
    np.testing.assert_allclose(np.asarray(drawn.probabilities), 0.25, rtol=1e-6)


def test_transitions_from_trajectory_are_step_major_with_pre_reset_next_obs():
    from test_evaluate import Walk

    env = Walk(goal=2)
    params = env.default_params
    policy = lambda p, obs, key: (jnp.ones(obs.shape[0], jnp.int32), jnp.zeros(obs.shape[0]), {})
    state = reset(jax.random.PRNGKey(0), env, params, num_envs=3)
    trajectory, _ = jax.jit(run_steps, static_argnums=(1, 3, 6))(
        jax.random.PRNGKey(1), env, params, policy, None, state, 6
    )
    transitions = transitions_from_trajectory(trajectory)
    assert isinstance(transitions, Transition)
    assert transitions.obs.shape == (18, 2) and transitions.action.shape == (18,)
    np.testing.assert_array_equal(transitions.obs[3:6], trajectory.obs[1])  # step 1, envs 0..2
    np.testing.assert_array_equal(transitions.terminated, trajectory.terminated.reshape(-1))
    ended = np.asarray(transitions.terminated)
    assert ended.any()
    # at a terminal step next_obs is the final observation (position 2), not the reset one (0)
    np.testing.assert_array_equal(np.asarray(transitions.next_obs)[ended, 0], 2.0)
    np.testing.assert_array_equal(np.asarray(transitions.obs)[ended, 0], 1.0)

    buffer = make_replay_buffer(capacity=36, min_size=18, sample_batch_size=5, add_batch_size=18)
    example = example_transition(trajectory.obs[0, 0], trajectory.action[0, 0])
    state = jax.jit(buffer.add)(buffer.init(example), transitions)
    assert bool(buffer.can_sample(state))
    drawn = jax.jit(buffer.sample)(state, jax.random.PRNGKey(2))
    assert drawn.obs.shape == (5, 2) and drawn.terminated.dtype == jnp.bool_
