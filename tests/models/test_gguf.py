"""GGUF dequantisation (K-quant blocks packed here by hand against our own float64 reference of the
format; 32-weight blocks against the original weights and hand-built blocks), unsupported types,
q/k un-permutation, and tiny GGUF files written here (F32/Q8_0 and K-quant tensors)."""

import chex
import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from jaxrl_llm.models import llama
from jaxrl_llm.models.checkpoints import gguf as gguf_checkpoint
from jaxrl_llm.models.checkpoints.gguf import dequantize, load_gguf, supported_types, unpermute_rope_rows
from jaxrl_llm.models.checkpoints.layout import flatten_to_files
from jaxrl_llm.models.llama_config import tiny_config


@pytest.mark.parametrize("quant", ["Q4_0", "Q4_1", "Q8_0", "F16", "BF16", "F32"])
def test_dequantize_matches_gguf_reference(quant):
    rng = np.random.default_rng(0)
    weights = (rng.normal(size=(6, 64)) * rng.uniform(0.01, 3, size=(6, 1))).astype(np.float32)
    stored = gguf.quants.quantize(weights, Q[quant])
    expected = gguf.quants.dequantize(stored, Q[quant])
    ours = dequantize(stored, quant, weights.shape)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)
    tolerance = {"Q4_0": 0.3, "Q4_1": 0.3, "Q8_0": 0.03}.get(quant, 0.02)
    np.testing.assert_allclose(ours, weights, atol=tolerance * np.abs(weights).max())


def test_q4_1_block_built_by_hand():
    codes = np.arange(32) % 16  # weight i has code i mod 16
    packed = (codes[:16] | (codes[16:] << 4)).astype(np.uint8)  # weights 0..15 low nibbles, 16..31 high
    block = np.concatenate([np.array([0.5, -1.0], np.float16).view(np.uint8), packed])
    np.testing.assert_array_equal(dequantize(block, "Q4_1", (1, 32))[0], 0.5 * codes - 1.0)


def test_q8_0_block_built_by_hand():
    codes = np.arange(-16, 16, dtype=np.int8)
    block = np.concatenate([np.array([0.25], np.float16).view(np.uint8), codes.view(np.uint8)])
    np.testing.assert_array_equal(dequantize(block, "Q8_0", (32,)), 0.25 * codes)


# --- K-quants ------------------------------------------------------------------------------------
#
# Super-blocks of QK_K = 256 weights, little-endian, from ggml-common.h's block_q4_K/q5_K/q6_K:
#
#   Q4_K (144 bytes)  [f16 d][f16 dmin][12 B scales+mins][128 B qs]
#   Q5_K (176 bytes)  [f16 d][f16 dmin][12 B scales+mins][32 B qh][128 B qs]
#       8 sub-blocks of 32 weights, sub-block s has a 6-bit scale sc[s] and a 6-bit min m[s]:
#         bytes 0..3    sc[0..3] in bits 0-5, the top 2 bits of sc[4..7] in bits 6-7
#         bytes 4..7    m[0..3]  in bits 0-5, the top 2 bits of m[4..7]  in bits 6-7
#         bytes 8..11   the low 4 bits of sc[4..7] in bits 0-3, of m[4..7] in bits 4-7
#       weight i (sub-block s = i // 32, l = i % 32, 64-weight chunk c = i // 64) has its low 4 bits in
#       qs[32c + l], the low nibble when s is even, the high one when odd; Q5_K's 5th bit is bit s of qh[l].
#       w = d * sc[s] * q - dmin * m[s]        (q in 0..15 for Q4_K, 0..31 for Q5_K)
#
#   Q6_K (210 bytes)  [128 B ql][64 B qh][16 x int8 scales][f16 d]
#       16 groups of 16 weights, weight i has scale scales[i // 16] and a 6-bit code q:
#       half h = i // 128, quarter k = (i % 128) // 32, l = i % 32;
#       low 4 bits in ql[64h + 32(k % 2) + l] (low nibble for k < 2, high for k >= 2),
#       top 2 bits in bits 2k..2k+1 of qh[32h + l].
#       w = d * scales[i // 16] * (q - 32)
#
# We draw the codes, pack them into bytes following the layout above, and compute the reference
# weights in float64 from the codes (not the bytes), so a misread layout cannot agree with it.

QK_K = 256


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    """[n] values -> [n, 2] uint8 of their little-endian float16."""
    return np.asarray(values, "<f2").reshape(-1, 1).view(np.uint8)


def _pack_6bit_scales_and_mins(scales: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """[n, 8] 6-bit scales and [n, 8] 6-bit mins -> [n, 12] packed bytes."""
    return np.concatenate(
        [
            scales[:, :4] | (scales[:, 4:] >> 4) << 6,
            mins[:, :4] | (mins[:, 4:] >> 4) << 6,
            (scales[:, 4:] & 0xF) | (mins[:, 4:] & 0xF) << 4,
        ],
        axis=1,
    ).astype(np.uint8)


def _pack_sub_block_nibbles(codes: np.ndarray) -> np.ndarray:
    """[n, 256] codes (low 4 bits used) -> [n, 128] qs: sub-blocks 2c, 2c+1 share 32 bytes."""
    per_chunk = (codes & 0xF).reshape(-1, 4, 2, 32)  # [n, chunk, even/odd sub-block, l]
    return (per_chunk[:, :, 0] | per_chunk[:, :, 1] << 4).reshape(-1, 128).astype(np.uint8)


def _random_super_block_scales(rng, n: int):
    """f16-exact d, dmin [n] and 6-bit scales, mins [n, 8]."""
    d = rng.uniform(1e-4, 1e-2, n).astype(np.float16).astype(np.float64)
    dmin = rng.uniform(1e-4, 1e-2, n).astype(np.float16).astype(np.float64)
    return d, dmin, rng.integers(0, 64, (n, 8)), rng.integers(0, 64, (n, 8))


def _q4_k_or_q5_k_reference(d, dmin, scales, mins, codes) -> np.ndarray:
    sub_block = np.arange(QK_K) // 32
    return d[:, None] * scales[:, sub_block] * codes - dmin[:, None] * mins[:, sub_block]


def random_q4_k(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n packed Q4_K blocks [n, 144] uint8, their float64 weights [n, 256])."""
    d, dmin, scales, mins = _random_super_block_scales(rng, n)
    codes = rng.integers(0, 16, (n, QK_K))
    packed = [
        _f16_bytes(d),
        _f16_bytes(dmin),
        _pack_6bit_scales_and_mins(scales, mins),
        _pack_sub_block_nibbles(codes),
    ]
    return np.concatenate(packed, axis=1), _q4_k_or_q5_k_reference(d, dmin, scales, mins, codes)


def random_q5_k(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n packed Q5_K blocks [n, 176] uint8, their float64 weights [n, 256])."""
    d, dmin, scales, mins = _random_super_block_scales(rng, n)
    codes = rng.integers(0, 32, (n, QK_K))
    fifth_bits = (codes >> 4).reshape(n, 8, 32)  # [n, sub-block, l]
    qh = (fifth_bits << np.arange(8)[None, :, None]).sum(axis=1).astype(np.uint8)
    packed = [
        _f16_bytes(d),
        _f16_bytes(dmin),
        _pack_6bit_scales_and_mins(scales, mins),
        qh,
        _pack_sub_block_nibbles(codes),
    ]
    return np.concatenate(packed, axis=1), _q4_k_or_q5_k_reference(d, dmin, scales, mins, codes)


def random_q6_k(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n packed Q6_K blocks [n, 210] uint8, their float64 weights [n, 256])."""
    d = rng.uniform(1e-5, 1e-3, n).astype(np.float16).astype(np.float64)
    scales = rng.integers(-128, 128, (n, 16)).astype(np.int8)
    codes = rng.integers(0, 64, (n, QK_K))
    by_quarter = codes.reshape(n, 2, 4, 32)  # [n, half, quarter, l]
    low, top = by_quarter & 0xF, by_quarter >> 4
    ql = np.stack([low[:, :, 0] | low[:, :, 2] << 4, low[:, :, 1] | low[:, :, 3] << 4], axis=2)
    qh = (top << (2 * np.arange(4))[None, None, :, None]).sum(axis=2)
    packed = [ql.reshape(n, 128), qh.reshape(n, 64), scales.view(np.uint8), _f16_bytes(d)]
    weights = d[:, None] * scales[:, np.arange(QK_K) // 16] * (codes - 32)
    return np.concatenate(packed, axis=1).astype(np.uint8), weights


RANDOM_K_BLOCKS = {"Q4_K": random_q4_k, "Q5_K": random_q5_k, "Q6_K": random_q6_k}


def assert_close_to_reference(ours: np.ndarray, reference: np.ndarray):
    """float32 products of an f16 scale and small integers: within float32 rounding of the reference."""
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max())


@pytest.mark.parametrize("quant", sorted(RANDOM_K_BLOCKS))
@pytest.mark.parametrize("blocks_per_call", [None, 3])
def test_k_quant_blocks_match_the_format_reference(quant, blocks_per_call, monkeypatch):
    if blocks_per_call:  # runs that end mid-row and a last short run
        monkeypatch.setattr(gguf_checkpoint, "WEIGHTS_PER_GGUF_CALL", blocks_per_call * QK_K)
    blocks, reference = RANDOM_K_BLOCKS[quant](np.random.default_rng(2), 8)
    assert blocks.shape[1] == gguf.GGML_QUANT_SIZES[Q[quant]][1]
    shape = (4, 2 * QK_K)  # rows of two super-blocks, stored as GGUFReader hands them: [rows, bytes]
    ours = dequantize(blocks.reshape(4, -1), quant, shape)
    assert_close_to_reference(ours, reference.reshape(shape))


def test_k_quant_types_are_supported():
    assert {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"} <= set(
        supported_types()
    )


@pytest.mark.parametrize("quant", ["Q8_K", "NOT_A_TYPE"])
def test_unsupported_quant_type_is_named(quant):
    # Q8_K is llama.cpp's dot-product intermediate: gguf has no dequantiser for it
    with pytest.raises(NotImplementedError, match=rf"{quant} is not supported \(supported: .*Q4_K.*Q6_K"):
        dequantize(np.zeros(292, np.uint8), quant, (256,))


def test_wrong_byte_count_is_an_error():
    blocks, _ = random_q4_k(np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="do not hold 768 Q4_K weights"):
        dequantize(blocks, "Q4_K", (3, QK_K))


def converter_permute(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf's q/k permutation, restated: rows [head, half, i] -> [head, i, half]."""
    return (
        weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


@pytest.mark.parametrize("shape", [(24, 5), (24,)])
def test_unpermute_inverts_the_converter(shape):
    weight = np.random.default_rng(1).normal(size=shape)
    np.testing.assert_array_equal(unpermute_rope_rows(converter_permute(weight, 3), 3), weight)
    assert not np.array_equal(converter_permute(weight, 3), weight)


def _llama_writer(path, config) -> gguf.GGUFWriter:
    """A GGUFWriter for a "llama" file with `config`'s metadata; tensors are up to the caller."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config.num_layers)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    return writer


def _finish(writer: gguf.GGUFWriter):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_tiny_gguf(path, config, params, quantise_embedding: bool):
    writer = _llama_writer(path, config)
    for name, tensor in flatten_to_files(params, config, naming="gguf").items():
        tensor = np.asarray(tensor, np.float32)
        if ".attn_q." in name:
            tensor = converter_permute(tensor, config.num_heads)
        if ".attn_k." in name:
            tensor = converter_permute(tensor, config.num_kv_heads)
        if name == "token_embd.weight" and quantise_embedding:
            writer.add_tensor(name, gguf.quants.quantize(tensor, Q.Q8_0), raw_dtype=Q.Q8_0)
        else:
            writer.add_tensor(name, tensor)
    _finish(writer)


@pytest.mark.parametrize("tied", [False, True])
def test_tiny_gguf_round_trip_gives_the_same_model(tmp_path, tied):
    config = tiny_config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        rope_theta=5_000.0,
        rms_norm_eps=float(np.float32(1e-5)),
        max_seq_len=128,
        tie_embeddings=tied,
    )
    params = llama.init_params(config, jax.random.key(0))
    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path, config, params, quantise_embedding=tied)

    loaded, loaded_config, metadata = load_gguf(path)
    assert loaded_config == config.replace(head_dim=8)
    assert metadata["general.architecture"] == "llama"
    expected = params
    if tied:  # the embedding went through Q8_0
        table = np.asarray(params["embed_tokens"]["embedding"])
        expected = {
            **params,
            "embed_tokens": {
                "embedding": gguf.quants.dequantize(gguf.quants.quantize(table, Q.Q8_0), Q.Q8_0)
            },
        }
    chex.assert_trees_all_close(loaded, jax.tree_util.tree_map(np.asarray, expected), atol=1e-6)

    tokens = jnp.arange(10)[None] % config.vocab_size
    forward = jax.jit(llama.forward, static_argnums=1)
    chex.assert_trees_all_close(
        forward(loaded, loaded_config, tokens, jnp.arange(10)[None])[0],
        forward(expected, config, tokens, jnp.arange(10)[None])[0],
        atol=1e-5,
    )


# 2-D weights of the K-quant file: a Q4_K_M-like mix, with q/k (un-permuted on load) in two types
K_QUANT_OF_TENSOR = {
    "token_embd": "Q6_K",
    "attn_q": "Q4_K",
    "attn_k": "Q5_K",
    "attn_v": "Q6_K",
    "attn_output": "Q4_K",
    "ffn_gate": "Q4_K",
    "ffn_up": "Q5_K",
    "ffn_down": "Q6_K",
    "output": "Q4_K",
}


def _k_quant_config():
    # every 2-D weight's rows (hidden, heads * head_dim, intermediate) are whole 256-weight blocks
    return tiny_config(
        vocab_size=64,
        hidden_size=256,
        intermediate_size=512,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        max_seq_len=64,
        rms_norm_eps=float(np.float32(1e-5)),
    )


def test_tiny_k_quant_gguf_loads_to_the_reference_weights(tmp_path):
    config = _k_quant_config()
    rng = np.random.default_rng(3)
    # shapes only: initialising real weights costs seconds and we overwrite every one
    abstract = jax.eval_shape(lambda key: llama.init_params(config, key), jax.random.key(0))
    zeros = jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, np.float32), abstract)
    shapes = {name: t.shape for name, t in flatten_to_files(zeros, config, naming="gguf").items()}
    writer = _llama_writer(tmp_path / "k.gguf", config)
    expected = {}  # HF row order, what the loader must return
    for name, shape in shapes.items():
        quant = K_QUANT_OF_TENSOR.get(name.split(".")[-2])
        if len(shape) == 1:
            expected[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            writer.add_tensor(name, expected[name])
            continue
        blocks, weights = RANDOM_K_BLOCKS[quant](rng, shape[0] * shape[1] // QK_K)
        rows = blocks.reshape(shape[0], -1)  # one row of weights = consecutive blocks
        if ".attn_q." in name:
            rows = converter_permute(rows, config.num_heads)
        if ".attn_k." in name:
            rows = converter_permute(rows, config.num_kv_heads)
        writer.add_tensor(name, rows, raw_dtype=Q[quant])
        expected[name] = weights.reshape(shape)
    _finish(writer)

    loaded, loaded_config, _ = load_gguf(tmp_path / "k.gguf")
    assert loaded_config == config.replace(head_dim=64)
    files = flatten_to_files(loaded, loaded_config, naming="gguf")
    assert files.keys() == expected.keys()
    for name, reference in expected.items():
        assert_close_to_reference(files[name], reference)


def test_gguf_file_with_an_unsupported_tensor_type_names_it(tmp_path):
    config = _k_quant_config()
    writer = _llama_writer(tmp_path / "q8k.gguf", config)
    q8_k_bytes = gguf.GGML_QUANT_SIZES[Q.Q8_K][1] * config.hidden_size // QK_K
    writer.add_tensor(
        "token_embd.weight", np.zeros((config.vocab_size, q8_k_bytes), np.uint8), raw_dtype=Q.Q8_K
    )
    _finish(writer)
    with pytest.raises(NotImplementedError, match="Q8_K is not supported"):
        load_gguf(tmp_path / "q8k.gguf")
