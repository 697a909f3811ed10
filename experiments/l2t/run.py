"""L2T (a dense information-gain process reward) vs outcome-only GRPO and a length penalty, at toy scale.

Paper claim (Wang et al. 2025, "Learning to Think", arXiv 2505.10425; digest:
../shared/papers/rl-methods.md §4): rewarding each episode of a completion by how much it raises
the model's probability of the correct answer (fitting information gain, minus a LoRA-proxy
parameter compression penalty) gives equal or better accuracy than outcome-only GRPO with
fewer generated tokens (about 2x token efficiency), while a length penalty shortens at a cost in
accuracy (Table 1: GRPO 55.0, length penalty 50.8, L2T 57.8 average pass@1 for DeepScaleR-1.5B).

Here: a tiny from-scratch character-level LM (`model="tiny"`, ~1M parameters) on two-step
arithmetic, "What is a * b + c?" (2 <= a, b <= 9, 0 <= c <= 9; 128 of the 640 problems held out).
One supervised warm-up on step-by-step transcripts whose length varies on purpose: half are
concise ("3*2=6\n6+5=11\n#### 11"), a quarter restate the problem first ("so 3*2 then +5") and a
quarter add a redundant check line ("ok 11-5=6"), so the warmed-up model sometimes rambles and RL
has something to shorten. (The library's "word" problems were the first choice: their ~120-
character prompts made SFT cost ~1.2 s/step here; "a * b - c" reached only 0.08 held-out accuracy
after 800 SFT steps. Both were dropped for time.) From that one warm start, four RL arms with the
same budget and the same LoRA adapters (rank `lora_rank`; LoRA is what gives L2T's compression
penalty its low-rank proxy, so every arm gets it): GRPO on the outcome reward, L2T (paper's
Algorithm 1, with the penalty), L2T (released code's credit assignment, no penalty) and GRPO with
Kimi's length penalty. Seeds vary the RL (prompt order, sampling, LoRA init), not the warm start.
Held-out accuracy and generated tokens (temperature 1, one sample per problem) are measured every
`eval_every` updates. Then a handful of SmolLM2-135M-Instruct updates (LoRA, the bundled
GSM8K-format sample) compare GRPO with L2T (paper) at the bundled model's scale, one seed.

Scaled for 2 shared CPU cores: 4 prompts x 8 completions per update, 40 new tokens (characters),
tens of updates (paper: batch 256, 16k tokens, a 1.5B model). Writes results.md and
accuracy_vs_tokens.png next to this file (or to --out); finished jobs are cached in <out>/.jobs,
so a stopped run resumes job by job.

    python experiments/l2t/run.py            # default budget (~19 min wall on 2 busy cores)
    python experiments/l2t/run.py --quick    # smoke run (~5 min, most of it the shared warm-up)
"""

from __future__ import annotations

import dataclasses
import platform
import re
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from jaxrl_llm import data
from jaxrl_llm.algorithms import lm_grpo
from jaxrl_llm.algorithms.configs.lm_grpo import LMGRPOConfig, SFTConfig
from jaxrl_llm.algorithms.lm_sft import make_sft
from jaxrl_llm.algorithms.lm_task import LoadedModel
from jaxrl_llm.data import Problem
from jaxrl_llm.data.problems import encode_prompts
from jaxrl_llm.rollout.sampling import generate
from jaxrl_llm.training import compose, train_on_host

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from curves import cached_run  # noqa: E402  (experiments/curves.py)

# arm name -> LMGRPOConfig fields
ARMS = {
    "GRPO (outcome)": dict(reward="outcome"),
    "L2T (paper)": dict(reward="l2t", l2t_variant="paper"),
    "L2T (code)": dict(reward="l2t", l2t_variant="code"),
    "length penalty (kimi)": dict(reward="length-penalty", length_penalty_kind="kimi"),
}


@dataclass(frozen=True)
class Args:
    seeds: int = 3
    updates: int = 50
    """RL updates per job (every arm the same)."""
    eval_every: int = 10
    """Held-out evaluation every this many updates (and before the first)."""
    eval_problems: int = 128
    prompts_per_update: int = 4
    group_size: int = 8
    max_new_tokens: int = 40
    learning_rate: float = 5e-4
    """LoRA Adam step (2e-3 collapsed training accuracy after ~6 updates in a probe)."""
    lora_rank: int = 8
    kl_coef: float = 0.0
    """KL to the warm start (DeepSeekMath: 0.04); 0 for this short budget, every arm alike."""
    sft_steps: int = 400
    """Supervised warm-up steps (batch 32, Adam 1e-3) on the transcripts."""
    l2t_chunk_size: int = 8
    """Characters per L2T episode (the tiny model writes no tags)."""
    max_operand: int = 9
    smollm2: bool = True
    """Also run the SmolLM2-135M GSM8K-sample comparison (GRPO vs L2T paper, one seed)."""
    smollm2_updates: int = 3
    quick: bool = False
    """Smoke run: 1 seed, 4 updates, evaluations every 2, 1 SmolLM2 update (same warm start)."""
    out: Path = HERE


# ----------------------------------------------------------------------------------------------
# Task: two-step word problems with step-by-step transcripts of varying length.
# ----------------------------------------------------------------------------------------------

_CHAIN = re.compile(r"What is (\d+) \* (\d+) \+ (\d+)\?")


def transcript_lines(problem: Problem, variant: str) -> list[str]:
    """The reasoning lines of a transcript variant: "concise", "restate" (a restatement first)
    or "check" (a redundant check last)."""
    a, b, c = _CHAIN.fullmatch(problem.question).groups()
    product, answer = int(a) * int(b), problem.answer
    lines = [f"{a}*{b}={product}", f"{product}+{c}={answer}"]
    if variant == "restate":
        lines = [f"so {a}*{b} then +{c}"] + lines
    elif variant == "check":
        lines = lines + [f"ok {answer}-{c}={product}"]
    return lines


def transcript(problem: Problem) -> str:
    """The SFT target: concise (1/2), with a restatement first (1/4) or with a redundant check
    line (1/4); the variant is a hash of the question, so the model cannot predict it."""
    variant = ("concise", "concise", "restate", "check")[zlib.crc32(problem.question.encode()) % 4]
    return "\n".join(transcript_lines(problem, variant)) + f"\n#### {problem.answer}"


def make_problems(args: Args) -> tuple[list[Problem], list[Problem]]:
    """(train, held-out): every problem of the family, shuffled once; `eval_problems` are held
    out (the products a * b all occur in training, the (a, b, c) triples do not)."""
    problems = [
        Problem(f"What is {a} * {b} + {c}?", str(a * b + c))
        for a in range(2, args.max_operand + 1)
        for b in range(2, args.max_operand + 1)
        for c in range(10)
    ]
    order = np.random.default_rng(0).permutation(len(problems))
    shuffled = [problems[i] for i in order]
    return shuffled[args.eval_problems :], shuffled[: args.eval_problems]


def base_config(args: Args, **fields) -> LMGRPOConfig:
    return LMGRPOConfig(
        model="tiny",
        max_operand=args.max_operand,
        max_prompt_tokens=32,
        max_new_tokens=args.max_new_tokens,
        num_updates=args.updates,
        prompts_per_update=args.prompts_per_update,
        group_size=args.group_size,
        learning_rate=args.learning_rate,
        lora_rank=args.lora_rank,
        kl_coef=args.kl_coef,
        l2t_chunk_size=args.l2t_chunk_size,
        l2t_max_episodes=-(-args.max_new_tokens // args.l2t_chunk_size),
        **fields,
    )


# ----------------------------------------------------------------------------------------------
# Held-out evaluation: accuracy and generated tokens.
# ----------------------------------------------------------------------------------------------


def make_evaluator(run: lm_grpo.LMGRPO, problems: list[Problem], batch_size: int = 64, temperature: float = 1.0):
    """`evaluate(params, seed) -> dict` (full parameters, LoRA merged): one sample per problem at `temperature` (the policy
    RL trains), its exact-match accuracy, mean generated tokens (stop token included) and tokens
    per correct answer; `samples` holds a few completions."""
    config = run.config
    padded = problems + [problems[-1]] * (-len(problems) % batch_size)
    chunks = []
    for start in range(0, len(padded), batch_size):
        chunks.append(encode_prompts(run.tokenizer, padded[start : start + batch_size], config.max_prompt_tokens, 32))

    sample = jax.jit(
        lambda params, tokens, mask, key: generate(
            params,
            run.model_config,
            tokens,
            mask,
            key,
            config.max_new_tokens,
            temperature=temperature,
            stop_tokens=run.stop_tokens,
            pad_token=run.tokenizer.pad_token_id or 0,
        )
    )

    def evaluate(params, seed: int = 0) -> dict:
        key = jax.random.key(seed)
        texts, lengths = [], []
        for tokens, mask in chunks:
            key, sample_key = jax.random.split(key)
            out = sample(params, jnp.asarray(tokens), jnp.asarray(mask), sample_key)
            out_mask = np.asarray(out.mask)
            texts += lm_grpo.decode_completions(run.tokenizer, np.asarray(out.tokens), out_mask)
            lengths += out_mask.sum(1).tolist()
        texts, lengths = texts[: len(problems)], np.asarray(lengths[: len(problems)], np.float64)
        correct = np.array([data.exact_match_reward(t, p.answer) for t, p in zip(texts, problems)])
        return {
            "accuracy": float(correct.mean()),
            "tokens": float(lengths.mean()),
            "tokens_per_correct": float(lengths.sum() / max(correct.sum(), 1)),
            "samples": texts[:6],
        }

    return evaluate


# ----------------------------------------------------------------------------------------------
# Jobs.
# ----------------------------------------------------------------------------------------------


def warm_start(args: Args, train: list[Problem]):
    """`(params, metrics)` of the supervised warm-up (cached as flat leaves)."""
    config = base_config(args)
    run = lm_grpo.setup(config, problems=train, verbose=False)
    leaves, treedef = jax.tree.flatten(run.base_params)

    def job():
        sft = SFTConfig(
            model="tiny",
            num_updates=args.sft_steps,
            batch_size=32,
            learning_rate=1e-3,
            max_prompt_tokens=config.max_prompt_tokens,
            max_target_tokens=config.max_new_tokens,
        )
        algorithm = make_sft(sft, LoadedModel(run.base_params, run.model_config, run.tokenizer), train,
                             target_text=transcript, verbose=False)  # fmt: skip
        start = time.perf_counter()
        state, metrics = train_on_host(algorithm, jax.random.PRNGKey(0))
        flat = {f"leaf{i:03d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state.train_state.params))}
        return {**flat, "loss": np.asarray(metrics["loss"])}, 0.0, time.perf_counter() - start

    saved, _, run_s = cached_run(args.out / ".jobs" / f"warmup_sft{args.sft_steps}_op{args.max_operand}.npz", job)
    params = jax.tree.unflatten(treedef, [jnp.asarray(saved[f"leaf{i:03d}"]) for i in range(len(leaves))])
    return params, run, {"loss": saved["loss"], "seconds": run_s}


def rl_job(args: Args, arm: str, seed: int, warm_params, loaded: lm_grpo.LMGRPO, train, held_out):
    """One RL run: per-update training metrics and held-out evaluations."""
    config = base_config(args, seed=seed, **ARMS[arm])
    run = lm_grpo.setup(config, params=warm_params, model_config=loaded.model_config,
                        tokenizer=loaded.tokenizer, problems=train, verbose=False)  # fmt: skip
    evaluate = make_evaluator(run, held_out)
    fns = compose(lm_grpo.make_lm_grpo(config, run, verbose=False))
    state = fns.init(jax.random.PRNGKey(seed))
    start = time.perf_counter()
    evals, rows = [], []

    def record(update):
        result = evaluate(lm_grpo.effective_params(run, state.train_state.params), seed=1000 + update)
        evals.append((update, result["accuracy"], result["tokens"], result["tokens_per_correct"]))

    record(0)
    for update in range(1, config.num_updates + 1):
        state, metrics = fns.update(state)
        rows.append([float(metrics[k]) for k in ("accuracy", "completion_length_mean", "reward_mean")])
        if update % args.eval_every == 0 or update == config.num_updates:
            record(update)
    evals, rows = np.asarray(evals), np.asarray(rows)
    metrics = {
        "eval_update": evals[:, 0], "eval_accuracy": evals[:, 1], "eval_tokens": evals[:, 2],
        "eval_tokens_per_correct": evals[:, 3], "train_accuracy": rows[:, 0], "train_length": rows[:, 1],
        "train_reward": rows[:, 2],
    }  # fmt: skip
    return metrics, 0.0, time.perf_counter() - start


def smollm2_job(args: Args, arm: str, updates: int):
    """A few LoRA updates of SmolLM2-135M-Instruct on the bundled GSM8K-format sample; greedy
    accuracy and tokens on the whole sample before and after."""
    config = LMGRPOConfig(
        model="smollm2-135m-instruct",
        task="gsm8k",
        num_updates=updates,
        prompts_per_update=2,
        group_size=4,
        max_new_tokens=48,
        learning_rate=1e-4,
        lora_rank=8,
        l2t_chunk_size=16,
        l2t_max_episodes=4,
        seed=0,
        **ARMS[arm],
    )
    run = lm_grpo.setup(config, verbose=False)
    evaluate = make_evaluator(run, run.problems, batch_size=len(run.problems), temperature=0.0)
    fns = compose(lm_grpo.make_lm_grpo(config, run, verbose=False))
    state = fns.init(jax.random.PRNGKey(0))
    start = time.perf_counter()
    before = evaluate(lm_grpo.effective_params(run, state.train_state.params), seed=7)
    rows = []
    for _ in range(updates):
        state, metrics = fns.update(state)
        rows.append([float(metrics[k]) for k in ("accuracy", "completion_length_mean")])
    after = evaluate(lm_grpo.effective_params(run, state.train_state.params), seed=7)
    rows = np.asarray(rows)
    metrics = {
        "before": np.array([before["accuracy"], before["tokens"]]),
        "after": np.array([after["accuracy"], after["tokens"]]),
        "train_accuracy": rows[:, 0], "train_length": rows[:, 1], "problems": np.asarray(len(run.problems)),
        "sample_after": np.asarray(after["samples"][0]),
    }  # fmt: skip
    return metrics, 0.0, time.perf_counter() - start


def answer_probability_by_line(args: Args, warm_params, loaded: lm_grpo.LMGRPO, problems: list[Problem]) -> dict:
    """J_r of the warm start (probability of the gold answer after prefix + `\\n#### `, the L2T
    arms' `l2t_score="prob"`) after the prompt and after each line of each transcript variant,
    teacher-forced on the gold transcripts of `problems`: which lines carry information gain."""
    from jaxrl_llm.algorithms import l2t_rewards

    config, tokenizer = base_config(args), loaded.tokenizer
    prompt_tokens, prompt_mask = encode_prompts(tokenizer, problems, config.max_prompt_tokens, 32)
    targets = l2t_rewards.encode_answer_targets(tokenizer, [p.answer for p in problems], config.l2t_answer_cue)
    out = {}
    for variant in ("concise", "restate", "check"):
        tokens = np.zeros((len(problems), config.max_new_tokens), np.int32)
        mask = np.zeros_like(tokens, bool)
        prefix = np.zeros((len(problems), 4), np.int32)
        for row, problem in enumerate(problems):
            lines = transcript_lines(problem, variant)
            ids = tokenizer.encode("\n".join(lines), add_special_tokens=False)
            tokens[row, : len(ids)], mask[row, : len(ids)] = ids, True
            prefix[row, 1 : 1 + len(lines)] = np.cumsum([len(line) + 1 for line in lines]) - 1  # one token per char
        scores = l2t_rewards.boundary_scores(
            warm_params, loaded.model_config, jnp.asarray(prompt_tokens), jnp.asarray(prompt_mask),
            jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray(prefix), *(jnp.asarray(t) for t in targets),
        )  # fmt: skip
        out[variant] = np.asarray(scores)[:, : 1 + len(lines)].mean(0)
    return out


# ----------------------------------------------------------------------------------------------
# Report.
# ----------------------------------------------------------------------------------------------


def plot(results: dict, path: Path) -> None:
    """Held-out accuracy vs tokens per problem: one curve per arm (mean over seeds at each
    evaluation, std bars both ways), the warm start marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for arm, metrics in results.items():
        acc, tok = metrics["eval_accuracy"], metrics["eval_tokens"]  # [seeds, evals]
        line = axes[0].errorbar(tok.mean(0), acc.mean(0), xerr=tok.std(0), yerr=acc.std(0), marker="o",
                                ms=3, lw=1.4, capsize=2, label=arm)  # fmt: skip
        axes[0].annotate("end", (tok.mean(0)[-1], acc.mean(0)[-1]), fontsize=7, color=line[0].get_color())
        updates = metrics["eval_update"][0]
        axes[1].errorbar(updates, tok.mean(0), yerr=tok.std(0), marker="o", ms=3, lw=1.4, capsize=2, label=arm)
    first = next(iter(results.values()))
    axes[0].plot(first["eval_tokens"][:, 0].mean(), first["eval_accuracy"][:, 0].mean(), "k*", ms=12,
                 label="warm start (SFT)")  # fmt: skip
    axes[0].set_xlabel("generated tokens per held-out problem")
    axes[0].set_ylabel("held-out accuracy (T=1, 1 sample)")
    axes[0].set_title("accuracy vs tokens (each point: an evaluation)")
    axes[1].set_xlabel("RL update")
    axes[1].set_ylabel("generated tokens per held-out problem")
    axes[1].set_title("length during training")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def job_seconds(warm: dict, results: dict, smol: dict) -> float:
    """Wall seconds of every job (from the cache: a rerun reports the run that computed them)."""
    rl = sum(m["run_s"].sum() for m in results.values())
    return float(warm["seconds"] + rl + sum(float(m["run_s"]) for m in smol.values()))


def summary(results: dict) -> list[dict]:
    rows = []
    for arm, m in results.items():
        acc, tok, per_correct = m["eval_accuracy"][:, -1], m["eval_tokens"][:, -1], m["eval_tokens_per_correct"][:, -1]
        rows.append(dict(arm=arm, seeds=len(acc), acc=(acc.mean(), acc.std()), tok=(tok.mean(), tok.std()),
                         per_correct=(per_correct.mean(), per_correct.std()),
                         train_acc=m["train_accuracy"][:, -5:].mean(), seconds=m["run_s"].mean()))  # fmt: skip
    return rows


def write_results(args: Args, warm: dict, start: dict, results: dict, smol: dict, gains: dict, path: Path) -> None:
    config = base_config(args)
    lines = [
        "# L2T vs outcome GRPO vs a length penalty (toy scale)",
        "",
        f"Written by `python experiments/l2t/run.py{' --quick' if args.quick else ''}` "
        f"({platform.processor() or platform.machine()}, jax {jax.__version__}, 2 shared CPU cores; "
        f"{job_seconds(warm, results, smol) / 60:.1f} min of job wall time in all: warm-up "
        f"{warm['seconds'] / 60:.1f}, RL {sum(m['run_s'].sum() for m in results.values()) / 60:.1f}, SmolLM2 "
        f"{sum(float(m['run_s']) for m in smol.values()) / 60:.1f}). Paper: Wang et al. 2025, arXiv 2505.10425 "
        "(digest §4): L2T reaches equal or better pass@1 than outcome-only GRPO with about half the tokens; "
        "a length penalty shortens but loses accuracy (Table 1).",
        "",
        "## Setup",
        "",
        f"* Task: `What is a * b + c?` (2 <= a, b <= {args.max_operand}, 0 <= c <= 9), all "
        f"{len(make_problems(args)[0]) + args.eval_problems} problems of the family shuffled once; "
        f"{args.eval_problems} held out (their (a, b, c) never seen in training; every product is).",
        f"* Model: the library's tiny from-scratch character-level Llama (~1M parameters), one SFT warm-up of "
        f"{args.sft_steps} steps (batch 32, Adam 1e-3, final loss {warm['loss'][-20:].mean():.3f}) on step-by-step "
        "transcripts of varying length: 1/2 concise (`3*2=6\\n6+5=11\\n#### 11`), 1/4 with a restatement line "
        "first (`so 3*2 then +5`), 1/4 with a redundant check line (`ok 11-5=6`), the variant a hash of the "
        "question. Warm start, held out: "
        f"accuracy {start['acc']:.3f}, {start['tok']:.1f} tokens per problem.",
        f"* RL: {args.updates} updates of {args.prompts_per_update} prompts x {args.group_size} completions, "
        f"{args.max_new_tokens} new tokens (characters), LoRA rank {args.lora_rank} (alpha 16) on every arm "
        f"(L2T's compression penalty uses the adapters as its low-rank proxy), Adam {args.learning_rate:g}, "
        f"clip 0.2, KL coefficient {args.kl_coef:g}, format weight {config.format_reward_weight:g}, "
        "loss `seq-mean-token-mean`.",
        f"* Arms: GRPO (outcome: exact match + format); L2T paper (Algorithm 1, episodes = chunks of "
        f"{args.l2t_chunk_size} characters, K = {config.l2t_max_episodes}, J_r = probability of the gold answer "
        f"after the prefix + `\\n#### `, alpha {config.l2t_alpha:g}, beta {config.l2t_beta:g} with the LoRA "
        "compression penalty); L2T code (the released code's credit assignment, no penalty); length penalty "
        f"(Kimi k1.5 per-group rule, coefficient {config.length_penalty_coef:g}).",
        f"* Seeds: {args.seeds} per arm; the seed varies the RL (prompt order, sampling, LoRA init), not the "
        "warm start. Evaluation: every "
        f"{args.eval_every} updates, one sample per held-out problem at temperature 1 (the policy RL trains), "
        "exact match; tokens = generated tokens including the end-of-sequence token.",
        "",
        "## Results (after the last update; mean ± std over seeds)",
        "",
        "| arm | seeds | held-out accuracy | tokens / problem | tokens / correct answer | train acc. (last 5 updates) | s / job |",
        "|---|---|---|---|---|---|---|",
        f"| warm start (SFT) | - | {start['acc']:.3f} | {start['tok']:.1f} | {start['per_correct']:.1f} | - | - |",
    ]
    for r in summary(results):
        lines.append(
            f"| {r['arm']} | {r['seeds']} | {r['acc'][0]:.3f} ± {r['acc'][1]:.3f} | {r['tok'][0]:.1f} ± {r['tok'][1]:.1f} "
            f"| {r['per_correct'][0]:.1f} ± {r['per_correct'][1]:.1f} | {r['train_acc']:.3f} | {r['seconds']:.0f} |"
        )
    lines += ["", "![accuracy vs tokens](accuracy_vs_tokens.png)", ""]
    lines += ["Held-out evaluations during training (mean over seeds: accuracy / tokens):", "",
              "| arm | " + " | ".join(f"update {int(u)}" for u in next(iter(results.values()))["eval_update"][0]) + " |",
              "|---|" + "---|" * len(next(iter(results.values()))["eval_update"][0])]  # fmt: skip
    for arm, m in results.items():
        cells = [f"{a:.3f} / {t:.1f}" for a, t in zip(m["eval_accuracy"].mean(0), m["eval_tokens"].mean(0))]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "L2T's J_r on the warm start, teacher-forced on the gold transcripts of the first 64 held-out problems "
        "(mean probability of the gold answer after the prompt, then after each reasoning line, + `\\n#### `):",
        "",
        "| transcript variant | after prompt | after line 1 | after line 2 | after line 3 |",
        "|---|---|---|---|---|",
    ]
    for variant, values in gains.items():
        cells = [f"{v:.3f}" for v in values] + ["-"] * (4 - len(values))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    if smol:
        lines += [
            "",
            "## SmolLM2-135M-Instruct on the bundled GSM8K-format sample",
            "",
            f"{next(iter(smol.values()))['updates']} LoRA (rank 8) updates of 2 prompts x 4 completions, 48 new tokens, "
            "Adam 1e-4, 1 seed; L2T episodes = 16-token chunks (K = 4). Greedy accuracy and tokens on all "
            f"{int(next(iter(smol.values()))['problems'])} sample problems before and after.",
            "",
            "| arm | accuracy before | tokens before | accuracy after | tokens after | s |",
            "|---|---|---|---|---|---|",
        ]
        for arm, m in smol.items():
            lines.append(
                f"| {arm} | {m['before'][0]:.3f} | {m['before'][1]:.1f} | {m['after'][0]:.3f} | {m['after'][1]:.1f} "
                f"| {float(m['run_s']):.0f} |"
            )
    # the hand-written reading of a run survives a rerun of the driver (which rewrites the tables)
    kept = path.read_text().partition(READING)[2] if path.exists() else ""
    path.write_text("\n".join(lines) + "\n\n" + READING + (kept or "\n\n(to be written after the run)\n"))


READING = "## What this run shows (written by hand after the run; a rerun of the driver keeps this section)"


def main(args: Args) -> None:
    if args.quick:
        args = dataclasses.replace(args, seeds=1, updates=4, eval_every=2, smollm2_updates=1)
    args.out.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(args.out / ".jobs" / "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    train, held_out = make_problems(args)
    warm_params, loaded, warm = warm_start(args, train)
    tag = (f"u{args.updates}_e{args.eval_every}_p{args.prompts_per_update}x{args.group_size}_n{args.max_new_tokens}"
           f"_lr{args.learning_rate:g}_r{args.lora_rank}_kl{args.kl_coef:g}_c{args.l2t_chunk_size}_sft{args.sft_steps}")  # fmt: skip
    per_seed: dict[str, list] = {arm: [] for arm in ARMS}
    for seed in range(args.seeds):  # seed-major: a stopped run keeps balanced arms
        for arm in ARMS:
            slug = "".join(ch if ch.isalnum() else "_" for ch in arm)
            metrics, _, run_s = cached_run(
                args.out / ".jobs" / f"{tag}__{slug}__s{seed}.npz",
                lambda: rl_job(args, arm, seed, warm_params, loaded, train, held_out),
            )
            per_seed[arm].append({**metrics, "run_s": run_s})
            print(f"seed {seed} {arm:24s} acc {metrics['eval_accuracy'][0]:.3f} -> {metrics['eval_accuracy'][-1]:.3f}  "
                  f"tokens {metrics['eval_tokens'][0]:.1f} -> {metrics['eval_tokens'][-1]:.1f}  ({run_s:.0f} s)", flush=True)  # fmt: skip
    results = {arm: {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]} for arm, rows in per_seed.items()}
    first = next(iter(results.values()))
    start = dict(acc=float(first["eval_accuracy"][:, 0].mean()), tok=float(first["eval_tokens"][:, 0].mean()),
                 per_correct=float(first["eval_tokens_per_correct"][:, 0].mean()))  # fmt: skip
    plot(results, args.out / "accuracy_vs_tokens.png")
    smol = {}
    if args.smollm2:
        for arm in ("GRPO (outcome)", "L2T (paper)"):
            slug = "".join(ch if ch.isalnum() else "_" for ch in arm)
            metrics, _, run_s = cached_run(
                args.out / ".jobs" / f"smollm2_u{args.smollm2_updates}__{slug}.npz",
                lambda: smollm2_job(args, arm, args.smollm2_updates),
            )
            smol[arm] = {**metrics, "run_s": run_s, "updates": args.smollm2_updates}
            print(f"SmolLM2 {arm}: {metrics['before']} -> {metrics['after']} ({run_s:.0f} s)", flush=True)
    gains = answer_probability_by_line(args, warm_params, loaded, held_out[:64])
    write_results(args, warm, start, results, smol, gains, args.out / "results.md")
    print(f"wrote {args.out / 'results.md'} and {args.out / 'accuracy_vs_tokens.png'}")


if __name__ == "__main__":
    main(tyro.cli(Args))
