"""The README's SmolLM2 LM-GRPO command runs (one update) within the memory it promises."""

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jaxrl_llm.training.metrics import read_metrics

README = Path(__file__).resolve().parents[2] / "README.md"
PEAK_RSS_LIMIT = 8 * 2**30


def readme_lm_commands(text: str) -> list[list[str]]:
    """argv of every `jaxrl-llm lm-grpo` command in `text` (backslash continuations joined,
    trailing `# comments` dropped)."""
    joined = text.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        if line.startswith("jaxrl-llm lm-grpo "):
            commands.append(shlex.split(line, comments=True))
    return commands


def with_flags(argv: list[str], **flags: str) -> list[str]:
    """`argv` with each `--flag value` in `flags` (underscores as dashes) replaced or appended."""
    argv = list(argv)
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if flag in argv:
            index = argv.index(flag)
            del argv[index : index + 2]
        argv += [flag, value]
    return argv


def test_readme_lm_commands_are_found_and_rewritten():
    text = (
        "It's:\n```bash\njaxrl-llm ppo --env X\n"
        "jaxrl-llm lm-grpo --model m --lora-rank 8 \\\n    --out a  # LoRA\n```"
    )
    (command,) = readme_lm_commands(text)
    assert command == ["jaxrl-llm", "lm-grpo", "--model", "m", "--lora-rank", "8", "--out", "a"]
    rewritten = with_flags(command, out="/tmp/x", num_updates="1")
    assert rewritten == [*command[:6], "--out", "/tmp/x", "--num-updates", "1"]
    assert len(readme_lm_commands(README.read_text())) >= 3  # LoRA, full fine-tuning, tiny


def run_measuring_peak_rss(argv: list[str], log: Path, timeout: float) -> tuple[int, int]:
    """(exit code, peak resident set size in bytes) of `argv`, its output written to `log`.

    `os.wait4` reports the kernel's high-water mark of this child alone (a polled RSS
    misses short peaks; RUSAGE_CHILDREN mixes in every child the test session reaped).
    """
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    timer = threading.Timer(timeout, os.kill, (process.pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting
    return process.returncode, usage.ru_maxrss * 1024  # Linux reports KiB


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_readme_smollm2_command_runs_one_update_under_8_gb(tmp_path):
    commands = readme_lm_commands(README.read_text())
    (command,) = [c for c in commands if "smollm2-135m-instruct" in c and "--lora-rank" in c]
    out = tmp_path / "run"
    argv = with_flags(command, out=str(out), num_updates="1", compile_cache="")
    argv = [sys.executable, "-m", "jaxrl_llm.cli", *argv[1:], "--no-progress"]
    code, peak = run_measuring_peak_rss(argv, tmp_path / "log.txt", timeout=600)
    log = (tmp_path / "log.txt").read_text()
    assert code == 0, log[-3000:]
    assert "loaded smollm2-135m-instruct in" in log
    (row,) = read_metrics(out / "metrics.csv")
    assert int(row["step"]) == 1 and row["loss"] == row["loss"]  # not NaN
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 2**30:.2f} GiB"
