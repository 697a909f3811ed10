"""One of two processes (4 CPU devices each, joined through JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID): takes only its own rows of a global batch
(`host_local_slice`), assembles the global array (`global_batch_from_host_local`, i.e.
`jax.make_array_from_process_local_data`) on a data mesh over all 8 devices, and prints what a
jitted global reduction and a gather back to every host see.

Executed by test_multiprocess.py (two of these at once).
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from jaxrl_llm.training import distributed  # noqa: E402
from jaxrl_llm.training.parallel import data_mesh  # noqa: E402

distributed.initialize()
full = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
rows = distributed.host_local_slice(16)
batch = distributed.global_batch_from_host_local({"x": full[rows]}, data_mesh())
weights = jnp.arange(16, dtype=jnp.float32)[:, None]
print(json.dumps({
    "process": jax.process_index(),
    "rows": [rows.start, rows.stop],
    "global_shape": list(batch["x"].shape),
    "addressable_rows": sorted({int(s.index[0].start) for s in batch["x"].addressable_shards}),
    "weighted_sum": float(jax.jit(lambda x: (x * weights).sum())(batch["x"])),
    "expected_weighted_sum": float((full * np.arange(16)[:, None]).sum()),
    "gathered_equals_full": bool((multihost_utils.process_allgather(batch["x"], tiled=True) == full).all()),
}))
