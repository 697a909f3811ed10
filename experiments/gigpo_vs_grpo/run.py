"""GiGPO vs GRPO (and PPO) on multi-step grid tasks with sparse success rewards.

Paper claim (Feng et al. 2025, arXiv 2505.10978, Table 1): GiGPO beats GRPO on
long-horizon agent tasks (ALFWorld 86.7 vs 72.8 success at 1.5B), because its
step-level advantages compare actions taken from the same anchor state.

Here, at toy scale: PPO, GRPO, GiGPO (w/ std) and GiGPO (w/o std) on random 6x6
mazes (Maze-v0), MiniBehavior-PickPlace-v0 and FrozenLake with random maps
(FrozenLakeRandom-v0); equal env-step budgets; seeds trained in one vmapped program.
Writes results.md and success_curves.png next to this file (or to --out).

    python experiments/gigpo_vs_grpo/run.py            # default budget (< 15 min on 2 CPU cores)
    python experiments/gigpo_vs_grpo/run.py --quick    # smoke run, one task (< 2 min)
"""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import tyro

from jaxrl_llm.algorithms import group_rl, ppo
from jaxrl_llm.training.watchdog import EXIT_STALLED, StallWatchdog

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from curves import final_success, plot_success_curves  # noqa: E402  (experiments/curves.py)


@dataclass(frozen=True)
class Task:
    env: str
    horizon: int  # steps per episode, the same for every method
    env_kwargs: tuple[tuple[str, int], ...] = ()


TASKS = {
    "Maze 6x6": Task("Maze-v0", 48, (("size", 6),)),
    "MiniBehavior PickPlace": Task("MiniBehavior-PickPlace-v0", 48),
    "FrozenLake random 4x4": Task("FrozenLakeRandom-v0", 24, (("size", 4),)),
}


@dataclass(frozen=True)
class Args:
    frames: int = 800_000
    """Env-step budget per seed and method."""
    seeds: int = 3
    quick: bool = False
    """Smoke run: the first task only, a tiny budget, 2 seeds."""
    out: Path = HERE
    stall_seconds: float = 120.0
    """A job whose XLA program waits this long with the CPU idle has stalled (a known jaxlib
    thread-pool deadlock): it exits with code 75 and is restarted."""
    job_timeout: float = 1800.0
    """Backstop: a job still running after this many seconds is killed and restarted."""
    job_attempts: int = 3
    """How many times a stalled job is tried before the experiment gives up."""
    job: str = ""
    """Internal: 'TASK|METHOD|NPZ' runs one training job in this process."""
    repeats: int = 1
    """With --job: execute the compiled program this many times (a stress test of XLA:CPU)."""


def method_configs(task: Task, frames: int, seed: int) -> dict[str, object]:
    kwargs = dict(task.env_kwargs)
    group = dict(
        env=task.env,
        env_kwargs=kwargs,
        seed=seed,
        total_frames=frames,
        episode_steps=task.horizon,
        num_groups=16,
        group_size=8,
    )
    return {
        "PPO": ppo.PPOConfig(
            env=task.env,
            env_kwargs=kwargs,
            max_episode_steps=task.horizon,
            seed=seed,
            total_frames=frames,
            num_envs=32,
            num_steps=64,
            num_minibatches=4,
            learning_rate=5e-4,
            hidden_sizes=(128, 128),
        ),
        "GRPO": group_rl.GroupRLConfig(algorithm="grpo", normalization="group", **group),
        "GiGPO (w/ std)": group_rl.GroupRLConfig(algorithm="gigpo", normalization="group", **group),
        "GiGPO (w/o std)": group_rl.GroupRLConfig(algorithm="gigpo", normalization="none", **group),
    }


def train_seeds(config, num_seeds: int, watchdog: StallWatchdog | None = None, repeats: int = 1):
    """Trains `num_seeds` seeds in one vmapped program; returns success curves and timing.

    `repeats` > 1 executes the compiled program that many times (same result each time):
    the stress test of XLA:CPU's stall uses it, the timing is the last execution's."""
    module = ppo if isinstance(config, ppo.PPOConfig) else group_rl
    watchdog = watchdog or StallWatchdog(None)  # disabled
    train = jax.jit(jax.vmap(module.make_train(config)))
    keys = jax.random.split(jax.random.PRNGKey(config.seed), num_seeds)
    start = time.perf_counter()
    compiled = train.lower(keys).compile()
    compile_s = time.perf_counter() - start
    for execution in range(1, repeats + 1):
        start = time.perf_counter()
        with watchdog.waiting(
            f"execution {execution}: the training program stalled "
            f"(XLA CPU runtime, no CPU use for {watchdog.stall_seconds:.0f} s)"
        ):
            _, metrics = compiled(keys)
            success = np.asarray(jax.device_get(metrics["episode_return_mean"]))  # 0/1 rewards: success
        run_s = time.perf_counter() - start
        if repeats > 1:
            print(f"execution {execution} of {repeats}: {run_s:.1f} s", flush=True)
    frames = np.arange(1, config.num_updates + 1) * config.frames_per_update
    return frames, success, compile_s, run_s


def write_results(rows: list, args: Args, path: Path) -> None:
    methods = list(dict.fromkeys(r[1] for r in rows))
    lines = [
        "# GiGPO vs GRPO on multi-step grid tasks (toy scale)",
        "",
        f"Budget {args.frames:,} env steps per seed and method, {args.seeds} seeds (vmapped), "
        f"{jax.device_count()} {jax.devices()[0].platform.upper()} device(s), {platform.processor() or platform.machine()}, "
        f"jax {jax.__version__}. Success = fraction of episodes reaching the goal, averaged over the last "
        "10% of updates; mean ± std over seeds. Env steps/s counts every simulated step (compile excluded).",
        "",
        "| task | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for task in dict.fromkeys(r[0] for r in rows):
        cells = [f"{m:.2f} ± {s:.2f}" for (t, _, m, s, _) in rows if t == task]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| task | " + " | ".join(f"{m} steps/s" for m in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for task in dict.fromkeys(r[0] for r in rows):
        cells = [f"{sps:,.0f}" for (t, _, _, _, sps) in rows if t == task]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    wins = [
        task
        for task in dict.fromkeys(r[0] for r in rows)
        if max(m for (t, n, m, _, _) in rows if t == task and n.startswith("GiGPO"))
        > next(m for (t, n, m, _, _) in rows if t == task and n == "GRPO")
    ]
    lines += [
        "",
        f"GiGPO (best variant) beats GRPO on {len(wins)} of {len({r[0] for r in rows})} tasks"
        + (f" ({', '.join(wins)})." if wins else "."),
        "The paper reports GiGPO above GRPO (ALFWorld 86.7 vs 72.8 at 1.5B).",
        "",
        "![success curves](success_curves.png)",
    ]
    path.write_text("\n".join(lines) + "\n")


def run_job(args: Args) -> None:
    """One (task, method) job: trains the seeds and saves curves and timings to an npz."""
    task_name, method, npz = args.job.split("|")
    config = method_configs(TASKS[task_name], args.frames, seed=0)[method]
    frames, success, compile_s, run_s = train_seeds(
        config, args.seeds, StallWatchdog(args.stall_seconds), args.repeats
    )
    np.savez(npz, frames=frames, success=success, compile_s=compile_s, run_s=run_s)


def run_in_subprocess(args: Args, task_name: str, method: str, workdir: Path):
    """Each job runs in a fresh process (one XLA CPU runtime per job), and a job that stalls
    (exit code 75 from its watchdog, or past `job_timeout`) is started again."""
    npz = workdir / f"{len(list(workdir.iterdir()))}.npz"
    command = [
        sys.executable,
        __file__,
        "--frames",
        str(args.frames),
        "--seeds",
        str(args.seeds),
        "--stall-seconds",
        str(args.stall_seconds),
        "--job",
        f"{task_name}|{method}|{npz}",
    ]
    for attempt in range(1, args.job_attempts + 1):
        try:
            code = subprocess.run(command, timeout=args.job_timeout).returncode
        except subprocess.TimeoutExpired:
            code = None
        if code == 0:
            result = np.load(npz)
            return result["frames"], result["success"], float(result["compile_s"]), float(result["run_s"])
        if code not in (None, EXIT_STALLED):
            raise RuntimeError(f"job {task_name} | {method} failed with exit code {code}")
        print(
            f"job {task_name} | {method} stalled (attempt {attempt} of {args.job_attempts}); restarting",
            flush=True,
        )
    raise RuntimeError(f"job {task_name} | {method} stalled {args.job_attempts} times; giving up")


def main(args: Args) -> None:
    if args.job:
        return run_job(args)
    tasks = TASKS
    if args.quick:
        args = dataclasses.replace(args, frames=min(args.frames, 16 * 8 * 48 * 8), seeds=min(args.seeds, 2))
        tasks = dict(list(TASKS.items())[:1])
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gigpo_vs_grpo_"))
    rows, curves = [], {}
    for task_name, task in tasks.items():
        curves[task_name] = {}
        for method in method_configs(task, args.frames, seed=0):
            frames, success, compile_s, run_s = run_in_subprocess(args, task_name, method, workdir)
            final = final_success(success)
            steps_per_s = args.seeds * frames[-1] / run_s
            rows.append((task_name, method, float(final.mean()), float(final.std()), steps_per_s))
            curves[task_name][method] = (frames, success)
            print(
                f"{task_name:24s} {method:16s} success {final.mean():.2f} ± {final.std():.2f}  "
                f"{steps_per_s:,.0f} steps/s  (compile {compile_s:.1f}s, run {run_s:.1f}s)",
                flush=True,
            )
    plot_success_curves(curves, args.out / "success_curves.png")
    write_results(rows, args, args.out / "results.md")
    print(f"wrote {args.out / 'results.md'} and {args.out / 'success_curves.png'}")


if __name__ == "__main__":
    main(tyro.cli(Args))
