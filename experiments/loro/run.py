"""LORO (warm-starting off-policy RL from a prior's episodes) against its baselines.

Paper claim (Duong, Yang & Zhang 2025, arXiv 2505.10861; digest: ../shared/papers/rl-methods.md
§7): pretraining Double DQN / SAC offline on 10 episodes of a 7B-32B LLM, then training online
from an empty buffer, beats pure online RL in cumulative evaluation return (CliffWalking
-10.4k vs -41.9k, "up to 4x"; CartPole 27.1k vs 24.4k; Pendulum -56.8k vs -109.7k; FrozenLake
94 vs 75), although the LLM alone plays badly.

Here: CartPole-v1, Pendulum-v1, FrozenLake 4x4 and CliffWalking with two priors, the bundled
SmolLM2-135M-Instruct (20-200x smaller than the paper's) and each environment's scripted
heuristic (with 30% random decisions, so its data holds more than one action per state),
which separates the value of the method from the quality of the prior's data. Arms: LORO,
pure online RL, Mix (the prior's episodes in the buffer, no pretraining), the prior as the
policy, a random policy. The prior plays its episodes once per (environment, prior); the
seeds vary the learner (init, exploration, evaluation), trained in one vmapped program per
arm. Scaled for 2 CPU cores: 10k online frames per arm (paper: 30k-40k), a (64, 64) network
and batch 128 (paper: (256, 256), 256), Double DQN learning rate 1e-3 (paper: 5e-5, which
barely moves in 10k frames), K = 3000 pretraining steps (of the paper's {1000, 3000}).
Writes results.md and cumulative_return.png next to this file (or to --out); finished jobs
are cached in <out>/.jobs.

    python experiments/loro/run.py            # default budget
    python experiments/loro/run.py --quick    # smoke run: CartPole, heuristic prior, 2 seeds
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import tyro

from jaxrl_llm.algorithms import loro
from jaxrl_llm.algorithms.configs.loro import HEURISTIC_PRIOR, LOROConfig
from jaxrl_llm.rollout.prior import load_episodes, save_episodes

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from curves import cached_run, compile_and_run, plot_success_curves  # noqa: E402  (experiments/curves.py)

ENVS = {
    "CartPole-v1": {},
    "Pendulum-v1": {},
    "FrozenLake 4x4": {"env": "FrozenLake-misc", "env_kwargs": {"is_slippery": False}},
    "CliffWalking-v0": {},
}
SMOLLM2 = "smollm2-135m-instruct"
PRIORS = (HEURISTIC_PRIOR, SMOLLM2)
ARMS = ("loro", "mix", "online", "prior", "random")


@dataclass(frozen=True)
class Args:
    seeds: int = 5
    frames: int = 10_000
    """Online frames of every trained arm."""
    learning_rate: float = 1e-3
    """Double DQN's learning rate (SAC keeps d3rlpy's 3e-4)."""
    pretrain_steps: int = 3_000
    hidden: int = 64
    """Width of the learner's two hidden layers."""
    batch_size: int = 128
    heuristic_epsilon: float = 0.3
    """Share of the heuristic prior's decisions replaced by random actions."""
    envs: tuple[str, ...] = ()
    """Environment names (default: all of ENVS)."""
    priors: tuple[str, ...] = PRIORS
    quick: bool = False
    """Smoke run: CartPole, the heuristic prior, 2 seeds, 2k frames."""
    out: Path = HERE


def env_config(name: str, args: Args) -> LOROConfig:
    fields = {"env": name, **ENVS[name]}
    discrete = fields["env"] != "Pendulum-v1"
    return LOROConfig(
        **fields,
        total_frames=args.frames,
        learning_rate=args.learning_rate if discrete else None,
        pretrain_steps=args.pretrain_steps,
        hidden_sizes=(args.hidden, args.hidden),
        batch_size=args.batch_size,
    )


def prior_config(config: LOROConfig, prior: str, args: Args) -> LOROConfig:
    """The heuristic plays the paper's tau = 30 episodes; a language model only the n = 10 that
    LORO and Mix use (its 200-step Pendulum and CliffWalking episodes cost ~10 CPU-minutes per
    10 on 2 cores)."""
    if prior == HEURISTIC_PRIOR:
        return dataclasses.replace(config, prior=prior, prior_epsilon=args.heuristic_epsilon)
    return dataclasses.replace(
        config, prior=prior, prior_epsilon=0.0, prior_episodes=config.pretrain_episodes, prior_envs=10
    )


def slug(*parts: object) -> str:
    return "".join(c if c.isalnum() else "_" for c in "__".join(map(str, parts)))


def prior_episodes(config: LOROConfig, jobs: Path):
    """The prior's `config.prior_episodes` episodes, played once and kept in `jobs`."""
    path = jobs / f"{slug(config.env, config.prior, config.prior_epsilon, config.prior_episodes)}.npz"
    if path.exists():
        return load_episodes(path)
    start = time.perf_counter()
    episodes = loro.collect_prior(config, loro.make_prior(config))
    print(f"  {config.prior} played {episodes.num_episodes} episodes in {time.perf_counter() - start:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_episodes(path, episodes)
    return episodes


def train_arm(config: LOROConfig, episodes, arm: str, seeds: int):
    """`(metrics, compile_s, run_s)` of one trained arm, `seeds` seeds in one vmapped program."""
    train = jax.jit(jax.vmap(loro.make_train(config, episodes, arm)))
    keys = jax.random.split(jax.random.PRNGKey(config.seed), seeds)
    (_, metrics), compile_s, run_s = compile_and_run(train, keys)
    keep = ("eval_return_mean", "episode_return_mean", "episodes")
    return {k: np.asarray(metrics[k]) for k in keep}, compile_s, run_s


def cumulative_curves(metrics: dict, config: LOROConfig) -> tuple[np.ndarray, np.ndarray]:
    """`(frames [E], cumulative evaluation return [seeds, E])` of a trained arm (the paper's
    metric, counted as `loro.summarize` counts it)."""
    eval_every = config.eval_every // config.train_frequency
    evals = metrics["eval_return_mean"]
    points = [loro.evaluation_points(row, eval_every) for row in evals]
    cumulative = np.stack([np.cumsum(row[p]) for row, p in zip(evals, points, strict=True)])
    return (points[0] + 1) * config.train_frequency, cumulative


def fixed_policy_curve(mean_return: float, config: LOROConfig, seeds: int):
    """A fixed policy's expected cumulative evaluation return: its mean return per evaluation."""
    evaluations = config.total_frames // config.eval_every
    frames = np.arange(1, evaluations + 1) * config.eval_every
    return frames, np.tile(mean_return * np.arange(1, evaluations + 1), (seeds, 1))


def write_results(rows: list[dict], priors: list[dict], args: Args, path: Path) -> None:
    lines = [
        "# LORO vs online RL, Mix, the prior and random (toy scale)",
        "",
        "Written by `python experiments/loro/run.py` "
        f"({platform.processor() or platform.machine()}, jax {jax.__version__}). Cumulative evaluation "
        f"return (the paper's metric): the sum over the run of the greedy evaluations' mean return "
        f"(one evaluation per 200 frames, {args.frames:,} frames per trained arm), mean ± std over "
        f"{args.seeds} seeds of the learner; for the prior and random policies, their mean episode "
        "return times the number of evaluations. Double DQN (CartPole, FrozenLake, CliffWalking) or "
        f"SAC (Pendulum), ({args.hidden}, {args.hidden}) networks, batch {args.batch_size}, "
        f"K = {args.pretrain_steps} pretraining steps on the prior's first 10 episodes.",
        "",
        "| environment | prior | " + " | ".join(ARMS) + " |",
        "|---|---|" + "---|" * len(ARMS),
    ]
    for r in rows:
        cells = [
            f"{r['arms'][arm][0]:,.0f} ± {r['arms'][arm][1]:,.0f}" if arm in r["arms"] else "-"
            for arm in ARMS
        ]  # fmt: skip
        lines.append(f"| {r['env']} | {r['prior']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The priors' own episodes (the heuristic's first 10 of 30, and all 10 of the model's, are the "
        "pretraining data):",
        "",
        "| environment | prior | mean return | success | parse failures | decisions |",
        "|---|---|---|---|---|---|",
        *[
            f"| {p['env']} | {p['prior']} | {p['return_mean']:.1f} | {p['success_rate']:.2f} "
            f"| {p['parse_failure_rate']:.0%} | {p['decisions']} |"
            for p in priors
        ],
    ]
    path.write_text("\n".join(lines) + "\n")


def main(args: Args) -> None:
    if args.quick:
        args = dataclasses.replace(
            args, seeds=2, frames=2_000, pretrain_steps=500, envs=("CartPole-v1",), priors=(HEURISTIC_PRIOR,)
        )
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = args.out / ".jobs"
    budget = f"{args.frames}f_{args.seeds}s_h{args.hidden}_b{args.batch_size}_lr{args.learning_rate}_K{args.pretrain_steps}"
    rows, priors, curves = [], [], {}
    for name in args.envs or ENVS:
        base = env_config(name, args)

        def trained(config, episodes, arm, tag):
            metrics, compile_s, run_s = cached_run(
                jobs / f"{slug(name, tag, arm, budget)}.npz",
                lambda: train_arm(config, episodes, arm, args.seeds),
            )
            print(f"{name:16s} {tag:22s} {arm:7s} compile {compile_s:.0f}s run {run_s:.0f}s", flush=True)
            return cumulative_curves(metrics, config)

        online = trained(base, None, "online", "no prior")
        random_return = float(loro.random_returns(base).mean())
        for prior in args.priors:
            config = prior_config(base, prior, args)
            episodes = prior_episodes(config, jobs)
            priors.append({"env": name, "prior": prior, **episodes.summary()})
            arms = {arm: trained(config, episodes, arm, prior) for arm in ("loro", "mix")}
            arms["online"] = online
            arms["prior"] = fixed_policy_curve(float(episodes.returns.mean()), config, args.seeds)
            arms["random"] = fixed_policy_curve(random_return, config, args.seeds)
            total = {arm: cumulative[:, -1] for arm, (_, cumulative) in arms.items()}
            rows.append(
                {"env": name, "prior": prior, "arms": {a: (float(t.mean()), float(t.std())) for a, t in total.items()}}
            )
            print(
                f"{name:16s} {prior:22s} "
                + "  ".join(f"{a} {t.mean():,.0f}±{t.std():,.0f}" for a, t in total.items()),
                flush=True,
            )
            curves[f"{name}, prior: {prior}"] = arms
        # written after every environment, so a long run that is stopped keeps what it finished
        write_results(rows, priors, args, args.out / "results.md")
        plot_success_curves(
            curves,
            args.out / "cumulative_return.png",
            x_label="online frames",
            y_label="cumulative evaluation return",
            y_limits=None,
            columns=len(args.priors),
            smooth_width=1,
        )
    print(f"wrote {args.out / 'results.md'} and {args.out / 'cumulative_return.png'}")


if __name__ == "__main__":
    main(tyro.cli(Args))
