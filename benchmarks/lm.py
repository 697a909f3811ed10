"""LM decode speed: jaxrl_llm's jitted sampler vs transformers' PyTorch `generate`, SmolLM2-135M, CPU.

Same weights (both dequantised from the bundled GGUF), same chat prompt, greedy, exactly
`--new-tokens` tokens (no early stop), batch 1 and 16, float32 and bfloat16. Runs alternate
between the two implementations inside one process and medians are reported, because these
machines are shared. Besides end-to-end tokens/s we report ms per decode step,
    step = (time(N new tokens) - time(1 new token)) / (N - 1),
next to this machine's limit for one step, measured in the same run (`roofline.py`):
    limit = max(FLOPs / matmul rate, bytes read / read bandwidth),
FLOPs = 2 B (matrix weights) + 4 B L H d S (attention over the S = prompt + N cache slots),
bytes = the weights once + the KV cache (2 L B K S d values); "% of limit" = limit / step.

    python benchmarks/lm.py [--reps 3] [--new-tokens 64] [--batches 1 16] [--dtypes float32 bfloat16]

Prints a markdown table and appends it, with date and machine, to benchmarks/RESULTS.md under
"## LM decode".
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxrl_llm.models import load  # noqa: E402
from jaxrl_llm.models.checkpoints.registry import checkpoint_path  # noqa: E402
from jaxrl_llm.rollout.sampling import generate  # noqa: E402

from results_file import append_to_section  # noqa: E402  (benchmarks/ is the script's folder)
from roofline import measure as measure_roofline  # noqa: E402

NO_STOP = (-1,)


def weight_bytes_per_step(params, config) -> int:
    """Bytes of weights one decode step reads: every matrix once (the tied embedding as the output head)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))


def decode_step_flops_and_bytes(params, config, batch: int, slots: int) -> tuple[float, float]:
    """FLOPs and bytes read by one decode step of `batch` rows over a cache of `slots` slots."""
    matrices = sum(x.size for x in jax.tree_util.tree_leaves(params) if x.ndim >= 2)
    attention = 4 * batch * config.num_layers * config.num_heads * config.head_dim * slots
    itemsize = jnp.dtype(config.compute_dtype).itemsize
    cache = 2 * config.num_layers * batch * config.num_kv_heads * slots * config.head_dim * itemsize
    return 2 * batch * matrices + attention, weight_bytes_per_step(params, config) + cache


def transformers_model(dtype: str):
    """transformers' LlamaForCausalLM with the GGUF weights as transformers itself dequantises them."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = checkpoint_path("smollm2-135m-instruct")
    folder, name = os.path.split(path)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model.to(getattr(torch, dtype)).eval()


def prompt_batch(tokenizer, batch: int) -> np.ndarray:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, tokenize=True
    )["input_ids"]
    return np.asarray([ids] * batch)


def ours_runner(params, config, prompts: np.ndarray, new_tokens: int):
    tokens = jnp.asarray(prompts)
    mask = jnp.ones(prompts.shape, bool)

    def run():
        out = generate(
            params, config, tokens, mask, jax.random.key(0), new_tokens, temperature=0.0, stop_tokens=NO_STOP
        )
        return np.asarray(out.tokens)

    run()  # compile
    return run


def transformers_runner(model, prompts: np.ndarray, new_tokens: int):
    import torch

    ids = torch.tensor(prompts)
    attention = torch.ones_like(ids)

    def run():
        with torch.no_grad():
            # No eos: both implementations decode exactly `new_tokens` tokens through the end-of-turn token
            # (min_new_tokens would instead forbid <|im_end|> and change the greedy text).
            out = model.generate(
                input_ids=ids,
                attention_mask=attention,
                max_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=2,
            )
        return out[:, prompts.shape[1] :].numpy()

    run()  # warm-up
    return run


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(runners: dict, reps: int) -> dict[str, float]:
    """Median seconds per runner, alternating runners inside each repetition."""
    timings = {name: [] for name in runners}
    for _ in range(reps):
        for name, run in runners.items():
            timings[name].append(timed(run))
    return {name: statistics.median(values) for name, values in timings.items()}


def benchmark(args) -> list[dict]:
    rows = []
    for dtype in args.dtypes:
        params, config, tokenizer = load("smollm2-135m-instruct", dtype=dtype, param_dtype=dtype)
        torch_model = transformers_model(dtype)
        weight_bytes = weight_bytes_per_step(params, config)
        for batch in args.batches:
            prompts = prompt_batch(tokenizer, batch)
            runners = {("ours", n): ours_runner(params, config, prompts, n) for n in (1, args.new_tokens)} | {
                ("transformers", n): transformers_runner(torch_model, prompts, n)
                for n in (1, args.new_tokens)
            }
            agreement = np.mean(
                runners[("ours", args.new_tokens)]() == runners[("transformers", args.new_tokens)]()
            )
            limits = measure_roofline()
            seconds = measure(runners, args.reps)
            flops, bytes_read = decode_step_flops_and_bytes(
                params, config, batch, prompts.shape[1] + args.new_tokens
            )
            limit_ms = limits.bound_seconds(flops, bytes_read) * 1e3
            for impl in ("ours", "transformers"):
                total = seconds[(impl, args.new_tokens)]
                step_ms = (total - seconds[(impl, 1)]) / (args.new_tokens - 1) * 1e3
                rows.append(
                    dict(
                        impl=impl,
                        dtype=dtype,
                        batch=batch,
                        tok_s=batch * args.new_tokens / total,
                        step_ms=step_ms,
                        limit_ms=limit_ms,
                        limits=limits,
                        agreement=agreement,
                        weight_mb=weight_bytes / 2**20,
                    )
                )
            print(rows[-2], rows[-1], flush=True)
    return rows


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"| impl | dtype | batch | tok/s ({args.new_tokens} new, median of {args.reps}) | ms / decode step "
        "| limit ms / step | % of limit | weights MiB | matmul GFLOP/s | read GB/s | greedy tokens equal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['impl']} | {r['dtype']} | {r['batch']} | {r['tok_s']:.1f} | {r['step_ms']:.1f} "
            f"| {r['limit_ms']:.1f} | {100 * r['limit_ms'] / r['step_ms']:.0f}% | {r['weight_mb']:.0f} "
            f"| {r['limits'].matmul_gflop_s:.0f} | {r['limits'].read_gb_s:.1f} | {100 * r['agreement']:.0f}% |"
        )
    ratios = []
    for dtype in args.dtypes:
        for batch in args.batches:
            pair = {r["impl"]: r for r in rows if r["dtype"] == dtype and r["batch"] == batch}
            ratios.append(
                f"{dtype} B={batch}: {pair['ours']['tok_s'] / pair['transformers']['tok_s']:.2f}x tok/s, "
                f"{pair['transformers']['step_ms'] / pair['ours']['step_ms']:.2f}x per decode step"
            )
    lines.append("")
    lines.append("ours / transformers tok/s: " + ", ".join(ratios))
    return "\n".join(lines)


def append_results(table: str) -> None:
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    block = (
        f"\n### {datetime.datetime.now():%Y-%m-%d %H:%M} — {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__}, load average {load_average}\n\n"
        "SmolLM2-135M-Instruct (GGUF Q4_1 dequantised), chat prompt 'What is 2+3?', greedy, jitted prefill + "
        "`lax.while_loop` decode vs transformers `generate` (PyTorch CPU). Shared machine: other jobs were "
        "running, absolute numbers vary 2-10x between runs; compare within a row block.\n\n"
        f"{table}\n"
    )
    append_to_section("## LM decode", block)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    table = markdown(benchmark(args), args)
    print(table)
    if not args.no_write:
        append_results(table)


if __name__ == "__main__":
    main()
