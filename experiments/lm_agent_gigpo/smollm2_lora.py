"""SmolLM2-135M-Instruct with LoRA as a GiGPO agent on FrozenLake 4x4, end to end, from the README.

Runs the README's `jaxrl-llm lm-agent ... --model smollm2-135m-instruct` command as a new user
would: 2 updates, then `--resume --num-updates 3` (checkpoint, resume, extend the budget), each
in its own process with its peak resident memory measured (`os.wait4`). Writes smollm2_lora.md
next to this file: exit codes, wall time, peak RSS, and the metrics of every update (finite
loss, success, invalid answers).

    python experiments/lm_agent_gigpo/smollm2_lora.py [--out /tmp/lm-agent-smollm2]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

from jaxrl_llm.training.metrics import read_metrics

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from readme_commands import README, readme_commands, run_measuring_peak_rss, with_flags  # noqa: E402

COLUMNS = ("step", "frames", "loss", "success_rate", "invalid_action_fraction", "answer_tokens_mean", "kl")


def readme_command() -> list[str]:
    """argv of the README's SmolLM2 `lm-agent` command."""
    for command in readme_commands(README.read_text(), "lm-agent"):
        if "smollm2" in " ".join(command):
            return command
    raise SystemExit(f"no SmolLM2 `jaxrl-llm lm-agent` command in {README}")


def run(argv: list[str], log: Path) -> dict:
    """Exit code, wall seconds and peak RSS (GiB) of `argv` run as a child process."""
    start = time.perf_counter()
    code, peak = run_measuring_peak_rss(argv, log)
    return {"exit": code, "seconds": time.perf_counter() - start, "peak_rss_gib": peak / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/lm-agent-smollm2"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    base = readme_command()
    executable = shutil.which(base[0]) or base[0]
    first = with_flags([executable, *base[1:]], out=str(args.out / "run"), num_updates="2")
    resumed = [*with_flags(first, num_updates="3"), "--resume"]
    phases = [("2 updates", first), ("--resume --num-updates 3", resumed)]
    results = []
    for name, argv in phases:
        print(f"running {name}: {shlex.join(argv)}", flush=True)
        results.append({"phase": name, **run(argv, args.out / f"log_{len(results)}.txt")})
        print(results[-1], flush=True)
    rows = (
        read_metrics(args.out / "run" / "metrics.csv") if (args.out / "run" / "metrics.csv").exists() else []
    )
    checkpoints = sorted(p.name for p in (args.out / "run" / "checkpoints").glob("*") if p.name.isdigit())
    steps_once = [int(r["step"]) for r in rows] == [1, 2, 3]
    finite = bool(rows) and all(math.isfinite(r["loss"]) for r in rows)
    ok = all(r["exit"] == 0 for r in results) and steps_once and finite
    lines = [
        "# SmolLM2-135M-Instruct + LoRA, GiGPO on FrozenLake 4x4 (the README command, end to end)",
        "",
        f"`{shlex.join(base)}`, first with `--num-updates 2`, then `--resume --num-updates 3`. "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "| phase | exit code | wall s | peak RSS GiB |",
        "|---|---:|---:|---:|",
        *[f"| {r['phase']} | {r['exit']} | {r['seconds']:.0f} | {r['peak_rss_gib']:.2f} |" for r in results],
        "",
        f"Checkpoints on disk: {', '.join(checkpoints) or 'none'}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *[
            "| "
            + " | ".join(
                f"{row.get(c, math.nan):.4g}" if c not in ("step", "frames") else str(int(row[c]))
                for c in COLUMNS
            )
            + " |"
            for row in rows
        ],
        "",
        f"Check: both processes exit 0, steps 1-3 appear once each (the resumed process continued from "
        f"checkpoint 2), every loss finite: {'passed' if ok else 'FAILED'}.",
    ]
    (HERE / "smollm2_lora.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'smollm2_lora.md'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
