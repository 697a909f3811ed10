"""Orbax checkpoints of a whole training-loop state.

Uses `ocp.CheckpointManager` with `StandardSave`/`StandardRestore` against an
abstract target, which round-trips every leaf exactly and keeps optax's NamedTuple
state types (restoring without a target would lose them). Saves are synchronous:
an asynchronous save that overlaps the next one can be dropped, and a run that is
killed must find its last save complete on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointStore:
    """Keeps the last `max_to_keep` checkpoints of a pytree under `directory`."""

    def __init__(self, directory: str | Path, max_to_keep: int = 3):
        # a URL such as gs://bucket/run must reach orbax untouched (multi-host runs on GCS)
        self.directory = directory if "://" in str(directory) else Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        self._manager.wait_until_finished()

    def restore(self, step: int, like: Any) -> Any:
        """Restores checkpoint `step` into the structure, shapes and dtypes of `like`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
        return restored["state"]

    def restore_untyped(self, step: int) -> Any:
        """Checkpoint `step` without a target: the same leaves in plain containers (optax's
        NamedTuples come back as dicts), enough to compare two runs without rebuilding either."""
        return self._manager.restore(step)["state"]

    def close(self) -> None:
        self._manager.close()
