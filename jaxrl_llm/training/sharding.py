"""Parameter sharding by a logical-axis rule table: FSDP and tensor parallelism on a
`data × fsdp × tensor` mesh, for a global-view `jax.jit` train step.

Every parameter of the decoder has logical axes, named once in the weight table
(`models/checkpoints/layout.py`: `layers`, `vocab`, `embed`, `heads`, `kv`, `mlp`, `norm`). A
rule table maps logical axes to mesh axes, in the manner of MaxText's `logical_axis_rules`:

    DEFAULT_RULES = {"batch": ("data", "fsdp"), "embed": "fsdp", "vocab": "tensor",
                     "heads": "tensor", "kv": "tensor", "mlp": "tensor", "layers": None, "norm": None}

so on `data=2,fsdp=4` each device holds a quarter of every kernel (its `embed` rows: ZeRO-3 /
FSDP), the batch is split over all 8 devices, and XLA's SPMD partitioner inserts the
all-gathers and reduce-scatters; `tensor` splits heads and the MLP width (Megatron-style).

A leaf is matched to a table row when its path of dictionary keys ends with the row's path,
wherever it sits (the parameters, Adam's `mu`/`nu`, a frozen reference copy), so optimizer
state follows its parameters. Leaves no row names (LoRA adapters, MLP policies, value heads)
get the FSDP fallback: their largest axis divisible by the `fsdp` size is sharded over it,
the rest is replicated. A logical axis whose mapped mesh axes do not divide its size stays
unsharded (e.g. 3 KV heads on `tensor=2`).

    mesh = make_mesh("data=2,fsdp=4")
    shardings = tree_shardings(train_state, mesh)         # NamedSharding per leaf
    bytes_per_device(jax.device_put(train_state, shardings))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrl_llm.training.parallel import DATA_AXIS

from jaxrl_llm.config import MESH_AXES, parse_mesh_shape

_, FSDP_AXIS, TENSOR_AXIS = MESH_AXES  # the first is parallel.DATA_AXIS

Rules = Mapping[str, "str | tuple[str, ...] | None"]
DEFAULT_RULES: Rules = {
    "batch": (DATA_AXIS, FSDP_AXIS),
    "length": None,
    "activation_embed": None,
    "embed": FSDP_AXIS,
    "vocab": TENSOR_AXIS,
    "heads": TENSOR_AXIS,
    "kv": TENSOR_AXIS,
    "mlp": TENSOR_AXIS,
    "layers": None,
    "norm": None,
}


def make_mesh(shape: str | Mapping[str, int], devices=None) -> Mesh:
    """A `data × fsdp × tensor` mesh over `devices` (default: all); the sizes must multiply to
    the device count."""
    shape = parse_mesh_shape(shape) if isinstance(shape, str) else {**dict.fromkeys(MESH_AXES, 1), **shape}
    devices = jax.devices() if devices is None else list(devices)
    sizes = tuple(shape[axis] for axis in MESH_AXES)
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but {len(devices)} exist: make "
            f"the sizes multiply to {len(devices)} (on CPU, --cpu-devices N splits the host into N devices)."
        )
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


@lru_cache(maxsize=1)
def _weight_table_axes() -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    from jaxrl_llm.models.checkpoints.layout import WEIGHT_TABLE

    return tuple((spec.path, spec.logical_axes) for spec in WEIGHT_TABLE)


def logical_axes_of(keys: tuple[str, ...]) -> tuple[str, ...] | None:
    """The logical axes of the weight-table row whose path ends `keys`, else None."""
    for path, axes in _weight_table_axes():
        if keys[-len(path) :] == path:
            return axes
    return None


def _mesh_axes_for(logical: str, rules: Rules, mesh: Mesh, used: set[str]) -> tuple[str, ...]:
    target = rules.get(logical)
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    return tuple(axis for axis in targets if mesh.shape.get(axis, 1) > 1 and axis not in used)


def logical_spec(logical_axes: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh, rules: Rules = DEFAULT_RULES) -> P:
    """The `PartitionSpec` of an array with these logical axes (an axis stays unsharded when its
    mesh axes do not divide its size or are already used by an earlier axis)."""
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {logical_axes} do not match an array of shape {shape}.")
    used: set[str] = set()
    parts = []
    for logical, size in zip(logical_axes, shape):
        axes = _mesh_axes_for(logical, rules, mesh, used)
        if axes and size % math.prod(mesh.shape[a] for a in axes) == 0:
            parts.append(axes[0] if len(axes) == 1 else axes)
            used.update(axes)
        else:
            parts.append(None)
    return P(*parts)


def fallback_spec(shape: tuple[int, ...], mesh: Mesh) -> P:
    """FSDP for a leaf the weight table does not name: its largest axis divisible by the `fsdp`
    size (the first among equals) over `fsdp`, else replicated."""
    fsdp = mesh.shape.get(FSDP_AXIS, 1)
    divisible = [i for i, size in enumerate(shape) if fsdp > 1 and size % fsdp == 0]
    if not divisible:
        return P()
    axis = max(divisible, key=lambda i: (shape[i], -i))
    return P(*(FSDP_AXIS if i == axis else None for i in range(len(shape))))


def _dict_keys(path) -> tuple[str, ...]:
    return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def leaf_spec(path, leaf, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> P:
    shape = tuple(np.shape(leaf))
    if not shape:
        return P()
    axes = logical_axes_of(_dict_keys(path))
    if axes is not None and len(axes) == len(shape):
        return logical_spec(axes, shape, mesh, rules)
    return fallback_spec(shape, mesh)


def tree_shardings(tree, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """A `NamedSharding` for every leaf of `tree` (module docstring)."""
    return jax.tree_util.tree_map_with_path(lambda path, leaf: NamedSharding(mesh, leaf_spec(path, leaf, mesh, rules)), tree)


def activation_rules(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> tuple[tuple[str, object], ...]:
    """The rules as Flax's `nn.logical_axis_rules` takes them, for the model's activation
    constraints (`models.llama.ACTIVATION_AXES`), restricted to the mesh's axes of size > 1."""
    result = []
    for logical in rules:
        axes = _mesh_axes_for(logical, rules, mesh, set())
        result.append((logical, None if not axes else (axes[0] if len(axes) == 1 else axes)))
    return tuple(result)


def place_on_mesh(tree, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """`tree` laid out by the rules on `mesh` (None stays None); works on traced values too."""
    return None if tree is None else jax.device_put(tree, tree_shardings(tree, mesh, rules))


def batch_axes(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> tuple[str, ...]:
    """The mesh axes a batch's leading (row) axis is split over."""
    return _mesh_axes_for("batch", rules, mesh, set())


def batch_shards(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
    """How many ways a batch's rows are split (its row count must divide by it)."""
    return math.prod(mesh.shape[a] for a in batch_axes(mesh, rules))


def batch_sharding(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> NamedSharding:
    axes = batch_axes(mesh, rules)
    return NamedSharding(mesh, P(axes if len(axes) > 1 else (axes[0] if axes else None)))


def bytes_per_device(tree) -> dict[int, int]:
    """Bytes of `tree`'s arrays resident on each device (by device id), from the shards."""
    totals: dict[int, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in getattr(leaf, "addressable_shards", ()):
            totals[shard.device.id] = totals.get(shard.device.id, 0) + shard.data.nbytes
    return totals
