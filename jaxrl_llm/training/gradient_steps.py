"""Full-batch gradient steps shared by the critic-free (GRPO-family) updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxrl_llm.training.parallel import reduce_mean, reduce_sum
from jaxrl_llm.training.train_state import TrainState, apply_gradients


def loss_norm_constant(loss_agg_mode: str, mask: jax.Array, axis_name: str | None, length_constant: int):
    """The `norm_constant` that makes `aggregate_loss` on a per-device batch shard-exact.

    `token-mean`: local token sum / mean per-device token count, so that the `pmean` of
    the gradients is exactly the gradient of the global token mean whatever the
    per-device counts. `seq-mean-token-sum-norm`: the length constant. `token-sum-norm` (a
    sum over the global batch / C): C / device count, so the `pmean` of the per-device
    gradients is the global sum's. Other modes average sequences, which equal-sized shards
    already do exactly (None).
    """
    if loss_agg_mode == "token-mean":
        return jnp.maximum(reduce_mean(mask.sum().astype(jnp.float32), axis_name), 1.0)
    if loss_agg_mode == "seq-mean-token-sum-norm":
        return length_constant
    if loss_agg_mode == "token-sum-norm":  # a sum over the global batch: each device's share
        return length_constant / reduce_sum(1.0, axis_name)
    return None


def microbatch_count(rows: int, micro_batch_size: int) -> int:
    """How many micro-batches of `micro_batch_size` rows a (per-device) batch of `rows` takes
    (0: the whole batch at once); `split_microbatches` refuses a size that does not divide it."""
    return max(rows // (micro_batch_size or rows), 1)


def split_microbatches(batch, num_microbatches: int):
    """Reshapes every leaf `[B, ...]` of `batch` to `[num_microbatches, B / num_microbatches, ...]`."""

    def split(x):
        if x.shape[0] % num_microbatches:
            raise ValueError(
                f"A batch of {x.shape[0]} rows does not split into {num_microbatches} equal microbatches; "
                "choose a microbatch size that divides the per-device batch."
            )
        return x.reshape(num_microbatches, x.shape[0] // num_microbatches, *x.shape[1:])

    return jax.tree.map(split, batch)


def accumulated_gradients(loss_fn, params, batch, num_microbatches: int = 1):
    """Mean over `num_microbatches` equal row slices of `batch` of `grad loss_fn(params, slice)`.

    The slices run one after another in a `lax.scan`, so only one slice's activations are
    alive at a time (gradient accumulation). Gradients accumulate in float32 and come back
    in the parameters' dtypes; metrics are the means over slices. The mean of the slice
    losses equals the full-batch loss when each slice's loss is an equal-weight share of it
    (see `microbatch_norm_constant`).
    """
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if num_microbatches == 1:
        return grad_fn(params, batch)

    def accumulate(total, micro):
        grads, metrics = grad_fn(params, micro)
        return jax.tree.map(lambda t, g: t + g.astype(jnp.float32), total, grads), metrics

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    total, metrics = jax.lax.scan(accumulate, zeros, split_microbatches(batch, num_microbatches))
    grads = jax.tree.map(lambda t, p: (t / num_microbatches).astype(p.dtype), total, params)
    return grads, jax.tree.map(jnp.mean, metrics)


def microbatch_norm_constant(loss_agg_mode: str, norm_constant, num_microbatches: int):
    """The `norm_constant` of one of `num_microbatches` equal slices whose losses are averaged.

    Sequence-mean modes average rows, so equal slices average exactly with their own default
    denominators; `token-mean` (the batch's token count) and `token-sum-norm` (a sum over the
    batch) need each slice's share, 1 / num_microbatches, for a mean over slices.
    """
    if loss_agg_mode in ("token-mean", "token-sum-norm") and norm_constant is not None:
        return norm_constant / num_microbatches
    return norm_constant


def repeated_gradient_steps(
    state: TrainState,
    loss_fn: Callable[..., tuple[jax.Array, dict[str, jax.Array]]],
    tx: optax.GradientTransformation,
    num_steps: int,
    axis_name: str | None,
    batch: Any = None,
    num_microbatches: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`num_steps` steps of `tx` on `loss_fn`, gradients and metrics averaged over `axis_name`;
    returns the final state and the mean metrics.

    Without `batch`, `loss_fn(params) -> (loss, metrics)`. With `batch`,
    `loss_fn(params, batch_slice)` and each step accumulates gradients over
    `num_microbatches` slices of it (`accumulated_gradients`).
    """

    def gradient_step(state: TrainState, _):
        if batch is None:
            grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
        else:
            grads, metrics = accumulated_gradients(loss_fn, state.params, batch, num_microbatches)
        return apply_gradients(state, reduce_mean(grads, axis_name), tx), reduce_mean(metrics, axis_name)

    state, metrics = jax.lax.scan(gradient_step, state, None, length=num_steps)
    return state, jax.tree.map(jnp.mean, metrics)
