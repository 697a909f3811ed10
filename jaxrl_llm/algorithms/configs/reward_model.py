"""The reward model's config (importable without JAX: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass

from jaxrl_llm.algorithms.configs.shiq import LMDatasetConfig
from jaxrl_llm.config import check_range


@dataclass(frozen=True)
class RewardModelConfig(LMDatasetConfig):
    """A Bradley-Terry reward model (`losses/preference.py::bradley_terry_loss`): the decoder plus
    a scalar head on the last real token, trained on preference pairs {prompt, chosen, rejected}."""

    eval_pairs: int = 4
    """Pairs held out of training (a seeded random choice) to report `eval_accuracy` on; 0: none."""
    eval_every: int = 10
    """Evaluate the held-out pairs every this many updates (and at the last one)."""
    head_init_scale: float = 0.02
    """Standard deviation of the head's initial weights (0: a zero head, every reward 0 at first)."""

    def __post_init__(self):
        super().__post_init__()
        check_range(self, "eval_pairs", 0)
        check_range(self, "eval_every", 1)
        check_range(self, "head_init_scale", 0.0)
