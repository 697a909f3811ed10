"""Drive a training loop: one compiled function, or chunks on the host with checkpoints.

An `Algorithm` (see `training.algorithm`) is composed into `TrainFunctions`, two pure
functions over a runner-state pytree: `init(key) -> state` and
`update(state) -> (state, metrics)`. `make_train` turns them into one jitted
`train(key)` (PureJaxRL style, vmappable over seeds); `run` executes the same updates
in chunks, checkpointing by update count and by time and logging every update, so a
killed run resumes bit-for-bit.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxrl_llm.errors import NonFiniteLossError, TrainingInterrupted
from jaxrl_llm.training.algorithm import Algorithm, compose, is_spent
from jaxrl_llm.training.checkpoint import CheckpointStore
from jaxrl_llm.training.parallel import Mode
from jaxrl_llm.training.metrics import CURVE_FILE, METRICS_FILE, MetricsWriter, plot_learning_curve
from jaxrl_llm.training.run_dir import prepare_run_dir
from jaxrl_llm.training.watchdog import StallWatchdog, exit_stalled


@dataclass(frozen=True)
class TrainFunctions:
    """What a training loop needs from an algorithm.

    `init` and `update` are pure functions of the runner state. With `host_update`
    False (toy environments) they are jittable and a chunk of updates compiles into
    one `lax.scan`; with True (LM training with Python reward functions) `update` is
    called from Python once per update and jits its own parts.
    """

    init: Callable[[jax.Array], Any]
    update: Callable[[Any], tuple[Any, dict[str, jax.Array]]]
    num_updates: int
    frames_per_update: int
    progress_metric: str = "episode_return_mean"
    loss_metric: str = "loss"
    host_update: bool = False
    frame_name: str = "frame"
    """What one of `frames_per_update` is: 'frame' (env step), 'completion', ..."""
    raw_progress_metric: str | None = None
    """A noisier per-update metric that the curve draws faintly under `progress_metric`
    when the latter is already a running statistic."""
    frozen: Any = None
    """Read-only arrays `update(state, frozen)` takes as its second argument (an LM's base
    weights); compiled programs receive them as an argument, not as constants."""

    def step(self, state, frozen=None):
        """`update(state)`, or `update(state, frozen)` when there are frozen arrays."""
        if self.frozen is None:
            return self.update(state)
        return self.update(state, self.frozen if frozen is None else frozen)


def as_train_functions(
    training: Algorithm | TrainFunctions, parallel: Mode = "single", mesh: Mesh | str | None = None
) -> TrainFunctions:
    """An `Algorithm` composed for `parallel` (see `compose`; `mesh` may be a shape string such as
    'data=2,fsdp=4' for "sharded"); `TrainFunctions` as they are."""
    if isinstance(training, Algorithm):
        if isinstance(mesh, str):
            from jaxrl_llm.training.sharding import make_mesh

            mesh = make_mesh(mesh) if mesh else None
        return compose(training, parallel, mesh)
    return training


def make_train(
    training: Algorithm | TrainFunctions, parallel: Mode = "single"
) -> Callable[[jax.Array], tuple[Any, dict[str, jax.Array]]]:
    """`train(key) -> (final_state, metrics[num_updates])`: the whole loop as one function,
    jittable and vmappable over keys. An algorithm with frozen arrays also takes them,
    `train(key, frozen)` (default: the algorithm's own, which a jit then compiles in)."""
    fns = as_train_functions(training, parallel)
    if fns.host_update:
        raise ValueError(
            "make_train compiles the whole run into one program, but this algorithm collects its data "
            "on the host (its rewards or data come from Python): run it with training.run(...), or "
            "call the composed update in a Python loop."
        )

    def train(key: jax.Array, frozen: Any = None):
        state = fns.init(key)
        return jax.lax.scan(lambda s, _: fns.step(s, frozen), state, None, length=fns.num_updates)

    return train


def stack_rows(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-update metric dicts (fetched to the host) as one `[updates]` array per metric."""
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


def train_on_host(
    training: Algorithm | TrainFunctions, key: jax.Array, progress: bool = False, description: str = ""
) -> tuple[Any, dict[str, np.ndarray]]:
    """`(final_state, metrics[num_updates])` of a run in memory, one update per Python
    iteration (for host-driven algorithms, which `make_train` refuses); no files written."""
    from tqdm.auto import tqdm

    fns = as_train_functions(training)
    state, rows = fns.init(key), []
    with tqdm(total=fns.num_updates, desc=description, unit="update", disable=not progress) as bar:
        for _ in range(fns.num_updates):
            state, metrics = fns.step(state)
            rows.append(jax.device_get(metrics))  # waits: the bar shows finished updates
            bar.set_postfix({fns.loss_metric: f"{float(rows[-1][fns.loss_metric]):.3g}"}, refresh=False)
            bar.update()
    return state, stack_rows(rows)


MIN_FRAMES_PER_CHUNK = 4096
"""What the CLI asks of a compiled chunk (`run(min_chunk_frames=...)`): each chunk costs a
host round trip and the logging of its rows (~0.1 s), which would dominate algorithms whose
update is one env step (SAC on Pendulum, 5000 updates: 43 s in chunks of 25 updates, 19 s in
chunks of 500)."""


def chunk_updates(frames_per_update: int, checkpoint_every: int, min_chunk_frames: int = 0) -> int:
    """Updates per compiled chunk: `checkpoint_every`, or enough for `min_chunk_frames`."""
    return max(checkpoint_every, -(-min_chunk_frames // frames_per_update))


def _chunk_runner(fns: TrainFunctions, chunk_length: int) -> Callable[[Any, int], tuple[Any, dict]]:
    """One compiled scan of `chunk_length` updates; updates past `num_active` are skipped.

    A shorter last chunk reuses the same program instead of compiling another one.
    """
    if fns.host_update:

        def host_chunk(state, num_active, frozen):
            rows = []
            for _ in range(num_active):
                state, metrics = fns.step(state, frozen)
                rows.append(jax.device_get(metrics))
            return state, stack_rows(rows)

        return host_chunk

    def chunk(state, num_active, frozen):
        def update(s):
            return fns.step(s, frozen)

        def maybe_update(s, index):
            _, metric_shapes = jax.eval_shape(update, s)
            skip = lambda s: (s, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metric_shapes))
            return jax.lax.cond(index < num_active, update, skip, s)

        return jax.lax.scan(maybe_update, state, jnp.arange(chunk_length))

    return jax.jit(chunk)


def run(
    training: Algorithm | TrainFunctions,
    run_config: dict[str, Any],
    out_dir: str | Path,
    seed: int,
    resume: bool = False,
    checkpoint_every: int = 10,
    max_to_keep: int = 3,
    progress: bool = True,
    title: str = "",
    *,
    checkpoint_seconds: float = 120.0,
    checkpoint_overhead: float = 0.2,
    overwrite: bool = False,
    allow_changes: tuple[str, ...] = (),
    stall_seconds: float = 120.0,
    on_stall: Callable[[str], None] = exit_stalled,
    parallel: Mode = "single",
    mesh: Mesh | str | None = None,
    prepare_dir: bool = True,
    min_chunk_frames: int = 0,
    chunk_length: int | None = None,
) -> Any:
    """Runs `training` (an `Algorithm`, composed for `parallel`, on `mesh` when given) to
    `num_updates`, writing under `out_dir`.

    Writes `config.json`, `metrics.csv` (one row per update: `step`, `frames` and the
    algorithm's metrics), TensorBoard events in `tb/`, orbax checkpoints in
    `checkpoints/` and `learning_curve.png`. Jittable algorithms run `checkpoint_every`
    updates per compiled chunk (more if those are under `min_chunk_frames` frames; exactly
    `chunk_length` when given, e.g. 1 for updates that take seconds, like an LM agent's);
    host-driven ones one update at a time; checkpoints are saved between chunks. A new run saves
    its initial state; then a checkpoint is saved after `checkpoint_every` updates, once
    `checkpoint_seconds` have passed since the last one, or as soon as the time since the
    last one is `1 / checkpoint_overhead` times what that save took (so saving costs at
    most that fraction of the run, 0 turns this rule off), and at the end. An LM run,
    whose updates take far longer than a save, is thus saved after every update: a
    kill loses at most one.

    On the CPU backend a `StallWatchdog` calls `on_stall(message)` when a wait on XLA
    makes no progress for `stall_seconds`; by default it prints the message (which
    names --resume) and exits with code 75. Everything up to the last checkpoint is
    on disk then, and nothing is being written.

    Raises:
      IncompatibleRunError: see `prepare_run_dir` (`resume`, `overwrite`, `allow_changes`).
      NonFiniteLossError: a loss became NaN/inf; nothing after the last good
        checkpoint is saved.
      TrainingInterrupted: on Ctrl-C, after saving a checkpoint of the last
        finished update, the metrics and the plot.
    """
    from tqdm.auto import tqdm

    fns = as_train_functions(training, parallel, mesh)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every} is invalid: must be >= 1.")
    out_dir = Path(out_dir)
    # multi-process (multi-host) runs: every process computes, process 0 alone writes files;
    # checkpoints are written by all together (orbax)
    coordinator = jax.process_index() == 0
    if prepare_dir and coordinator:  # False when the caller already did (before loading a model into it)
        prepare_run_dir(out_dir, run_config, resume, overwrite=overwrite, allow_changes=allow_changes)
    store = CheckpointStore(out_dir / "checkpoints", max_to_keep=max_to_keep)
    init = fns.init if fns.host_update else jax.jit(fns.init)
    state = init(jax.random.PRNGKey(seed))
    start = store.latest_step() or 0
    if resume:
        if start:
            state = store.restore(start, state)
        else:
            print(f"{out_dir}: no update was checkpointed yet; starting from update 0.", file=sys.stderr)
        if start >= fns.num_updates:
            print(
                f"{out_dir} is already at update {start} of {fns.num_updates}: nothing to train "
                "(raise the budget, --total-frames / --num-updates, to extend it).",
                file=sys.stderr,
            )
    writer = None  # opened on the first chunk, once the metric names are known
    if fns.host_update:
        chunk_length = 1
    elif chunk_length is None:
        chunk_length = chunk_updates(fns.frames_per_update, checkpoint_every, min_chunk_frames)
    run_chunk = _chunk_runner(fns, chunk_length)
    watchdog = StallWatchdog(stall_seconds if jax.default_backend() == "cpu" else None, on_stall)
    bar = tqdm(
        total=fns.num_updates * fns.frames_per_update,
        initial=start * fns.frames_per_update,
        unit=fns.frame_name,
        unit_scale=True,
        disable=not progress or not coordinator,
        dynamic_ncols=True,
        mininterval=0 if fns.host_update else 0.1,  # host updates are slow: show every one
    )
    update = saved = start
    save_seconds = math.inf

    def save(step: int) -> None:
        nonlocal saved, saved_at, save_seconds
        began = time.monotonic()
        store.save(step, state)
        saved, saved_at, save_seconds = step, time.monotonic(), time.monotonic() - began

    if not start:
        save(0)  # what a resume falls back to, and how long a save takes
    saved_at = time.monotonic()
    last_progress = math.nan
    try:
        while update < fns.num_updates:
            length = min(chunk_length, fns.num_updates - update)
            chunk_start = time.perf_counter()
            stall_message = (
                f"updates {update + 1}-{update + length} made no progress for {stall_seconds:.0f} s with "
                "the CPU idle: the XLA CPU runtime stalled (its thread pool can deadlock in jaxlib 0.10). "
                f"Everything up to the last checkpoint (update {saved}) is saved in {out_dir}; "
                "rerun the same command with --resume to continue."
            )
            with watchdog.waiting(stall_message):
                new_state, metrics = run_chunk(state, length, fns.frozen)
                # fetching blocks on the chunk: at most one chunk is ever in flight.
                metrics = {k: v[:length] for k, v in fetch_to_host(metrics).items()}
            _check_finite(metrics[fns.loss_metric], update, saved if saved else None)
            if writer is None and coordinator:
                columns = ["step", "frames", *sorted(metrics)]
                writer = MetricsWriter(out_dir, columns, resume_from_step=start if resume else None)
            for i in range(length):
                row = {"step": update + i + 1, "frames": (update + i + 1) * fns.frames_per_update}
                row.update({k: float(np.asarray(v[i])) for k, v in metrics.items()})
                if writer is not None:
                    writer.write(row)
                if math.isfinite(row.get(fns.progress_metric, math.nan)):
                    last_progress = row[fns.progress_metric]
            state = new_state
            update += length
            since = time.monotonic() - saved_at
            due = agreed(
                update - saved >= checkpoint_every
                or since >= checkpoint_seconds
                or (checkpoint_overhead > 0 and since * checkpoint_overhead >= save_seconds)
            )
            # Rows reach the disk before the checkpoint that covers them: a kill between
            # the two then leaves extra rows (dropped on resume), never missing ones.
            if writer is not None:
                writer.flush()
            if due or update == fns.num_updates:
                save(update)
            seconds = time.perf_counter() - chunk_start
            bar.set_postfix(
                {
                    fns.progress_metric.replace("episode_", ""): f"{last_progress:.3g}",
                    f"{fns.frame_name}s/s": f"{length * fns.frames_per_update / seconds:.3g}",
                },
                refresh=False,
            )
            bar.update(length * fns.frames_per_update)
    except KeyboardInterrupt:
        # the step donates the train state: stopped inside an update, `state` (the last
        # finished update) may already be spent, and then the last checkpoint is what stands
        if is_spent(state):
            raise TrainingInterrupted(saved, out_dir) from None
        if update > saved:
            save(update)
        raise TrainingInterrupted(update, out_dir) from None
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        store.close()
        if coordinator and (out_dir / METRICS_FILE).exists():
            plot_learning_curve(
                out_dir / METRICS_FILE,
                out_dir / CURVE_FILE,
                y=fns.progress_metric,
                title=title,
                x_label=f"{fns.frame_name}s",
                raw=fns.raw_progress_metric,
            )
    return state


def agreed(decision: bool) -> bool:
    """Process 0's `decision` on every process: a time-based choice (when to checkpoint) must be
    the same everywhere, since saving is collective."""
    if jax.process_count() == 1:
        return decision
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(decision)))


def fetch_to_host(tree: Any) -> Any:
    """`jax.device_get`, also for arrays spread over several processes (each gets the whole)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def _check_finite(losses: np.ndarray, first_update: int, last_checkpoint: int | None) -> None:
    losses = np.asarray(losses)
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        saved = (
            f"the last good checkpoint (update {last_checkpoint}) is intact"
            if last_checkpoint
            else "no update was checkpointed before it, so --resume starts from update 0"
        )
        raise NonFiniteLossError(
            f"The loss became {losses[bad[0]]} at update {first_update + int(bad[0]) + 1}. "
            f"Training stopped; {saved}. To continue with a lower learning rate, rerun the same "
            "command with --resume --allow-changes learning_rate --learning-rate <lower value> "
            "(or tighten --max-grad-norm the same way)."
        )
