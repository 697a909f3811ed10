"""TD3's config (importable without JAX: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass

from jaxrl_llm.algorithms.configs.off_policy import OffPolicyConfig
from jaxrl_llm.config import check_range


@dataclass(frozen=True)
class TD3Config(OffPolicyConfig):
    """TD3 hyperparameters (Fujimoto et al. 2018), continuous actions only.

    Defaults follow rl-baselines3-zoo's Pendulum-v1 entry (gamma 0.98, learning rate
    1e-3, Gaussian exploration noise 0.1, one gradient step per env step; SB3's TD3
    defaults otherwise: batch 256, tau 0.005, policy_delay 2, target noise 0.2 clipped
    at 0.5), with a (64, 64) network instead of (400, 300) and 1k random warm-up frames
    instead of 10k, so a CPU run takes seconds. On Pendulum-v1 (seeds
    0-2) the greedy policy averages >= -250 within 8k frames and ends at -170 to -180
    (20 episodes) after 20k. Noise scales are in the unit action box [-1, 1].

    One update steps `num_envs` environments `train_frequency` times, adds the
    transitions to the replay buffer and takes `gradient_steps` critic steps; the actor
    and the targets move on every `policy_delay`-th critic step.
    """

    learning_starts: int = 1_000
    """Frames of uniformly random actions before the first gradient step."""
    gamma: float = 0.98
    policy_delay: int = 2
    """Critic steps per actor and target update."""
    exploration_noise: float = 0.1
    """Std of the Gaussian noise added to the actor's action while collecting."""
    policy_noise: float = 0.2
    """Std of the target policy smoothing noise."""
    noise_clip: float = 0.5
    """The smoothing noise is clipped to [-noise_clip, noise_clip]."""

    def __post_init__(self):
        super().__post_init__()
        check_range(self, "policy_delay", 1)
        for name in ("exploration_noise", "policy_noise", "noise_clip"):
            check_range(self, name, 0.0)
