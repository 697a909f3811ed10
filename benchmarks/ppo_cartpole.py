"""PPO on CartPole-v1: time and frames to solve, training frames/s; ours vs rejax vs SB3.

    python benchmarks/ppo_cartpole.py           # 3 seeds each, appends to benchmarks/RESULTS.md
    python benchmarks/ppo_cartpole.py --quick   # smoke run: 1 seed, small budgets, prints only

Methods (all on this machine, in this one script; the peers run in their own virtualenvs
as subprocesses because their pins conflict with ours, see `--help` for the paths):

- `ours`: `jaxrl_llm.algorithms.ppo.make_train(PPOConfig(seed=s))` (library defaults:
  4 envs x 128 steps, 4 epochs x 4 minibatches, lr 2.5e-4 annealed, 500k frames), the whole
  run jitted; plus tuned configs (same PPO algorithm, other sizes) as separate rows.
- `rejax`: rejax 0.1.3 PPO with the CartPole config published in rejax's repository
  (configs/gymnax/cartpole.yaml: 5 envs x 100 steps, 5 epochs x 5 minibatches, lr 7.5e-4,
  tanh, 100k frames), gymnax 0.0.9, in /work/venvs/rejax.
- `sb3`: Stable-Baselines3 PPO, CPU torch, rl-zoo CartPole-v1 hyperparameters (8 envs,
  n_steps 32, batch 256, gae_lambda 0.8, gamma 0.98, 20 epochs, ent_coef 0, lr linear
  1e-3, clip linear 0.2, 1e5 timesteps), in /work/venvs/sb3; torch on 1 thread
  (`SB3_TORCH_THREADS` to change; 2 threads were far slower on this shared machine).

Success criteria (the same for every method, both reported):
- `update-mean` (primary): the mean return of the *training* episodes that ended during the
  latest update's rollout is >= 475 (ours: the per-update `episode_return_mean` metric;
  rejax: the same quantity from an env wrapper that counts finished episodes, read after
  every training iteration; SB3: the episodes whose `info["episode"]` appeared during the
  latest rollout). An update in which no episode ended does not count.
- `last-100`: the mean return of the most recent 100 finished training episodes >= 475
  (SB3's `ep_info_buffer`, the `ep_rew_mean` it logs; ours and rejax at update granularity:
  the latest updates whose episodes add up to >= 100).
- ours also reports the final policy's evaluation return (128 fresh episodes, sampled
  actions) and rejax a separate run with its own evaluation callback (first evaluation of
  128 episodes, every 1000 frames, with mean >= 475; its time includes the evaluations).

Timing: the JAX methods compile the whole run once (`jit(...).lower(key).compile()`,
"compile"), then run it; the time to solve is compile + run time x (updates up to and
including the solving one) / (all updates), since every update costs the same.
SB3's time to solve is measured by its callback from `learn()`'s start; its "compile"
column is the model construction. Training frames/s = frames / run time (compile excluded;
SB3: frames so far / learn time, stopped once both criteria are met or at 1e5).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_file import append_to_section  # benchmarks/ is the script's folder

HEADING = "## PPO CartPole-v1 to solved (benchmarks/ppo_cartpole.py)"
VENVS = Path(os.environ.get("JAXRL_BENCH_VENVS", "/work/venvs"))
REJAX_PY = VENVS / "rejax" / "bin" / "python"
SB3_PY = VENVS / "sb3" / "bin" / "python"
THRESHOLD = 475.0
WINDOW = 100

# Tuned configs for ours: the PPO algorithm unchanged, only sizes (envs / steps / lr).
OURS_CONFIGS = {
    "default": {},
    "16 envs x 32 steps": dict(num_envs=16, num_steps=32),
    "32 envs x 32 steps, lr 1e-3": dict(num_envs=32, num_steps=32, learning_rate=1e-3),
}


# --------------------------------------------------------------------------- criteria (pure python)


def solved_index(means, counts, window=None, threshold=THRESHOLD):
    """First update index meeting the criterion, or None.

    `means[u]`/`counts[u]`: mean return and number of training episodes that ended in update
    u. `window=None`: `update-mean` criterion; `window=K`: mean of the latest >= K episodes,
    taken at update granularity.
    """
    for u, (m, c) in enumerate(zip(means, counts)):
        if window is None:
            if c > 0 and m >= threshold:
                return u
            continue
        total, count, v = 0.0, 0, u
        while v >= 0 and count < window:
            if counts[v] > 0:
                total += means[v] * counts[v]
                count += counts[v]
            v -= 1
        if count >= window and total / count >= threshold:
            return u
    return None


def summarise(per_seed: list[dict]) -> dict:
    """Median over seeds that solved; a seed that did not solve is counted in `solved`."""
    out = {"seeds": len(per_seed)}
    for crit in ("update-mean", "last-100"):
        solved = [r[crit] for r in per_seed if r.get(crit)]
        out[crit] = {
            "solved": len(solved),
            **{
                k: statistics.median(s[k] for s in solved) if solved else float("nan")
                for k in ("frames", "seconds_incl", "seconds_excl")
            },
        }
    for k in ("compile_s", "fps", "eval_return"):
        vals = [r[k] for r in per_seed if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else float("nan")
    return out


def solve_record(index, frames_per_update, run_s, num_updates, compile_s):
    if index is None:
        return None
    frac = (index + 1) / num_updates
    return {
        "frames": (index + 1) * frames_per_update,
        "seconds_excl": run_s * frac,
        "seconds_incl": compile_s + run_s * frac,
    }


# --------------------------------------------------------------------------- ours


def run_ours(seeds, overrides, quick):
    import jax
    import numpy as np

    from jaxrl_llm import envs
    from jaxrl_llm.algorithms.ppo import PPOConfig, make_network, make_policy, make_train
    from jaxrl_llm.rollout import grouped_rollout

    results = []
    for seed in seeds:
        kwargs = dict(overrides)
        if quick:
            kwargs["total_frames"] = 16 * kwargs.get("num_envs", 4) * kwargs.get("num_steps", 128)
        config = PPOConfig(seed=seed, **kwargs)
        key = jax.random.PRNGKey(seed)
        start = time.perf_counter()
        compiled = jax.jit(make_train(config)).lower(key).compile()  # a fresh closure: compiles anew
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        runner, metrics = compiled(key)
        jax.block_until_ready((runner, metrics))
        run_s = time.perf_counter() - start
        means = np.asarray(metrics["episode_return_mean"]).tolist()
        counts = np.asarray(metrics["episodes"]).tolist()
        n, fpu = config.num_updates, config.frames_per_update
        # evaluation of the final policy: 128 fresh episodes, sampled actions
        env, env_params = envs.make(config.env)
        policy = make_policy(make_network(config, env, env_params))
        traj, _ = jax.jit(lambda k, p: grouped_rollout(k, env, env_params, policy, p, 128, 1, 500))(
            jax.random.PRNGKey(10_000 + seed), runner.train_state.params
        )
        ended = np.asarray(traj.episode_ended)
        eval_return = float(np.asarray(traj.episode_return)[ended].mean()) if ended.any() else float("nan")
        results.append(
            {
                "seed": seed,
                "compile_s": compile_s,
                "run_s": run_s,
                "fps": n * fpu / run_s,
                "eval_return": eval_return,
                "update-mean": solve_record(solved_index(means, counts), fpu, run_s, n, compile_s),
                "last-100": solve_record(solved_index(means, counts, WINDOW), fpu, run_s, n, compile_s),
            }
        )
        print(
            f"  ours {overrides or 'default'} seed {seed}: compile {compile_s:.2f} s, run {run_s:.2f} s, "
            f"{results[-1]['fps']:.0f} frames/s, solved {results[-1]['update-mean']}, eval {eval_return:.1f}",
            flush=True,
        )
    return results


# --------------------------------------------------------------------------- rejax (child, rejax venv)

REJAX_CONFIG = dict(
    num_envs=5,
    num_steps=100,
    num_epochs=5,
    num_minibatches=5,
    learning_rate=0.00075,
    max_grad_norm=0.5,
    total_timesteps=100_000,
    gamma=0.99,
    gae_lambda=0.95,
    clip_eps=0.2,
    ent_coef=0.01,
    vf_coef=0.5,
    agent_kwargs=dict(activation="tanh"),
)


def child_rejax(seeds, quick, own_eval):
    import gymnax
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import struct
    from gymnax.wrappers.purerl import GymnaxWrapper
    from rejax import PPO

    @struct.dataclass
    class CountState:
        env_state: object
        running: jax.Array
        finished_sum: jax.Array
        finished_count: jax.Array

    class EpisodeCounter(GymnaxWrapper):
        """Counts finished training episodes and their returns (cumulative, per env)."""

        def __getattr__(self, name):  # gymnax 0.0.9's wrapper recurses forever under deepcopy
            if name.startswith("__") or name == "_env":
                raise AttributeError(name)
            return getattr(self._env, name)

        def reset(self, key, params=None):
            obs, env_state = self._env.reset(key, params)
            return obs, CountState(env_state, jnp.float32(0), jnp.float32(0), jnp.float32(0))

        def step(self, key, state, action, params=None):
            obs, env_state, reward, done, info = self._env.step(key, state.env_state, action, params)
            running = state.running + reward
            state = CountState(
                env_state,
                jnp.where(done, 0.0, running),
                state.finished_sum + jnp.where(done, running, 0.0),
                state.finished_count + done.astype(jnp.float32),
            )
            return obs, state, reward, done, info

    config = dict(REJAX_CONFIG)
    if quick:
        config["total_timesteps"] = 5_000
    frames_per_iter = config["num_envs"] * config["num_steps"]
    results = []
    for seed in seeds:
        if own_eval:
            algo = PPO.create(env="CartPole-v1", eval_freq=1000, **config)
        else:
            env, env_params = gymnax.make("CartPole-v1")
            algo = PPO.create(
                env=EpisodeCounter(env),
                env_params=env_params,
                eval_freq=frames_per_iter,
                skip_initial_evaluation=True,
                **config,
            )
            algo = algo.replace(
                eval_callback=lambda a, ts, rng: (
                    ts.env_state.finished_sum.sum(),
                    ts.env_state.finished_count.sum(),
                )
            )
        key = jax.random.PRNGKey(seed)
        start = time.perf_counter()
        compiled = jax.jit(algo.train).lower(key).compile()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        ts, evaluation = compiled(key)
        jax.block_until_ready((ts, evaluation))
        run_s = time.perf_counter() - start
        num_iters = int(np.ceil(config["total_timesteps"] / algo.eval_freq)) * int(
            np.ceil(algo.eval_freq / frames_per_iter)
        )
        frames = num_iters * frames_per_iter
        rec = {"seed": seed, "compile_s": compile_s, "run_s": run_s, "fps": frames / run_s}
        if own_eval:
            returns = np.asarray(evaluation[1]).mean(-1)  # [1 + num_evals]: initial, then every eval_freq
            hit = next((i for i, r in enumerate(returns) if r >= THRESHOLD), None)
            num_evals = len(returns) - 1
            rec["eval"] = (
                None
                if hit is None
                else {
                    "frames": hit * algo.eval_freq,
                    "seconds_excl": run_s * hit / num_evals,
                    "seconds_incl": compile_s + run_s * hit / num_evals,
                }
            )
            rec["eval_curve"] = returns.tolist()
        else:
            sums, counts = (np.diff(np.asarray(x), prepend=0.0) for x in evaluation)
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).tolist()
            counts = counts.tolist()
            rec["update-mean"] = solve_record(
                solved_index(means, counts), frames_per_iter, run_s, num_iters, compile_s
            )
            rec["last-100"] = solve_record(
                solved_index(means, counts, WINDOW), frames_per_iter, run_s, num_iters, compile_s
            )
        results.append(rec)
        print(
            f"  rejax seed {seed} own_eval={own_eval}: compile {compile_s:.2f} s, run {run_s:.2f} s, {rec['fps']:.0f} frames/s",
            file=sys.stderr,
            flush=True,
        )
    print("RESULT " + json.dumps(results))


# --------------------------------------------------------------------------- SB3 (child, sb3 venv)


def child_sb3(seeds, quick):
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    total = 10_000 if quick else 100_000
    # One torch thread: on this shared 2-core machine torch's second intra-op thread made
    # SB3 many times slower (threads spinning against other jobs); 1 thread is SB3's best case.
    torch.set_num_threads(int(os.environ.get("SB3_TORCH_THREADS", "1")))

    def linear(start):
        return lambda progress_remaining: progress_remaining * start

    class SolveCallback(BaseCallback):
        def _on_training_start(self):
            self.t0 = time.perf_counter()
            self.rollout_returns = []
            self.hits = {}

        def _record(self, crit):
            if crit not in self.hits:
                self.hits[crit] = {
                    "frames": int(self.num_timesteps),
                    "seconds_excl": time.perf_counter() - self.t0,
                }

        def _on_step(self):
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.rollout_returns.append(info["episode"]["r"])
            buf = self.model.ep_info_buffer
            if len(buf) >= WINDOW and np.mean([e["r"] for e in buf]) >= THRESHOLD:
                self._record("last-100")
            return "last-100" not in self.hits  # stop once the stricter criterion is met

        def _on_rollout_end(self):
            if self.rollout_returns and np.mean(self.rollout_returns) >= THRESHOLD:
                self._record("update-mean")
            self.rollout_returns = []

    results = []
    for seed in seeds:
        start = time.perf_counter()
        env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
        model = PPO(
            "MlpPolicy",
            env,
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate=linear(1e-3),
            clip_range=linear(0.2),
            seed=seed,
            device="cpu",
            verbose=0,
        )
        setup_s = time.perf_counter() - start
        callback = SolveCallback()
        start = time.perf_counter()
        model.learn(total_timesteps=total, callback=callback)
        learn_s = time.perf_counter() - start
        rec = {
            "seed": seed,
            "compile_s": setup_s,
            "run_s": learn_s,
            "fps": model.num_timesteps / learn_s,
            "frames_run": int(model.num_timesteps),
        }
        for crit in ("update-mean", "last-100"):
            hit = callback.hits.get(crit)
            rec[crit] = None if hit is None else {**hit, "seconds_incl": hit["seconds_excl"] + setup_s}
        results.append(rec)
        print(
            f"  sb3 seed {seed}: setup {setup_s:.2f} s, learn {learn_s:.2f} s ({model.num_timesteps} frames, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads), hits {callback.hits}",
            file=sys.stderr,
            flush=True,
        )
    print("RESULT " + json.dumps(results))


def run_child(python: Path, args: list[str]) -> list[dict]:
    if not python.exists():
        print(
            f"  !! {python} missing: see the module docstring / report to recreate the venv; skipping",
            flush=True,
        )
        return []
    out = subprocess.run([str(python), __file__, *args], capture_output=True, text=True)
    sys.stdout.write(
        out.stderr[-3000:]
        if out.returncode
        else "".join(l + "\n" for l in out.stderr.splitlines() if l.startswith("  "))
    )
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode or not lines:
        print(f"  !! child {args} failed (rc {out.returncode})", flush=True)
        return []
    return json.loads(lines[-1][len("RESULT ") :])


# --------------------------------------------------------------------------- main


def machine_info() -> str:
    import jax

    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, jax {jax.__version__}; load average at start {load} "
        "(machine shared with other jobs: timings are noisy, compare the ratios measured in this run)"
    )


def append_results(date: str, info: str, num_seeds: int, table: str, extra: str, per_seed: str) -> None:
    append_to_section(
        HEADING,
        f"\n### {date} — {info}\n\n{num_seeds} seeds per method, medians over the seeds that solved; "
        "methods alternated seed by seed. Criteria and timing as in the script's docstring: `update-mean` = "
        "mean return of the training episodes that ended in the latest update ≥ 475 (primary); `last-100` = mean "
        "of the latest 100 training episodes ≥ 475. Targets: time to solve (compile incl.) below both peers; "
        "training frames/s ≥ 20× SB3 and above rejax.\n\n"
        f"{table}\n{extra}\nPer seed:\n\n{per_seed}\n",
    )


def fmt(x, spec=".1f", suffix=""):
    return "–" if x != x else f"{x:{spec}}{suffix}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny budgets, prints only")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--only", default="ours,rejax,rejax-eval,sb3", help="comma-separated subset")
    parser.add_argument(
        "--ours-configs", default=None, help=f"comma-separated names from {list(OURS_CONFIGS)}"
    )
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--child", choices=["rejax", "rejax-eval", "sb3"], help=argparse.SUPPRESS)
    parser.add_argument("--seed-list", default="0", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    if args.child:
        child_seeds = [int(s) for s in args.seed_list.split(",")]
        if args.child == "sb3":
            child_sb3(child_seeds, args.quick)
        else:
            child_rejax(child_seeds, args.quick, own_eval=args.child == "rejax-eval")
        return

    only = set(args.only.split(","))
    names = args.ours_configs.split(",") if args.ours_configs else list(OURS_CONFIGS)
    info = machine_info()
    print(info, flush=True)
    child_args = ["--seed-list", ",".join(map(str, seeds))] + (["--quick"] if args.quick else [])
    rows = {}  # name -> summary
    # Alternate the methods seed by seed so busy periods of the shared machine hit all of them.
    raw: dict[str, list] = {}
    for seed in seeds:
        one = ["--seed-list", str(seed)] + (["--quick"] if args.quick else [])
        if "ours" in only:
            for name in names:
                raw.setdefault(f"ours ({name})", []).extend(run_ours([seed], OURS_CONFIGS[name], args.quick))
        if "rejax" in only:
            raw.setdefault("rejax", []).extend(run_child(REJAX_PY, ["--child", "rejax", *one]))
        if "sb3" in only:
            raw.setdefault("sb3", []).extend(run_child(SB3_PY, ["--child", "sb3", *one]))
        if "rejax-eval" in only:
            raw.setdefault("rejax-eval", []).extend(run_child(REJAX_PY, ["--child", "rejax-eval", *one]))
    del child_args
    for name, per_seed in raw.items():
        if name != "rejax-eval" and per_seed:
            rows[name] = summarise(per_seed)

    base = {k: rows.get(k) for k in ("sb3", "rejax")}
    lines = [
        "| method | solved (update-mean) | frames to solve | s to solve, compile incl. | s to solve, compile excl. | compile / setup s | training frames/s | frames/s vs SB3 | frames/s vs rejax | time to solve (incl.): SB3's ÷ ours / rejax's ÷ ours (> 1: ours faster) | last-100: solved, frames, s incl. | final eval return |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in rows.items():
        um, l100 = s["update-mean"], s["last-100"]
        speed = [fmt(s["fps"] / b["fps"], ".1f", "×") if b else "–" for b in (base["sb3"], base["rejax"])]
        tts = [
            fmt(b["update-mean"]["seconds_incl"] / um["seconds_incl"], ".2f", "×") if b else "–"
            for b in (base["sb3"], base["rejax"])
        ]
        lines.append(
            f"| {name} | {um['solved']}/{s['seeds']} | {fmt(um['frames'], ',.0f')} | {fmt(um['seconds_incl'], '.2f')} | {fmt(um['seconds_excl'], '.2f')} | "
            f"{fmt(s['compile_s'], '.2f')} | {fmt(s['fps'], ',.0f')} | {speed[0]} | {speed[1]} | {tts[0]} / {tts[1]} | "
            f"{l100['solved']}/{s['seeds']}, {fmt(l100['frames'], ',.0f')}, {fmt(l100['seconds_incl'], '.2f')} | {fmt(s['eval_return'], '.1f')} |"
        )
    table = "\n".join(lines)
    extra = ""
    if raw.get("rejax-eval"):
        ev = [r["eval"] for r in raw["rejax-eval"] if r.get("eval")]
        med = lambda k: statistics.median(e[k] for e in ev) if ev else float("nan")
        extra = (
            f"\nrejax with its own evaluation callback (128 episodes every 1000 frames, time includes the evaluations): "
            f"solved {len(ev)}/{len(raw['rejax-eval'])}, median {fmt(med('frames'), ',.0f')} frames, "
            f"{fmt(med('seconds_incl'), '.2f')} s compile incl., {fmt(med('seconds_excl'), '.2f')} s excl., "
            f"compile {fmt(statistics.median(r['compile_s'] for r in raw['rejax-eval']), '.2f')} s.\n"
        )
    per_seed = "\n".join(
        f"- {name} seed {r['seed']}: "
        + ", ".join(
            f"{c}: {fmt(r[c]['frames'], ',.0f')} frames / {r[c]['seconds_incl']:.2f} s"
            if r.get(c)
            else f"{c}: not solved"
            for c in ("update-mean", "last-100")
            if c in r
        )
        + f"; compile {r['compile_s']:.2f} s, {r['fps']:,.0f} frames/s"
        for name, rs in raw.items()
        if name != "rejax-eval"
        for r in rs
    )
    print()
    print(table)
    print(extra)
    print(per_seed)
    if args.quick or args.no_append:
        return
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    append_results(date, info, len(seeds), table, extra, per_seed)


if __name__ == "__main__":
    main()
