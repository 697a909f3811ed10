"""GRPO / GiGPO's config (importable without JAX: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import tyro

from jaxrl_llm.config import EnvKwarg, check_choice, check_range
from jaxrl_llm.losses.names import GROUP_TO_GIGPO_NORMALIZATION, LOSS_AGG_MODES


@dataclass(frozen=True)
class GroupRLConfig:
    """GRPO / GiGPO on a gymnax environment; defaults are for random 6x6 mazes."""

    algorithm: Annotated[str, tyro.conf.Suppress] = "gigpo"
    """'grpo' or 'gigpo' (set by the CLI subcommand)."""
    env: str = "Maze-v0"
    env_kwargs: dict[str, EnvKwarg] = field(default_factory=dict)
    """Constructor arguments of the environment, checked and converted against its signature:
    --env-kwargs size 4  or  --env-kwargs is_slippery false"""
    seed: int = 0
    total_frames: int = 2_000_000
    num_groups: int = 16
    group_size: int = 8
    episode_steps: int = 48
    update_epochs: int = 4
    learning_rate: float = 1e-3
    max_grad_norm: float = 1.0
    eps_low: float = 0.2
    eps_high: float = 0.28
    entropy_coef: float = 0.01
    kl_coef: float = 0.0
    loss_agg_mode: str = "token-mean"
    normalization: str = "group"
    """Episode-level advantage scale: 'group' std (GRPO, GiGPO w/ std) or 'none' (GiGPO w/o std)."""
    step_advantage_weight: float = 1.0
    """GiGPO's omega."""
    gamma: float = 0.95
    """Discount of GiGPO's step returns."""
    hidden_sizes: tuple[int, ...] = (128, 128)

    def __post_init__(self):
        check_choice(self, "algorithm", ("grpo", "gigpo"))
        for name in ("num_groups", "group_size", "episode_steps", "update_epochs"):
            check_range(self, name, 1)
        check_range(self, "total_frames", self.frames_per_update)
        check_range(self, "learning_rate", 0.0, low_inclusive=False)
        check_range(self, "max_grad_norm", 0.0, low_inclusive=False)
        check_range(self, "eps_low", 0.0, 1.0, low_inclusive=False)
        check_range(self, "eps_high", 0.0, low_inclusive=False)
        check_range(self, "entropy_coef", 0.0)
        check_range(self, "kl_coef", 0.0)
        check_choice(self, "loss_agg_mode", LOSS_AGG_MODES)
        check_choice(self, "normalization", tuple(GROUP_TO_GIGPO_NORMALIZATION))
        check_range(self, "step_advantage_weight", 0.0)
        check_range(self, "gamma", 0.0, 1.0)

    @property
    def num_envs(self) -> int:
        return self.num_groups * self.group_size

    @property
    def frames_per_update(self) -> int:
        return self.num_envs * self.episode_steps

    @property
    def num_updates(self) -> int:
        return self.total_frames // self.frames_per_update
