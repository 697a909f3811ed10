"""A host-side watchdog for waits on XLA:CPU that never end.

jaxlib 0.10.2's CPU runtime can deadlock its intra-op thread pool (batched LAPACK
calls block pool threads waiting for tasks queued on the same pool; `models.initializers`
removes the one we had): the host then blocks in `device_get` forever while no thread
runs, so the process uses no CPU at all. A long computation, a compile or a busy machine
all still burn CPU time in this process. So the watchdog measures the process's CPU time (all threads) while
the host waits on the device: if less than `min_cpu_fraction` of the wall time of
the last `stall_seconds` was spent computing, the wait has stalled, and `on_stall`
runs (by default: print the caller's message and exit with `EXIT_STALLED`).

Only for the CPU backend: on GPU/TPU an idle host during a long device step is normal.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

EXIT_STALLED = 75  # EX_TEMPFAIL: try again (with --resume)


def exit_stalled(message: str) -> None:
    """Prints `message` and ends the process at once (the blocked host thread cannot be woken)."""
    print(f"\nerror: {message}", file=sys.stderr, flush=True)
    os._exit(EXIT_STALLED)


class StallWatchdog:
    """`with watchdog.waiting(message): result = jax.device_get(...)` guards one wait.

    Args:
      stall_seconds: the window over which an idle process counts as stalled; 0 or
        None disables the watchdog.
      on_stall: called with the message of the stalled wait (default `exit_stalled`).
      min_cpu_fraction: process CPU seconds per wall second below which it is idle.
      poll_seconds: how often the watchdog thread samples the CPU time.
    """

    def __init__(
        self,
        stall_seconds: float | None,
        on_stall: Callable[[str], None] = exit_stalled,
        min_cpu_fraction: float = 0.02,
        poll_seconds: float | None = None,
    ):
        self.stall_seconds = stall_seconds or 0.0
        self.on_stall = on_stall
        self.min_cpu_fraction = min_cpu_fraction
        self.poll_seconds = poll_seconds or max(0.01, self.stall_seconds / 20)
        self._lock = threading.Lock()
        self._message: str | None = None
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def waiting(self, message: str) -> Iterator[None]:
        """Watches the body; `message` says what stalled and how to continue."""
        if not self.stall_seconds:
            yield
            return
        with self._lock:
            self._message = message
            self._samples.clear()
            self._samples.append((time.monotonic(), time.process_time()))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._message = None

    def _watch(self) -> None:
        while True:
            time.sleep(self.poll_seconds)
            with self._lock:
                if self._message is None:
                    continue
                now = (time.monotonic(), time.process_time())
                self._samples.append(now)
                # keep the newest sample that is at least stall_seconds old as the window start
                while len(self._samples) > 1 and now[0] - self._samples[1][0] >= self.stall_seconds:
                    self._samples.popleft()
                start = self._samples[0]
                wall, cpu = now[0] - start[0], now[1] - start[1]
                stalled = wall >= self.stall_seconds and cpu < self.min_cpu_fraction * wall
                message = self._message if stalled else None
                if stalled:
                    self._message = None
            if message is not None:
                self.on_stall(message)
