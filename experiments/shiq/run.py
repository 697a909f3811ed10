"""ShiQ against DPO and rejection-sampling fine-tuning, offline, on a tiny LM; and ShiQ's losses
on a tree MDP with a known optimum.

Paper claim (Clavier et al. 2025, arXiv 2505.11081; digest: ../shared/papers/rl-methods.md §3):
ShiQ, soft Q-learning on the LM's logits shifted by the reference, learns offline from rewarded
completions (no preference pairs needed) and reaches a better reward-KL trade-off than DPO and
the other offline baselines (its Fig. 1 plots reward against KL to the reference); the
multi-step variant helps with sparse (sequence-level) rewards, and turn-wise rewards are used
where a task gives them.

Here, two arithmetic tasks for a from-scratch tiny decoder made into a reference by a short
supervised warm-up (so it is right part of the time):
* "a + b" (one step, a sequence reward: 1 for the exact answer),
* "a + b + c", answered as "<a+b>, <a+b+c>": two turns with a reward each (1 for the correct
  partial sum on the first turn's last token, 1 for the correct total on the eos), the
  turn-wise case.
For each seed an offline dataset is sampled from the reference (`samples_per_problem`
completions of each training prompt, scored); then, from the reference and on that same data:
ShiQ multi-step, ShiQ one-step, DPO on pairs built from the samples (best vs worst of a prompt)
and RFT (supervised steps on the completions with the top reward). Every arm gets the same
updates, batch and learning rate; at checkpoints the policy samples (temperature 1, a plain
softmax of its logits) on the training prompts and on held-out prompts, and we record the mean
reward and KL(π‖π_ref) = E_π[Σ_t log π/π_ref] per completion. Seeds vary the dataset and the
training (the reference is one per task).

The tree MDP (`--part tree`): random binary token trees of depth 6 with U(−1, 1) rewards, token-wise
or only at the leaf; tabular logits trained by Adam (cosine-decayed) from the reference on 256
paths (each of the 64 once, the rest sampled from π_ref);
max |log π_θ − log π*| against steps for the four loss variants (one-/multi-step, full or
semi-gradient), π* from soft value iteration.

Writes results.md, reward_vs_kl.png and tree_mdp.png next to this file (or to --out); finished
jobs are cached in <out>/.jobs.

    python experiments/shiq/run.py            # default budget (~25 CPU-minutes on 2 cores)
    python experiments/shiq/run.py --quick    # smoke run
"""

from __future__ import annotations

import dataclasses
import pickle
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

from jaxrl_llm.algorithms import lm_sft, offline_lm
from jaxrl_llm.algorithms.configs.dpo import DPOConfig
from jaxrl_llm.algorithms.configs.lm_grpo import SFTConfig
from jaxrl_llm.algorithms.configs.shiq import ShiQConfig
from jaxrl_llm.algorithms.lm_task import LoadedModel, load_model
from jaxrl_llm.data import Problem, exact_match_reward, offline
from jaxrl_llm.data.problems import encode_prompts
from jaxrl_llm.losses.bellman import shiq_loss
from jaxrl_llm.losses.reference.soft_tree_mdp import random_tree_mdp
from jaxrl_llm.models.logprobs import completion_logit_stats
from jaxrl_llm.models.tokenizer import stop_token_ids
from jaxrl_llm.rollout.sampling import generate
from jaxrl_llm.training.loop import as_train_functions

HERE = Path(__file__).parent
TINY_OVERRIDES = {"hidden_size": "64", "intermediate_size": "256", "num_layers": "2", "num_heads": "4", "num_kv_heads": "2"}
ARMS = {  # name: (method, β or None for --beta, config overrides; learning_rate_scale multiplies --learning-rate)
    "ShiQ multi-step": ("shiq", None, dict(one_step_coef=0.0, multi_step_coef=1.0)),
    "ShiQ one-step": ("shiq", None, dict(one_step_coef=1.0, multi_step_coef=0.0)),
    "ShiQ multi-step, semi-gradient": ("shiq", None, dict(multi_step_coef=1.0, stop_gradient_targets=True)),
    "DPO": ("dpo", None, {}),
    "RFT": ("rft", None, {}),
    "ShiQ multi-step, β=1": ("shiq", 1.0, dict(one_step_coef=0.0, multi_step_coef=1.0)),
    "DPO, β=1": ("dpo", 1.0, {}),
    "DPO, learning rate / 10": ("dpo", None, dict(learning_rate_scale=0.1)),
}


# ------------------------------------------------------------------------------------------------
# Tasks
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    make_problem: Callable[[np.random.Generator], Problem]
    solution: Callable[[Problem], str]
    """The gold transcript the reference is warmed up on."""
    score: Callable[[str, Problem], tuple[tuple[str, ...], tuple[float, ...]]]
    """(turn texts, turn rewards) of a completion."""
    max_reward: float


def operands(problem: Problem) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", problem.question)]


def addition(rng: np.random.Generator) -> Problem:
    a, b = (int(x) for x in rng.integers(0, 20, size=2))
    return Problem(f"What is {a} + {b}?", str(a + b))


def three_term_addition(rng: np.random.Generator) -> Problem:
    a, b, c = (int(x) for x in rng.integers(0, 10, size=3))
    return Problem(f"What is {a} + {b} + {c}?", str(a + b + c))


def score_answer(text: str, problem: Problem):
    return (text,), (exact_match_reward(text, problem.answer),)


def score_partial_then_total(text: str, problem: Problem):
    """Turn 1 = through the first comma (rewarded if it holds a + b), turn 2 = the rest (rewarded if
    the final answer is the total); no comma: one turn, rewarded for the total only."""
    a, b, _ = operands(problem)
    total = exact_match_reward(text, problem.answer)
    head, comma, tail = text.partition(",")
    if not comma:
        return (text,), (total,)
    return (head + comma, tail), (exact_match_reward(head, str(a + b)), total)


TASKS = {
    "a + b": Task("a + b", addition, lambda p: p.answer, score_answer, 1.0),
    "a + b + c (turn-wise)": Task(
        "a + b + c (turn-wise)",
        three_term_addition,
        lambda p: f"{sum(operands(p)[:2])}, {p.answer}",
        score_partial_then_total,
        2.0,
    ),
}


@dataclass(frozen=True)
class Args:
    part: str = "all"
    """'lm' (the tiny-LM comparison), 'tree' (the tree MDP) or 'all'."""
    seeds: int = 3
    updates: int = 240
    """Updates of every arm."""
    checkpoints: int = 4
    """Evaluations during training (evenly spaced, plus the reference at 0)."""
    batch_size: int = 32
    learning_rate: float = 3e-4
    beta: float = 0.1
    """KL temperature of ShiQ and DPO."""
    train_problems: int = 128
    held_out_problems: int = 64
    samples_per_problem: int = 8
    """Offline completions sampled from the reference per training prompt."""
    eval_samples: int = 4
    """Completions per prompt at each evaluation."""
    warmup_updates: int = 150
    """Supervised steps that make the reference (batch 32, learning rate 1e-3)."""
    tasks: tuple[str, ...] = tuple(TASKS)
    quick: bool = False
    """Smoke run: one task, 1 seed, 24 updates, a small dataset."""
    out: Path = HERE


def slug(*parts: object) -> str:
    return "".join(c if c.isalnum() else "_" for c in "__".join(map(str, parts)))


# ------------------------------------------------------------------------------------------------
# The reference and its offline dataset
# ------------------------------------------------------------------------------------------------

MAX_PROMPT_TOKENS, MAX_NEW_TOKENS = 32, 12


def task_problems(task: Task, args: Args) -> tuple[list[Problem], list[Problem]]:
    """Distinct training and held-out problems (fixed across seeds)."""
    rng, seen, problems = np.random.default_rng(1234), set(), []
    while len(problems) < args.train_problems + args.held_out_problems:
        problem = task.make_problem(rng)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems[: args.train_problems], problems[args.train_problems :]


def reference_model(task: Task, train: list[Problem], args: Args, jobs: Path) -> LoadedModel:
    """The tiny model after `warmup_updates` supervised steps on the gold transcripts (cached)."""
    config = SFTConfig(
        model="tiny",
        model_overrides=TINY_OVERRIDES,
        num_updates=args.warmup_updates,
        batch_size=32,
        learning_rate=1e-3,
        max_prompt_tokens=MAX_PROMPT_TOKENS,
        max_target_tokens=16,
    )
    base = load_model(config, verbose=False)
    path = jobs / f"reference__{slug(task.name, args.warmup_updates)}.pkl"
    if path.exists():
        return dataclasses.replace(base, params=pickle.loads(path.read_bytes()))
    algorithm = lm_sft.make_sft(config, base, train, target_text=task.solution, verbose=False)
    fns = as_train_functions(algorithm)
    state = fns.init(jax.random.key(0))
    for _ in range(config.num_updates):
        state, _ = fns.step(state)
    params = jax.device_get(state.train_state.params)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(params))
    return dataclasses.replace(base, params=params)


def offline_dataset(reference: LoadedModel, task: Task, train: list[Problem], seed: int, args: Args):
    return offline_lm.sample_rewarded_dataset(
        reference,
        train,
        jax.random.key(1000 + seed),
        samples_per_problem=args.samples_per_problem,
        max_new_tokens=MAX_NEW_TOKENS,
        max_prompt_tokens=MAX_PROMPT_TOKENS,
        prompts_per_call=32,
        score=task.score,
    )


# ------------------------------------------------------------------------------------------------
# Evaluation: reward and KL to the reference of the policy's own samples
# ------------------------------------------------------------------------------------------------


class Evaluator:
    """Samples `eval_samples` completions per prompt from a policy and returns (mean reward,
    mean final-answer accuracy, mean KL(π‖π_ref) per completion) on a fixed prompt set."""

    def __init__(self, reference: LoadedModel, task: Task, problems: list[Problem], samples: int):
        self.task, self.problems, self.samples = task, problems, samples
        tokenizer, config = reference.tokenizer, reference.model_config
        self.tokenizer = tokenizer
        self.stops = set(stop_token_ids(tokenizer))
        prompt_tokens, prompt_mask = encode_prompts(tokenizer, problems, MAX_PROMPT_TOKENS, pad_to_multiple_of=16)
        num_prompt_tokens = prompt_tokens.shape[1]
        prompt_tokens = jnp.repeat(jnp.asarray(prompt_tokens), samples, axis=0)  # problem-major rows
        prompt_mask = jnp.repeat(jnp.asarray(prompt_mask), samples, axis=0)
        sample = partial(
            generate,
            config=config,
            max_new_tokens=MAX_NEW_TOKENS,
            temperature=1.0,
            stop_tokens=stop_token_ids(tokenizer),
            pad_token=tokenizer.pad_token_id or 0,
        )

        @jax.jit
        def sample_with_kl(params, reference_params, key):
            out = sample(params, prompt_tokens=prompt_tokens, prompt_mask_or_lengths=prompt_mask, key=key)
            tokens = jnp.concatenate([prompt_tokens, out.tokens], axis=1)
            mask = jnp.concatenate([prompt_mask, out.mask], axis=1)
            ref = completion_logit_stats(reference_params, config, tokens, mask, num_prompt_tokens)
            return out.tokens, out.mask, ((out.logprobs - ref.logprob) * out.mask).sum(-1)

        self.sample_with_kl = sample_with_kl
        self.reference_params = reference.params

    def __call__(self, params, key) -> tuple[float, float, float]:
        tokens, mask, kl = jax.device_get(self.sample_with_kl(params, self.reference_params, key))
        rewards, correct = [], []
        for row, (ids, real) in enumerate(zip(tokens, mask)):
            problem = self.problems[row // self.samples]
            text = self.tokenizer.decode([t for t in ids[real].tolist() if t not in self.stops], skip_special_tokens=True)
            rewards.append(sum(self.task.score(text, problem)[1]))
            correct.append(exact_match_reward(text, problem.answer))
        return float(np.mean(rewards)), float(np.mean(correct)), float(np.mean(kl))


# ------------------------------------------------------------------------------------------------
# The arms
# ------------------------------------------------------------------------------------------------


def arm_algorithm(arm: str, reference: LoadedModel, dataset, task: Task, seed: int, args: Args):
    method, beta, overrides = ARMS[arm]
    beta = beta or args.beta
    overrides = dict(overrides)
    shared = dict(
        model="tiny",
        seed=seed,
        num_updates=args.updates,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate * overrides.pop("learning_rate_scale", 1.0),
        max_prompt_tokens=MAX_PROMPT_TOKENS,
    )
    if method == "shiq":
        config = ShiQConfig(**shared, beta=beta, max_completion_tokens=16, **overrides)
        return offline_lm.make_shiq(config, reference, dataset, verbose=False)
    if method == "dpo":
        pairs = offline.pairs_from_rewarded(dataset)
        config = DPOConfig(**shared, beta=beta, max_completion_tokens=16, **overrides)
        return offline_lm.make_dpo(config, reference, pairs, verbose=False)
    if method == "rft":
        top = max(s.total_reward for s in dataset)  # the task's maximum unless the data never reach it
        if top <= 0:
            raise ValueError("RFT: no sampled completion has a positive reward; warm the reference up longer.")
        best = [Problem(s.prompt, s.text) for s in dataset if s.total_reward == top]
        config = SFTConfig(**shared, max_target_tokens=16)
        return lm_sft.make_sft(config, reference, best, verbose=False)
    raise ValueError(f"unknown arm {arm!r}")


def train_arm(arm, reference, dataset, task, seed, args, evaluators) -> dict[str, np.ndarray]:
    """Per checkpoint: updates, and (reward, accuracy, KL) on the training and held-out prompts."""
    algorithm = arm_algorithm(arm, reference, dataset, task, seed, args)
    fns = as_train_functions(algorithm)
    state = fns.init(jax.random.key(seed))
    every = args.updates // args.checkpoints
    if fns.host_update:  # RFT reads its batches on the host
        advance = lambda state: [state := fns.step(state)[0] for _ in range(every)][-1]
    else:
        chunk = jax.jit(lambda s, frozen: jax.lax.scan(lambda s, _: fns.step(s, frozen), s, None, length=every)[0])
        advance = lambda state: chunk(state, fns.frozen)
    rows, eval_key = [], jax.random.key(10_000 + seed)
    for checkpoint in range(1, args.checkpoints + 1):
        state = advance(state)
        eval_key, *keys = jax.random.split(eval_key, 3)
        params = state.train_state.params
        rows.append([checkpoint * every, *evaluators["train"](params, keys[0]), *evaluators["held-out"](params, keys[1])])
    rows = np.asarray(rows)
    names = ("update", "train_reward", "train_accuracy", "train_kl", "held_reward", "held_accuracy", "held_kl")
    return {name: rows[:, i] for i, name in enumerate(names)}


def run_lm(args: Args, jobs: Path) -> dict:
    """results[task][arm] = metrics stacked over seeds (checkpoint 0 = the reference)."""
    results = {}
    for task_name in args.tasks:
        task = TASKS[task_name]
        train, held_out = task_problems(task, args)
        reference = reference_model(task, train, args, jobs)
        evaluators = {
            "train": Evaluator(reference, task, train, args.eval_samples),
            "held-out": Evaluator(reference, task, held_out, args.eval_samples),
        }
        results[task_name] = {}
        for seed in range(args.seeds):
            dataset = None
            base_key = jax.random.key(20_000 + seed)
            start = [0, *evaluators["train"](reference.params, base_key), *evaluators["held-out"](reference.params, base_key)]
            for arm in ARMS:
                settings = (args.updates, args.batch_size, args.learning_rate, args.beta, args.samples_per_problem, args.warmup_updates, args.train_problems)
                path = jobs / f"{slug(task_name, arm, seed, *settings)}.npz"
                if not path.exists() and dataset is None:
                    dataset = offline_dataset(reference, task, train, seed, args)
                started = time.perf_counter()
                if path.exists():
                    metrics = dict(np.load(path))
                else:
                    metrics = train_arm(arm, reference, dataset, task, seed, args, evaluators)
                    metrics["dataset_reward"] = np.asarray(np.mean([s.total_reward for s in dataset]))
                    metrics["seconds"] = np.asarray(time.perf_counter() - started)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(path, **metrics)
                    print(f"  {task_name} | {arm} | seed {seed}: {metrics['seconds']:.0f} s, "
                          f"train reward {metrics['train_reward'][-1]:.2f}, KL {metrics['train_kl'][-1]:.2f}", flush=True)
                names = ("update", "train_reward", "train_accuracy", "train_kl", "held_reward", "held_accuracy", "held_kl")
                with_start = {n: np.concatenate([[start[i]], metrics[n]]) for i, n in enumerate(names)}
                with_start["dataset_reward"] = metrics["dataset_reward"]
                with_start["seconds"] = metrics["seconds"]
                results[task_name].setdefault(arm, []).append(with_start)
        results[task_name] = {
            arm: {name: np.stack([run[name] for run in runs]) for name in runs[0]} for arm, runs in results[task_name].items()
        }
    return results


# ------------------------------------------------------------------------------------------------
# The tree MDP
# ------------------------------------------------------------------------------------------------

TREE_VARIANTS = {
    "multi-step, full gradient": dict(one_step_coef=0.0, multi_step_coef=1.0, stop_gradient_targets=False),
    "one-step, full gradient": dict(one_step_coef=1.0, multi_step_coef=0.0, stop_gradient_targets=False),
    "multi-step, semi-gradient": dict(one_step_coef=0.0, multi_step_coef=1.0, stop_gradient_targets=True),
    "one-step, semi-gradient": dict(one_step_coef=1.0, multi_step_coef=0.0, stop_gradient_targets=True),
}


TREE_SHAPE = dict(num_actions=2, depth=6)


def tree_dataset(seed: int, sequence_level: bool, beta: float, paths: int):
    """One random tree MDP and an offline dataset of `paths` root-to-leaf paths: every path once
    (π* weighs the reward of every branch: a branch the data never shows leaves it unidentifiable
    offline), the rest sampled from π_ref. `(ref_logits, rewards, states, actions, log π*)`."""
    mdp = random_tree_mdp(seed, sequence_level=sequence_level, **TREE_SHAPE)
    rng = np.random.default_rng(seed)
    ref_policy = np.exp(mdp.ref_logits) / np.exp(mdp.ref_logits).sum(-1, keepdims=True)
    every_state, every_action = mdp.all_paths()
    sampled = paths - len(every_state)
    states, actions = np.zeros((sampled, mdp.depth), int), np.zeros((sampled, mdp.depth), int)
    for row in range(sampled):
        state = 0
        for t in range(mdp.depth):
            action = rng.choice(mdp.num_actions, p=ref_policy[state])
            states[row, t], actions[row, t] = state, action
            state = mdp.child(state, action)
    states, actions = np.concatenate([every_state, states]), np.concatenate([every_action, actions])
    return mdp.ref_logits, mdp.rewards, states, actions, mdp.optimal_log_policy(beta)


def tree_gap_curves(seeds: int, sequence_level: bool, variant: dict, *, beta=0.5, paths=256, steps=1000, lr=0.05):
    """`[seeds, steps]` max over (s, a) of |log π_θ − log π*|: Adam on tabular logits from the
    reference, ShiQ on the dataset's paths; all MDPs in one vmapped program."""
    data = [tree_dataset(seed, sequence_level, beta, paths) for seed in range(seeds)]
    data = [jnp.asarray(np.stack(x), jnp.float32 if np.asarray(x[0]).dtype.kind == "f" else None) for x in zip(*data)]
    optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps))  # decays to 0: no Adam jitter at the float32 floor

    def curve(ref_logits, rewards, states, actions, optimal):
        def loss(logits):
            lse, ref_lse = jax.nn.logsumexp(logits, -1), jax.nn.logsumexp(ref_logits, -1)
            return shiq_loss(
                logits[states, actions], lse[states], ref_logits[states, actions], ref_lse[states],
                rewards[states, actions], jnp.ones(states.shape, bool), beta=beta, **variant,
            )[0]

        def step(carry, _):
            logits, opt_state = carry
            updates, opt_state = optimizer.update(jax.grad(loss)(logits), opt_state)
            logits = optax.apply_updates(logits, updates)
            gap = jnp.abs(jax.nn.log_softmax(logits, -1) - optimal).max()
            return (logits, opt_state), gap

        return jax.lax.scan(step, (ref_logits, optimizer.init(ref_logits)), None, length=steps)[1]

    return np.asarray(jax.jit(jax.vmap(curve))(*data))


def run_tree(args: Args) -> dict:
    seeds = 2 if args.quick else 10
    return {
        placement: {
            name: tree_gap_curves(seeds, placement == "reward at the leaf only", variant)
            for name, variant in TREE_VARIANTS.items()
        }
        for placement in ("token-wise rewards", "reward at the leaf only")
    }


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def plot_reward_vs_kl(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(task, split) for task in results for split in ("train", "held")]
    columns = 2
    fig, axes = plt.subplots(-(-len(panels) // columns), columns, figsize=(6.2 * columns, 4.4 * -(-len(panels) // columns)), dpi=110, squeeze=False)
    for ax, (task, split) in zip(axes.ravel(), panels):
        for arm, m in results[task].items():
            kl, reward = m[f"{split}_kl"], m[f"{split}_reward"]
            ax.errorbar(kl.mean(0), reward.mean(0), xerr=kl.std(0), yerr=reward.std(0), marker="o", ms=3.5, lw=1.4, capsize=2, label=arm)
            ax.annotate(f"{int(m['update'][0, -1])}", (kl.mean(0)[-1], reward.mean(0)[-1]), fontsize=6, alpha=0.6)
        ax.set_title(f"{task}: {'training' if split == 'train' else 'held-out'} prompts", fontsize=9)
        ax.set_xscale("symlog", linthresh=0.1)  # DPO's KL runs to ~30 nats, the rest stay below ~2
        ax.set_xlim(left=0)
        ax.set_xlabel("KL(π‖π_ref) per completion (nats, symlog)")
        ax.set_ylabel("mean reward of samples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_tree(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 3.8), dpi=110, squeeze=False)
    for ax, (placement, variants) in zip(axes[0], curves.items()):
        for name, gaps in variants.items():
            median = np.median(gaps, 0)
            ax.plot(np.arange(1, len(median) + 1), median, label=name, lw=1.5)
            ax.fill_between(np.arange(1, len(median) + 1), gaps.min(0), gaps.max(0), alpha=0.15)
        ax.set_yscale("log")
        ax.set_title(f"tree MDP, {placement}", fontsize=9)
        ax.set_xlabel("Adam steps")
        ax.set_ylabel("max |log π_θ − log π*|")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def lm_table(results: dict) -> list[str]:
    lines = [
        "| task | arm | train reward | train accuracy | train KL | held-out reward | held-out accuracy | held-out KL | s/run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pm = lambda x: f"{x.mean():.3f} ± {x.std():.3f}"
    for task, arms in results.items():
        ref = next(iter(arms.values()))
        lines.append(
            f"| {task} | reference | {pm(ref['train_reward'][:, 0])} | {pm(ref['train_accuracy'][:, 0])} | 0 | "
            f"{pm(ref['held_reward'][:, 0])} | {pm(ref['held_accuracy'][:, 0])} | 0 | |"
        )
        for arm, m in arms.items():
            cells = [pm(m[f"{split}_{what}"][:, -1]) for split in ("train", "held") for what in ("reward", "accuracy", "kl")]
            lines.append(f"| {task} | {arm} | {' | '.join(cells)} | {m['seconds'].mean():.0f} |")
    return lines


def tree_table(curves: dict) -> list[str]:
    lines = ["| rewards | variant | gap after 100 steps | after 300 | at the end (median, max over MDPs) |", "|---|---|---|---|---|"]
    for placement, variants in curves.items():
        for name, gaps in variants.items():
            at = lambda step: f"{np.median(gaps[:, step - 1]):.1e}"
            lines.append(f"| {placement} | {name} | {at(100)} | {at(300)} | {at(gaps.shape[1])}, {gaps[:, -1].max():.1e} |")
    return lines


def main(args: Args) -> None:
    if args.quick:
        args = dataclasses.replace(
            args, seeds=1, updates=24, checkpoints=2, train_problems=32, held_out_problems=16,
            samples_per_problem=4, warmup_updates=60, tasks=args.tasks[-1:], out=args.out / "quick",
        )
    if args.updates % args.checkpoints:
        raise ValueError(f"--updates {args.updates} must be a multiple of --checkpoints {args.checkpoints}.")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = args.out / ".jobs"
    started = time.perf_counter()
    lines = ["# ShiQ vs DPO vs RFT (offline, tiny LM) and ShiQ on a tree MDP", ""]
    lines += [
        f"Generated by `python experiments/shiq/run.py` ({platform.processor() or platform.machine()}, "
        f"{jax.device_count()} {jax.default_backend()} device(s), jax {jax.__version__}).",
        "",
        f"Settings: {args}",
        "",
    ]
    if args.part in ("lm", "all"):
        results = run_lm(args, jobs)
        plot_reward_vs_kl(results, args.out / "reward_vs_kl.png")
        dataset_reward = {task: next(iter(arms.values()))["dataset_reward"] for task, arms in results.items()}
        lines += ["## Offline LM: reward and KL to the reference at the end of training", ""]
        lines += ["Mean reward of the offline dataset: " + ", ".join(f"{t} {r.mean():.3f}" for t, r in dataset_reward.items()), ""]
        lines += lm_table(results) + ["", "![reward vs KL](reward_vs_kl.png)", ""]
    if args.part in ("tree", "all"):
        curves = run_tree(args)
        plot_tree(curves, args.out / "tree_mdp.png")
        lines += ["## Tree MDP: distance to the KL-regularised optimum", ""] + tree_table(curves)
        lines += ["", "![tree MDP](tree_mdp.png)", ""]
    lines.append(f"Total wall time {time.perf_counter() - started:.0f} s (cached jobs excluded).")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
