"""The host loop: per-update progress and checkpoints for host-driven runs, Ctrl-C."""

import re

import pytest

from counting_algorithm import counting_functions
from jaxrl_llm import cli
from jaxrl_llm.training import CheckpointStore, TrainingInterrupted, run
from jaxrl_llm.training.metrics import read_metrics


def host_run(out, raise_at=None, error=RuntimeError, checkpoint_seconds=1e9, progress=False):
    fns = counting_functions(num_updates=6, host_update=True, raise_at=raise_at, error=error)
    return run(
        fns,
        {"algorithm": "count"},
        out,
        seed=0,
        checkpoint_every=25,
        checkpoint_seconds=checkpoint_seconds,
        checkpoint_overhead=0.0,
        progress=progress,
    )


def test_time_based_checkpoints_lose_at_most_one_update(tmp_path):
    with pytest.raises(RuntimeError):
        host_run(tmp_path / "by_count", raise_at=4)
    assert CheckpointStore(tmp_path / "by_count" / "checkpoints").latest_step() == 0  # the initial state
    with pytest.raises(RuntimeError):
        host_run(tmp_path / "by_time", raise_at=4, checkpoint_seconds=0.0)
    assert CheckpointStore(tmp_path / "by_time" / "checkpoints").latest_step() == 3


def test_slow_updates_are_saved_every_update(tmp_path):
    """Updates that take far longer than a save (LM training) are each checkpointed."""
    fns = counting_functions(num_updates=6, host_update=True, raise_at=4, update_seconds=1.0)
    with pytest.raises(RuntimeError):
        run(
            fns,
            {"algorithm": "count"},
            tmp_path,
            seed=0,
            checkpoint_every=25,
            checkpoint_seconds=1e9,
            checkpoint_overhead=1.0,  # save when a save costs less than an update (robust under load)
            progress=False,
        )
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 3


def test_progress_bar_advances_every_host_update(tmp_path, capsys):
    host_run(tmp_path, progress=True)
    shown = set(re.findall(r"(\d+)\.0/60", capsys.readouterr().err))
    assert {"10", "20", "30", "40", "50", "60"} <= shown


def test_ctrl_c_saves_the_last_finished_update(tmp_path):
    with pytest.raises(TrainingInterrupted, match="interrupted at update 3 — continue with --resume") as info:
        host_run(tmp_path, raise_at=4, error=KeyboardInterrupt)
    assert info.value.update == 3
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 3
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.csv")] == [1, 2, 3]
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000


def test_ctrl_c_inside_a_step_that_took_the_state_keeps_the_last_checkpoint(tmp_path):
    fns = counting_functions(host_update=True, raise_at=4, error=KeyboardInterrupt, donate_before_raising=True)
    with pytest.raises(TrainingInterrupted, match="interrupted at update 2") as info:
        run(fns, {"algorithm": "count"}, tmp_path, seed=0, checkpoint_every=2, checkpoint_overhead=0, progress=False)
    assert info.value.update == 2
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 2


def test_cli_turns_ctrl_c_into_a_message_and_exit_130(tmp_path, monkeypatch, capsys):
    import jaxrl_llm.training

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(3, tmp_path)

    monkeypatch.setattr(jaxrl_llm.training, "run", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ppo", "--out", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted at update 3 — continue with --resume" in err and "Traceback" not in err


@pytest.mark.parametrize("command, name", [("gigpo", "GiGPO"), ("grpo", "GRPO"), ("ppo", "PPO")])
def test_titles_spell_the_algorithm(tmp_path, monkeypatch, command, name):
    import jaxrl_llm.training

    seen = {}
    monkeypatch.setattr(jaxrl_llm.training, "run", lambda *a, **kw: seen.update(kw))
    cli.main([command, "--out", str(tmp_path)])
    assert seen["title"].startswith(f"{name} on ")


def test_curve_axis_names_what_a_frame_is(tmp_path, monkeypatch):
    import dataclasses

    from jaxrl_llm.training import loop

    seen = {}
    monkeypatch.setattr(loop, "plot_learning_curve", lambda *args, **kwargs: seen.update(kwargs))
    fns = dataclasses.replace(counting_functions(num_updates=2, host_update=True), frame_name="completion")
    run(fns, {"algorithm": "count"}, tmp_path, seed=0, progress=False)
    assert seen["x_label"] == "completions"


def test_metrics_reach_disk_before_the_checkpoint_that_covers_them(tmp_path, monkeypatch):
    """A SIGKILL right after a save must not leave the saved updates missing from metrics.csv."""
    logged_at_save = {}
    original_save = CheckpointStore.save

    def recording_save(self, step, state):
        rows = read_metrics(tmp_path / "run" / "metrics.csv") if step else []
        logged_at_save[step] = [int(r["step"]) for r in rows]
        original_save(self, step, state)

    monkeypatch.setattr(CheckpointStore, "save", recording_save)
    run(
        counting_functions(num_updates=6, host_update=True),
        {"algorithm": "count"},
        tmp_path / "run",
        seed=0,
        checkpoint_every=2,
        checkpoint_seconds=1e9,
        checkpoint_overhead=0.0,
        progress=False,
    )
    assert logged_at_save == {0: [], 2: [1, 2], 4: [1, 2, 3, 4], 6: [1, 2, 3, 4, 5, 6]}
