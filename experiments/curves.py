"""What every experiment driver shares: per-seed success at the budget, smoothing, curve plots,
and a cache of finished training jobs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def final_success(success: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Per-seed success at the budget: mean over the last `fraction` of updates (NaN-safe)."""
    tail = max(1, int(success.shape[1] * fraction))
    return np.nanmean(success[:, -tail:], axis=1)


def smooth(y: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving average of width `width` (NaN entries replaced by the mean)."""
    y = np.where(np.isfinite(y), y, np.nan)
    kernel = np.ones(width) / width
    padded = np.pad(
        np.nan_to_num(y, nan=np.nanmean(y) if np.isfinite(y).any() else 0.0), (width - 1, 0), mode="edge"
    )
    return np.convolve(padded, kernel, mode="valid")


def cached_run(path: Path, train) -> tuple[dict, float, float]:
    """`train()`'s `(metrics, compile_s, run_s)`, saved to `path` (.npz) the first time and
    read back after: a stopped experiment resumes job by job. `metrics` maps names to
    arrays."""
    if path.exists():
        saved = dict(np.load(path))
        return saved, float(saved.pop("compile_s")), float(saved.pop("run_s"))
    metrics, compile_s, run_s = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, compile_s=compile_s, run_s=run_s, **metrics)
    return metrics, compile_s, run_s


def compile_and_run(program, *args) -> tuple[object, float, float]:
    """`(jax.device_get(program(*args)), compile_s, run_s)` of a jitted `program`, compiled
    first (`lower(...).compile()`) so the two times are apart."""
    import jax

    start = time.perf_counter()
    compiled = program.lower(*args).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    output = jax.device_get(compiled(*args))
    return output, compile_s, time.perf_counter() - start


def plot_success_curves(
    curves: dict,
    path: Path,
    x_label: str = "env steps",
    y_label: str = "success rate",
    y_limits: tuple[float, float] | None = (-0.02, 1.02),
    columns: int | None = None,
    smooth_width: int | None = None,
) -> None:
    """One panel per task: mean ± std over seeds of each method's smoothed curve (success
    rate by default; any per-update value with `y_label`, `y_limits=None`).

    `curves[task][method] = (x [U], values [seeds, U])`; `columns` panels per row (default:
    all in one row); `smooth_width` of the moving average (default: U // 20; 1: none).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    columns = columns or len(curves)
    rows = -(-len(curves) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), dpi=110, squeeze=False)
    for ax in axes.ravel()[len(curves) :]:
        ax.set_visible(False)
    for ax, (task, methods) in zip(axes.ravel(), curves.items()):
        for name, (frames, success) in methods.items():
            width = smooth_width or max(1, len(frames) // 20)
            per_seed = np.stack([smooth(s, width) for s in success])
            mean, std = per_seed.mean(0), per_seed.std(0)
            ax.plot(frames, mean, label=name, lw=1.6)
            ax.fill_between(frames, mean - std, mean + std, alpha=0.2)
        ax.set_title(task)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        if y_limits is not None:
            ax.set_ylim(*y_limits)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[: len(curves)]:
        ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
