"""The optimiser every algorithm here starts from: Adam after global-norm gradient clipping."""

from __future__ import annotations

import optax


def clipped_adam(
    learning_rate: float | optax.Schedule, max_grad_norm: float | None = None, eps: float = 1e-8
) -> optax.GradientTransformation:
    """`clip_by_global_norm(max_grad_norm)` then `adam(learning_rate, eps)`; no clipping when
    `max_grad_norm` is None. PPO uses eps 1e-5 (the PPO2 / PureJaxRL value)."""
    adam = optax.adam(learning_rate, eps=eps)
    if max_grad_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam)
