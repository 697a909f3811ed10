"""Off-policy benchmarks: DQN on CartPole-v1 and SAC on Pendulum-v1; ours vs rejax vs SB3 vs SBX.

    python benchmarks/offpolicy.py            # 3 seeds each, appends to benchmarks/RESULTS.md
    python benchmarks/offpolicy.py --quick    # smoke run: 1 seed, tiny budgets, prints only
    python benchmarks/offpolicy.py --algos dqn --only ours,sb3 --seeds 1 --no-append

Methods (all on this machine, in this one script; the peers run as child processes of this
script, `--child ...`, inside their own virtualenvs under $JAXRL_BENCH_VENVS, default
/work/venvs, because their pins conflict with ours):

- `ours`: `jaxrl_llm.algorithms.dqn.make_train(DQNConfig(seed=s))` and
  `sac.make_train(SACConfig(seed=s))`, library defaults (rl-baselines3-zoo settings; see
  the configs' docstrings), the whole run one jitted program.
- `rejax`: rejax 0.1.3 DQN / SAC with gymnax 0.0.9 (venv `rejax`: rejax 0.1.3 does not
  run on gymnax 1.0).
- `sb3`: Stable-Baselines3 DQN / SAC, CPU torch on 1 thread (venv `sb3`;
  `SB3_TORCH_THREADS` to change).
- `sbx`: SBX (`sbx-rl`, Stable-Baselines3 on JAX) DQN / SAC (venv `sbx`, its own jax).

Hyperparameters: rl-baselines3-zoo's for every method.
DQN CartPole-v1: 5e4 frames, 1 env, lr 2.3e-3, batch 64, buffer 1e5, learning_starts 1000,
gamma 0.99, train_freq 256 / gradient_steps 128, target update every 10 env steps (hard),
exploration_fraction 0.16, final eps 0.04, net (256, 256) ReLU, Huber loss, max_grad_norm 10.
Differences: ours anneals the learning rate linearly to 0 (its default, see DQNConfig);
rejax's DQN network is fixed at (64, 64) (hard-coded in rejax 0.1.3), its loss is squared
error, it takes one gradient step per iteration of `num_envs` env steps, so it runs with
2 envs x 1 gradient step per iteration (the same 0.5 gradient steps per frame as zoo, but
interleaved, not in blocks of 128), and ddqn off; SBX's DQN has no gradient clipping.
SAC Pendulum-v1: 2e4 frames, 1 env, lr 1e-3, batch 256, buffer 1e5, learning_starts 100,
gamma 0.99, tau 0.005, 1 gradient step per env step, auto entropy (target -1), net (64, 64)
ReLU for every method (zoo uses SB3's default (256, 256); ours uses (64, 64)).

Threshold, measured with each library's own evaluation, 10 episodes, at the same frame
interval: DQN greedy (rejax: epsilon 0.005, its `make_act`) mean return >= 475 every 2560
frames; SAC deterministic (rejax: its `make_act`, which samples) mean return >= -250 every
2000 frames. Ours evaluates in the jitted program (`eval_return_mean`); rejax through its
`eval_callback` (replaced with `rejax.evaluate` on 10 episodes); SB3 / SBX through a
callback calling `evaluate_policy(deterministic=True)` on a separate env.

Timing: JAX methods (ours, rejax) compile the whole run once (`jit(...).lower(key).compile()`,
"compile"), then run it in full; the time to threshold is compile + run time x (frames up
to the evaluation that met it) / (all frames). SB3 / SBX time to threshold is model
construction ("compile" column) + time from `learn()`'s start to the evaluation that met
it, measured by the callback (SBX's jit compilation happens inside `learn()`); they stop
there (or at the frame budget, or at `--peer-timeout` seconds). Training frames/s = frames /
run time: ours and rejax include their in-program evaluations; SB3 / SBX exclude the time
spent in the evaluation callback (their best case).
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

HEADING = "## Off-policy: DQN CartPole-v1, SAC Pendulum-v1 (benchmarks/offpolicy.py)"
VENVS = Path(os.environ.get("JAXRL_BENCH_VENVS", "/work/venvs"))
PYTHONS = {name: VENVS / name / "bin" / "python" for name in ("rejax", "sb3", "sbx")}

SPECS = {
    "dqn": dict(env="CartPole-v1", threshold=475.0, eval_every=2560, frames=50_000, quick_frames=5_120),
    "sac": dict(env="Pendulum-v1", threshold=-250.0, eval_every=2000, frames=20_000, quick_frames=2_000),
}
EVAL_EPISODES = 10


def hit_record(frames, fraction, run_s, compile_s):
    return {"frames": frames, "seconds_excl": run_s * fraction, "seconds_incl": compile_s + run_s * fraction}


# --------------------------------------------------------------------------- ours


def run_ours(algo, seed, quick):
    import jax
    import numpy as np

    from jaxrl_llm.algorithms import dqn, sac

    spec = SPECS[algo]
    extra = {"total_frames": spec["quick_frames"]} if quick else {}
    if algo == "dqn":
        config, module = dqn.DQNConfig(seed=seed, **extra), dqn
    else:
        config, module = sac.SACConfig(seed=seed, **extra), sac
    key = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    compiled = jax.jit(module.make_train(config)).lower(key).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, metrics = compiled(key)
    jax.block_until_ready((state, metrics))
    run_s = time.perf_counter() - start
    evals = np.asarray(metrics["eval_return_mean"])
    n, fpu = config.num_updates, config.frames_per_update
    total = n * fpu
    hit, curve = None, []
    for u in np.flatnonzero(~np.isnan(evals)).tolist():
        # DQN evaluates the parameters update u starts from (u updates done, u * fpu frames);
        # SAC evaluates on the update that crosses a multiple of eval_interval frames.
        frames = u * fpu if algo == "dqn" else (u + 1) * fpu
        curve.append((frames, round(float(evals[u]), 1)))
        if hit is None and evals[u] >= spec["threshold"]:
            hit = hit_record(frames, (u + 1) / n, run_s, compile_s)
    return {
        "seed": seed,
        "compile_s": compile_s,
        "run_s": run_s,
        "frames_run": total,
        "fps": total / run_s,
        "hit": hit,
        "curve": curve,
    }


# --------------------------------------------------------------------------- rejax (child)


def rejax_config(algo, quick):
    spec = SPECS[algo]
    total = spec["quick_frames"] if quick else spec["frames"]
    if algo == "dqn":
        return dict(
            env="CartPole-v1",
            num_envs=2,
            num_epochs=1,
            total_timesteps=total,
            learning_rate=2.3e-3,
            batch_size=64,
            buffer_size=100_000,
            fill_buffer=1_000,
            gamma=0.99,
            target_update_freq=10,
            polyak=0.0,
            eps_start=1.0,
            eps_end=0.04,
            exploration_fraction=0.16,
            max_grad_norm=10.0,
            ddqn=False,
            agent_kwargs=dict(activation="relu"),
        )
    return dict(
        env="Pendulum-v1",
        num_envs=1,
        num_epochs=1,
        total_timesteps=total,
        learning_rate=1e-3,
        batch_size=256,
        buffer_size=100_000,
        fill_buffer=100,
        gamma=0.99,
        polyak=0.995,
        target_update_freq=1,
        hidden_layer_sizes=(64, 64),
        agent_kwargs=dict(activation="relu"),
    )


def child_rejax(algo, seeds, quick):
    import jax
    import numpy as np
    from rejax import DQN, SAC
    from rejax.evaluate import evaluate

    spec = SPECS[algo]
    config = rejax_config(algo, quick)
    results = []
    for seed in seeds:
        cls = DQN if algo == "dqn" else SAC
        algo_obj = cls.create(eval_freq=spec["eval_every"], **config)

        def eval_callback(a, ts, rng):
            _lengths, returns = evaluate(
                a.make_act(ts), rng, a.env, a.env_params, EVAL_EPISODES, a.env_params.max_steps_in_episode
            )
            return returns.mean()

        algo_obj = algo_obj.replace(eval_callback=eval_callback)
        key = jax.random.PRNGKey(seed)
        start = time.perf_counter()
        compiled = jax.jit(algo_obj.train).lower(key).compile()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        ts, evaluation = compiled(key)
        jax.block_until_ready((ts, evaluation))
        run_s = time.perf_counter() - start
        returns = np.asarray(evaluation).tolist()  # [1 + num_evals]: initial, then every eval_freq frames
        num_evals = len(returns) - 1
        iters_per_eval = int(np.ceil(spec["eval_every"] / config["num_envs"]))
        frames_per_eval = iters_per_eval * config["num_envs"]
        total = num_evals * frames_per_eval
        hit = None
        for i, r in enumerate(returns):
            if r >= spec["threshold"]:
                hit = hit_record(i * frames_per_eval, i / max(num_evals, 1), run_s, compile_s)
                break
        rec = {
            "seed": seed,
            "compile_s": compile_s,
            "run_s": run_s,
            "frames_run": total,
            "fps": total / run_s,
            "hit": hit,
            "curve": [(i * frames_per_eval, round(r, 1)) for i, r in enumerate(returns)],
        }
        results.append(rec)
        print(f"  rejax {algo} seed {seed}: compile {compile_s:.2f} s, run {run_s:.2f} s, {rec['fps']:.0f} frames/s, hit {hit}", file=sys.stderr, flush=True)
    print("RESULT " + json.dumps(results))


# --------------------------------------------------------------------------- SB3 / SBX (child)


def child_sb(lib, algo, seeds, quick):
    import gymnasium as gym
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    if lib == "sb3":
        import torch
        from stable_baselines3 import DQN, SAC

        # One torch thread: SB3's best case on this shared 2-core machine (see ppo_cartpole.py).
        torch.set_num_threads(int(os.environ.get("SB3_TORCH_THREADS", "1")))
        version = f"torch {torch.__version__}"
    else:
        import jax
        from sbx import DQN, SAC

        version = f"jax {jax.__version__}"
    spec = SPECS[algo]
    total = spec["quick_frames"] if quick else spec["frames"]
    deadline_s = float(os.environ.get("JAXRL_BENCH_PEER_TIMEOUT", "1e9"))

    class EvalStop(BaseCallback):
        def _on_training_start(self):
            self.t0 = time.perf_counter()
            self.eval_s = 0.0
            self.hit = None
            self.curve = []
            self.timed_out = False
            self.eval_env = gym.make(spec["env"])

        def _on_step(self):
            if self.num_timesteps % spec["eval_every"] == 0:
                t = time.perf_counter()
                mean, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True)
                self.eval_s += time.perf_counter() - t
                self.curve.append((int(self.num_timesteps), round(float(mean), 1)))
                if mean >= spec["threshold"] and self.hit is None:
                    self.hit = {"frames": int(self.num_timesteps), "seconds_excl": time.perf_counter() - self.t0}
                    return False
            if time.perf_counter() - self.t0 > deadline_s:
                self.timed_out = True
                return False
            return True

    results = []
    for seed in seeds:
        start = time.perf_counter()
        env = gym.make(spec["env"])
        if algo == "dqn":
            model = DQN(
                "MlpPolicy",
                env,
                learning_rate=2.3e-3,
                batch_size=64,
                buffer_size=100_000,
                learning_starts=1_000,
                gamma=0.99,
                target_update_interval=10,
                train_freq=256,
                gradient_steps=128,
                exploration_fraction=0.16,
                exploration_final_eps=0.04,
                policy_kwargs=dict(net_arch=[256, 256]),
                seed=seed,
                verbose=0,
                **({"device": "cpu", "max_grad_norm": 10} if lib == "sb3" else {}),
            )
        else:
            model = SAC(
                "MlpPolicy",
                env,
                learning_rate=1e-3,
                batch_size=256,
                buffer_size=100_000,
                learning_starts=100,
                gamma=0.99,
                tau=0.005,
                train_freq=1,
                gradient_steps=1,
                ent_coef="auto",
                policy_kwargs=dict(net_arch=[64, 64]),
                seed=seed,
                verbose=0,
                **({"device": "cpu"} if lib == "sb3" else {}),
            )
        setup_s = time.perf_counter() - start
        cb = EvalStop()
        start = time.perf_counter()
        model.learn(total_timesteps=total, callback=cb)
        learn_s = time.perf_counter() - start
        hit = None if cb.hit is None else {**cb.hit, "seconds_incl": cb.hit["seconds_excl"] + setup_s}
        rec = {
            "seed": seed,
            "compile_s": setup_s,
            "run_s": learn_s,
            "eval_s": cb.eval_s,
            "frames_run": int(model.num_timesteps),
            "fps": model.num_timesteps / max(learn_s - cb.eval_s, 1e-9),
            "hit": hit,
            "timed_out": cb.timed_out,
            "curve": cb.curve,
        }
        results.append(rec)
        print(
            f"  {lib} {algo} seed {seed}: setup {setup_s:.2f} s, learn {learn_s:.2f} s (evals {cb.eval_s:.2f} s), "
            f"{model.num_timesteps} frames, {rec['fps']:.0f} frames/s, {version}, hit {hit}, timed out {cb.timed_out}",
            file=sys.stderr,
            flush=True,
        )
    print("RESULT " + json.dumps(results))


def run_child(lib, algo, seed, quick, timeout_s, failures):
    python = PYTHONS[lib]
    if not python.exists():
        msg = f"{python} missing (venv not created)"
        print(f"  !! {lib}: {msg}; skipping", flush=True)
        failures.setdefault(f"{lib} {algo}", msg)
        return []
    args = [str(python), __file__, "--child", lib, "--algos", algo, "--seed-list", str(seed)]
    env = dict(os.environ, JAXRL_BENCH_PEER_TIMEOUT=str(timeout_s))
    try:
        # the child stops itself at timeout_s of training; the hard limit adds room for setup
        out = subprocess.run(args + (["--quick"] if quick else []), capture_output=True, text=True, timeout=timeout_s + 300, env=env)
    except subprocess.TimeoutExpired:
        msg = f"killed after {timeout_s + 300} s"
        print(f"  !! {lib} {algo} seed {seed}: {msg}", flush=True)
        failures.setdefault(f"{lib} {algo}", msg)
        return []
    sys.stdout.write(out.stderr[-3000:] if out.returncode else "".join(l + "\n" for l in out.stderr.splitlines() if l.startswith("  ")))
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode or not lines:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        msg = f"child exited {out.returncode}: {last[:300]}"
        print(f"  !! {lib} {algo} seed {seed}: {msg}", flush=True)
        failures.setdefault(f"{lib} {algo}", msg)
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
    return f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, jax {jax.__version__}; load average at start {load}"


def append_results(date: str, info: str, num_seeds: int, text: str, per_seed: str) -> None:
    append_to_section(
        HEADING,
        f"\n### {date} — {info}\n\n{num_seeds} seeds per method, medians (time/frames to threshold: over "
        f"the seeds that reached it); methods alternated seed by seed. Command: `{' '.join(['python', 'benchmarks/offpolicy.py', *sys.argv[1:]])}`. "
        "Hyperparameters, evaluation and timing as in the script's docstring.\n\n"
        f"{text}\n\nPer seed:\n\n{per_seed}\n",
    )


def fmt(x, spec=".1f", suffix=""):
    return "–" if x is None or x != x else f"{x:{spec}}{suffix}"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def summarise(per_seed):
    hits = [r["hit"] for r in per_seed if r.get("hit")]
    return {
        "seeds": len(per_seed),
        "solved": len(hits),
        "frames": med([h["frames"] for h in hits]),
        "seconds_incl": med([h["seconds_incl"] for h in hits]),
        "seconds_excl": med([h["seconds_excl"] for h in hits]),
        "compile_s": med([r["compile_s"] for r in per_seed]),
        "run_s": med([r["run_s"] for r in per_seed]),
        "fps": med([r["fps"] for r in per_seed]),
        "frames_run": med([r["frames_run"] for r in per_seed]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny budgets, prints only")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--algos", default="dqn,sac")
    parser.add_argument("--only", default="ours,rejax,sb3,sbx", help="comma-separated subset of methods")
    parser.add_argument("--peer-timeout", type=float, default=300.0, help="seconds of training per peer run before it is stopped")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--child", choices=["rejax", "sb3", "sbx"], help=argparse.SUPPRESS)
    parser.add_argument("--seed-list", default="0", help=argparse.SUPPRESS)
    args = parser.parse_args()
    algos = args.algos.split(",")
    if args.child:
        seeds = [int(s) for s in args.seed_list.split(",")]
        if args.child == "rejax":
            child_rejax(algos[0], seeds, args.quick)
        else:
            child_sb(args.child, algos[0], seeds, args.quick)
        return

    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    only = args.only.split(",")
    info = machine_info()
    print(info, flush=True)
    raw: dict[tuple[str, str], list] = {}
    failures: dict[str, str] = {}
    # Methods alternate seed by seed so busy periods of the shared machine hit all of them.
    for algo in algos:
        for seed in seeds:
            for lib in only:
                if lib == "ours":
                    rec = run_ours(algo, seed, args.quick)
                    print(f"  ours {algo} seed {seed}: compile {rec['compile_s']:.2f} s, run {rec['run_s']:.2f} s, {rec['fps']:.0f} frames/s, hit {rec['hit']}", flush=True)
                    raw.setdefault((algo, lib), []).append(rec)
                else:
                    raw.setdefault((algo, lib), []).extend(run_child(lib, algo, seed, args.quick, args.peer_timeout, failures))

    tables = []
    for algo in algos:
        spec = SPECS[algo]
        rows = {lib: summarise(raw[(algo, lib)]) for lib in only if raw.get((algo, lib))}
        ours = rows.get("ours")
        lines = [
            f"**{algo.upper()} {spec['env']}** (threshold: evaluation mean return ≥ {spec['threshold']:g}, {EVAL_EPISODES} episodes every {spec['eval_every']} frames; budget {spec['quick_frames'] if args.quick else spec['frames']:,} frames)",
            "",
            "| method | reached | frames to threshold | s to threshold, compile incl. | s to threshold, compile excl. | compile / setup s | frames run | training frames/s | ours ÷ peer frames/s | peer ÷ ours time to threshold (> 1: ours faster) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for lib, s in rows.items():
            ratio_fps = fmt(ours["fps"] / s["fps"], ".2f", "×") if ours and lib != "ours" else "–"
            ratio_t = fmt(s["seconds_incl"] / ours["seconds_incl"], ".2f", "×") if ours and lib != "ours" else "–"
            lines.append(
                f"| {lib} | {s['solved']}/{s['seeds']} | {fmt(s['frames'], ',.0f')} | {fmt(s['seconds_incl'], '.2f')} | {fmt(s['seconds_excl'], '.2f')} | "
                f"{fmt(s['compile_s'], '.2f')} | {fmt(s['frames_run'], ',.0f')} | {fmt(s['fps'], ',.0f')} | {ratio_fps} | {ratio_t} |"
            )
        for lib in only:
            if f"{lib} {algo}" in failures:
                lines.append(f"\n{lib} {algo} failed: {failures[f'{lib} {algo}']}")
        tables.append("\n".join(lines))
    per_seed = "\n".join(
        f"- {algo} {lib} seed {r['seed']}: "
        + (f"threshold at {r['hit']['frames']:,} frames / {r['hit']['seconds_incl']:.2f} s" if r.get("hit") else "threshold not reached")
        + f"; compile/setup {r['compile_s']:.2f} s, run {r['run_s']:.2f} s, {r['frames_run']:,} frames, {r['fps']:,.0f} frames/s"
        + (" (stopped by --peer-timeout)" if r.get("timed_out") else "")
        + f"; evals {r['curve']}"
        for (algo, lib), rs in raw.items()
        for r in rs
    )
    text = "\n\n".join(tables)
    print()
    print(text)
    print()
    print(per_seed)
    if args.quick or args.no_append:
        return
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    append_results(date, info, len(seeds), text, per_seed)


if __name__ == "__main__":
    main()
