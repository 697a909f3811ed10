"""The critic choice shared by the actor-critic configs (SAC, TD3, DDPG, PPO); no JAX imports.

Each of those configs declares the four fields below (so they stay at the end of its flag
list) and calls `check_critic` in `__post_init__`:

    critic: str = "mlp"          # one of CRITICS
    reacritic_steps: int = 8     # H, horizontal reasoning steps (tokens)
    reacritic_depth: int = 1     # V, vertical reasoning steps (transformer blocks; 0: none)
    reacritic_width: int = 64    # h, the token width (a multiple of REACRITIC_HEADS)
"""

from __future__ import annotations

from typing import Any

from jaxrl_llm.config import check_choice, check_range

CRITICS = ("mlp", "reacritic")
"""'mlp': the config's `hidden_sizes` MLP; 'reacritic': `models.reacritic` (arXiv 2505.10992)."""

REACRITIC_HEADS = 4
"""Attention heads of ReaCritic (the paper's 4); `reacritic_width` must be a multiple."""


def check_critic(config: Any) -> None:
    """Checks the critic fields of `config` (see the module docstring)."""
    check_choice(config, "critic", CRITICS)
    check_range(config, "reacritic_steps", 1)
    check_range(config, "reacritic_depth", 0)
    check_range(config, "reacritic_width", REACRITIC_HEADS)
    if config.reacritic_width % REACRITIC_HEADS:
        raise ValueError(
            f"{type(config).__name__}.reacritic_width={config.reacritic_width} is invalid: "
            f"must be a multiple of the {REACRITIC_HEADS} attention heads."
        )
