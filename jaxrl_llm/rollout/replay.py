"""Experience replay as pure functions over a pytree state (flashbax underneath).

`make_replay_buffer(capacity, min_size, sample_batch_size, add_batch_size)` returns a
`ReplayBuffer` bundle of pure, jittable and vmappable functions, flashbax style:

    buffer = make_replay_buffer(capacity=100_000, min_size=1_000, sample_batch_size=64, add_batch_size=4)
    state = buffer.init(example_transition)            # one unbatched item fixes shapes/dtypes
    state = buffer.add(state, transitions)             # leaves [add_batch_size, ...]
    batch = buffer.sample(state, key)                  # leaves [sample_batch_size, ...]
    ready = buffer.can_sample(state)                   # bool scalar: size(state) >= min_size

The store is a FIFO ring of `capacity` items: once full, each add overwrites the oldest
rows. Uniform sampling draws, with replacement, only among the rows written so far (never
an empty slot). With `prioritized=True`, `sample` returns a `PrioritizedSample` (items,
their indices and sampling probabilities `P(i) = p_i^alpha / sum_k p_k^alpha`, Schaul et
al. 2016, "Prioritized Experience Replay") and `set_priorities(state, indices, p)` updates
them; new items enter with the largest priority recorded so far.

The state is a flashbax buffer state: a pytree of arrays, so it lives in a training
loop's runner state, is carried through `lax.scan` and round-trips through orbax
checkpoints (a resumed run continues with the same buffer contents).

`Transition` is the item an off-policy method stores; `transitions_from_trajectory`
flattens a time-major `[T, N]` `Trajectory` from `run_steps` into `[T * N]` transitions.
Bootstrapping uses `terminated` only: `next_obs` is the observation before any auto-reset,
so a truncated step still bootstraps from its true successor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flashbax
import jax
import jax.numpy as jnp
from flax import struct

from jaxrl_llm.rollout.trajectory import Trajectory

ReplayState = Any
"""A flashbax buffer state (`TrajectoryBufferState` or its prioritised variant): a pytree."""


@struct.dataclass
class Transition:
    """One environment step, leaves `[...]` per item (`[B, ...]` in a batch).

    `terminated`: the episode ended in a terminal state (no bootstrap). `truncated`: it was
    cut by a time limit (bootstrap from `next_obs`, which precedes any auto-reset).
    """

    obs: Any
    action: jax.Array
    reward: jax.Array
    next_obs: Any
    terminated: jax.Array
    truncated: jax.Array


@struct.dataclass
class PrioritizedSample:
    """What a prioritized buffer's `sample` returns: `experience` leaves `[B, ...]`,
    `indices[B]` (pass to `set_priorities`) and sampling `probabilities[B]`."""

    experience: Any
    indices: jax.Array
    probabilities: jax.Array


@dataclass(frozen=True)
class ReplayBuffer:
    """Pure functions over a `ReplayState`; see the module docstring.

    `prefill(state, items)` adds any number `n` of items (leaves `[n, ...]`; only the newest
    `capacity` are kept when `n > capacity`), e.g. a fixed offline dataset before online
    training. `size(state)` is the number of stored items (int32 scalar).
    `set_priorities` is None unless `prioritized`.
    """

    init: Callable[[Any], ReplayState]
    add: Callable[[ReplayState, Any], ReplayState]
    sample: Callable[[ReplayState, jax.Array], Any]
    can_sample: Callable[[ReplayState], jax.Array]
    size: Callable[[ReplayState], jax.Array]
    prefill: Callable[[ReplayState, Any], ReplayState]
    set_priorities: Callable[[ReplayState, jax.Array, jax.Array], ReplayState] | None
    capacity: int
    min_size: int
    sample_batch_size: int
    add_batch_size: int
    prioritized: bool


def _check(name: str, value: int, low: int, high: int | None = None, why: str = "") -> None:
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"make_replay_buffer: {name}={value!r} is invalid: must be {allowed}{why}.")


def _rows(tree: Any) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves):
        raise ValueError("replay buffer: items must have a leading batch axis on every leaf.")
    rows = {jnp.shape(x)[0] for x in leaves}
    if len(rows) != 1:
        raise ValueError(f"replay buffer: leaves disagree on the batch size (leading axes {sorted(rows)}).")
    return rows.pop()


def make_replay_buffer(
    capacity: int,
    min_size: int,
    sample_batch_size: int,
    add_batch_size: int,
    prioritized: bool = False,
    priority_exponent: float = 0.6,
) -> ReplayBuffer:
    """A FIFO replay buffer of `capacity` items (flashbax's item buffers underneath).

    Args:
      capacity: items kept; the oldest are overwritten first.
      min_size: `can_sample` is True once this many items were added (>= 1).
      sample_batch_size: items per `sample` call (drawn with replacement).
      add_batch_size: items per `add` call (leading axis of every leaf; checked).
      prioritized: proportional prioritized replay (sum tree); `sample` then returns a
        `PrioritizedSample` and `set_priorities` is available.
      priority_exponent: alpha of prioritized replay (0 is uniform).
    """
    _check("capacity", capacity, 1)
    _check("min_size", min_size, 1, capacity, f" (capacity={capacity})")
    _check("sample_batch_size", sample_batch_size, 1)
    _check("add_batch_size", add_batch_size, 1, capacity, f" (capacity={capacity})")
    if not 0.0 <= priority_exponent <= 1.0:
        raise ValueError(
            f"make_replay_buffer: priority_exponent={priority_exponent!r} is invalid: must lie in [0, 1]."
        )
    # flashbax draws at most `capacity` items per call; larger batches (with replacement,
    # so meaningful) are drawn as `num_draws` equal calls on split keys.
    num_draws = -(-sample_batch_size // capacity)
    draw_size = -(-sample_batch_size // num_draws)
    if prioritized:
        device = jax.default_backend()
        inner = flashbax.make_prioritised_item_buffer(
            max_length=capacity,
            min_length=min_size,
            sample_batch_size=draw_size,
            add_batches=True,
            priority_exponent=priority_exponent,
            device=device if device in ("cpu", "gpu", "tpu") else "cpu",
        )
    else:
        inner = flashbax.make_item_buffer(
            max_length=capacity, min_length=min_size, sample_batch_size=draw_size, add_batches=True
        )

    def init(example_item: Any) -> ReplayState:
        """An empty buffer for items shaped like `example_item` (one item, no batch axis)."""
        return inner.init(jax.tree.map(jnp.asarray, example_item))

    def _cast(state: ReplayState, items: Any) -> Any:
        # flashbax asserts equal dtypes: accept e.g. numpy float64 / Python ints as stored.
        return jax.tree.map(lambda x, stored: jnp.asarray(x, stored.dtype), items, state.experience)

    def add(state: ReplayState, items: Any) -> ReplayState:
        """Writes `items` (leaves `[add_batch_size, ...]`) over the oldest slots."""
        rows = _rows(items)
        if rows != add_batch_size:
            raise ValueError(
                f"replay buffer add: got {rows} items but add_batch_size={add_batch_size}; "
                "use prefill(state, items) to add another number of items."
            )
        return inner.add(state, _cast(state, items))

    def prefill(state: ReplayState, items: Any) -> ReplayState:
        """Adds any number of items (leaves `[n, ...]`); only the newest `capacity` survive."""
        rows = _rows(items)
        if rows > capacity:
            items = jax.tree.map(lambda x: x[rows - capacity :], items)
        return inner.add(state, _cast(state, items))

    def sample(state: ReplayState, key: jax.Array) -> Any:
        """`sample_batch_size` items drawn with replacement among the stored ones.

        Meaningful only when `can_sample(state)`: an empty buffer returns zeros.
        """
        if num_draws == 1:
            drawn = inner.sample(state, key)
        else:
            draws = jax.vmap(inner.sample, in_axes=(None, 0))(state, jax.random.split(key, num_draws))
            merge = lambda x: x.reshape(-1, *x.shape[2:])[:sample_batch_size]
            drawn = jax.tree.map(merge, draws)
        if prioritized:
            return PrioritizedSample(drawn.experience, drawn.indices, drawn.probabilities)
        return drawn.experience

    def size(state: ReplayState) -> jax.Array:
        return jnp.where(state.is_full, capacity, state.current_index).astype(jnp.int32)

    def set_priorities(state: ReplayState, indices: jax.Array, priorities: jax.Array) -> ReplayState:
        """Sets the priorities `p_i >= 0` (before the exponent) of the items at `indices`."""
        return inner.set_priorities(state, indices, jnp.asarray(priorities, jnp.float32))

    return ReplayBuffer(
        init=init,
        add=add,
        sample=sample,
        can_sample=inner.can_sample,
        size=size,
        prefill=prefill,
        set_priorities=set_priorities if prioritized else None,
        capacity=capacity,
        min_size=min_size,
        sample_batch_size=sample_batch_size,
        add_batch_size=add_batch_size,
        prioritized=prioritized,
    )


def importance_weights(probabilities: jax.Array, size: jax.Array, beta: float | jax.Array) -> jax.Array:
    """Prioritized replay's correction `w_i = (size * P(i))^-beta / max_j w_j` over a batch.

    `probabilities[B]` of the sampled items, `size` the number of stored items. Weights
    lie in (0, 1]; `beta = 0` gives all ones.
    """
    weights = (size * jnp.maximum(probabilities, 1e-12)) ** (-beta)
    return weights / weights.max()


def transitions_from_trajectory(trajectory: Trajectory) -> Transition:
    """A time-major `[T, N]` `Trajectory` as `[T * N]` transitions, step-major (all envs of
    step 0, then step 1, ...), so adding them keeps their time order in the ring.

    Every step is kept, including those a single-episode rollout marks `valid=False`;
    pass trajectories of continuing (auto-resetting) rollouts.
    """
    flat = lambda x: x.reshape(-1, *x.shape[2:])
    return Transition(
        obs=jax.tree.map(flat, trajectory.obs),
        action=flat(trajectory.action),
        reward=flat(trajectory.reward),
        next_obs=jax.tree.map(flat, trajectory.next_obs),
        terminated=flat(trajectory.terminated),
        truncated=flat(trajectory.truncated),
    )


def example_transition(obs: Any, action: Any) -> Transition:
    """One zero `Transition` shaped like an unbatched `obs` and `action` (for `buffer.init`)."""
    zeros = lambda x: jnp.zeros(jnp.shape(x), jnp.asarray(x).dtype)
    return Transition(
        obs=jax.tree.map(zeros, obs),
        action=zeros(action),
        reward=jnp.zeros((), jnp.float32),
        next_obs=jax.tree.map(zeros, obs),
        terminated=jnp.zeros((), bool),
        truncated=jnp.zeros((), bool),
    )
