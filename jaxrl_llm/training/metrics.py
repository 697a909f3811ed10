"""Metrics sinks of a training run: CSV, TensorBoard event files and a PNG curve."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from jaxrl_llm.training.atomic_file import replacing

METRICS_FILE = "metrics.csv"
CURVE_FILE = "learning_curve.png"


class MetricsWriter:
    """Appends one row per update to `metrics.csv` and to TensorBoard under `tb/`.

    On resume, rows logged after the restored step are dropped first, so a run killed
    between two checkpoints does not log those updates twice.
    """

    def __init__(self, out_dir: Path, columns: Sequence[str], resume_from_step: int | None = None):
        from tensorboardX import SummaryWriter  # imported lazily: slow import

        self.path = out_dir / METRICS_FILE
        self.columns = list(columns)
        if resume_from_step is not None and self.path.exists():
            self._keep_rows_up_to(resume_from_step)
            self._file = self.path.open("a", newline="")
            self._csv = self._dict_writer(self._file)
        else:
            self._file = self.path.open("w", newline="")
            self._csv = self._dict_writer(self._file)
            self._csv.writeheader()
        self._tb = SummaryWriter(str(out_dir / "tb"), purge_step=resume_from_step)

    def _dict_writer(self, file) -> csv.DictWriter:
        return csv.DictWriter(file, fieldnames=self.columns, extrasaction="ignore", restval="")

    def _keep_rows_up_to(self, step: int) -> None:
        """Drops the rows after `step` by writing a new file and renaming it over the old
        one: a kill during the rewrite leaves the old file whole (never a truncated one)."""
        with self.path.open(newline="") as f:
            kept = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        with replacing(self.path, newline="") as f:
            writer = self._dict_writer(f)
            writer.writeheader()
            writer.writerows(kept)

    def write(self, row: Mapping[str, float]) -> None:
        self._csv.writerow(row)
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._tb.add_scalar(key, value, step)

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._tb.flush()

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def read_metrics(csv_path: Path) -> list[dict[str, float]]:
    with Path(csv_path).open() as f:
        return [
            {k: float(v) if v not in ("", None) else math.nan for k, v in r.items()}
            for r in csv.DictReader(f)
        ]


def smoothed(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over up to `window` points (shorter at the start)."""
    out, total, queue = [], 0.0, []
    for v in values:
        queue.append(v)
        total += v
        if len(queue) > window:
            total -= queue.pop(0)
        out.append(total / len(queue))
    return out


def plot_learning_curve(
    csv_path: Path,
    png_path: Path,
    y: str = "episode_return_mean",
    x: str = "frames",
    title: str = "",
    x_label: str | None = None,
    raw: str | None = None,
) -> None:
    """Plots `y` against `x` from a metrics CSV into a PNG, with engineering tick labels.

    The noisy per-update values are drawn faintly under a smooth line: `raw` under `y`
    when `y` is already a running statistic (PPO's last-100-episodes mean over the
    per-update mean), else `y` under its moving average (window 1/20 of the points).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    rows = read_metrics(csv_path)

    def series(column):
        kept = [r for r in rows if math.isfinite(r.get(column, math.nan))]
        return [r[x] for r in kept], [r[column] for r in kept]

    xs, ys = series(y)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    window = max(1, len(ys) // 20)
    if raw is not None:
        ax.plot(*series(raw), lw=0.8, alpha=0.35, color="C0", label=raw.replace("_", " "))
        ax.plot(xs, ys, lw=1.8, color="C0", label=y.replace("_", " "))
        ax.legend(loc="best", fontsize=8)
    elif window > 1:
        ax.plot(xs, ys, lw=0.8, alpha=0.35, color="C0", label="per update")
        ax.plot(xs, smoothed(ys, window), lw=1.8, color="C0", label=f"moving average ({window} updates)")
        ax.legend(loc="best", fontsize=8)
    else:
        ax.plot(xs, ys, lw=1.5, color="C0", marker="o" if len(ys) < 30 else None, ms=3)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel(x_label or x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
