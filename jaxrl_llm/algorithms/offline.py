"""Offline pretraining: an algorithm's `learn` run on batches drawn from a fixed dataset,
then online training that starts from its result.

    algorithm = dqn.make_dqn(config)                      # or make_dqn(config, prefill=dataset)
    train_state, _ = algorithm.init(key)
    train_state, metrics = pretrain_offline(
        algorithm, train_state, dataset, num_steps=2_000, batch_size=64, key=key, to_batch=dqn.offline_batch
    )
    online = starting_from(algorithm, train_state)        # init returns the pretrained train state
    final_state, metrics = training.make_train(online)(key)   # or training.run(online, ...)

With `make_dqn(config)` the online phase starts with an empty replay buffer; with
`make_dqn(config, prefill=dataset)` the dataset is already in it.

`dataset` is any pytree of transitions with leaves `[n, ...]` (e.g. a `rollout.Transition`
from `transitions_from_trajectory` of a good policy's rollouts, or a logged dataset). Each
call of `learn` sees `[batch_size, steps_per_call, ...]` rows drawn uniformly with
replacement (rows first, the layout `learn` splits across devices); `to_batch` wraps them
in the algorithm's batch type. The loop is one `lax.scan`, jitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dataclasses

import jax
import jax.numpy as jnp

from jaxrl_llm.training.algorithm import Algorithm


def sample_dataset(dataset: Any, key: jax.Array, batch_size: int, steps_per_call: int = 1) -> Any:
    """Rows of `dataset` (leaves `[n, ...]`) drawn uniformly with replacement, laid out
    `[batch_size, steps_per_call, ...]`."""
    n = jax.tree.leaves(dataset)[0].shape[0]
    index = jax.random.randint(key, (batch_size, steps_per_call), 0, n)
    return jax.tree.map(lambda x: x[index], dataset)


def pretrain_offline(
    algorithm_or_learn: Algorithm | Callable[..., tuple[Any, dict[str, jax.Array]]],
    train_state: Any,
    dataset: Any,
    num_steps: int,
    batch_size: int,
    key: jax.Array,
    *,
    steps_per_call: int = 1,
    to_batch: Callable[[Any], Any] | None = None,
    jit: bool = True,
) -> tuple[Any, dict[str, jax.Array]]:
    """Runs `learn` on dataset batches for `num_steps` gradient steps (single device).

    Args:
      algorithm_or_learn: an `Algorithm` (its `learn` is used) or a
        `learn(train_state, batch, key, axis_name) -> (train_state, metrics)`.
      train_state: where to start, e.g. from `algorithm.init(key)[0]`.
      dataset: transitions, leaves `[n, ...]`.
      num_steps: gradient steps in all; a multiple of `steps_per_call`.
      batch_size: rows per gradient step.
      key: PRNG key of the sampling (and of `learn`).
      steps_per_call: gradient steps per `learn` call (the second batch axis; DQN takes one
        gradient step per column).
      to_batch: turns `[batch_size, steps_per_call, ...]` rows into `learn`'s batch
        (identity by default; `dqn.offline_batch` for DQN).
      jit: compile the loop (False runs it eagerly, e.g. inside an outer jit).

    Returns:
      `(train_state, metrics)` with every metric stacked over the `num_steps //
      steps_per_call` calls.
    """
    learn = algorithm_or_learn.learn if isinstance(algorithm_or_learn, Algorithm) else algorithm_or_learn
    if num_steps < 1 or batch_size < 1 or steps_per_call < 1 or num_steps % steps_per_call:
        raise ValueError(
            f"pretrain_offline: num_steps={num_steps}, batch_size={batch_size} and "
            f"steps_per_call={steps_per_call} must be >= 1, with steps_per_call dividing num_steps."
        )
    if not jax.tree.leaves(dataset):
        raise ValueError("pretrain_offline: the dataset has no arrays.")
    to_batch = to_batch or (lambda rows: rows)

    def loop(train_state, dataset, key):
        def call(state, call_key):
            sample_key, learn_key = jax.random.split(call_key)
            rows = sample_dataset(dataset, sample_key, batch_size, steps_per_call)
            return learn(state, to_batch(rows), learn_key, None)

        return jax.lax.scan(call, train_state, jax.random.split(key, num_steps // steps_per_call))

    if jit:
        loop = jax.jit(loop)
    dataset = jax.tree.map(jnp.asarray, dataset)
    return loop(train_state, dataset, key)


def starting_from(algorithm: Algorithm, train_state: Any) -> Algorithm:
    """`algorithm` whose `init` returns `train_state` (e.g. pretrained parameters, their
    optimiser state and target network) with a fresh `collect_state` from `algorithm.init`.

    `train_state` is compiled into `init` as a constant, so every seed of a vmapped run
    starts from it; it must have the structure `algorithm.init` produces. Its counters
    and optimiser state carry over (a learning-rate schedule continues where pretraining
    left it; reset `opt_state` with the algorithm's optimiser to start it afresh).
    """

    def init(key: jax.Array):
        fresh, collect_state = algorithm.init(key)
        if jax.tree.structure(fresh) != jax.tree.structure(train_state):
            raise ValueError(
                "starting_from: train_state does not have the structure of the algorithm's own "
                f"(got {jax.tree.structure(train_state)}, expected {jax.tree.structure(fresh)})."
            )
        return jax.tree.map(jnp.asarray, train_state), collect_state

    return dataclasses.replace(algorithm, init=init)


__all__ = ["pretrain_offline", "sample_dataset", "starting_from"]
