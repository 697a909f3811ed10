"""DPO's config (importable without JAX: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass

from jaxrl_llm.algorithms.configs.shiq import OfflineLMConfig
from jaxrl_llm.config import check_range


@dataclass(frozen=True)
class DPOConfig(OfflineLMConfig):
    """DPO (arXiv 2305.18290) on preference pairs {prompt, chosen, rejected}; cDPO with
    label_smoothing > 0 (`losses/preference.py::dpo_loss`)."""

    label_smoothing: float = 0.0
    """cDPO's ε: the probability that a pair's label is flipped, in [0, 0.5)."""

    def __post_init__(self):
        super().__post_init__()
        check_range(self, "label_smoothing", 0.0, 0.5, high_inclusive=False)
