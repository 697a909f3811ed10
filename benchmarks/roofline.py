"""This machine's limits, measured in the run that reports against them.

- matmul rate: a jitted float32 2048 x 2048 x 2048 matmul (GFLOP/s, median of repeats);
- read bandwidth: a jitted sum over a 512 MiB float32 array (GB/s of bytes read);
- copy bandwidth: numpy copy of 256 MiB (GB/s of bytes read + written).

An operation's bound is max(FLOPs / matmul rate, bytes read / read bandwidth): no schedule on
this machine runs it faster. Benchmarks report their times also as a fraction of that bound
(`bound / measured`, 100% = at the machine's limit).

    python benchmarks/roofline.py      # prints the three figures
"""

from __future__ import annotations

import statistics
import time
from typing import NamedTuple

import numpy as np


class Roofline(NamedTuple):
    matmul_gflop_s: float
    read_gb_s: float
    copy_gb_s: float

    def bound_seconds(self, flops: float, bytes_read: float) -> float:
        return max(flops / (self.matmul_gflop_s * 1e9), bytes_read / (self.read_gb_s * 1e9))


def _median_seconds(run, reps: int) -> float:
    run()  # compile / warm up
    timings = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def matmul_gflop_s(size: int = 2048, reps: int = 5) -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    return 2 * size**3 / _median_seconds(lambda: matmul(a).block_until_ready(), reps) / 1e9


def read_gb_s(megabytes: int = 512, reps: int = 5) -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    return a.nbytes / _median_seconds(lambda: total(a).block_until_ready(), reps) / 1e9


def copy_gb_s(megabytes: int = 256, reps: int = 5) -> float:
    source = np.ones(megabytes * 2**20 // 4, np.float32)
    target = np.empty_like(source)
    return 2 * source.nbytes / _median_seconds(lambda: np.copyto(target, source), reps) / 1e9


def measure() -> Roofline:
    return Roofline(matmul_gflop_s(), read_gb_s(), copy_gb_s())


if __name__ == "__main__":
    limits = measure()
    print(
        f"matmul {limits.matmul_gflop_s:.0f} GFLOP/s, read {limits.read_gb_s:.1f} GB/s, "
        f"copy {limits.copy_gb_s:.1f} GB/s"
    )
