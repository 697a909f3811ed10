"""DQN's config (importable without JAX: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxrl_llm.config import EnvKwarg, check_mlp, check_choice, check_range

DQN_LOSSES = ("huber", "mse")


@dataclass(frozen=True)
class DQNConfig:
    """DQN / Double DQN hyperparameters.

    Defaults are rl-baselines3-zoo's DQN CartPole-v1 settings (hyperparams/dqn.yml:
    5e4 frames, lr 2.3e-3, batch 64, buffer 1e5, learning_starts 1000, train_freq 256,
    gradient_steps 128, exploration_fraction 0.16, final eps 0.04, net [256, 256]) with
    Stable-Baselines3's DQN defaults for the rest (Huber loss, max_grad_norm 10, ReLU, hard
    target updates), plus `anneal_lr`: without it the greedy return at the end of a run
    swung between ~100 and 500 from one evaluation to the next (seeds 0-3), with it all
    four ended at 500. One update = `train_frequency` steps of `num_envs` environments, then
    `gradient_steps` gradient steps on batches of `batch_size` replayed transitions.

    `target_update_interval` counts *gradient steps* (zoo's 10 counts env steps; with
    train_freq 256 that refreshes the target once per update, before its 128 gradient
    steps, which is what 128 gradient steps here does).
    """

    env: str = "CartPole-v1"
    env_kwargs: dict[str, EnvKwarg] = field(default_factory=dict)
    """Constructor arguments of the environment, checked and converted against its signature:
    --env-kwargs size 6  or  --env-kwargs is_slippery false success_rate 0.8"""
    max_episode_steps: int | None = None
    """Override of the environment's step limit (None keeps its default)."""
    seed: int = 0
    total_frames: int = 50_000
    num_envs: int = 1
    train_frequency: int = 256
    """Steps of the vectorised environment per update (frames per update = num_envs * this)."""
    gradient_steps: int = 128
    """Gradient steps per update: the updates-per-env-step ratio is gradient_steps / frames_per_update."""
    buffer_size: int = 100_000
    learning_starts: int = 1_000
    """Frames collected (uniform random actions) before the first gradient step."""
    batch_size: int = 64
    learning_rate: float = 2.3e-3
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over num_updates * gradient_steps gradient steps
    (our addition to zoo's settings: it keeps the final greedy policy at 500, see above)."""
    gamma: float = 0.99
    max_grad_norm: float = 10.0
    loss: str = "huber"
    """'huber' (SB3's smooth L1, delta 1) or 'mse' on the TD error."""
    double_q: bool = False
    """Double DQN (van Hasselt et al. 2016): the online network picks the next action."""
    target_update_interval: int = 128
    """Gradient steps between target-network updates."""
    tau: float = 1.0
    """Target update theta' <- tau * theta + (1 - tau) * theta' (1.0: a hard copy)."""
    exploration_fraction: float = 0.16
    """Fraction of total_frames over which epsilon decays linearly."""
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.04
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    eval_every: int = 10
    """Updates between greedy evaluations (and at the last update)."""
    eval_episodes: int = 10
    """Episodes per evaluation (0 turns evaluation off)."""

    def __post_init__(self):
        for name in ("num_envs", "train_frequency", "gradient_steps", "batch_size"):
            check_range(self, name, 1)
        check_range(self, "total_frames", self.frames_per_update)
        check_range(self, "buffer_size", self.frames_per_update)
        check_range(self, "learning_starts", 0)
        check_range(self, "learning_rate", 0.0, low_inclusive=False)
        check_range(self, "gamma", 0.0, 1.0)
        check_range(self, "max_grad_norm", 0.0, low_inclusive=False)
        check_choice(self, "loss", DQN_LOSSES)
        check_range(self, "target_update_interval", 1)
        check_range(self, "tau", 0.0, 1.0, low_inclusive=False)
        check_range(self, "exploration_fraction", 0.0, 1.0)
        check_range(self, "exploration_initial_eps", 0.0, 1.0)
        check_range(self, "exploration_final_eps", 0.0, 1.0)
        check_range(self, "eval_every", 1)
        check_range(self, "eval_episodes", 0)
        check_mlp(self)

    @property
    def frames_per_update(self) -> int:
        return self.num_envs * self.train_frequency

    @property
    def num_updates(self) -> int:
        return self.total_frames // self.frames_per_update
