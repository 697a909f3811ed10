"""The stall watchdog fires on an idle wait, never on a busy one, and ends a stalled run."""

import subprocess
import sys
import textwrap
import time

from jaxrl_llm.training.watchdog import EXIT_STALLED, StallWatchdog


def make_watchdog(fired):
    return StallWatchdog(0.3, on_stall=fired.append, poll_seconds=0.02)


def test_idle_wait_is_a_stall():
    fired = []
    with make_watchdog(fired).waiting("stalled at update 4"):
        time.sleep(1.0)
    assert fired == ["stalled at update 4"]


def test_busy_wait_and_no_wait_are_not_stalls():
    fired = []
    watchdog = make_watchdog(fired)
    with watchdog.waiting("busy"):
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            sum(range(1000))
    time.sleep(0.6)  # not waiting on the device: idle is fine
    assert fired == []


def test_disabled_watchdog_never_fires():
    fired = []
    with StallWatchdog(0, on_stall=fired.append).waiting("x"):
        time.sleep(0.2)
    assert fired == []


def test_a_stalled_run_exits_with_a_message_naming_resume(tmp_path):
    script = textwrap.dedent(
        f"""
        import time, jax.numpy as jnp
        from jaxrl_llm.training import TrainFunctions, run

        def update(state):
            if int(state["count"]) == 2:
                time.sleep(60)  # what a deadlocked XLA:CPU pool looks like: blocked, CPU idle
            metrics = {{"loss": jnp.float32(0.0), "episode_return_mean": jnp.float32(0.0)}}
            return {{"count": state["count"] + 1}}, metrics

        fns = TrainFunctions(lambda key: {{"count": jnp.int32(0)}}, update, 5, 1, host_update=True)
        run(fns, {{}}, {str(tmp_path)!r}, seed=0, checkpoint_seconds=0, stall_seconds=1.0, progress=False)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == EXIT_STALLED, out.stderr
    assert "no progress" in out.stderr and "--resume" in out.stderr and "update 2" in out.stderr
