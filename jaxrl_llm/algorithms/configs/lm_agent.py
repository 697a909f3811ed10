"""The LM-agent trainer's config (importable without JAX: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxrl_llm.config import EnvKwarg, check_choice, check_range
from jaxrl_llm.losses.names import GIGPO_NORMALIZATIONS, KL_ESTIMATOR_NAMES, LOSS_AGG_MODES

AGENT_ALGORITHMS = ("gigpo", "grpo", "rloo", "ppo")
# the names rollout.agent_text accepts (defined here: configs import no JAX)
OBSERVATION_STYLES = ("auto", "chars", "spaced")
ACTION_FORMATS = ("auto", "tag", "word")
PROMPT_STYLES = ("auto", "full", "compact")


@dataclass(frozen=True)
class LMAgentConfig:
    """A language model acting for several turns in a gymnax grid environment, trained with
    GiGPO / GRPO / RLOO / PPO on one row per turn (verl-agent's recipe: token-mean clipped loss,
    k3 KL 0.01 to the reference, invalid-action penalty 0.1, gamma 0.95, omega 1).

    Defaults are a CPU-sized tiny-model run (the README adds --env-kwargs size 4 for 4x4 mazes)."""

    algorithm: str = "gigpo"
    """'gigpo' (episode + step-level group advantages), 'grpo' (episode level, std-normalised
    over the group's step rows, as verl-agent), 'rloo' (leave-one-out over trajectories) or
    'ppo' (GAE over turns from a value head on the decoder)."""
    model: str = "tiny"
    """'tiny' (random ~1M params, character tokenizer), 'smollm2-135m-instruct' (bundled GGUF),
    a .gguf file or an HF directory."""
    env: str = "Maze-v0"
    env_kwargs: dict[str, EnvKwarg] = field(default_factory=dict)
    """Constructor arguments of the environment: --env-kwargs size 4  or  --env-kwargs is_slippery false"""
    seed: int = 0
    num_updates: int = 30
    num_groups: int = 4
    """Initial states per update (episode groups)."""
    group_size: int = 4
    """Episodes per initial state."""
    max_turns: int = 8
    """Turns per episode; an episode not finished by then is cut (its rows stay)."""
    history_length: int = 2
    """(observation, action) pairs of earlier turns in each prompt (verl-agent: 2)."""
    max_new_tokens: int = 8
    """Tokens the model may generate per turn (the answer and its stop token)."""
    observation_style: str = "auto"
    """Grid text: 'chars' (one character per cell), 'spaced' (space-led symbols, for BPE
    tokenizers) or 'auto' (chars for vocabularies of at most 512 tokens)."""
    action_format: str = "auto"
    """Answer format asked for: 'tag' (<action>up</action>), 'word' (up) or 'auto' (tag when
    the tokenizer can spell it). Both are always parsed."""
    prompt_style: str = "auto"
    """'full' (task, legend, actions and answer format, then the turns) or 'compact' (the turns
    only, short headers: for models that learn the format by warm-up); 'auto': compact for
    vocabularies of at most 512 tokens."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    learning_rate: float = 1e-4
    max_grad_norm: float = 1.0
    update_epochs: int = 1
    eps_low: float = 0.2
    eps_high: float = 0.2
    kl_coef: float = 0.01
    kl_estimator: str = "k3"
    loss_agg_mode: str = "token-mean"
    gamma: float = 0.95
    """Discount of GiGPO's step returns."""
    step_advantage_weight: float = 1.0
    """GiGPO's omega."""
    normalization: str = "none"
    """GiGPO's advantage scale: 'none' (verl-agent's mean_norm, 'w/o std') or 'std'; GRPO always
    divides by the group std; RLOO never does."""
    gae_lambda: float = 0.95
    """PPO: lambda of GAE over turns (gamma is --gamma)."""
    value_coef: float = 0.1
    """PPO: weight of the value head's squared error in the loss (the head shares the decoder)."""
    invalid_action_penalty: float = 0.1
    """Subtracted from a turn's returns when its answer names no action (verl-agent: 0.1)."""
    sft_warmup_steps: int = 0
    """Supervised steps on random-walk transcripts (valid moves, not optimal ones) before RL,
    so a from-scratch model learns the answer format; run once into <out>/warmup."""
    sft_learning_rate: float = 1e-3
    lora_rank: int = 0
    """0 trains all parameters; > 0 trains LoRA adapters of this rank."""
    lora_alpha: float = 16.0
    micro_batch_size: int = 0
    """Rows per forward/backward pass (0: the largest that fits memory_budget_gb)."""
    memory_budget_gb: float = 2.0
    remat: bool = True
    """Recompute each layer's activations in the backward pass (less memory, one more forward)."""
    model_overrides: dict[str, str] = field(default_factory=dict)
    """LlamaConfig overrides, e.g. {'param_dtype': 'bfloat16'}."""

    def __post_init__(self):
        check_choice(self, "algorithm", AGENT_ALGORITHMS)
        for name in (
            "num_updates",
            "num_groups",
            "group_size",
            "max_turns",
            "max_new_tokens",
            "update_epochs",
        ):
            check_range(self, name, 1)
        check_range(self, "history_length", 0)
        check_choice(self, "observation_style", OBSERVATION_STYLES)
        check_choice(self, "action_format", ACTION_FORMATS)
        check_choice(self, "prompt_style", PROMPT_STYLES)
        check_range(self, "temperature", 0.0, low_inclusive=False)
        check_range(self, "top_p", 0.0, 1.0, low_inclusive=False)
        check_range(self, "top_k", 0)
        check_range(self, "learning_rate", 0.0, low_inclusive=False)
        check_range(self, "sft_learning_rate", 0.0, low_inclusive=False)
        check_range(self, "max_grad_norm", 0.0, low_inclusive=False)
        check_range(self, "eps_low", 0.0, 1.0, low_inclusive=False)
        check_range(self, "eps_high", 0.0, low_inclusive=False)
        check_range(self, "kl_coef", 0.0)
        check_choice(self, "kl_estimator", KL_ESTIMATOR_NAMES)
        check_choice(self, "loss_agg_mode", LOSS_AGG_MODES)
        check_range(self, "gamma", 0.0, 1.0)
        check_range(self, "step_advantage_weight", 0.0)
        check_choice(self, "normalization", GIGPO_NORMALIZATIONS)
        check_range(self, "invalid_action_penalty", 0.0)
        check_range(self, "gae_lambda", 0.0, 1.0)
        check_range(self, "value_coef", 0.0)
        check_range(self, "sft_warmup_steps", 0)
        check_range(self, "lora_rank", 0)
        check_range(self, "micro_batch_size", 0)
        check_range(self, "memory_budget_gb", 0.0, low_inclusive=False)
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"LMAgentConfig.micro_batch_size={self.micro_batch_size} must divide the rows per update, "
                f"num_groups x group_size x max_turns = {self.batch_size}."
            )

    @property
    def num_envs(self) -> int:
        return self.num_groups * self.group_size

    @property
    def batch_size(self) -> int:
        """Rows per update: one per (episode, turn)."""
        return self.num_envs * self.max_turns
