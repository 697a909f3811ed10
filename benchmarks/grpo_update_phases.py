"""Where the LM-GRPO gradient step's time and memory go: forward vs forward+backward of one
micro-batch, per part of the model, for several variants of the step, A/B in one process.

Setting: SmolLM2-135M-Instruct (float32, full fine-tuning), one micro-batch of `--rows` rows x
(`--prompt-tokens` + `--completion-tokens`) tokens, random tokens with ragged left-padded
prompts and ragged completions, the LM-GRPO loss (`lm_grpo.clipped_token_loss`, KL 0.04 k3,
seq-mean-token-mean) on the teacher-forced completion log-probs and entropies.

Parts (each timed as its forward alone and as forward + gradient w.r.t. the parameters):

* `step`:    the whole loss of `grpo_step`'s micro-batch (decoder + vocabulary head + loss);
* `decoder`: the decoder stack alone (loss = <hidden, fixed random>), no vocabulary projection;
* `head`:    the vocabulary head alone on fixed hidden states (`logprobs_from_hidden`).

Variants (`--variants`, each measured alone against `baseline`; see VARIANTS):

* `baseline`: the step as `lm_grpo` runs it (no layer remat, `LOGPROB_CHUNK` time chunks);
* `remat`:    the model config's `remat=True` (each decoder layer recomputed in the backward);
* `chunkN`:   N completion positions per vocabulary-projection chunk instead of LOGPROB_CHUNK;
* `dots-saveable`: the whole decoder under `jax.checkpoint(policy=dots_with_no_batch_dims_saveable)`
  (layer remat with that policy would need a `policy=` argument on llama.py's `nn.remat`).

Reported per (variant, part): median seconds of `--repeats` calls after one compiling call,
backward/forward ratio ((fwd+bwd - fwd) / fwd), the forward's matmul FLOPs (`forward_flops`,
counted by hand), the FLOP-bound fraction = FLOPs / (measured matmul rate x time) with
forward + backward = 3 x forward FLOPs (recomputation is overhead, not useful work),
the matmul rate being a jitted 2048x2048 float32 matmul timed in the same run, XLA's temp
buffer bytes (`compiled.memory_analysis().temp_size_in_bytes`) and the largest RSS sampled
while the variant's calls ran (a 5 ms sampling thread over /proc/self/statm).

    python benchmarks/grpo_update_phases.py                       # baseline + every variant, 8 x (96 + 128)
    python benchmarks/grpo_update_phases.py --variants baseline remat --parts step --repeats 3
    python benchmarks/grpo_update_phases.py --model tiny --rows 2 # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.algorithms import lm_grpo
from jaxrl_llm.models.llama import hidden_states, positions_from_mask
from jaxrl_llm.models.logprobs import completion_logprobs_and_entropy, logprobs_from_hidden


@dataclass(frozen=True)
class Variant:
    """One way of running the micro-batch: the model config's remat, the projection's chunk
    and whether the decoder runs under a `jax.checkpoint` policy."""

    remat: bool = False
    chunk: int = lm_grpo.LOGPROB_CHUNK
    decoder_policy: str | None = None  # a name in jax.checkpoint_policies


VARIANTS = {
    "baseline": Variant(),
    "remat": Variant(remat=True),
    "chunk64": Variant(chunk=64),
    "chunk128": Variant(chunk=128),
    "dots-saveable": Variant(decoder_policy="dots_with_no_batch_dims_saveable"),
}
PARTS = ("step", "decoder", "head")


# ----------------------------------------------------------------------------- inputs


def load_model(name: str):
    if name == "tiny":
        from jaxrl_llm.models.llama import init_params
        from jaxrl_llm.models.llama_config import tiny_config

        config = tiny_config()
        return init_params(config, jax.random.key(0)), config
    from jaxrl_llm.models import load

    params, config, _ = load(name)
    return params, config


def micro_batch(model_config, rows: int, prompt_len: int, completion_len: int, seed: int = 0):
    """A `lm_grpo.CompletionBatch` of random tokens: left-padded prompts of 1/2..all of
    `prompt_len` real tokens, completions of 1/4..all of `completion_len` tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, model_config.vocab_size, (rows, prompt_len + completion_len))
    prompt_real = rng.integers(prompt_len // 2, prompt_len + 1, rows)
    completion_real = rng.integers(max(completion_len // 4, 1), completion_len + 1, rows)
    prompt_mask = np.arange(prompt_len)[None] >= (prompt_len - prompt_real)[:, None]
    completion_mask = np.arange(completion_len)[None] < completion_real[:, None]
    old = np.where(completion_mask, -rng.uniform(0.5, 4.0, (rows, completion_len)), 0.0)
    return lm_grpo.CompletionBatch(
        tokens=jnp.asarray(tokens, jnp.int32),
        mask=jnp.asarray(np.concatenate([prompt_mask, completion_mask], axis=1)),
        completion_mask=jnp.asarray(completion_mask),
        old_log_prob=jnp.asarray(old, jnp.float32),
        ref_log_prob=jnp.asarray(old - 0.1, jnp.float32),
        advantage=jnp.asarray(rng.normal(size=rows), jnp.float32),
    )


# ----------------------------------------------------------------------------- the parts


def decoder_hidden(params, model_config, variant: Variant, tokens, mask):
    """Final hidden states [B, T, D] of the decoder, under the variant's remat choices."""
    config = model_config.replace(remat=variant.remat)
    mask = mask.astype(bool)

    def run(params):
        return hidden_states(params, config, tokens, positions_from_mask(mask), mask=mask)[0]

    if variant.decoder_policy is None:
        return run(params)
    policy = getattr(jax.checkpoint_policies, variant.decoder_policy)
    return jax.checkpoint(run, policy=policy)(params)


def step_loss(params, batch, *, model_config, variant: Variant, grpo_config, prompt_len: int):
    """The loss of one `grpo_step` micro-batch (as `grpo_step.loss_fn`, variant applied)."""
    if variant.decoder_policy is None:
        log_prob, entropy = completion_logprobs_and_entropy(
            params,
            model_config.replace(remat=variant.remat),
            batch.tokens,
            batch.mask,
            prompt_len,
            chunk_size=variant.chunk,
        )
    else:
        hidden = decoder_hidden(params, model_config, variant, batch.tokens, batch.mask)
        log_prob, entropy = logprobs_from_hidden(
            params, model_config, hidden[:, prompt_len - 1 : -1], batch.tokens[:, prompt_len:], 1.0, variant.chunk
        )
        log_prob = jnp.where(batch.completion_mask, log_prob, 0.0)
        entropy = jnp.where(batch.completion_mask, entropy, 0.0)
    return lm_grpo.clipped_token_loss(grpo_config, log_prob, entropy, batch, None)[0]


def decoder_loss(params, batch, probe, *, model_config, variant: Variant):
    hidden = decoder_hidden(params, model_config, variant, batch.tokens, batch.mask)
    return jnp.sum(hidden * probe)


def head_loss(params, hidden, targets, weights, *, model_config, variant: Variant):
    log_prob, entropy = logprobs_from_hidden(params, model_config, hidden, targets, 1.0, variant.chunk)
    return jnp.sum(weights * (log_prob + 0.01 * entropy))


def part_functions(part: str, params, model_config, variant: Variant, batch, prompt_len: int):
    """(loss(params) closed over the part's inputs, its argument tuple after params)."""
    grpo_config = lm_grpo.LMGRPOConfig(model="tiny", kl_coef=0.04, max_new_tokens=batch.completion_mask.shape[1])
    if part == "step":
        return partial(step_loss, model_config=model_config, variant=variant, grpo_config=grpo_config,
                       prompt_len=prompt_len), (batch,)
    rows, steps = batch.tokens.shape
    key = jax.random.key(1)
    if part == "decoder":
        probe = jax.random.normal(key, (rows, steps, model_config.hidden_size), jnp.float32) * 1e-3
        return partial(decoder_loss, model_config=model_config, variant=variant), (batch, probe)
    completion = batch.completion_mask.shape[1]
    hidden = jax.random.normal(key, (rows, completion, model_config.hidden_size), jnp.float32)
    targets = batch.tokens[:, prompt_len:]
    weights = batch.completion_mask.astype(jnp.float32) / batch.completion_mask.sum()
    return partial(head_loss, model_config=model_config, variant=variant), (hidden, targets, weights)


# ----------------------------------------------------------------------------- measuring


class PeakRSS:
    """Largest resident set size (bytes) sampled every `interval` s while in the `with` block."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def timed(fn, args, repeats: int) -> float:
    """Median seconds of `repeats` blocking calls (after the caller's compiling call)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def compiled_stats(jitted, args) -> tuple[object, int]:
    """(compiled program, XLA's temp buffer bytes)."""
    compiled = jitted.lower(*args).compile()
    return compiled, int(getattr(compiled.memory_analysis(), "temp_size_in_bytes", -1))


def forward_flops(part: str, model_config, rows: int, prompt_len: int, completion_len: int) -> float:
    """Matmul FLOPs of the part's forward pass, counted by hand (XLA's `cost_analysis` counts a
    loop body once, so it misses the layer scan and the chunk map). Attention counts the full
    T x T scores (masked, not skipped); the head projects the completion positions only.
    Forward + backward is 3x this (backward: one matmul per operand of each forward matmul)."""
    c = model_config
    steps = prompt_len + completion_len
    projections = 2 * c.hidden_size * c.head_dim * (c.num_heads * 2 + c.num_kv_heads * 2)  # q, o; k, v
    layer = rows * steps * (projections + 2 * 3 * c.hidden_size * c.intermediate_size)
    layer += 2 * 2 * rows * c.num_heads * steps * steps * c.head_dim  # q k^T and p v
    decoder = c.num_layers * layer
    head = 2 * rows * completion_len * c.hidden_size * c.vocab_size
    return {"step": decoder + head, "decoder": decoder, "head": head}[part]


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a jitted size x size float32 matmul (the FLOP-bound reference)."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    return 2 * size**3 / timed(matmul, (a, b), repeats)


def measure(part: str, variant_name: str, params, model_config, batch, prompt_len: int, repeats: int, rate: float):
    """One table row: forward and forward+backward times, ratio, FLOP-bound fractions, memory."""
    loss, args = part_functions(part, params, model_config, VARIANTS[variant_name], batch, prompt_len)
    forward = jax.jit(loss)
    gradient = jax.jit(jax.grad(loss))
    rows, steps = batch.tokens.shape
    flops = forward_flops(part, model_config, rows, prompt_len, steps - prompt_len)
    with PeakRSS() as rss:
        forward_program, forward_temp = compiled_stats(forward, (params, *args))
        grad_program, grad_temp = compiled_stats(gradient, (params, *args))
        jax.block_until_ready(forward_program(params, *args))
        jax.block_until_ready(grad_program(params, *args))
        forward_s = timed(forward_program, (params, *args), repeats)
        grad_s = timed(grad_program, (params, *args), repeats)
    return {
        "variant": variant_name,
        "part": part,
        "forward_s": forward_s,
        "fwd_bwd_s": grad_s,
        "bwd_over_fwd": (grad_s - forward_s) / forward_s,
        "forward_gflop": flops / 1e9,
        "forward_flop_bound": flops / rate / forward_s,
        "fwd_bwd_flop_bound": 3 * flops / rate / grad_s,
        "forward_temp_gib": forward_temp / 2**30,
        "fwd_bwd_temp_gib": grad_temp / 2**30,
        "peak_rss_gib": rss.peak / 2**30,
    }


def step_memory(params, model_config, remat: bool, batch_rows: int, micro_rows: int, prompt_len: int,
                completion_len: int, donate: bool) -> dict:
    """XLA's buffer sizes of the whole compiled `grpo_step` (Adam, `batch_rows` rows in micro-batches of
    `micro_rows`), compiled for one device with the train state and frozen weights in and the new
    train state out, donating the train state (`donate`, as `training.compose` does by default) or
    not (`compose(donate_state=False)`). Compiled on abstract shapes: nothing is allocated or run."""
    from jaxrl_llm.training.optimizers import clipped_adam
    from jaxrl_llm.training.train_state import create

    config = lm_grpo.LMGRPOConfig(
        model="tiny", prompts_per_update=batch_rows // 8, group_size=8, max_new_tokens=completion_len,
        micro_batch_size=micro_rows, remat=remat, kl_coef=0.04,
    )
    run = lm_grpo.LMGRPO(config, model_config, None, params, [], ())
    tx = clipped_adam(config.learning_rate, config.max_grad_norm)
    abstract = partial(jax.tree.map, lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)))
    state = jax.eval_shape(lambda p: create(p, tx), params)
    batch = abstract(micro_batch(model_config, batch_rows, prompt_len, completion_len))

    def step(train_state, frozen, batch, key):
        return lm_grpo.grpo_step(train_state, batch, key, None, frozen=frozen, run=run, tx=tx)

    jitted = jax.jit(step, donate_argnums=(0,) if donate else ())
    memory = jitted.lower(state, abstract(params), batch, jax.random.key(0)).compile().memory_analysis()
    gib = {name: getattr(memory, f"{name}_size_in_bytes") / 2**30 for name in ("argument", "output", "alias", "temp")}
    return {**gib, "peak": gib["argument"] + gib["output"] - gib["alias"] + gib["temp"]}


def step_memory_table(results: dict) -> str:
    lines = [
        "| step program | arguments GiB | outputs GiB | aliased GiB | temps GiB | args + outs - aliased + temps GiB |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        lines.append(
            f"| {name} | {m['argument']:.2f} | {m['output']:.2f} | {m['alias']:.2f} | {m['temp']:.2f} | {m['peak']:.2f} |"
        )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    header = (
        "| variant | part | fwd s | fwd+bwd s | bwd/fwd | fwd GFLOP | fwd FLOP-bound "
        "| fwd+bwd FLOP-bound | fwd temp GiB | fwd+bwd temp GiB | peak RSS GiB |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['part']} | {r['forward_s']:.2f} | {r['fwd_bwd_s']:.2f} | {r['bwd_over_fwd']:.2f} "
            f"| {r['forward_gflop']:.0f} | {r['forward_flop_bound']:.0%} "
            f"| {r['fwd_bwd_flop_bound']:.0%} | {r['forward_temp_gib']:.2f} | {r['fwd_bwd_temp_gib']:.2f} "
            f"| {r['peak_rss_gib']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a `models.load` name, or 'tiny'")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=96)
    parser.add_argument("--completion-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument(
        "--step-memory", type=int, metavar="BATCH_ROWS", default=0,
        help="instead: XLA's buffer sizes of the whole grpo_step on BATCH_ROWS rows in micro-batches of --rows "
        "(no layer remat / remat, train state donated or not); compiles only",
    )
    args = parser.parse_args()

    params, model_config = load_model(args.model)
    if args.step_memory:
        shapes = (args.step_memory, args.rows, args.prompt_tokens, args.completion_tokens)
        results = {
            f"{'remat' if remat else 'no remat'}{', state donated' if donate else ''}": step_memory(
                params, model_config, remat, *shapes, donate
            )
            for remat in (False, True)
            for donate in (False, True)
        }
        print(f"\n{args.model}, grpo_step on {args.step_memory} rows in micro-batches of {args.rows} x "
              f"({args.prompt_tokens} + {args.completion_tokens}) tokens, Adam, float32\n")
        print(step_memory_table(results))
        return
    batch = micro_batch(model_config, args.rows, args.prompt_tokens, args.completion_tokens)
    rate = matmul_rate()
    rows = []
    for part in args.parts:
        for variant in args.variants:
            rows.append(measure(part, variant, params, model_config, batch, args.prompt_tokens, args.repeats, rate))
            print(f"measured {variant} / {part}: {rows[-1]['forward_s']:.2f} s, {rows[-1]['fwd_bwd_s']:.2f} s", flush=True)
    rate_after = matmul_rate()
    print(
        f"\nmatmul rate at the start {rate / 1e9:.1f}, at the end {rate_after / 1e9:.1f} GFLOP/s (shared machine); "
        "FLOP-bound fractions use the start's"
    )
    print(
        f"\n{args.model}, {args.rows} rows x ({args.prompt_tokens} + {args.completion_tokens}) tokens, "
        f"float32, {jax.devices()[0].platform} ({os.cpu_count()} CPUs); matmul rate {rate / 1e9:.1f} GFLOP/s "
        f"(2048^2 float32); medians of {args.repeats}\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
