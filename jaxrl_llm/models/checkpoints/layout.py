"""The one table that maps our parameter tree to HF safetensors names and GGUF tensor names,
and to the logical axes the sharding rules read.

Each row names a leaf of `LlamaForCausalLM`'s params, its HF and GGUF names (`{layer}` marks
per-layer tensors, which are stacked on our leading [layers] axis), whether the file stores it
[out, in] (transposed relative to our [in, out] kernels), the logical name of each of our axes
(`training/sharding.py` maps them to mesh axes), and when the row applies. Loaders, the saver
and the sharding rules iterate this table; there is no per-layer hand code anywhere.

Logical axes: `layers` (the stacked layer axis), `vocab`, `embed` (the hidden size), `heads`
(query heads × head dim), `kv` (key/value heads × head dim), `mlp` (the intermediate size),
`norm` (a norm's scale, never sharded).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

from jaxrl_llm.models.llama_config import LlamaConfig


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    path: tuple[str, ...]
    hf_name: str
    gguf_name: str
    logical_axes: tuple[str, ...]
    transpose: bool = False
    # GGUF's llama converter permutes q/k rows for llama.cpp's interleaved RoPE; the value
    # is the config field holding the head count to undo it with (None: not permuted).
    gguf_rope_heads: str | None = None
    applies: Callable[[LlamaConfig], bool] = lambda config: True

    @property
    def per_layer(self) -> bool:
        return "{layer}" in self.hf_name


def _attention(
    proj: str, hf_proj: str, gguf_proj: str, heads: str | None, biased: bool, axes: tuple[str, str]
) -> list[WeightSpec]:
    kernel = WeightSpec(
        ("layers", "attention", proj, "kernel"),
        f"model.layers.{{layer}}.self_attn.{hf_proj}.weight",
        f"blk.{{layer}}.{gguf_proj}.weight",
        ("layers", *axes),
        transpose=True,
        gguf_rope_heads=heads,
    )
    if not biased:
        return [kernel]
    bias = WeightSpec(
        ("layers", "attention", proj, "bias"),
        f"model.layers.{{layer}}.self_attn.{hf_proj}.bias",
        f"blk.{{layer}}.{gguf_proj}.bias",
        ("layers", axes[1]),
        gguf_rope_heads=heads,
        applies=lambda config: config.qkv_bias,
    )
    return [kernel, bias]


def _mlp(proj: str, gguf_proj: str, axes: tuple[str, str]) -> WeightSpec:
    return WeightSpec(
        ("layers", "mlp", proj, "kernel"),
        f"model.layers.{{layer}}.mlp.{proj}.weight",
        f"blk.{{layer}}.{gguf_proj}.weight",
        ("layers", *axes),
        transpose=True,
    )


WEIGHT_TABLE: tuple[WeightSpec, ...] = (
    WeightSpec(("embed_tokens", "embedding"), "model.embed_tokens.weight", "token_embd.weight", ("vocab", "embed")),
    WeightSpec(
        ("layers", "input_norm", "scale"),
        "model.layers.{layer}.input_layernorm.weight",
        "blk.{layer}.attn_norm.weight",
        ("layers", "norm"),
    ),
    *_attention("q_proj", "q_proj", "attn_q", "num_heads", biased=True, axes=("embed", "heads")),
    *_attention("k_proj", "k_proj", "attn_k", "num_kv_heads", biased=True, axes=("embed", "kv")),
    *_attention("v_proj", "v_proj", "attn_v", None, biased=True, axes=("embed", "kv")),
    *_attention("o_proj", "o_proj", "attn_output", None, biased=False, axes=("heads", "embed")),
    WeightSpec(
        ("layers", "post_attention_norm", "scale"),
        "model.layers.{layer}.post_attention_layernorm.weight",
        "blk.{layer}.ffn_norm.weight",
        ("layers", "norm"),
    ),
    _mlp("gate_proj", "ffn_gate", ("embed", "mlp")),
    _mlp("up_proj", "ffn_up", ("embed", "mlp")),
    _mlp("down_proj", "ffn_down", ("mlp", "embed")),
    WeightSpec(("final_norm", "scale"), "model.norm.weight", "output_norm.weight", ("norm",)),
    WeightSpec(
        ("lm_head", "kernel"),
        "lm_head.weight",
        "output.weight",
        ("embed", "vocab"),
        transpose=True,
        applies=lambda config: not config.tie_embeddings,
    ),
)


def active_specs(config: LlamaConfig) -> Iterator[WeightSpec]:
    return (spec for spec in WEIGHT_TABLE if spec.applies(config))


def file_names(spec: WeightSpec, config: LlamaConfig, naming: str) -> list[str]:
    """The file's tensor names for one row: one per layer for per-layer rows. naming: "hf" | "gguf"."""
    template = spec.hf_name if naming == "hf" else spec.gguf_name
    if not spec.per_layer:
        return [template]
    return [template.format(layer=layer) for layer in range(config.num_layers)]


def build_params(
    config: LlamaConfig,
    naming: str,
    read_tensor: Callable[[str, WeightSpec], np.ndarray],
) -> dict:
    """Our nested params (numpy, config.param_dtype) from `read_tensor(file_name, spec)` for every active row."""
    dtype = np.dtype(config.weight_dtype)
    params: dict = {}
    for spec in active_specs(config):
        tensors = []
        for name in file_names(spec, config, naming):
            tensor = read_tensor(name, spec)
            tensors.append(tensor.T if spec.transpose else tensor)
        leaf = np.stack(tensors) if spec.per_layer else tensors[0]
        node = params
        for key in spec.path[:-1]:
            node = node.setdefault(key, {})
        node[spec.path[-1]] = np.ascontiguousarray(leaf).astype(dtype, copy=False)
    return params


def flatten_to_files(params: dict, config: LlamaConfig, naming: str = "hf") -> dict[str, np.ndarray]:
    """The inverse of `build_params`: {file tensor name: array in the file's [out, in] layout}."""
    tensors = {}
    for spec in active_specs(config):
        leaf = params
        for key in spec.path:
            leaf = leaf[key]
        leaf = np.asarray(leaf)
        names = file_names(spec, config, naming)
        slices = list(leaf) if spec.per_layer else [leaf]
        for name, tensor in zip(names, slices, strict=True):
            tensors[name] = np.ascontiguousarray(tensor.T if spec.transpose else tensor)
    return tensors
