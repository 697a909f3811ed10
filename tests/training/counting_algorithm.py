"""A toy algorithm for the host-loop tests: the state counts updates."""

import time

import jax
import jax.numpy as jnp

from jaxrl_llm.training import TrainFunctions


def counting_functions(
    nan_at: int | None = None,
    num_updates: int = 12,
    host_update: bool = False,
    raise_at: int | None = None,
    error: type[BaseException] = RuntimeError,
    update_seconds: float = 0.0,
    donate_before_raising: bool = False,
) -> TrainFunctions:
    """The loss turns NaN at update `nan_at`; a host-driven update `raise_at` raises `error`
    (a crash, or KeyboardInterrupt for Ctrl-C), after donating the state's buffers to a
    step when `donate_before_raising` (Ctrl-C inside a compiled step), and each takes
    `update_seconds` (sleeping)."""

    def init(key):
        return {"count": jnp.zeros((), jnp.int32), "w": jnp.ones(3)}

    def update(state):
        count = state["count"] + 1
        if update_seconds:
            time.sleep(update_seconds)
        if raise_at is not None and int(count) == raise_at:
            if donate_before_raising:
                jax.jit(lambda s: s, donate_argnums=0)(state)
            raise error(f"injected at update {raise_at}")
        loss = jnp.where(count == (nan_at or -1), jnp.nan, 1.0 / count)
        return {"count": count, "w": state["w"] * 0.5}, {"loss": loss, "episode_return_mean": count * 1.0}

    return TrainFunctions(
        init, update, num_updates=num_updates, frames_per_update=10, host_update=host_update
    )
