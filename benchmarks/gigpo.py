"""GiGPO advantages: jitted on-device grouping (ours) vs the host-side reference of verl-agent's rules.

Workload: 4096 trajectories × 50 steps in 512 episode groups of 8 (verl-agent's group size), each
group a random walk on a 5×5 grid from the group's start cell to its goal cell, so anchor states
repeat heavily within a group, as they do in ALFWorld/Sokoban. The episode ends (padding) when the
goal is reached (reward 10, like ALFWorld's 10·won); 5% of actions are flagged invalid (penalty 0.1).
Options: ALFWorld's `mean_std_norm`, γ = 0.95, ω = 1, step-row episode baseline.

Both implementations run in the same process on the same inputs; their outputs are compared.
Ours: `jax.jit(gigpo_advantages)`, compile excluded, median of `--repeats` runs with
`block_until_ready` (also timed from host numpy inputs, i.e. including the transfer). Reference:
`jaxrl_llm.losses.reference.gigpo_numpy` (the same reference the tests use), median of
`--reference-repeats` runs. Results are printed as a markdown table and appended under
"## GiGPO advantages" in benchmarks/RESULTS.md.

    python benchmarks/gigpo.py [--trajectories 4096] [--steps 50] [--no-write]
"""

import argparse
import datetime
import functools
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from results_file import append_to_section  # benchmarks/ is the script's folder

from jaxrl_llm.losses.gigpo import gigpo_advantages
from jaxrl_llm.losses.reference.gigpo_numpy import gigpo_advantages_reference

SECTION_HEADING = "## GiGPO advantages"
OPTIONS = dict(
    gamma=0.95,
    step_advantage_weight=1.0,
    normalization="std",
    episode_baseline_over="steps",
    invalid_action_penalty=0.1,
)
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])


def grid_walk_rollouts(rng, num_trajectories, num_steps, group_size, grid_size):
    """Random walks on a grid; one start and goal cell per episode group; int8 grid observations."""
    num_groups = num_trajectories // group_size
    episode_group_ids = np.repeat(np.arange(num_groups, dtype=np.int32), group_size)
    start = rng.integers(0, grid_size, size=(num_groups, 2))[episode_group_ids]
    goal = rng.integers(0, grid_size, size=(num_groups, 2))[episode_group_ids]
    position = start.copy()
    alive = np.ones(num_trajectories, bool)
    observations = np.zeros((num_trajectories, num_steps, grid_size, grid_size), np.int8)
    rewards = np.zeros((num_trajectories, num_steps), np.float32)
    step_mask = np.zeros((num_trajectories, num_steps), bool)
    rows = np.arange(num_trajectories)
    for t in range(num_steps):
        step_mask[:, t] = alive
        observations[rows, t, goal[:, 0], goal[:, 1]] = 2
        observations[rows, t, position[:, 0], position[:, 1]] = 1
        position = np.clip(position + MOVES[rng.integers(0, 4, num_trajectories)], 0, grid_size - 1)
        reached = alive & np.all(position == goal, axis=-1)
        rewards[reached, t] = 10.0
        alive &= ~reached
    invalid_action_mask = step_mask & (rng.random(step_mask.shape) < 0.05)
    return rewards, step_mask, episode_group_ids, observations, invalid_action_mask


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_description():
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            processor = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{processor}, nproc {cores}, jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"load average at start {load}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--grid-size", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--reference-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    machine = machine_description()  # before our own work raises the load average
    rng = np.random.default_rng(args.seed)
    host_inputs = grid_walk_rollouts(rng, args.trajectories, args.steps, args.group_size, args.grid_size)
    rewards, step_mask, episode_group_ids, observations, invalid = host_inputs
    device_inputs = [jnp.asarray(x) for x in host_inputs]

    configured = functools.partial(
        gigpo_advantages, num_episode_groups=args.trajectories // args.group_size, **OPTIONS
    )
    ours = jax.jit(configured)  # every output: advantages, parts, group ids and sizes, metrics
    ours_advantages_only = jax.jit(lambda *a, **k: configured(*a, **k).advantages)
    run_ours = lambda inputs: ours(*inputs[:4], invalid_action_mask=inputs[4])
    run_advantages_only = lambda inputs: ours_advantages_only(*inputs[:4], invalid_action_mask=inputs[4])
    start = time.perf_counter()
    result = jax.block_until_ready(run_ours(device_inputs))
    compile_seconds = time.perf_counter() - start
    jax.block_until_ready(run_advantages_only(device_inputs))

    reference_kwargs = dict(invalid_action_mask=invalid, **OPTIONS)
    reference = gigpo_advantages_reference(
        rewards, step_mask, episode_group_ids, observations, **reference_kwargs
    )
    max_abs_difference = float(np.max(np.abs(np.asarray(result.advantages) - reference["advantages"])))
    same_groups = bool(np.array_equal(np.asarray(result.step_group_ids), reference["step_group_ids"]))

    # Alternate ours and the reference so that both see the same machine load.
    ours_device, ours_advantages, ours_host, reference_seconds = [], [], [], []
    for _ in range(args.reference_repeats):
        ours_device.append(
            median_seconds(lambda: jax.block_until_ready(run_ours(device_inputs)), args.repeats)
        )
        ours_advantages.append(
            median_seconds(lambda: jax.block_until_ready(run_advantages_only(device_inputs)), args.repeats)
        )
        ours_host.append(median_seconds(lambda: jax.block_until_ready(run_ours(host_inputs)), args.repeats))
        reference_seconds.append(
            median_seconds(
                lambda: gigpo_advantages_reference(
                    rewards, step_mask, episode_group_ids, observations, **reference_kwargs
                ),
                1,
            )
        )
    ours_device_s = statistics.median(ours_device)
    ours_advantages_s = statistics.median(ours_advantages)
    ours_host_s = statistics.median(ours_host)
    reference_s = statistics.median(reference_seconds)

    num_rows = int(step_mask.sum())
    metrics = {k: float(v) for k, v in result.metrics.items()}
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = f"""\
### {date} — {machine}

{args.trajectories} trajectories × {args.steps} steps ({num_rows} valid step rows), groups of \
{args.group_size}, {args.grid_size}×{args.grid_size} int8 grid observations; \
{int(metrics["num_step_groups"])} anchor-state groups (mean size \
{metrics["step_group_size_mean"]:.1f}, singletons {metrics["singleton_step_group_fraction"]:.1%}); \
options {OPTIONS}, invalid-action rate 5%.

| implementation | median time | speedup vs reference |
|---|---|---|
| host reference (numpy float64 + dicts, verl-agent rules) | {reference_s * 1e3:.1f} ms | 1.0× |
| ours, `jax.jit`, inputs on device, all outputs | {ours_device_s * 1e3:.2f} ms | **{reference_s / ours_device_s:.0f}×** |
| ours, `jax.jit`, inputs on device, `.advantages` only (as in a train step) | \
{ours_advantages_s * 1e3:.2f} ms | {reference_s / ours_advantages_s:.0f}× |
| ours, `jax.jit`, all outputs, from host numpy (incl. transfer) | {ours_host_s * 1e3:.2f} ms | {reference_s / ours_host_s:.0f}× |

Compile (excluded above): {compile_seconds:.2f} s. Max |Δ advantage| vs reference: \
{max_abs_difference:.2e} (float32 vs float64); identical step groups: {same_groups}. \
Ours: median of {args.repeats} runs, repeated {args.reference_repeats}× alternating with the \
reference ({args.reference_repeats} runs); medians of those. The machine is shared: absolute \
times and the ratio move with its load (34–76× across runs on the same day), compare within a block.
"""
    print(block)
    if not args.no_write:
        append_to_section(SECTION_HEADING, "\n" + block)


if __name__ == "__main__":
    main()
