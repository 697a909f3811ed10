"""ReaCritic (a transformer critic) vs an MLP critic for SAC, TD3 and DDPG, at toy scale.

Paper claims (You & Du 2025, arXiv 2505.10992; digest: ../shared/papers/rl-methods.md §6):
on HetNet resource allocation with 20 users, SAC with ReaCritic ends at a return ~200-450
depending on (H, V), best near H = 8 with V = 1 or 3, while plain SAC fluctuates around 100;
in Table II (HumanoidStandup) the largest gains are DDPG's (+171%) and TD3's (+27%); SAC
gains +4%; on MountainCarContinuous both converge.

Here: SAC with the library's MLP critic against ReaCritic for H in {1, 4, 8} and V in {1, 3}
on HetNet-v0 (our real HetNet, 20 users, 4 small cells; not the paper's environment, which
was not released), Pendulum-v1 and MountainCarContinuous-v0; TD3 and DDPG with and without
ReaCritic (H = 8, V = 1, the official defaults) on Pendulum-v1. Equal env-step budgets per
task, 3 seeds trained in one vmapped program per job. Scaled for 2 CPU cores: token width
h = 32 (paper: 256), batch 128 (paper: 256), a few thousand env steps (paper: 1e5-2e5).
Writes results.md and return_curves.png next to this file (or to --out); finished jobs
are cached in <out>/.jobs, so a stopped run resumes where it stopped.

    python experiments/reacritic/run.py            # default budget (about an hour on 2 cores)
    python experiments/reacritic/run.py --quick    # smoke run (a few minutes)
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import tyro

from jaxrl_llm.algorithms import ddpg, sac, td3
from jaxrl_llm.training import make_train

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from curves import cached_run, compile_and_run, plot_success_curves  # noqa: E402  (experiments/curves.py)

GRID = [(1, 1), (4, 1), (8, 1), (1, 3), (4, 3), (8, 3)]  # (H, V)
# frames: the env-step budget of every job of the task; eval_episodes: greedy episodes per evaluation
TASKS = {
    "HetNet-v0 (20 users)": dict(env="HetNet-v0", frames=5_000, eval_episodes=5),
    "Pendulum-v1": dict(env="Pendulum-v1", frames=5_000, eval_episodes=5),
    "MountainCarContinuous-v0": dict(env="MountainCarContinuous-v0", frames=5_000, eval_episodes=3),
}
ALGORITHMS = {"SAC": (sac.SACConfig, sac.make_sac), "TD3": (td3.TD3Config, td3.make_td3),
              "DDPG": (ddpg.DDPGConfig, ddpg.make_ddpg)}  # fmt: skip
REACRITIC_ONLY_DEFAULT = (8, 1)  # TD3 / DDPG rows: the official code's defaults
# The whole (H, V) grid runs where the critic matters at this budget; on MountainCarContinuous
# no critic helps an agent that never reaches the flag in 5k steps (SAC + MLP: return ~0).
GRID_TASKS = ("HetNet-v0 (20 users)", "Pendulum-v1")


@dataclass(frozen=True)
class Args:
    seeds: int = 3
    evals: int = 10
    """Greedy evaluations per job, evenly spaced over its budget."""
    width: int = 32
    """ReaCritic's token width h (the paper: 256)."""
    batch_size: int = 128
    frames: int = 0
    """Env-step budget of every job (0: each task's own, TASKS)."""
    tasks: tuple[str, ...] = ()
    """Task names (default: all of TASKS)."""
    quick: bool = False
    """Smoke run: Pendulum, SAC with MLP vs ReaCritic (H=8, V=1), a tiny budget, 2 seeds."""
    out: Path = HERE


@dataclass(frozen=True)
class Job:
    task: str
    algorithm: str
    critic: tuple[int, int] | None  # (H, V) of ReaCritic; None: the MLP critic

    @property
    def label(self) -> str:
        name = "MLP" if self.critic is None else "ReaCritic H={} V={}".format(*self.critic)
        return f"{self.algorithm} + {name}"


def jobs(args: Args) -> list[Job]:
    """The order matters for a run that is stopped early: the MLP baselines and the official
    ReaCritic setting of every task first, the rest of the (H, V) grid last, cheapest first."""
    tasks = list(args.tasks or TASKS)
    if args.quick:
        return [Job("Pendulum-v1", "SAC", None), Job("Pendulum-v1", "SAC", REACRITIC_ONLY_DEFAULT)]
    first = [Job(t, "SAC", c) for t in tasks for c in (None, REACRITIC_ONLY_DEFAULT)]
    pairs = [Job("Pendulum-v1", a, c) for a in ("TD3", "DDPG") for c in (None, REACRITIC_ONLY_DEFAULT)]
    grid = sorted((c for c in GRID if c != REACRITIC_ONLY_DEFAULT), key=lambda c: c[0] * (c[1] + 1))  # by cost
    rest = [Job(t, "SAC", c) for c in grid for t in tasks if t in GRID_TASKS]
    return first + (pairs if "Pendulum-v1" in tasks else []) + rest


def job_config(job: Job, args: Args):
    task = TASKS[job.task]
    frames = args.frames or (1_000 if args.quick else task["frames"])
    config_class, _ = ALGORITHMS[job.algorithm]
    critic = {}
    if job.critic is not None:
        steps, depth = job.critic
        critic = dict(critic="reacritic", reacritic_steps=steps, reacritic_depth=depth, reacritic_width=args.width)
    return config_class(
        env=task["env"],
        total_frames=frames,
        batch_size=args.batch_size,
        eval_interval=frames // args.evals,
        eval_episodes=task["eval_episodes"],
        **critic,
    )


def train_seeds(job: Job, config, seeds: int):
    """`(metrics, compile_s, run_s)` of `seeds` seeds of `config` in one vmapped program;
    `metrics` holds the per-update curves and the critic's parameter count."""
    _, make = ALGORITHMS[job.algorithm]
    train = jax.jit(jax.vmap(make_train(make(config))))
    keys = jax.random.split(jax.random.PRNGKey(config.seed), seeds)
    (state, metrics), compile_s, run_s = compile_and_run(train, keys)
    critic_params = sum(leaf.size for leaf in jax.tree.leaves(state.train_state.params["critic"])) // seeds
    metrics = {k: np.asarray(v) for k, v in metrics.items()}
    return {**metrics, "critic_params": np.asarray(critic_params)}, compile_s, run_s


def final_returns(evals: np.ndarray, last: int = 2) -> np.ndarray:
    """Per-seed mean of the last `last` greedy evaluations (`evals[seeds, updates]`, NaN
    between evaluations)."""
    return np.stack([row[np.isfinite(row)][-last:].mean() for row in evals])


def write_results(rows: list[dict], args: Args, path: Path) -> None:
    lines = [
        "# ReaCritic vs MLP critics (toy scale)",
        "",
        "Written by `python experiments/reacritic/run.py` "
        f"({args.seeds} seeds per row in one vmapped program; {platform.processor() or platform.machine()}, "
        f"jax {jax.__version__}). Final return: mean of each seed's last two greedy evaluations "
        f"({args.evals} per run), then mean ± std over seeds. ReaCritic token width h = {args.width}, "
        f"batch {args.batch_size}; MLP critic (64, 64). ms / step: wall time of one env step of "
        "all seeds together (with its gradient step), compile excluded.",
        "",
        "| task | method | env steps | final return | critic params | ms / step | compile s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["order"]):
        lines.append(
            f"| {r['task']} | {r['method']} | {r['frames']:,} | {r['mean']:.1f} ± {r['std']:.1f} "
            f"| {r['critic_params']:,} | {r['ms_per_step']:.2f} | {r['compile_s']:.0f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(args: Args) -> None:
    if args.quick:
        args = dataclasses.replace(args, seeds=min(args.seeds, 2), evals=4)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    for job in jobs(args):
        config = job_config(job, args)
        slug = "".join(c if c.isalnum() else "_" for c in f"{job.task}__{job.label}__{config.total_frames}x{args.seeds}")
        name = f"w{args.width}_b{args.batch_size}_e{args.evals}__{slug}"
        metrics, compile_s, run_s = cached_run(
            args.out / ".jobs" / f"{name}.npz", lambda: train_seeds(job, config, args.seeds)
        )
        evals = metrics["eval_return_mean"]  # [seeds, updates], NaN between evaluations
        final = final_returns(evals)
        updates = evals.shape[1]
        frames = np.arange(1, updates + 1) * config.frames_per_update
        evaluated = np.isfinite(evals[0])
        panel = job.task if job.algorithm == "SAC" else f"{job.task}: TD3 and DDPG"
        curves.setdefault(panel, {})[job.label] = (frames[evaluated], evals[:, evaluated])
        rows.append(
            {
                "order": (list(TASKS).index(job.task), list(ALGORITHMS).index(job.algorithm), job.critic or (0, 0)),
                "task": job.task,
                "method": job.label,
                "frames": config.total_frames,
                "mean": float(final.mean()),
                "std": float(final.std()),
                "critic_params": int(metrics["critic_params"]),
                "ms_per_step": 1e3 * run_s / config.total_frames,
                "compile_s": compile_s,
            }
        )
        print(
            f"{job.task:26s} {job.label:28s} return {final.mean():9.1f} ± {final.std():6.1f} "
            f"critic {int(metrics['critic_params']):7,d} params  compile {compile_s:.0f}s run {run_s:.0f}s",
            flush=True,
        )
        # written after every job, so a long run that is stopped keeps what it finished
        write_results(rows, args, args.out / "results.md")
        plot_success_curves(
            curves, args.out / "return_curves.png", "env steps", "greedy return", y_limits=None, columns=2
        )
    print(f"wrote {args.out / 'results.md'} and {args.out / 'return_curves.png'}")


if __name__ == "__main__":
    main(tyro.cli(Args))
