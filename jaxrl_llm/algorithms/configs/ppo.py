"""PPO's config (importable without JAX: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxrl_llm.algorithms.configs.critic import check_critic
from jaxrl_llm.config import EnvKwarg, check_divides, check_mlp, check_range


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; defaults solve CartPole-v1 (PureJaxRL's settings)."""

    env: str = "CartPole-v1"
    env_kwargs: dict[str, EnvKwarg] = field(default_factory=dict)
    """Constructor arguments of the environment, checked and converted against its signature:
    --env-kwargs size 6  or  --env-kwargs is_slippery false success_rate 0.8"""
    max_episode_steps: int | None = None
    """Override of the environment's step limit (None keeps its default)."""
    seed: int = 0
    total_frames: int = 500_000
    num_envs: int = 4
    num_steps: int = 128
    update_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    critic: str = "mlp"
    """The value head: 'mlp' (`hidden_sizes`, `activation`) or 'reacritic' (a state-value
    transformer critic reasoning over `reacritic_steps` noisy copies of s, arXiv 2505.10992)."""
    reacritic_steps: int = 8
    """ReaCritic's H: horizontal reasoning steps (copies of the state embedding)."""
    reacritic_depth: int = 1
    """ReaCritic's V: vertical reasoning steps (causal transformer blocks; 0 skips them)."""
    reacritic_width: int = 64
    """ReaCritic's token width h, a multiple of its 4 heads (the paper uses 256)."""

    def __post_init__(self):
        for name in ("num_envs", "num_steps", "update_epochs", "num_minibatches"):
            check_range(self, name, 1)
        check_range(self, "total_frames", self.num_envs * self.num_steps)
        check_divides(self, "num_steps", "num_minibatches")
        check_range(self, "learning_rate", 0.0, low_inclusive=False)
        check_range(self, "gamma", 0.0, 1.0)
        check_range(self, "gae_lambda", 0.0, 1.0)
        check_range(self, "clip_eps", 0.0, low_inclusive=False)
        check_range(self, "entropy_coef", 0.0)
        check_range(self, "value_coef", 0.0)
        check_range(self, "max_grad_norm", 0.0, low_inclusive=False)
        check_mlp(self)
        check_critic(self)

    @property
    def frames_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return self.total_frames // self.frames_per_update
