"""metrics.csv survives a kill during its rewrite on resume; curves are smoothed and labelled."""

import csv

import numpy as np
import pytest

from counting_algorithm import counting_functions
from jaxrl_llm.training import CheckpointStore, run
from jaxrl_llm.training.metrics import plot_learning_curve, read_metrics, smoothed


def resume_counting(out, resume, raise_at=None):
    fns = counting_functions(num_updates=12, host_update=True, raise_at=raise_at)
    return run(
        fns,
        {"algorithm": "count"},
        out,
        seed=0,
        resume=resume,
        checkpoint_every=5,
        checkpoint_seconds=1e9,
        checkpoint_overhead=0.0,
        progress=False,
    )


def test_fault_during_the_resume_rewrite_loses_no_row(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="injected"):
        resume_counting(tmp_path, resume=False, raise_at=8)  # rows 1-7 logged, checkpoint 5
    assert CheckpointStore(tmp_path / "checkpoints").latest_step() == 5
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.csv")] == list(range(1, 8))

    def dies_midway(self, rows):  # a kill after two rows of the rewrite
        rows = list(rows)
        for row in rows[:2]:
            self.writerow(row)
        raise OSError("killed during the rewrite")

    with monkeypatch.context() as patch:
        patch.setattr(csv.DictWriter, "writerows", dies_midway)
        with pytest.raises(OSError, match="killed"):
            resume_counting(tmp_path, resume=True)
    resume_counting(tmp_path, resume=True)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 13))  # each update exactly once
    assert [r["loss"] for r in rows] == pytest.approx([1 / i for i in range(1, 13)])


def test_columns_start_with_step_and_frames(tmp_path):
    resume_counting(tmp_path, resume=False)
    with (tmp_path / "metrics.csv").open() as f:
        assert next(csv.reader(f))[:2] == ["step", "frames"]


def test_smoothed_is_a_trailing_moving_average():
    values = np.random.default_rng(0).normal(size=50)
    expected = [values[max(0, i - 4) : i + 1].mean() for i in range(50)]
    np.testing.assert_allclose(smoothed(values.tolist(), 5), expected, rtol=1e-12)


def test_curve_uses_engineering_ticks_and_the_given_axis_label(tmp_path, monkeypatch):
    import matplotlib.figure

    path = tmp_path / "metrics.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "frames", "accuracy"])
        writer.writerows([i, i * 8000, i / 100] for i in range(1, 101))
    saved = {}
    original = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kwargs):
        saved["figure"] = self
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    plot_learning_curve(path, tmp_path / "curve.png", y="accuracy", x_label="completions")
    (ax,) = saved["figure"].axes
    assert ax.get_xlabel() == "completions"
    assert len(ax.lines) == 2  # raw values and their moving average
    labels = [ax.xaxis.get_major_formatter()(tick) for tick in (200_000, 800_000)]
    assert labels == ["200k", "800k"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), smoothed([i / 100 for i in range(1, 101)], 5))

    plot_learning_curve(path, tmp_path / "curve.png", y="accuracy", raw="step")  # y is already smooth
    raw_line, y_line = saved["figure"].axes[0].lines
    np.testing.assert_array_equal(raw_line.get_ydata(), np.arange(1, 101))
    np.testing.assert_allclose(y_line.get_ydata(), np.arange(1, 101) / 100)
