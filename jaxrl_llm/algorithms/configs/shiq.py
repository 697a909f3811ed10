"""Configs of the offline LM trainers (importable without JAX: the CLI builds its flags from them):
the fields every trainer on a fixed JSON Lines dataset shares, those of the trainers against a
frozen reference, and ShiQ's (DPO's are in `configs/dpo.py`, the reward model's in
`configs/reward_model.py`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from jaxrl_llm.config import PER_DEVICE_SHARE, check_choice, check_divides, check_range
from jaxrl_llm.losses.names import LOSS_AGG_MODES


@dataclass(frozen=True)
class LMDatasetConfig:
    """A causal LM (or a model built on one) trained on a fixed JSON Lines dataset."""

    model: str = "smollm2-135m-instruct"
    """'smollm2-135m-instruct' (bundled GGUF), 'tiny' (random ~1M params), a .gguf file or an HF directory."""
    data_path: str = ""
    """The JSON Lines dataset (default: the bundled sample file of the algorithm)."""
    seed: int = 0
    num_updates: int = 100
    batch_size: int = 8
    """Rows (ShiQ: rewarded completions; DPO, reward model: preference pairs) per update, drawn without
    replacement when the dataset holds that many."""
    learning_rate: float = 1e-5
    max_grad_norm: float = 1.0
    """Global-norm gradient clipping (0: none)."""
    max_prompt_tokens: int = 256
    """Longest chat-formatted prompt; longer ones are refused (prompts are padded to the longest)."""
    max_completion_tokens: int = 64
    """Longest completion (with its end-of-sequence token); longer ones are refused."""
    lora_rank: int = 0
    """0 trains all parameters; > 0 trains LoRA adapters of this rank (the base stays the reference)."""
    lora_alpha: float = 16.0
    micro_batch_size: int = 0
    """Rows per forward/backward pass (gradient accumulation; the update is the same); 0: all."""
    model_overrides: dict[str, str] = field(default_factory=dict)
    """LlamaConfig overrides, e.g. --model-overrides hidden_size 32 num_layers 1 (for --model tiny)."""

    def __post_init__(self):
        name = type(self).__name__
        if self.data_path and not os.path.isfile(self.data_path):
            raise ValueError(f"{name}.data_path={self.data_path!r} is invalid: file not found.")
        for field_name in ("num_updates", "batch_size", "max_prompt_tokens", "max_completion_tokens"):
            check_range(self, field_name, 1)
        check_range(self, "learning_rate", 0.0, low_inclusive=False)
        check_range(self, "max_grad_norm", 0.0)
        check_range(self, "lora_rank", 0)
        check_range(self, "lora_alpha", 0.0, low_inclusive=False)
        check_range(self, "micro_batch_size", 0)
        if self.micro_batch_size:
            check_divides(self, "batch_size", "micro_batch_size", PER_DEVICE_SHARE)


@dataclass(frozen=True)
class OfflineLMConfig(LMDatasetConfig):
    """A causal LM trained on a fixed JSON Lines dataset against a frozen copy of itself (the reference)."""

    beta: float = 0.1
    """KL temperature β of the objective max E[r] − β KL(π‖π_ref)."""

    def __post_init__(self):
        super().__post_init__()
        check_range(self, "beta", 0.0, low_inclusive=False)


@dataclass(frozen=True)
class ShiQConfig(OfflineLMConfig):
    """ShiQ (arXiv 2505.11081): soft Q-learning with the logits shifted by the reference, on
    completions with a sequence-level reward (`losses/bellman.py` documents the loss and the
    choices the available paper text leaves open)."""

    one_step_coef: float = 0.0
    """Weight of the one-step Bellman residual ½ δ_t²."""
    multi_step_coef: float = 1.0
    """Weight of the multi-step (telescoped to the end of the completion) residual ½ Δ_t²."""
    stop_gradient_targets: bool = False
    """Semi-gradient: differentiate only q_θ(s_t, a_t), not the targets (default: the full residual).
    In experiments/shiq it converged far faster on a tree MDP with token-wise rewards and was as
    good or better on the tiny-LM tasks."""
    loss_agg_mode: str = "token-mean"
    """How the squared residuals are averaged over tokens and rows (policy_gradient.aggregate_loss)."""

    def __post_init__(self):
        super().__post_init__()
        check_range(self, "one_step_coef", 0.0)
        check_range(self, "multi_step_coef", 0.0)
        if self.one_step_coef == 0.0 and self.multi_step_coef == 0.0:
            raise ValueError(
                "ShiQConfig.one_step_coef=0.0 and multi_step_coef=0.0 are invalid: at least one must be > 0."
            )
        check_choice(self, "loss_agg_mode", LOSS_AGG_MODES)
