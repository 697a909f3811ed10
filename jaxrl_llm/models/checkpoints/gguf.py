"""Reader of llama.cpp GGUF checkpoints: metadata -> `LlamaConfig`, tensors -> our params.

Tensors are read with `gguf.GGUFReader`, which hands a quantised tensor over as uint8 rows of
whole blocks ([rows, bytes per row]) and an F32/F16 one as typed values, and are dequantised to
float32 by the gguf package's own numpy code, `gguf.quants.dequantize`. Every type it covers
loads: F32, F16, BF16, the 32-weight Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 blocks, the 256-weight K-quant
super-blocks Q2_K..Q6_K (what the Q4_K_M, Q5_K_M and Q6_K files most small models ship as hold),
the IQ*/TQ* types, ... (`supported_types()` lists them for the installed gguf). Any other type
raises NotImplementedError naming the type and the supported ones.

Blocks are independent, so block tensors are handed to gguf as runs of ~256K weights, one run
per call: gguf vectorises over groups of 16 rows, and on tensors with short rows (SmolLM2's 576)
that costs a small numpy pass per 16 rows. Runs are ~2x faster and within ~10% of the
hand-written Q8_0/Q4_0/Q4_1 numpy this module had before, which is why that code is gone
(SmolLM2-135M Q4_1, all tensors, CPU time: 0.50 s hand-written, ~0.55 s in runs, ~1.0 s unsplit).

llama.cpp's HF->GGUF converter reorders the rows of q/k projections of "llama" models so that
each head's two RoPE halves are interleaved (`permute` in convert_hf_to_gguf.py); we undo it,
since our RoPE (like HF's) rotates the first half of a head against the second half.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxrl_llm.models.checkpoints.layout import WeightSpec, build_params
from jaxrl_llm.models.llama_config import LlamaConfig

# Weights dequantised per gguf call: large enough to amortise numpy's per-call overhead, small
# enough that gguf's temporaries stay in cache (2^16-2^18 measured fastest among 2^13..2^20).
WEIGHTS_PER_GGUF_CALL = 1 << 18


@functools.cache
def supported_types() -> tuple[str, ...]:
    """Names of the ggml types the installed gguf package dequantises, found by asking it to
    dequantise one zero block of each (its own table of types is private)."""
    import gguf.quants

    names = []
    for qtype in gguf.GGMLQuantizationType:
        block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
        try:
            gguf.quants.dequantize(np.zeros((1, block_bytes), np.uint8), qtype)
        except Exception:  # NotImplementedError today; whatever fails here would fail on real data
            continue
        names.append(qtype.name)
    return tuple(names)


def _dequantize_in_runs(stored: np.ndarray, qtype, num_weights: int) -> np.ndarray:
    """Flat float32 weights from the flat bytes of `num_weights` weights in whole `qtype` blocks,
    dequantised by gguf one run of blocks at a time (each run passed as a single row)."""
    import gguf.quants

    block_size, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    num_blocks = num_weights // block_size
    if num_weights % block_size or stored.size != num_blocks * block_bytes:
        raise ValueError(
            f"{stored.size} bytes do not hold {num_weights} {qtype.name} weights "
            f"({block_bytes} bytes per {block_size} weights)"
        )
    weights = np.empty(num_weights, np.float32)
    blocks_per_run = max(1, WEIGHTS_PER_GGUF_CALL // block_size)
    for first in range(0, num_blocks, blocks_per_run):
        last = min(first + blocks_per_run, num_blocks)
        run = stored[first * block_bytes : last * block_bytes].reshape(1, -1)
        weights[first * block_size : last * block_size] = gguf.quants.dequantize(run, qtype).reshape(-1)
    return weights


def dequantize(raw: np.ndarray, quant: str, shape: tuple[int, ...]) -> np.ndarray:
    """float32 array of numpy `shape` from a GGUF tensor's stored bytes/values.

    `quant` is a ggml type name ("F32", "Q4_1", "Q4_K", "Q6_K", ...; see `supported_types()`).
    `raw` is what `GGUFReader` gives: typed values for F32/F16, otherwise uint8 bytes of whole
    blocks in any shape (row-major).
    """
    import gguf.quants

    if quant not in supported_types():
        raise NotImplementedError(
            f"GGUF tensor type {quant} is not supported (supported: {', '.join(supported_types())})"
        )
    qtype = gguf.GGMLQuantizationType[quant]
    shape = tuple(int(n) for n in shape)
    raw = np.ascontiguousarray(raw)
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        values = gguf.quants.dequantize(raw, qtype)  # a view / one cast: no row groups to amortise
    else:
        values = _dequantize_in_runs(raw.view(np.uint8).reshape(-1), qtype, int(np.prod(shape)))
    return values.reshape(shape)


def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Inverse of the converter's q/k permutation on the leading (output) axis.

    The converter maps HF rows [head, half, i] to [head, i, half]; we map them back.
    Works for [out, in] matrices and [out] biases.
    """
    rows = weight.shape[0]
    rest = weight.shape[1:]
    grouped = weight.reshape(num_heads, rows // num_heads // 2, 2, *rest)
    return grouped.swapaxes(1, 2).reshape(weight.shape)


def read_metadata(reader) -> dict[str, Any]:
    """{key: python value} of every GGUF metadata field (arrays become lists)."""
    return {name: field.contents() for name, field in reader.fields.items()}


def config_from_metadata(metadata: Mapping[str, Any], tensor_names, **overrides) -> LlamaConfig:
    """`LlamaConfig` from `{arch}.*` metadata; tied embeddings when `output.weight` is absent."""
    arch = metadata["general.architecture"]
    if arch not in ("llama", "qwen2"):
        raise NotImplementedError(f"GGUF architecture {arch!r} is not supported (llama, qwen2)")
    if "rope_freqs.weight" in tensor_names:
        raise NotImplementedError(
            "GGUF files with rope_freqs.weight (Llama-3.1 scaled RoPE) are not supported yet"
        )

    def field(name, default=None):
        value = metadata.get(f"{arch}.{name}", default)
        if value is None:
            raise KeyError(f"GGUF metadata lacks {arch}.{name}")
        return value

    num_heads = int(field("attention.head_count"))
    hidden_size = int(field("embedding_length"))
    vocab_size = metadata.get(f"{arch}.vocab_size") or len(metadata["tokenizer.ggml.tokens"])
    fields = dict(
        vocab_size=int(vocab_size),
        hidden_size=hidden_size,
        intermediate_size=int(field("feed_forward_length")),
        num_layers=int(field("block_count")),
        num_heads=num_heads,
        num_kv_heads=int(field("attention.head_count_kv", num_heads)),
        head_dim=int(metadata.get(f"{arch}.attention.key_length", hidden_size // num_heads)),
        rope_theta=float(field("rope.freq_base", 10_000.0)),
        rms_norm_eps=float(field("attention.layer_norm_rms_epsilon")),
        max_seq_len=int(field("context_length")),
        tie_embeddings="output.weight" not in tensor_names,
        qkv_bias="blk.0.attn_q.bias" in tensor_names,
        architecture=arch,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def load_gguf(path: str | os.PathLike, **config_overrides) -> tuple[dict, LlamaConfig, dict[str, Any]]:
    """(params as numpy arrays, config, metadata) from a GGUF file. `config_overrides` (e.g.
    `param_dtype="bfloat16"`, `dtype=...`, `remat=True`) are applied to the config before loading."""
    from gguf import GGUFReader  # imported lazily: only GGUF users need it

    reader = GGUFReader(os.fspath(path))
    metadata = read_metadata(reader)
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    config = config_from_metadata(metadata, tensors.keys(), **config_overrides)
    permuted = config.architecture == "llama"

    def read_tensor(name: str, spec: WeightSpec) -> np.ndarray:
        if name not in tensors:
            raise KeyError(f"GGUF file {path} has no tensor {name!r}")
        tensor = tensors[name]
        shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml lists dims innermost first
        weight = dequantize(tensor.data, tensor.tensor_type.name, shape)
        if permuted and spec.gguf_rope_heads is not None:
            weight = unpermute_rope_rows(weight, getattr(config, spec.gguf_rope_heads))
        return weight

    return build_params(config, "gguf", read_tensor), config, metadata
