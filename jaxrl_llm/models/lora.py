"""Low-rank adapters (LoRA, Hu et al. 2021) as a pure transformation of the parameter pytree.

For a targeted kernel W [in, out] (or a stack [layers, in, out]):
    W_eff = W + (alpha / rank) * A @ B,      A [in, rank] ~ N(0, 1/in),  B [rank, out] = 0
so x @ W_eff = x @ W + (alpha / rank) * (x @ A) @ B and a fresh adapter changes nothing.
`apply_lora(params, adapters)` returns effective weights, so the model code is unchanged and
gradients reach A and B through it. Train only the adapters with `lora_optimizer(tx)` over the
pytree {"base": params, "lora": adapters}.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS = ATTENTION_TARGETS + MLP_TARGETS


@struct.dataclass
class LoraAdapters:
    """Adapter factors {path...: {"a": [..., in, r], "b": [..., r, out]}} mirroring the targeted kernels."""

    weights: dict
    scale: float = struct.field(pytree_node=False)


def _targeted_kernels(params: dict, targets: Sequence[str], prefix=()):
    """Yields (path to the module dict, kernel) for every `kernel` whose module name is in `targets`."""
    for name, child in params.items():
        if not isinstance(child, dict):
            continue
        if name in targets and "kernel" in child:
            yield prefix + (name,), child["kernel"]
        else:
            yield from _targeted_kernels(child, targets, prefix + (name,))


def _set_path(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get_path(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def lora_init(
    key: jax.Array, params: dict, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS
) -> LoraAdapters:
    """Adapters for every projection named in `targets` (A random, B zero); float32 factors."""
    if rank <= 0:
        raise ValueError(f"lora_init: rank must be positive, got {rank}")
    found = list(_targeted_kernels(params, tuple(targets)))
    if not found:
        raise ValueError(
            f"lora_init: no kernel in params belongs to a module named in targets={tuple(targets)}"
        )
    weights: dict = {}
    for sub_key, (path, kernel) in zip(jax.random.split(key, len(found)), found, strict=True):
        *stack, fan_in, fan_out = kernel.shape
        a = jax.random.normal(sub_key, (*stack, fan_in, rank), jnp.float32) / jnp.sqrt(fan_in)
        b = jnp.zeros((*stack, rank, fan_out), jnp.float32)
        _set_path(weights, path, {"a": a, "b": b})
    return LoraAdapters(weights=weights, scale=float(alpha) / rank)


def _adapter_paths(weights: dict, prefix=()):
    """Paths of the module dicts that hold {"a", "b"} factors."""
    for name, child in weights.items():
        if set(child) == {"a", "b"}:
            yield prefix + (name,)
        else:
            yield from _adapter_paths(child, prefix + (name,))


def _add_delta(params: dict, adapters: LoraAdapters, sign: float) -> dict:
    updated = jax.tree_util.tree_map(lambda x: x, params)  # new dicts, same leaves: params stay untouched
    for path in _adapter_paths(adapters.weights):
        factors = _get_path(adapters.weights, path)
        kernel = _get_path(params, path)["kernel"]
        delta = jnp.matmul(factors["a"], factors["b"]) * (sign * adapters.scale)
        _get_path(updated, path)["kernel"] = (kernel.astype(jnp.float32) + delta).astype(kernel.dtype)
    return updated


def apply_lora(params: dict, adapters: LoraAdapters) -> dict:
    """Effective parameters W + scale * A @ B for every adapted kernel (differentiable in both)."""
    return _add_delta(params, adapters, +1.0)


merge_lora = apply_lora


def trainable_weights(
    key: jax.Array, base_params: dict, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS
) -> LoraAdapters | dict:
    """What a fine-tuning run trains: adapters on `base_params` when `rank > 0` (`lora_init`),
    else the base weights themselves (full fine-tuning)."""
    return lora_init(key, base_params, rank, alpha, targets) if rank else base_params


def model_weights(base_params: dict, trainable: LoraAdapters | dict) -> dict:
    """The weights the model runs with: `base_params` with the adapters applied when `trainable`
    holds LoRA adapters, else `trainable` itself (full fine-tuning trains the weights directly)."""
    return apply_lora(base_params, trainable) if isinstance(trainable, LoraAdapters) else trainable


def unmerge_lora(merged: dict, adapters: LoraAdapters) -> dict:
    """Inverse of `merge_lora` (exact up to rounding in the kernel dtype)."""
    return _add_delta(merged, adapters, -1.0)


def lora_optimizer(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` on the adapters, zero updates (and no optimizer state) for the base weights.

    For a parameter pytree {"base": params, "lora": adapters}.
    """

    def labels(tree):
        return {
            "base": jax.tree_util.tree_map(lambda _: "frozen", tree["base"]),
            "lora": jax.tree_util.tree_map(lambda _: "trainable", tree["lora"]),
        }

    return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)
