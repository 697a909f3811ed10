"""DDPG's config (importable without JAX: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass

from jaxrl_llm.algorithms.configs.off_policy import OffPolicyConfig
from jaxrl_llm.config import check_range


@dataclass(frozen=True)
class DDPGConfig(OffPolicyConfig):
    """DDPG hyperparameters (Lillicrap et al. 2016), continuous actions only.

    DDPG is TD3 with one critic, no target policy smoothing and the actor updated on every
    critic step, which is how SB3 writes it (its `DDPG` subclasses `TD3`); `algorithms.ddpg`
    runs TD3's code on this config, whose `policy_delay`, `policy_noise` and `noise_clip`
    are fixed properties (1, 0, 0), not flags.

    Defaults are SB3's DDPG (deterministic tanh actor, Gaussian exploration noise, Polyak
    targets with tau 0.005, batch 256, one gradient step per env step, Adam 1e-3) with
    rl-baselines3-zoo's Pendulum-v1 settings (gamma 0.98, exploration noise 0.1) and, as
    for TD3, a (64, 64) network instead of (400, 300) and 1k random warm-up frames, so a
    CPU run takes seconds. (The paper's own recipe, not followed: Ornstein-Uhlenbeck
    noise, actor lr 1e-4, critic weight decay 1e-2, tau 0.001, batch 64.) Noise scales
    are in the unit action box [-1, 1].
    """

    learning_starts: int = 1_000
    """Frames of uniformly random actions before the first gradient step."""
    gamma: float = 0.98
    num_critics: int = 1
    """Critics; DDPG has one (more would take TD3's clipped double-Q minimum over them)."""
    exploration_noise: float = 0.1
    """Std of the Gaussian noise added to the actor's action while collecting."""

    @property
    def policy_delay(self) -> int:
        """The actor and the targets move on every critic step."""
        return 1

    @property
    def policy_noise(self) -> float:
        """No target policy smoothing: the target action is mu'(s')."""
        return 0.0

    @property
    def noise_clip(self) -> float:
        return 0.0

    def __post_init__(self):
        super().__post_init__()
        check_range(self, "exploration_noise", 0.0)
