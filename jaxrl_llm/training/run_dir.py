"""A run's directory: who may write into it, and what a resume may change.

A run directory holds `config.json` (the run's config plus a `history` of the changes
made on resume), `metrics.csv`, `tb/`, `checkpoints/`, `learning_curve.png` and, for a
run that starts from a warm-up run, that run in `warmup/`. A new
run needs an empty (or absent) directory, or `overwrite=True`; a resume needs a run
there and the same config, except for

- budget fields (`total_frames`, `num_updates`): how long to train is not part of a
  run's identity, so a finished run can be extended;
- fields named in `allow_changes` (e.g. a lower `learning_rate` after a NaN loss);
- fields the stored config lacks: added to the config after the run started, they
  take the value given now.

Every accepted change is appended to `config.json["history"]`.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jaxrl_llm.errors import IncompatibleRunError
from jaxrl_llm.training.atomic_file import replacing

CONFIG_FILE = "config.json"
HISTORY_KEY = "history"
BUDGET_FIELDS = frozenset({"total_frames", "num_updates"})
WARMUP_DIR = "warmup"  # a run that starts from another run's result (LM-GRPO's supervised warm-up)
RUN_ARTIFACTS = frozenset({CONFIG_FILE, "metrics.csv", "learning_curve.png", "tb", "checkpoints", WARMUP_DIR})


def _write_config(path: Path, config: dict[str, Any]) -> None:
    with replacing(path) as f:
        f.write(json.dumps(config, indent=2, sort_keys=True))


def check_writable(out_dir: Path) -> None:
    """Creates `out_dir` and checks a file can be written there, before any work is done."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-check-"):
            pass
    except OSError as error:
        raise IncompatibleRunError(
            f"cannot write to the output directory {out_dir}: {error.strerror or error}. "
            "Choose a writable --out."
        ) from None


def _config_changes(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = (set(stored) | set(new)) - {HISTORY_KEY}
    return {k: (stored.get(k), new.get(k)) for k in sorted(keys) if stored.get(k) != new.get(k)}


def _clear_run(out_dir: Path, entries: list[Path]) -> None:
    # a kill during an atomic rewrite can leave `<artifact>.tmp` behind: part of the run too
    foreign = sorted(
        p.name
        for p in entries
        if p.name.removesuffix(".tmp") not in RUN_ARTIFACTS and not p.name.startswith(".")
    )
    if foreign:
        raise IncompatibleRunError(
            f"--overwrite refused: {out_dir} holds files that are not part of a run "
            f"({', '.join(foreign)}). Choose another --out."
        )
    for path in entries:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def prepare_run_dir(
    out_dir: Path,
    run_config: dict[str, Any],
    resume: bool,
    *,
    overwrite: bool = False,
    allow_changes: Iterable[str] = (),
) -> dict[str, tuple[Any, Any]]:
    """Checks `out_dir` for a new run or a resume and writes `config.json`.

    Returns:
      The accepted config changes of a resume `{field: (stored, now)}` (empty for a
      new run).

    Raises:
      IncompatibleRunError: `out_dir` is not writable; a new run finds it non-empty
        without `overwrite`; a resume finds no run there, or a config that differs
        in fields other than the budget and `allow_changes`.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir)
    config_path = out_dir / CONFIG_FILE
    entries = [p for p in out_dir.iterdir() if not p.name.startswith(".write-check-")]
    if not resume:
        if entries and not overwrite:
            names = ", ".join(sorted(p.name for p in entries)[:6])
            raise IncompatibleRunError(
                f"{out_dir} is not empty ({names}). Pass --resume to continue the run in it, "
                "--overwrite to discard it, or choose another --out; nothing was changed."
            )
        _clear_run(out_dir, entries)
        _write_config(config_path, {**run_config, HISTORY_KEY: []})
        return {}
    if not config_path.exists():
        raise IncompatibleRunError(
            f"nothing to resume: {out_dir} holds no run (no {CONFIG_FILE}). "
            "Drop --resume to start a new run there."
        )
    stored = json.loads(config_path.read_text())
    changes = _config_changes(stored, run_config)
    allowed = BUDGET_FIELDS | set(allow_changes)
    refused = {k: v for k, v in changes.items() if k not in allowed and k in stored}
    if refused:
        lines = "\n".join(f"  {k}: stored {a!r}, now {b!r}" for k, (a, b) in refused.items())
        raise IncompatibleRunError(
            f"Cannot resume {out_dir}: its config differs from this one:\n{lines}\n"
            "Resume with the stored values, add --allow-changes "
            f"{' '.join(refused)} to change them on purpose (recorded in {CONFIG_FILE}), "
            "or start a new run in another --out directory."
        )
    if changes:
        history = [
            *stored.get(HISTORY_KEY, []),
            {
                "resumed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "changed": {k: {"from": a, "to": b} for k, (a, b) in changes.items()},
            },
        ]
        _write_config(config_path, {**run_config, HISTORY_KEY: history})
    return changes
