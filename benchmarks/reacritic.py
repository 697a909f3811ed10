"""SAC on Pendulum-v1 with a ReaCritic critic vs the MLP critic: training env steps per second.

    python benchmarks/reacritic.py            # 3 reps, appends to benchmarks/RESULTS.md
    python benchmarks/reacritic.py --quick    # smoke run, prints only

Each case is `sac.make_train(SACConfig(...))` on one seed, the whole run one jitted program,
compiled first (`jit(...).lower(key).compile()`, not timed), then executed: frames / wall
seconds of the execution, one gradient step per env step (batch 256, the SAC defaults), the
first `learning_starts` = 100 frames without gradient steps, no evaluation. Cases alternate
rep by rep in this one process, so a change of load hits them alike; the ratio is taken per
rep and the median reported.

Critics: the library's MLP (twin (64, 64) ReLU, SAC's default) and ReaCritic with H = 8
reasoning steps and V = 1 block (the official code's defaults) at token width h = 64 (the
config default for CPU runs) and h = 256 (the paper's).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import jax
from results_file import append_to_section  # benchmarks/ is the script's folder

from jaxrl_llm.algorithms import sac

HEADING = "## ReaCritic vs MLP critic, SAC Pendulum-v1 (benchmarks/reacritic.py)"
CASES = {
    "MLP (64, 64)": {},
    "ReaCritic H=8 V=1 h=64": dict(critic="reacritic", reacritic_steps=8, reacritic_depth=1, reacritic_width=64),
    "ReaCritic H=8 V=1 h=256": dict(critic="reacritic", reacritic_steps=8, reacritic_depth=1, reacritic_width=256),
}


def compiled_run(fields: dict, frames: int):
    config = sac.SACConfig(total_frames=frames, eval_interval=0, **fields)
    key = jax.random.PRNGKey(0)
    program = jax.jit(sac.make_train(config)).lower(key).compile()
    critic = sac.make_sac(config).init(key)[0].params["critic"]
    return program, key, sum(leaf.size for leaf in jax.tree.leaves(critic))


def append_results(stamp: str, load: tuple[float, ...], frames: int, reps: int, table: str) -> None:
    append_to_section(
        HEADING,
        f"\n### {stamp} UTC — nproc {os.cpu_count()}, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, jax {jax.__version__}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in load)}\n\n{frames} frames per execution (one gradient step each "
        f"after the first 100), batch 256, {reps} reps alternating. Command: `python benchmarks/reacritic.py`.\n\n"
        f"{table}\n",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="1 rep, 200 frames, the first two cases, print only")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    cases = dict(list(CASES.items())[:2]) if args.quick else CASES
    reps, frames = (1, 200) if args.quick else (args.reps, args.frames)
    load = os.getloadavg()
    programs = {name: compiled_run(fields, frames) for name, fields in cases.items()}
    rates = {name: [] for name in cases}
    for rep in range(reps):
        for name, (program, key, _) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(program(key))
            rates[name].append(frames / (time.perf_counter() - start))
            print(f"rep {rep}: {name:26s} {rates[name][-1]:9.1f} env steps/s", flush=True)
    baseline = next(iter(cases))
    lines = [
        "| critic | critic params | env steps/s (median) | per rep | MLP / this (median of per-rep ratios) |",
        "|---|---|---|---|---|",
    ]
    for name, (_, _, params) in programs.items():
        ratios = [b / r for b, r in zip(rates[baseline], rates[name], strict=True)]
        lines.append(
            f"| {name} | {params:,} | {statistics.median(rates[name]):.1f} | "
            f"{', '.join(f'{r:.1f}' for r in rates[name])} | {statistics.median(ratios):.1f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.quick or args.no_append:
        return
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    append_results(stamp, load, frames, reps, table)


if __name__ == "__main__":
    main()
