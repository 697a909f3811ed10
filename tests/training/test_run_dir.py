"""Overwriting, resuming and extending runs: what a run directory accepts and refuses."""

import json

import pytest

from counting_algorithm import counting_functions
from jaxrl_llm.training import CheckpointStore, IncompatibleRunError, NonFiniteLossError, prepare_run_dir, run
from jaxrl_llm.training.metrics import read_metrics


def run_counting(out, num_updates, resume=False, **kwargs):
    config = {"algorithm": "count", "num_updates": num_updates, "learning_rate": kwargs.pop("lr", 1.0)}
    fns = counting_functions(num_updates=num_updates, nan_at=kwargs.pop("nan_at", None))
    return run(fns, config, out, seed=0, resume=resume, checkpoint_every=5, progress=False, **kwargs)


def test_run_killed_before_its_first_checkpoint_is_not_overwritten(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"algorithm": "count"}))
    (tmp_path / "metrics.csv").write_text("step,frames\n1,10\n")
    with pytest.raises(IncompatibleRunError, match="not empty.*--resume.*--overwrite"):
        prepare_run_dir(tmp_path, {"algorithm": "count"}, resume=False)
    assert (tmp_path / "metrics.csv").read_text() == "step,frames\n1,10\n"


def test_overwrite_discards_the_old_run_but_never_foreign_files(tmp_path):
    run_counting(tmp_path, 3)
    (tmp_path / "metrics.csv.tmp").write_text("left by a kill during a rewrite")
    state = run_counting(tmp_path, 2, overwrite=True)
    assert not (tmp_path / "metrics.csv.tmp").exists()
    assert int(state["count"]) == 2
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.csv")] == [1, 2]
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 2
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(IncompatibleRunError, match="notes.txt"):
        prepare_run_dir(tmp_path, {"algorithm": "count"}, resume=False, overwrite=True)
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "config.json").exists()


@pytest.mark.parametrize("exists", [False, True])
def test_resume_without_a_run_refuses(tmp_path, exists):
    out = tmp_path / "run"
    if exists:
        out.mkdir()
    with pytest.raises(IncompatibleRunError, match="nothing to resume.*Drop --resume"):
        prepare_run_dir(out, {"algorithm": "count"}, resume=True)


def test_unwritable_out_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(IncompatibleRunError, match="cannot write to the output directory"):
        prepare_run_dir(blocker / "run", {"algorithm": "count"}, resume=False)


def test_a_finished_run_is_extended_by_a_larger_budget(tmp_path):
    run_counting(tmp_path, 3)
    state = run_counting(tmp_path, 7, resume=True)
    assert int(state["count"]) == 7
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.csv")] == list(range(1, 8))
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["num_updates"] == 7
    assert stored["history"][-1]["changed"] == {"num_updates": {"from": 3, "to": 7}}


def test_nan_advice_works_as_printed(tmp_path):
    """The NaN message names the flags that continue the run with a lower learning rate."""
    with pytest.raises(NonFiniteLossError) as error:
        run_counting(tmp_path, 8, nan_at=3)
    message = str(error.value)
    assert "update 3" in message and "None" not in message
    assert "no update was checkpointed" in message and "--resume --allow-changes learning_rate" in message
    with pytest.raises(
        IncompatibleRunError, match="(?s)learning_rate: stored 1.0, now 0.5.*--allow-changes learning_rate"
    ):
        run_counting(tmp_path, 8, resume=True, lr=0.5)
    state = run_counting(tmp_path, 8, resume=True, lr=0.5, allow_changes=("learning_rate",))
    assert int(state["count"]) == 8
    history = json.loads((tmp_path / "config.json").read_text())["history"]
    assert history[-1]["changed"] == {"learning_rate": {"from": 1.0, "to": 0.5}}


def test_nan_after_a_checkpoint_names_it(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"update 7.*last good checkpoint \(update 5\)"):
        run_counting(tmp_path, 8, nan_at=7)


def test_fields_added_since_the_run_started_take_their_new_value(tmp_path):
    prepare_run_dir(tmp_path, {"algorithm": "count", "lr": 1.0}, resume=False)
    changes = prepare_run_dir(tmp_path, {"algorithm": "count", "lr": 1.0, "remat": True}, resume=True)
    assert changes == {"remat": (None, True)}
    with pytest.raises(IncompatibleRunError, match="lr: stored 1.0, now 2.0"):
        prepare_run_dir(tmp_path, {"algorithm": "count", "lr": 2.0, "remat": True}, resume=True)
