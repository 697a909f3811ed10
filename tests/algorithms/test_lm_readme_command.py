"""The README's SmolLM2 LM-GRPO command runs (one update) within the memory it promises,
checkpoints, and resumes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
from readme_commands import README, readme_commands, run_measuring_peak_rss, with_flags  # noqa: E402

from jaxrl_llm.training import CheckpointStore
from jaxrl_llm.training.metrics import read_metrics

PEAK_RSS_LIMIT = 8 * 2**30


def readme_lm_commands(text: str) -> list[list[str]]:
    return readme_commands(text, "lm-grpo")


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


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_readme_smollm2_command_runs_under_8_gb_checkpoints_and_resumes(tmp_path):
    """The README's SmolLM2 + LoRA command: one update within the promised memory and a
    checkpoint, then a killed-run-style resume that extends the budget by one update."""
    commands = readme_lm_commands(README.read_text())
    (command,) = [c for c in commands if "smollm2-135m-instruct" in c and "--lora-rank" in c]
    out = tmp_path / "run"
    argv = with_flags(command, out=str(out), num_updates="1", checkpoint_every="1", compile_cache="")
    argv = [sys.executable, "-m", "jaxrl_llm.cli", *argv[1:], "--no-progress"]
    code, peak = run_measuring_peak_rss(argv, tmp_path / "log.txt", timeout=600)
    log = (tmp_path / "log.txt").read_text()
    assert code == 0, log[-3000:]
    assert "loaded smollm2-135m-instruct in" in log
    (row,) = read_metrics(out / "metrics.csv")
    assert int(row["step"]) == 1 and row["loss"] == row["loss"]  # not NaN
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 2**30:.2f} GiB"
    assert CheckpointStore(out / "checkpoints").latest_step() == 1

    config = json.loads((out / "config.json").read_text())
    config["num_updates"] = 2  # extend the stored budget by one update, then resume
    (out / "config.json").write_text(json.dumps(config))
    resumed = subprocess.run(
        [*with_flags(argv, num_updates="2"), "--resume"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_metrics(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["kl"]) for r in rows)
    assert CheckpointStore(out / "checkpoints").latest_step() == 2
