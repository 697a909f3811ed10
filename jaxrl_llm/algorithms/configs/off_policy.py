"""What the actor-critic off-policy configs (SAC, TD3) share (no JAX imports)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxrl_llm.algorithms.configs.critic import check_critic
from jaxrl_llm.config import EnvKwarg, check_mlp, check_range


@dataclass(frozen=True)
class OffPolicyConfig:
    """Environment, replay and network settings of an off-policy actor-critic.

    One update steps `num_envs` environments `train_frequency` times (frames_per_update
    = num_envs * train_frequency), adds those transitions to the replay buffer and takes
    `gradient_steps` gradient steps on batches of `batch_size` sampled from it.
    """

    env: str = "Pendulum-v1"
    env_kwargs: dict[str, EnvKwarg] = field(default_factory=dict)
    """Constructor arguments of the environment, checked and converted against its signature."""
    max_episode_steps: int | None = None
    """Override of the environment's step limit (None keeps its default)."""
    seed: int = 0
    total_frames: int = 20_000
    num_envs: int = 1
    train_frequency: int = 1
    """Environment steps per env per update."""
    gradient_steps: int = 1
    """Gradient steps per update (each on a fresh batch)."""
    buffer_size: int = 100_000
    learning_starts: int = 100
    """Frames of uniformly random actions before the first gradient step."""
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    """Polyak rate of the target networks: target <- tau * online + (1 - tau) * target."""
    learning_rate: float = 1e-3
    """Adam learning rate of every part (actor, critics, temperature)."""
    max_grad_norm: float | None = None
    """Global-norm gradient clipping (None: off, as in SB3)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    num_critics: int = 2
    """Critics whose minimum forms the target (clipped double-Q)."""
    eval_interval: int = 2_000
    """Frames between greedy evaluations (`eval_return_mean`); 0 disables them."""
    eval_episodes: int = 10
    critic: str = "mlp"
    """The Q-critics: 'mlp' (`hidden_sizes`, `activation`) or 'reacritic' (a transformer critic
    reasoning over `reacritic_steps` noisy copies of (s, a), arXiv 2505.10992)."""
    reacritic_steps: int = 8
    """ReaCritic's H: horizontal reasoning steps (copies of the (s, a) embedding)."""
    reacritic_depth: int = 1
    """ReaCritic's V: vertical reasoning steps (causal transformer blocks; 0 skips them)."""
    reacritic_width: int = 64
    """ReaCritic's token width h, a multiple of its 4 heads (the paper uses 256)."""

    def __post_init__(self):
        for name in ("num_envs", "train_frequency", "gradient_steps", "batch_size", "num_critics"):
            check_range(self, name, 1)
        check_range(self, "total_frames", self.frames_per_update)
        check_range(self, "buffer_size", max(self.frames_per_update, self.batch_size * self.gradient_steps))
        check_range(self, "learning_starts", 0)
        check_range(self, "gamma", 0.0, 1.0)
        check_range(self, "tau", 0.0, 1.0, low_inclusive=False)
        check_range(self, "learning_rate", 0.0, low_inclusive=False)
        if self.max_grad_norm is not None:
            check_range(self, "max_grad_norm", 0.0, low_inclusive=False)
        check_range(self, "eval_interval", 0)
        check_range(self, "eval_episodes", 1)
        check_mlp(self)
        check_critic(self)

    @property
    def frames_per_update(self) -> int:
        return self.num_envs * self.train_frequency

    @property
    def num_updates(self) -> int:
        return self.total_frames // self.frames_per_update
