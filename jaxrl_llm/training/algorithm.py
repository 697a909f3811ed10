"""The algorithm contract, and the composer that turns an algorithm into a training loop.

Every method is `make_<algo>(config) -> Algorithm`, a bundle of three pure functions:

    init(key)                                  -> (train_state, collect_state)
    collect(collect_state, params, key)        -> (collect_state, batch, metrics)
    learn(train_state, batch, key, axis_name)  -> (train_state, metrics)

(both `collect` and `learn` also take `frozen=` when the algorithm declares frozen arrays).

`collect` produces one update's data with the current `train_state.params`: an
environment scan, LM sampling, a replay-buffer sample or a dataset read. `learn` is the
per-device gradient phase; every leaf of `batch` is split along its leading axis when it
runs data-parallel, and it averages gradients and statistics over `axis_name` (None on
one device). `collect_state` holds whatever `collect` carries from one update to the
next (environment states, a replay buffer, a reference policy, a dataset cursor).

`compose(algorithm, parallel)` builds the update `collect -> learn` once, with `learn`
compiled by `build_step` for one device, `shard_map` or `pmap`. The result drives both
`make_train(...)(key)` (the whole run as one jittable, vmappable function) and
`training.run` (chunks, checkpoints, metrics, progress bar, resume).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from jaxrl_llm.training.parallel import Mode, build_step, data_mesh

Metrics = dict[str, Any]


@dataclass(frozen=True)
class Algorithm:
    """What a method provides; `training.compose` supplies the rest (see the module docstring).

    `host_collect`: `collect` runs Python between jitted parts (LM sampling scored by
    Python reward functions) and is called once per update from the host; otherwise
    `collect` is jittable and whole chunks of updates compile into one `lax.scan`.

    `frozen`: arrays `collect` and `learn` read but never change that are too large to
    compile in as constants or to checkpoint (an LM's base and reference weights, rebuilt
    by `make_<algo>`). When set, both are called with the keyword argument `frozen=`: the
    sampler needs the base weights under LoRA and the reference policy scores the rows.
    It enters every compiled program as an argument of its own (replicated across devices, or
    laid out by the rule table under "sharded"), never as a constant, and, unlike the train
    state, is never donated to the learn step; it is not part of the checkpointed `LoopState`.
    """

    init: Callable[[jax.Array], tuple[Any, Any]]
    collect: Callable[[Any, Any, jax.Array], tuple[Any, Any, Metrics]]
    learn: Callable[..., tuple[Any, Metrics]]
    num_updates: int
    frames_per_update: int
    progress_metric: str = "episode_return_mean"
    loss_metric: str = "loss"
    host_collect: bool = False
    frame_name: str = "frame"
    """What one of `frames_per_update` is: 'frame' (env step), 'completion', 'sequence'..."""
    raw_progress_metric: str | None = None
    """A noisier per-update metric the curve draws faintly under `progress_metric`."""
    frozen: Any = None


@struct.dataclass
class LoopState:
    """The runner state of a composed algorithm (what checkpoints hold)."""

    train_state: Any
    collect_state: Any
    key: jax.Array


def _owned(train_state: Any) -> Any:
    """`train_state` with its arrays copied: the step donates the train state's buffers, which
    must not be arrays anything else still reads (the caller's loaded weights, the frozen
    reference that full fine-tuning starts from). Transient: the copies become the step's own
    buffers, and a jitted `init` returns fresh arrays anyway."""
    return jax.tree.map(lambda leaf: jnp.copy(leaf) if isinstance(leaf, jax.Array) else leaf, train_state)


def is_spent(state: Any) -> bool:
    """Whether an array of `state` was donated to a step (its buffer is gone); False while tracing."""
    return any(
        isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and x.is_deleted() for x in jax.tree.leaves(state)
    )


def _check_splits(batch: Any, num_devices: int) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        rows = leaf.shape[0] if leaf.ndim else 1
        if rows % num_devices:
            name = jax.tree_util.keystr(path)
            raise ValueError(
                f"The batch leaf {name} has {rows} rows, which do not split evenly over {num_devices} "
                "devices: choose sizes (environments, groups, prompts, batch size) divisible by the "
                "device count, or run with fewer devices."
            )


def compose(algorithm: Algorithm, parallel: Mode = "single", mesh: Mesh | None = None, donate_state: bool = True):
    """The `TrainFunctions` (init, update) of `algorithm`, with `learn` run by `parallel`.

    `update(LoopState) -> (LoopState, metrics)` splits the state's key into a collect
    and a learn key, collects with the current parameters and learns on the batch;
    the metrics are the union of both (learn's win on a name clash). With `donate_state`
    the learn step writes the new train state into the old one's buffers (an LM's weights and
    optimizer moments are not held twice), so a state passed to `update` is spent: keep the
    returned one (False keeps every state readable, at that memory cost).
    """
    from jaxrl_llm.training.loop import TrainFunctions

    place = replicate = lambda tree: tree  # noqa: E731  (where init's state and the frozen arrays live)
    if parallel == "sharded":
        from jaxrl_llm.training.parallel import replicate as replicate_on
        from jaxrl_llm.training.sharding import batch_shards, make_mesh, place_on_mesh

        mesh = mesh or make_mesh({"data": jax.device_count()})
        place, replicate = partial(place_on_mesh, mesh=mesh), partial(replicate_on, mesh=mesh)
    elif parallel != "single":
        mesh = mesh or data_mesh()
    frozen_arrays = place(algorithm.frozen)
    step = build_step(algorithm.learn, parallel, mesh, donate_state=donate_state)
    if parallel == "single":
        num_devices = 1
    elif parallel == "sharded":
        num_devices = batch_shards(mesh)  # the batch's rows split over the batch axes only
    else:
        num_devices = mesh.devices.size

    def init(key: jax.Array) -> LoopState:
        key, init_key = jax.random.split(key)
        train_state, collect_state = algorithm.init(init_key)
        if donate_state:
            train_state = _owned(train_state)
        # sharded: laid out as the step keeps it, so a checkpoint restores into that layout too
        # (and, across processes, global arrays: every process computes the same init)
        return LoopState(place(train_state), replicate(collect_state), replicate(key))

    def update(state: LoopState, frozen: Any = frozen_arrays) -> tuple[LoopState, Metrics]:
        if is_spent(state.train_state):
            raise ValueError(
                "This train state was consumed by an earlier update: the learn step donates it (writes the "
                "new state into its buffers). Pass the state that update returned, or compose the "
                "algorithm with donate_state=False to keep every state readable."
            )
        key, collect_key, learn_key = jax.random.split(state.key, 3)
        extra = {} if algorithm.frozen is None else {"frozen": frozen}
        collect_state, batch, collect_metrics = algorithm.collect(
            state.collect_state, state.train_state.params, collect_key, **extra
        )
        _check_splits(batch, num_devices)
        train_state, learn_metrics = step(state.train_state, batch, learn_key, frozen)
        return LoopState(train_state, collect_state, key), {**collect_metrics, **learn_metrics}

    return TrainFunctions(
        init,
        update,
        algorithm.num_updates,
        algorithm.frames_per_update,
        progress_metric=algorithm.progress_metric,
        loss_metric=algorithm.loss_metric,
        host_update=algorithm.host_collect,
        frame_name=algorithm.frame_name,
        raw_progress_metric=algorithm.raw_progress_metric,
        frozen=frozen_arrays,
    )
