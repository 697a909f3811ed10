"""The README's SmolLM2 LM-GRPO command runs (one update) within the memory it promises and
checkpoints; an LM-GRPO LoRA run on the CLI resumes (on the tiny model: the SmolLM2 run costs a
minute per update on 2 cores)."""

import sys
from pathlib import Path

import jax
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
def test_readme_smollm2_command_runs_under_8_gb_and_checkpoints(tmp_path):
    """The README's SmolLM2 + LoRA command: one update within the promised memory, and a checkpoint."""
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
    assert int(row["step"]) == 1 and np.isfinite(row["loss"]) and np.isfinite(row["kl"])
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 2**30:.2f} GiB"
    assert CheckpointStore(out / "checkpoints").latest_step() == 1


def test_a_lora_run_resumed_with_a_larger_budget_ends_where_a_straight_run_ends(tmp_path):
    """Train 2 updates, then `--resume` with the budget raised to 3 (how a killed or finished run
    is continued): one more update, each metrics row once, and the adapters and optimizer state of
    a run that went straight to 3, to the bit."""
    from jaxrl_llm import cli

    def train(out, *flags):
        small = ["--model-overrides", "hidden_size", "32", "intermediate_size", "64", "num_layers", "1"]
        cli.main(["lm-grpo", "--model", "tiny", *small, "--arithmetic-kinds", "add", "--lora-rank", "4",
                  "--prompts-per-update", "2", "--group-size", "2", "--max-new-tokens", "4", "--out", str(out),
                  "--no-progress", "--stall-seconds", "0", "--compile-cache", "", *flags])

    def final_state(out):
        store = CheckpointStore(out / "checkpoints")
        step, state = store.latest_step(), store.restore_untyped(store.latest_step())
        store.close()
        return step, state

    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    train(resumed, "--num-updates", "2")
    assert CheckpointStore(resumed / "checkpoints").latest_step() == 2
    train(resumed, "--num-updates", "3", "--resume")
    train(straight, "--num-updates", "3")
    assert [int(r["step"]) for r in read_metrics(resumed / "metrics.csv")] == [1, 2, 3]
    (step_a, state_a), (step_b, state_b) = final_state(resumed), final_state(straight)
    assert step_a == step_b == 3
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    untimed = lambda rows: [{k: v for k, v in r.items() if not k.endswith(("seconds", "per_second"))} for r in rows]  # noqa: E731
    np.testing.assert_equal(untimed(read_metrics(resumed / "metrics.csv")), untimed(read_metrics(straight / "metrics.csv")))
