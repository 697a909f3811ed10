"""The errors a training run reports to its user (importable without JAX, for the CLI)."""

from __future__ import annotations

from pathlib import Path


class IncompatibleRunError(RuntimeError):
    """The output directory holds a run that this one must not overwrite or resume."""


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """Ctrl-C stopped a run; the last finished update was checkpointed."""

    def __init__(self, update: int, out_dir: Path):
        self.update, self.out_dir = update, out_dir
        super().__init__(f"interrupted at update {update} — continue with --resume (run in {out_dir})")
