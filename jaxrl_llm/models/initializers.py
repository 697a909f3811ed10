"""Parameter initializers that compile to plain XLA ops (no LAPACK custom calls).

`orthogonal` is `jax.nn.initializers.orthogonal` computed by Gram-Schmidt instead of a
QR factorisation. Why: in jaxlib 0.10.x, a batched LAPACK QR (`lapack_sgeqrf_ffi`, what
an orthogonal init becomes under `vmap` over seeds) splits its batch into tasks on the
XLA:CPU intra-op pool and blocks a pool thread until they finish; when the thunk
executor runs two such QRs at once on a 2-thread pool, both threads wait for tasks
that no thread is left to run, and the program hangs with the CPU idle (seen in ~1%
of executions of a vmapped GiGPO job; native stacks in `jax::ParallelBatchMap`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def gram_schmidt(z: jax.Array) -> jax.Array:
    """`Q` of the thin QR of `z` `[n, k]` (k <= n) with a positive diagonal of R.

    Classical Gram-Schmidt applied twice per column ("twice is enough"), so Q is
    orthonormal to float rounding for well-conditioned z (Gaussian matrices are).
    """

    def add_column(j, q):
        column = jax.lax.dynamic_index_in_dim(z, j, axis=1, keepdims=False)
        for _ in range(2):  # zero columns of q (not yet filled) project out nothing
            column = column - q @ (q.T @ column)
        return jax.lax.dynamic_update_index_in_dim(q, column / jnp.linalg.norm(column), j, axis=1)

    return jax.lax.fori_loop(0, z.shape[1], add_column, jnp.zeros_like(z))


def orthogonal(scale: float = 1.0):
    """Uniformly distributed (semi-)orthogonal kernels, columns on the last axis.

    For the same key, equal to `jax.nn.initializers.orthogonal(scale)` up to float
    rounding: the same Gaussian draw, and Householder QR with the sign fix that
    `jax.random.orthogonal` applies yields the same Q as Gram-Schmidt.
    """

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        if len(shape) < 2:
            raise ValueError(f"orthogonal init needs a shape of rank >= 2, got {tuple(shape)}")
        n_rows, n_cols = math.prod(shape) // shape[-1], shape[-1]
        z = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), dtype)
        q = gram_schmidt(z)
        q = q.T if n_rows < n_cols else q
        return jnp.asarray(scale, dtype) * q.reshape(shape)

    return init
