"""Run one train step single-device, under `jax.shard_map` on a Mesh, under `jax.pmap`, or as a
global-view `jax.jit` with the state sharded by rules ("sharded": FSDP / tensor parallelism).

A step is written once, as a function of a *per-device* batch:

    step_fn(state, batch, key, axis_name) -> (state, metrics)

where `axis_name` is None on a single device and the mesh/pmap axis otherwise; the
step reduces gradients and statistics with `lax.pmean`/`lax.psum` over `axis_name`
(see `reduce_mean`). `state` and `key` are replicated; every leaf of `batch` is split
along its leading axis across devices. In "sharded" mode the step sees the global batch with
`axis_name=None` (single-device code), its state is laid out by `training/sharding.py`'s rule
table on a `data × fsdp × tensor` mesh and XLA's SPMD partitioner inserts the collectives. All
paths must give the same numbers: tests check it on 8 forced CPU devices.

Known trap on few-core CPU hosts with forced devices: letting many jit/shard_map
steps with collectives run ahead asynchronously can abort the XLA CPU runtime
("Termination timeout for all reduce"). Callers must bound the steps in flight, e.g.
block on each step's metrics as `Trainer` and the tests do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

StepFn = Callable[..., tuple[Any, dict[str, jax.Array]]]
Mode = Literal["single", "shard_map", "pmap", "sharded"]
DATA_AXIS = "data"


def reduce_mean(x: Any, axis_name: str | None) -> Any:
    """`lax.pmean` over `axis_name`, identity on a single device."""
    return x if axis_name is None else jax.lax.pmean(x, axis_name)


def reduce_sum(x: Any, axis_name: str | None) -> Any:
    """`lax.psum` over `axis_name`, identity on a single device."""
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def shard_index(axis_name: str | None) -> jax.Array:
    """This device's position along `axis_name` (0 on a single device)."""
    return jnp.int32(0) if axis_name is None else jax.lax.axis_index(axis_name)


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh with axis `data` over the first `num_devices` devices (all by default)."""
    devices = jax.devices()
    num_devices = len(devices) if num_devices is None else num_devices
    if num_devices > len(devices):
        raise ValueError(
            f"data_mesh: asked for {num_devices} devices but only {len(devices)} exist; on CPU "
            f"set XLA_FLAGS=--xla_force_host_platform_device_count={num_devices} before importing jax."
        )
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


def build_step(step_fn: StepFn, mode: Mode = "single", mesh: Mesh | None = None) -> Callable:
    """Compiles `step_fn` for `mode`; the result is called as `step(state, batch, key)`.

    For "shard_map" and "pmap" the returned function takes and returns the *global*
    (unsplit) state and batch, so its callers do not change with the mode.
    """
    if mode == "single":
        return jax.jit(partial(step_fn, axis_name=None))
    if mode == "sharded" and mesh is None:
        from jaxrl_llm.training.sharding import make_mesh

        mesh = make_mesh({DATA_AXIS: jax.device_count()})
    mesh = mesh or data_mesh()
    if mode == "shard_map":
        # check_vma=False: with varying-manual-axes checking on, `grad` of a per-device
        # loss followed by `pmean` of the grads was measured to scale grads by the
        # device count; without it the numbers equal pmap's and the single device's.
        sharded = jax.shard_map(
            partial(step_fn, axis_name=DATA_AXIS),
            mesh=mesh,
            in_specs=(P(), P(DATA_AXIS), P()),
            out_specs=(P(), P()),
            check_vma=False,
        )
        return jax.jit(sharded)
    if mode == "pmap":
        return _pmapped(step_fn, mesh)
    if mode == "sharded":
        return _global_view(step_fn, mesh)
    raise ValueError(f"build_step: mode={mode!r} is invalid; use 'single', 'shard_map', 'pmap' or 'sharded'.")


def sharded_program(step_fn: StepFn, mesh: Mesh, state, batch) -> tuple[Callable, tuple]:
    """`(program, in_shardings)`: the `jax.jit` of the single-device step with the state sharded
    by the rule table, the batch's rows split over the mesh's batch axes and metrics
    replicated, for arguments shaped like `state` and `batch` (also what a test lowers to read
    the compiled step's collectives)."""
    import flax.linen as nn

    from jaxrl_llm.training.sharding import activation_rules, batch_sharding, tree_shardings

    replicated = NamedSharding(mesh, P())

    def traced_step(state, batch, key):
        # the model's activation constraints read these rules while the step is traced
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(activation_rules(mesh)):
            return step_fn(state, batch, key, axis_name=None)

    state_shardings = tree_shardings(state, mesh)
    in_shardings = (state_shardings, jax.tree.map(lambda _: batch_sharding(mesh), batch), replicated)
    program = jax.jit(traced_step, in_shardings=in_shardings, out_shardings=(state_shardings, replicated))
    return program, in_shardings


def _global_view(step_fn: StepFn, mesh: Mesh) -> Callable:
    """`sharded_program`, compiled once per state/batch signature (on first use, reused after).
    The state is not donated: it may hold the algorithm's frozen arrays, which later updates
    read again."""
    programs: dict = {}

    def step(state, batch, key):
        leaves = jax.tree.leaves((state, batch))
        signature = (jax.tree.structure((state, batch)), tuple((np.shape(x), jnp.result_type(x)) for x in leaves))
        if signature not in programs:
            programs[signature] = sharded_program(step_fn, mesh, state, batch)
        program, in_shardings = programs[signature]
        # arguments laid out otherwise (a batch collected on replicated arrays, a restored state)
        # move to the program's layout first; jit refuses committed arrays that differ
        return program(*jax.device_put((state, batch, key), in_shardings))

    return step


def _pmapped(step_fn: StepFn, mesh: Mesh) -> Callable:
    devices = list(mesh.devices.flat)
    num_devices = len(devices)
    mapped = jax.pmap(
        partial(step_fn, axis_name=DATA_AXIS),
        axis_name=DATA_AXIS,
        in_axes=(None, 0, None),
        devices=devices,
    )

    per_device = NamedSharding(mesh, P(DATA_AXIS))

    def step(state, batch, key):
        split = jax.tree.map(lambda x: x.reshape(num_devices, x.shape[0] // num_devices, *x.shape[1:]), batch)
        # a batch computed from replicated outputs of an earlier step is committed replicated;
        # pmap takes its leading axis one slice per device
        split = jax.device_put(split, per_device)
        new_state, metrics = mapped(state, split, key)
        first = lambda x: x[0]  # outputs are replicated after the collectives
        return jax.tree.map(first, new_state), jax.tree.map(first, metrics)

    return step


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Places `batch` on `mesh`, split along each leaf's leading axis (global-view jit)."""
    return jax.device_put(batch, NamedSharding(mesh, P(DATA_AXIS)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places `tree` fully replicated on `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, P()))
