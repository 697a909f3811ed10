"""The LM algorithms' configs (importable without JAX: the CLI builds its flags from them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from jaxrl_llm.config import PER_DEVICE_SHARE, check_choice, check_divides, check_range
from jaxrl_llm.losses.names import (
    GROUP_NORMALIZATIONS,
    KL_ESTIMATOR_NAMES,
    L2T_EPISODE_SPLITS,
    L2T_SCORE_KINDS,
    L2T_VARIANTS,
    LENGTH_PENALTY_KINDS,
    LM_REWARDS,
    LOSS_AGG_MODES,
)


@dataclass(frozen=True)
class LMTaskConfig:
    """The model and the task an LM algorithm trains on (shared by LM-GRPO and SFT)."""

    model: str = "smollm2-135m-instruct"
    """'smollm2-135m-instruct' (bundled GGUF), 'tiny' (random ~1M params), a .gguf file or an HF directory."""
    task: str = "arithmetic"
    """'arithmetic' (generated problems) or 'gsm8k' (a GSM8K-format jsonl, see --data-path)."""
    data_path: str = ""
    """GSM8K-format jsonl for --task gsm8k (default: the bundled sample file)."""
    arithmetic_kinds: tuple[str, ...] = ("add", "mul", "word")
    max_operand: int = 20
    seed: int = 0
    max_prompt_tokens: int = 256
    """Longest prompt accepted (batches are padded only to their longest prompt, see length_bucket)."""
    model_overrides: dict[str, str] = field(default_factory=dict)
    """LlamaConfig overrides, e.g. {'param_dtype': 'bfloat16', 'remat': 'true'}."""

    def __post_init__(self):
        name = type(self).__name__
        check_choice(self, "task", ("arithmetic", "gsm8k"))
        if self.data_path and self.task != "gsm8k":
            raise ValueError(
                f"{name}.data_path={self.data_path!r} is only read by the gsm8k task, but "
                f"task={self.task!r}: add --task gsm8k (or drop --data-path)."
            )
        if self.data_path and not os.path.isfile(self.data_path):
            raise ValueError(f"{name}.data_path={self.data_path!r} is invalid: file not found.")
        check_range(self, "max_prompt_tokens", 1)
        check_range(self, "max_operand", 1)


@dataclass(frozen=True)
class SFTConfig(LMTaskConfig):
    """Supervised next-token training on the task's answers (`"<answer><eos>"` after the chat
    prompt), the loss averaged over answer tokens; a warm-up for from-scratch models."""

    num_updates: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-3
    max_grad_norm: float = 0.0
    """Global-norm gradient clipping (0: none)."""
    max_target_tokens: int = 16
    """Longest answer (with its end-of-sequence token) in tokens; longer ones are refused."""
    micro_batch_size: int = 0
    """Rows per forward/backward pass (gradient accumulation; the update is the same); 0: all."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_updates", "batch_size", "max_target_tokens"):
            check_range(self, name, 1)
        check_range(self, "learning_rate", 0.0, low_inclusive=False)
        check_range(self, "max_grad_norm", 0.0)
        check_range(self, "micro_batch_size", 0)
        if self.micro_batch_size:
            check_divides(self, "batch_size", "micro_batch_size", PER_DEVICE_SHARE)


@dataclass(frozen=True)
class LMGRPOConfig(LMTaskConfig):
    """GRPO on a causal LM; defaults are DeepSeekMath's GRPO with a small CPU-sized batch."""

    num_updates: int = 20
    prompts_per_update: int = 8
    group_size: int = 8
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    learning_rate: float = 1e-5
    max_grad_norm: float = 1.0
    update_epochs: int = 1
    kl_coef: float = 0.04
    kl_estimator: str = "k3"
    eps_low: float = 0.2
    eps_high: float = 0.2
    loss_agg_mode: str = "seq-mean-token-mean"
    normalization: str = "group"
    format_reward_weight: float = 0.1
    """Weight of the '#### <number>' format reward added to the 0/1 exact-match reward."""
    sft_warmup_steps: int = 0
    """Supervised next-token steps on the task's answers before RL (for from-scratch models);
    run once, into <out>/warmup, and reused on --resume."""
    lora_rank: int = 0
    """0 trains all parameters; > 0 trains LoRA adapters of this rank."""
    lora_alpha: float = 16.0
    micro_batch_size: int = 0
    """Rows per forward/backward pass (gradient accumulation inside the jitted step; the update
    is the same). 0 picks the largest divisor of the per-device batch whose estimated
    activation memory fits memory_budget_gb."""
    memory_budget_gb: float = 2.0
    """Activation memory one micro-batch may use when micro_batch_size=0 (GiB). Weights, the
    optimizer state and the sampler's KV cache come on top (README lists measured peaks)."""
    remat: bool = True
    """Recompute each layer's activations in the backward pass instead of keeping them: ~7x less
    activation memory for SmolLM2 (larger micro-batches fit) for one more forward pass per step."""
    length_bucket: int = 32
    """Prompts and completions are padded to a multiple of this (capped by the max lengths),
    so a batch of short prompts/completions runs a shorter program; 0 always pads to the
    maxima (a single compiled shape)."""
    reward: str = "outcome"
    """'outcome': exact match + format_reward_weight x format, GRPO group advantages; 'l2t': L2T's
    dense information-gain process reward and credit assignment (--l2t-* fields,
    algorithms/l2t_rewards.py); 'length-penalty': the outcome plus a length penalty
    (--length-penalty-* fields), GRPO group advantages. 'l2t' always normalises by the group std
    (normalization is read by the other two)."""
    l2t_variant: str = "paper"
    """'paper': L2T Algorithm 1 (episode rewards spread by surprise, truncated mean, token
    advantages); 'code': the released code (one score per completion, no penalty)."""
    l2t_episodes: str = "chunks"
    """How completions split into episodes: 'chunks' of l2t_chunk_size tokens, 'episode-tags'
    (<episode_k>...</episode_k>) or 'think-tags' (<think>...</think>); untagged completions fall
    back to chunks."""
    l2t_chunk_size: int = 8
    """Tokens per episode for 'chunks' (and the untagged fallback)."""
    l2t_max_episodes: int = 8
    """Episode slots K per completion (static); later episodes merge into the last slot."""
    l2t_answer_cue: str = "\n#### "
    """Text forced after each episode boundary before the gold answer; J_r is the model's
    teacher-forced probability of the gold answer's tokens after prefix + cue."""
    l2t_score: str = "prob"
    """J_r from the gold answer's log-probs: 'prob' (exp of the sum), 'geometric_mean_prob',
    'log_prob' or 'mean_log_prob'."""
    l2t_alpha: float = 0.8
    """alpha: weight of the process reward in R_k = r_out / K + alpha r_k (paper variant)."""
    l2t_beta: float = 0.6
    """beta: weight of the parameter compression penalty (paper variant). The penalty needs LoRA
    (lora_rank > 0: the proxy is the adapters minus their initial values); without LoRA it is off."""
    l2t_fisher_damping: float = 1e-5
    """lambda: damping of the rank-1 Fisher in the compression penalty."""
    length_penalty_kind: str = "kimi"
    """'kimi' (Kimi k1.5's per-group length reward) or 'linear' (coef x length / max_new_tokens)."""
    length_penalty_coef: float = 1.0
    """Weight of the length penalty (reward='length-penalty')."""

    def __post_init__(self):
        super().__post_init__()
        check_choice(self, "reward", LM_REWARDS)
        check_choice(self, "l2t_variant", L2T_VARIANTS)
        check_choice(self, "l2t_episodes", L2T_EPISODE_SPLITS)
        check_choice(self, "l2t_score", L2T_SCORE_KINDS)
        check_choice(self, "length_penalty_kind", LENGTH_PENALTY_KINDS)
        check_range(self, "l2t_chunk_size", 1)
        check_range(self, "l2t_max_episodes", 1)
        for name in ("l2t_alpha", "l2t_beta", "l2t_fisher_damping", "length_penalty_coef"):
            check_range(self, name, 0.0)
        if not self.l2t_answer_cue:
            raise ValueError(
                "LMGRPOConfig.l2t_answer_cue='' is invalid: must be non-empty text (the gold answer "
                "is scored after the cue, whose last token predicts the answer's first token)."
            )
        for name in ("num_updates", "prompts_per_update", "group_size", "max_new_tokens"):
            check_range(self, name, 1)
        check_range(self, "update_epochs", 1)
        check_range(self, "temperature", 0.0, low_inclusive=False)
        check_range(self, "top_p", 0.0, 1.0, low_inclusive=False)
        check_range(self, "top_k", 0)
        check_range(self, "learning_rate", 0.0, low_inclusive=False)
        check_range(self, "max_grad_norm", 0.0, low_inclusive=False)
        check_range(self, "kl_coef", 0.0)
        check_choice(self, "kl_estimator", KL_ESTIMATOR_NAMES)
        check_range(self, "eps_low", 0.0, 1.0, low_inclusive=False)
        check_range(self, "eps_high", 0.0, low_inclusive=False)
        check_choice(self, "loss_agg_mode", LOSS_AGG_MODES)
        check_choice(self, "normalization", GROUP_NORMALIZATIONS)
        check_range(self, "format_reward_weight", 0.0)
        check_range(self, "lora_rank", 0)
        check_range(self, "sft_warmup_steps", 0)
        check_range(self, "micro_batch_size", 0)
        check_range(self, "memory_budget_gb", 0.0, low_inclusive=False)
        check_range(self, "length_bucket", 0)
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} must divide prompts_per_update x group_size "
                f"= {self.batch_size} (and the per-device share of it when running data-parallel)."
            )

    @property
    def batch_size(self) -> int:
        return self.prompts_per_update * self.group_size
