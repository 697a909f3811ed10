"""Run one train step single-device, under `jax.shard_map` on a Mesh, under `jax.pmap`, or as a
global-view `jax.jit` with the state sharded by rules ("sharded": FSDP / tensor parallelism).

A step is written once, as a function of a *per-device* batch:

    step_fn(state, batch, key, axis_name[, frozen=...]) -> (state, metrics)

where `axis_name` is None on a single device and the mesh/pmap axis otherwise; the
step reduces gradients and statistics with `lax.pmean`/`lax.psum` over `axis_name`
(see `reduce_mean`). `state` and `key` are replicated; every leaf of `batch` is split
along its leading axis across devices. `frozen` (read-only arrays: an LM's base and
reference weights) is passed only when the caller gives one, replicated or laid out by the
rule table like the state, and never donated; `donate_state=True` lets XLA write the new
state into the old one's buffers (the caller must not read the state it passed in again).
In "sharded" mode the step sees the global batch with `axis_name=None` (single-device code),
its state is laid out by `training/sharding.py`'s rule table on a `data × fsdp × tensor` mesh
and XLA's SPMD partitioner inserts the collectives. All paths must give the same numbers:
tests check it on 8 forced CPU devices.

Known trap on few-core CPU hosts with forced devices: letting many jit/shard_map
steps with collectives run ahead asynchronously can abort the XLA CPU runtime
("Termination timeout for all reduce"). Callers must bound the steps in flight, e.g.
block on each step's metrics as `Trainer` and the tests do.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _with_frozen(step_fn: StepFn, axis_name: str | None) -> Callable:
    """`step_fn` as `(state, batch, key, frozen)`, passing `frozen=` only when there is one."""

    def step(state, batch, key, frozen):
        extra = {} if frozen is None else {"frozen": frozen}
        return step_fn(state, batch, key, axis_name=axis_name, **extra)

    return step


def build_step(
    step_fn: StepFn, mode: Mode = "single", mesh: Mesh | None = None, donate_state: bool = False
) -> Callable:
    """Compiles `step_fn` for `mode`; the result is called as `step(state, batch, key, frozen=None)`.

    For "shard_map" and "pmap" the returned function takes and returns the *global*
    (unsplit) state and batch, so its callers do not change with the mode. With
    `donate_state` the state's buffers are donated to the step (except under "pmap", which
    broadcasts the state to its devices first).
    """
    donate = (0,) if donate_state else ()
    if mode == "single":
        return _optional_frozen(jax.jit(_with_frozen(step_fn, None), donate_argnums=donate))
    if mode == "sharded" and mesh is None:
        from jaxrl_llm.training.sharding import make_mesh

        mesh = make_mesh({DATA_AXIS: jax.device_count()})
    mesh = mesh or data_mesh()
    if mode == "shard_map":
        # check_vma=False: with varying-manual-axes checking on, `grad` of a per-device
        # loss followed by `pmean` of the grads was measured to scale grads by the
        # device count; without it the numbers equal pmap's and the single device's.
        sharded = jax.shard_map(
            _with_frozen(step_fn, DATA_AXIS),
            mesh=mesh,
            in_specs=(P(), P(DATA_AXIS), P(), P()),
            out_specs=(P(), P()),
            check_vma=False,
        )
        return _optional_frozen(jax.jit(sharded, donate_argnums=donate))
    if mode == "pmap":
        return _optional_frozen(_pmapped(step_fn, mesh))
    if mode == "sharded":
        return _optional_frozen(_global_view(step_fn, mesh, donate_state))
    raise ValueError(f"build_step: mode={mode!r} is invalid; use 'single', 'shard_map', 'pmap' or 'sharded'.")


def _optional_frozen(step: Callable) -> Callable:
    return lambda state, batch, key, frozen=None: step(state, batch, key, frozen)


def sharded_program(
    step_fn: StepFn, mesh: Mesh, state, batch, frozen=None, donate_state: bool = False
) -> tuple[Callable, tuple]:
    """`(program, in_shardings)`: the `jax.jit` of the single-device step, called as
    `program(state, batch, key, frozen)`, with the state and `frozen` sharded by the rule table,
    the batch's rows split over the mesh's batch axes and metrics replicated, for arguments
    shaped like `state`, `batch` and `frozen` (also what a test lowers to read the compiled
    step's collectives)."""
    import flax.linen as nn

    from jaxrl_llm.training.sharding import activation_rules, batch_sharding, tree_shardings

    replicated = NamedSharding(mesh, P())
    step = _with_frozen(step_fn, None)

    def traced_step(state, batch, key, frozen):
        # the model's activation constraints read these rules while the step is traced
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(activation_rules(mesh)):
            return step(state, batch, key, frozen)

    state_shardings = tree_shardings(state, mesh)
    in_shardings = (
        state_shardings,
        jax.tree.map(lambda _: batch_sharding(mesh), batch),
        replicated,
        tree_shardings(frozen, mesh),
    )
    program = jax.jit(
        traced_step,
        in_shardings=in_shardings,
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,) if donate_state else (),
    )
    return program, in_shardings


def _global_view(step_fn: StepFn, mesh: Mesh, donate_state: bool) -> Callable:
    """`sharded_program`, compiled once per state/batch/frozen signature (on first use, reused
    after)."""
    programs: dict = {}

    def step(state, batch, key, frozen):
        leaves = jax.tree.leaves((state, batch, frozen))
        signature = (
            jax.tree.structure((state, batch, frozen)),
            tuple((np.shape(x), jnp.result_type(x)) for x in leaves),
        )
        if signature not in programs:
            programs[signature] = sharded_program(step_fn, mesh, state, batch, frozen, donate_state)
        program, in_shardings = programs[signature]
        # arguments laid out otherwise (a batch collected on replicated arrays, a restored state)
        # move to the program's layout first; jit refuses committed arrays that differ
        return program(*jax.device_put((state, batch, key, frozen), in_shardings))

    return step


def _pmapped(step_fn: StepFn, mesh: Mesh) -> Callable:
    devices = list(mesh.devices.flat)
    num_devices = len(devices)
    mapped = jax.pmap(
        _with_frozen(step_fn, DATA_AXIS),
        axis_name=DATA_AXIS,
        in_axes=(None, 0, None, None),
        devices=devices,
    )

    per_device = NamedSharding(mesh, P(DATA_AXIS))

    def step(state, batch, key, frozen):
        split = jax.tree.map(lambda x: x.reshape(num_devices, x.shape[0] // num_devices, *x.shape[1:]), batch)
        # a batch computed from replicated outputs of an earlier step is committed replicated;
        # pmap takes its leading axis one slice per device
        split = jax.device_put(split, per_device)
        new_state, metrics = mapped(state, split, key, frozen)
        first = lambda x: x[0]  # outputs are replicated after the collectives
        return jax.tree.map(first, new_state), jax.tree.map(first, metrics)

    return step


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Places `batch` on `mesh`, split along each leaf's leading axis (global-view jit)."""
    return jax.device_put(batch, NamedSharding(mesh, P(DATA_AXIS)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places `tree` fully replicated on `mesh`."""
    return jax.device_put(tree, NamedSharding(mesh, P()))
