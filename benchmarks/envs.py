"""Env stepping speed: `jaxrl_llm.rollout.rollout` on CartPole-v1 vs gymnasium's numpy vector env.

    python benchmarks/envs.py            # N = 64 / 1024 / 8192, appends to benchmarks/RESULTS.md
    python benchmarks/envs.py --quick    # smoke run (small N, few steps), prints only

What is timed (compile excluded and reported separately, `block_until_ready` on every call,
every method once per round and rounds repeated, medians reported, so a busy period of the
shared machine hits all methods alike):

- `ours`: one jitted call of `jaxrl_llm.rollout.rollout` (the library function, `[T, N]`
  `Trajectory` materialised) continuing the previous call's `RolloutState`.
  Policies: `random` (uniform actions) and `mlp` = `make_policy(ActorCritic(2))`, the PPO
  rollout policy (2x64 tanh actor *and* critic, float32, samples an action, keeps log-prob
  and value).
- `gymnasium`: `gymnasium.make_vec("CartPole-v1", N, vectorization_mode="vector_entry_point")`
  (the native numpy `CartPoleVectorEnv`) stepped `T` times from Python; the `mlp` policy is
  the same actor and critic with the same weights in numpy float32 (sampling + log-prob +
  value, like ours). Gymnasium keeps no trajectory, ours does.
- Investigation rows (same timing loop):
  - `ours + unsafe_rbg key`: the unchanged library `rollout` given a typed
    `jax.random.key(seed, impl="unsafe_rbg")` instead of a threefry key (user-level, no
    library change).
  - `PROTOTYPE fast rollout`: a rollout written in this file (NOT library code) with the same
    `Trajectory` output: it calls `env.step_env` (gymnax's step without the per-env key split
    and without a reset computed in every lane) and draws the resets of one step as one batch
    of `N / reset_ratio` `env.reset_env` states, handed to the envs that finished (Craftax-style
    "optimistic reset"; `reset_ratio=1` keeps gymnax's semantics exactly: every finished env
    gets its own fresh, independent reset). Run with threefry and with unsafe_rbg keys.
  - `physics only`: vmapped `CartPole.step_env` with a fixed controller, no RNG, no reset, no
    trajectory: the upper bound of this env on this machine.
"""

from __future__ import annotations

import argparse
import datetime
import os

# numpy's BLAS on one thread, set before numpy is imported: on this shared 2-core machine
# OpenBLAS's worker threads made the numpy MLP 2-10x slower (they spin against XLA's and
# other jobs' threads); one thread is gymnasium's best case.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import jax
import jax.numpy as jnp

import gymnasium

from jaxrl_llm import envs
from jaxrl_llm.algorithms.ppo import make_policy
from jaxrl_llm.models import ActorCritic
from jaxrl_llm.rollout import RolloutState, Trajectory, reset, rollout

from results_file import append_to_section  # benchmarks/ is the script's folder

HEADING = "## Env stepping (benchmarks/envs.py)"


# --------------------------------------------------------------------------- helpers


def machine_info() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"nproc {os.cpu_count()}, {cpu}, Python {platform.python_version()}, jax {jax.__version__}, "
        f"gymnasium {gymnasium.__version__}, numpy {np.__version__}; load average at start {load} "
        "(machine shared with other jobs: timings are noisy, compare the ratios measured in this run)"
    )


def append_results(
    date: str, info: str, t: int, repeats: int, main_table: str, variants_table: str, probe_text: str
) -> None:
    append_to_section(
        HEADING,
        f"\n### {date} — {info}\n\n"
        f"CartPole-v1, T = {t} steps per call, median of {repeats} alternating rounds, compile excluded "
        "(shown separately). `ours` = `jaxrl_llm.rollout.rollout` (trajectory kept); MLP = "
        "the actor half of `ActorCritic(2)` (2×64 tanh, float32, sample + log-prob); PPO rollout policy = "
        "`make_policy(ActorCritic(2))` (actor and critic, + value); the same weights in numpy (BLAS on 1 thread) "
        "for gymnasium's `CartPoleVectorEnv` (target: ≥ 3× gymnasium at N = 1024 with the MLP in the loop).\n\n"
        f"{main_table}\n\nVariants (ratio vs gymnasium with the same policy; PROTOTYPE = a rollout written in "
        f"benchmarks/envs.py, not library code):\n\n{variants_table}\n{probe_text}",
    )


def fmt_rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


# --------------------------------------------------------------------------- policies


def random_policy(params, obs, key):
    action = jax.random.randint(key, (obs.shape[0],), 0, 2)
    return action, jnp.full((obs.shape[0],), -jnp.log(2.0)), {}


def make_actor_policy(hidden_sizes=(64, 64)):
    """A plain MLP policy: the actor half of `ActorCritic` (same weights), samples + log-prob."""
    from jaxrl_llm.models.mlp import MLP

    actor = MLP(tuple(hidden_sizes), 2, "tanh", 0.01)

    def policy(params, obs, key):
        logits = actor.apply({"params": params["params"]["actor"]}, obs.astype(jnp.float32))
        action = jax.random.categorical(key, logits)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], -1)[:, 0]
        return action, log_prob, {}

    return policy


def numpy_weights(params) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """ActorCritic params -> {"actor": [(W, b)...], "critic": [...]} as float32 numpy."""
    out = {}
    for name in ("actor", "critic"):
        layers = params["params"][name]
        names = sorted(layers, key=lambda s: int(s.split("_")[-1]))
        out[name] = [
            (np.asarray(layers[n]["kernel"], np.float32), np.asarray(layers[n]["bias"], np.float32))
            for n in names
        ]
    return out


def numpy_mlp(layers, x):
    for w, b in layers[:-1]:
        x = np.tanh(x @ w + b)
    w, b = layers[-1]
    return x @ w + b


def numpy_policy(weights, obs, rng, critic=True):
    """Same computation as `make_policy(ActorCritic(2))` (sample, log-prob, value) or,
    with `critic=False`, as `make_actor_policy()`."""
    obs = obs.astype(np.float32, copy=False)
    logits = numpy_mlp(weights["actor"], obs)
    value = numpy_mlp(weights["critic"], obs)[:, 0] if critic else None
    m = logits.max(-1, keepdims=True)
    log_probs = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    action = (rng.random(obs.shape[0], dtype=np.float32) < np.exp(log_probs[:, 1])).astype(np.int64)
    log_prob = np.take_along_axis(log_probs, action[:, None], -1)[:, 0]
    return action, log_prob, value


# --------------------------------------------------------------------------- PROTOTYPE rollout


def prototype_run_steps(
    key, env, env_params, policy, policy_params, state: RolloutState, num_steps: int, reset_ratio: int = 1
):
    """PROTOTYPE (benchmark only, not library code): `run_steps` without per-lane resets.

    Differences from `jaxrl_llm.rollout.run_steps`:
      1. steps with `env.step_env` instead of `env.step`, so no per-env `split` of the key
         into step/reset keys and no `reset_env` evaluated in every lane of every step
         (for CartPole, whose `step_env` ignores its key, XLA then drops the per-env key
         split entirely);
      2. one batch of `num_envs // reset_ratio` resets per step from one `split`; env `i`
         that finished takes reset number `(#finished envs before i) mod M`. With
         `reset_ratio=1` every finished env gets its own independent fresh reset (gymnax's
         semantics); with a larger ratio two envs may restart from the same state when more
         than `M` finish in the same step.
    The `Trajectory` it returns has the same fields and meaning as the library's.
    """
    num_envs = state.episode_return.shape[0]
    num_resets = max(1, num_envs // reset_ratio)
    v_step = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))
    v_trunc = jax.vmap(env.is_truncated, in_axes=(0, None))
    v_reset = jax.vmap(env.reset_env, in_axes=(0, None))

    def one_step(state: RolloutState, step_key):
        policy_key, env_key, reset_key = jax.random.split(step_key, 3)
        action, log_prob, extras = policy(policy_params, state.obs, policy_key)
        obs_st, env_st, reward, terminated, _ = v_step(
            jax.random.split(env_key, num_envs), state.env_state, action, env_params
        )
        truncated = v_trunc(env_st, env_params)
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = v_reset(jax.random.split(reset_key, num_resets), env_params)
        slot = (jnp.cumsum(done) - 1) % num_resets
        pick = lambda re, st: jnp.where(done.reshape(-1, *([1] * (st.ndim - 1))), re[slot], st)
        env_state = jax.tree.map(pick, state_re, env_st)
        obs = jax.tree.map(pick, obs_re, obs_st)
        reward = reward.astype(jnp.float32)
        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        transition = Trajectory(
            obs=state.obs,
            action=action,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            success=jnp.zeros_like(terminated),  # CartPole has no notion of success
            log_prob=log_prob,
            next_obs=obs_st,
            episode_return=jnp.where(done, episode_return, 0.0),
            episode_length=jnp.where(done, episode_length, 0),
            valid=state.alive,
            extras=extras,
        )
        next_state = RolloutState(
            env_state=env_state,
            obs=obs,
            episode_return=jnp.where(done, 0.0, episode_return),
            episode_length=jnp.where(done, 0, episode_length),
            alive=state.alive,
        )
        return next_state, transition

    state, traj = jax.lax.scan(one_step, state, jax.random.split(key, num_steps))
    return traj, state


# --------------------------------------------------------------------------- runners
# A runner is (name, compile_seconds, call) where call() runs T steps of N envs and blocks.


def make_key(seed: int, impl: str | None):
    return jax.random.PRNGKey(seed) if impl is None else jax.random.key(seed, impl=impl)


def ours_runner(env, env_params, policy, params, n, t, impl=None, prototype_ratio=None):
    if prototype_ratio is None:
        fn = lambda key, params, state: rollout(key, env, env_params, policy, params, n, t, state=state)
    else:
        fn = lambda key, params, state: prototype_run_steps(
            key, env, env_params, policy, params, state, t, prototype_ratio
        )
    key = make_key(0, impl)
    state = jax.jit(reset, static_argnums=(1, 3))(make_key(1, impl), env, env_params, n)
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(key, params, state).compile()
    compile_s = time.perf_counter() - start
    box = {"key": key, "state": state}

    def call():
        box["key"], sub = jax.random.split(box["key"])
        traj, box["state"] = compiled(sub, params, box["state"])
        jax.block_until_ready((traj, box["state"]))

    call()  # warm-up (first execution allocates)
    return compile_s, call


def physics_runner(env, env_params, n, t):
    v_step = jax.vmap(env.step_env, in_axes=(None, 0, 0, None))

    def fn(env_state, obs):
        def body(carry, _):
            env_state, obs = carry
            action = (obs[:, 2] > 0).astype(jnp.int32)  # a fixed controller, no RNG
            obs, env_state, reward, done, _ = v_step(jax.random.PRNGKey(0), env_state, action, env_params)
            return (env_state, obs), reward.sum()

        (env_state, obs), rewards = jax.lax.scan(body, (env_state, obs), None, length=t)
        return env_state, obs, rewards.sum()

    state = jax.jit(reset, static_argnums=(1, 3))(jax.random.PRNGKey(1), env, env_params, n)
    args = (state.env_state, state.obs)
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    box = {"args": args}

    def call():
        env_state, obs, total = compiled(*box["args"])
        box["args"] = (env_state, obs)
        jax.block_until_ready(total)

    call()
    return compile_s, call


def gymnasium_runner(n, t, weights=None, critic=True):
    venv = gymnasium.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    box = {"obs": obs}

    def call():
        obs = box["obs"]
        for _ in range(t):
            if weights is None:
                action = rng.integers(0, 2, n)
            else:
                action, _, _ = numpy_policy(weights, obs, rng, critic)
            obs, reward, terminated, truncated, _ = venv.step(action)
        box["obs"] = obs

    call()
    return 0.0, call


# --------------------------------------------------------------------------- main


def xla_flags_probe(n: int, t: int, repeats: int) -> list[tuple[str, float]]:
    """Runs `ours mlp` at one N in subprocesses with different XLA_FLAGS."""
    results = []
    for flags in (
        "",
        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        "--xla_cpu_enable_fast_math=true",
    ):
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
        cmd = [sys.executable, __file__, "--child-probe", f"{n},{t},{repeats}"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [l for l in out.stdout.splitlines() if l.startswith("PROBE ")]
        rate = float(line[-1].split()[1]) if line else float("nan")
        if not line:
            print(f"  probe with XLA_FLAGS={flags!r} failed:\n{out.stderr[-2000:]}")
        results.append((flags or "(none)", rate))
    return results


def child_probe(spec: str) -> None:
    n, t, repeats = (int(x) for x in spec.split(","))
    env, env_params = envs.make("CartPole-v1")
    net = ActorCritic(action_dim=2)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    _, call = ours_runner(env, env_params, make_policy(net), params, n, t)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    print(f"PROBE {n * t / statistics.median(times)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no RESULTS.md append")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="env steps per call (T)")
    parser.add_argument("--sizes", default=None, help="comma-separated N values (default 64,1024,8192)")
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--child-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_probe:
        child_probe(args.child_probe)
        return

    sizes = (8, 64) if args.quick else (64, 1024, 8192)
    if args.sizes:
        sizes = tuple(int(x) for x in args.sizes.split(","))
    t = args.steps or (16 if args.quick else 256)
    repeats = args.repeats or (3 if args.quick else 5)
    info = machine_info()
    print(info)
    print(f"T = {t} steps per call, {repeats} rounds, median time per call\n")

    env, env_params = envs.make("CartPole-v1")
    net = ActorCritic(action_dim=2)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    weights = numpy_weights(params)
    mlp = make_policy(net)
    actor = make_actor_policy()

    # sanity: the numpy MLP computes the same action probabilities and values as ours
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    dist, value = net.apply(params, jnp.asarray(obs))
    np.testing.assert_allclose(
        numpy_mlp(weights["actor"], obs), np.asarray(dist.logits), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        numpy_mlp(weights["critic"], obs)[:, 0], np.asarray(value), rtol=1e-4, atol=1e-5
    )

    rows = []  # (N, method, compile_s, steps_per_s)
    for n in sizes:
        runners = {
            "ours random": ours_runner(env, env_params, random_policy, None, n, t),
            "gymnasium random": gymnasium_runner(n, t),
            "ours actor-MLP": ours_runner(env, env_params, actor, params, n, t),
            "gymnasium actor-MLP": gymnasium_runner(n, t, weights, critic=False),
            "ours mlp": ours_runner(env, env_params, mlp, params, n, t),
            "gymnasium mlp": gymnasium_runner(n, t, weights),
            "ours mlp + unsafe_rbg key": ours_runner(env, env_params, mlp, params, n, t, impl="unsafe_rbg"),
            "PROTOTYPE actor-MLP, reset_ratio 16 + unsafe_rbg": ours_runner(
                env, env_params, actor, params, n, t, impl="unsafe_rbg", prototype_ratio=16
            ),
            "PROTOTYPE mlp, reset_ratio 1": ours_runner(
                env, env_params, mlp, params, n, t, prototype_ratio=1
            ),
            "PROTOTYPE mlp, reset_ratio 1 + unsafe_rbg": ours_runner(
                env, env_params, mlp, params, n, t, impl="unsafe_rbg", prototype_ratio=1
            ),
            "PROTOTYPE mlp, reset_ratio 16 + unsafe_rbg": ours_runner(
                env, env_params, mlp, params, n, t, impl="unsafe_rbg", prototype_ratio=16
            ),
            "PROTOTYPE random, reset_ratio 1 + unsafe_rbg": ours_runner(
                env, env_params, random_policy, None, n, t, impl="unsafe_rbg", prototype_ratio=1
            ),
            "physics only (no RNG/reset/trajectory)": physics_runner(env, env_params, n, t),
        }
        times = {name: [] for name in runners}
        for _ in range(repeats):
            for name, (_, call) in runners.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        for name, (compile_s, _) in runners.items():
            rate = n * t / statistics.median(times[name])
            rows.append((n, name, compile_s, rate))
            print(f"N={n:5d}  {name:48s} {fmt_rate(rate):>8s} steps/s  (compile {compile_s:.2f} s)")
        print()

    rate = {(n, name): r for n, name, _, r in rows}
    comp = {(n, name): c for n, name, c, _ in rows}
    lines = [
        "| N | random: ours / gymnasium | ratio | MLP policy (2×64 tanh actor): ours / gymnasium | **ratio** | PPO rollout policy (actor + critic): ours / gymnasium | **ratio** | ours compile (random / actor / actor+critic) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        cells = []
        for o, g in (
            ("ours random", "gymnasium random"),
            ("ours actor-MLP", "gymnasium actor-MLP"),
            ("ours mlp", "gymnasium mlp"),
        ):
            ratio = f"{rate[n, o] / rate[n, g]:.2f}×"
            cells.append(
                f"{fmt_rate(rate[n, o])} / {fmt_rate(rate[n, g])} | "
                + (ratio if o == "ours random" else f"**{ratio}**")
            )
        lines.append(
            f"| {n} | "
            + " | ".join(cells)
            + f" | {comp[n, 'ours random']:.2f} / {comp[n, 'ours actor-MLP']:.2f} / {comp[n, 'ours mlp']:.2f} s |"
        )
    main_table = "\n".join(lines)

    def baseline(name):
        return (
            "gymnasium actor-MLP"
            if "actor-MLP" in name
            else "gymnasium mlp"
            if "mlp" in name
            else "gymnasium random"
        )

    names = [
        name for name in dict.fromkeys(name for _, name, _, _ in rows) if not name.startswith("gymnasium")
    ]
    lines = [
        "| variant (env-steps/s) | " + " | ".join(f"N={n}" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for name in names:
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{fmt_rate(rate[n, name])} ({rate[n, name] / rate[n, baseline(name)]:.2f}×)"
                if "physics" not in name
                else fmt_rate(rate[n, name])
                for n in sizes
            )
            + " |"
        )
    variants_table = "\n".join(lines)

    probe_text = ""
    if not args.quick:
        probe_n = 1024
        probe = xla_flags_probe(probe_n, t, repeats)
        probe_text = (
            f"\nXLA CPU flags, `ours mlp` at N={probe_n} (separate processes, run one after another):\n\n| XLA_FLAGS | env-steps/s |\n|---|---:|\n"
            + "\n".join(f"| `{flags}` | {fmt_rate(r)} |" for flags, r in probe)
            + "\n"
        )

    print(main_table)
    print()
    print(
        "Variants (ratio vs gymnasium with the same policy; PROTOTYPE = rollout written in benchmarks/envs.py, not the library):"
    )
    print(variants_table)
    print(probe_text)

    if args.quick or args.no_append:
        return
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    append_results(date, info, t, repeats, main_table, variants_table, probe_text)


if __name__ == "__main__":
    main()
