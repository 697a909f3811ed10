"""Pure rollout functions: vmapped env scans, grouped rollouts, LM sampling."""

from jaxrl_llm.rollout.env_rollout import (
    Policy,
    group_ids,
    grouped_rollout,
    reset,
    reset_grouped,
    rollout,
    run_steps,
)
from jaxrl_llm.rollout.recent_returns import (
    RecentReturns,
    recent_returns_add,
    recent_returns_init,
    recent_returns_mean,
)
from jaxrl_llm.rollout.sampling import GenerationOutput, generate
from jaxrl_llm.rollout.trajectory import (
    RolloutState,
    Trajectory,
    episode_return_mean,
    episode_success_rate,
)

__all__ = [
    "GenerationOutput",
    "generate",
    "Policy",
    "RecentReturns",
    "RolloutState",
    "Trajectory",
    "episode_return_mean",
    "episode_success_rate",
    "group_ids",
    "recent_returns_add",
    "recent_returns_init",
    "recent_returns_mean",
    "grouped_rollout",
    "reset",
    "reset_grouped",
    "rollout",
    "run_steps",
]

from jaxrl_llm.rollout.evaluate import EpisodeStats, evaluate_episodes, evaluate_policy
from jaxrl_llm.rollout.replay import (
    PrioritizedSample,
    ReplayBuffer,
    Transition,
    example_transition,
    importance_weights,
    make_replay_buffer,
    transitions_from_trajectory,
)

__all__ += [
    "EpisodeStats",
    "evaluate_episodes",
    "evaluate_policy",
    "PrioritizedSample",
    "ReplayBuffer",
    "Transition",
    "example_transition",
    "importance_weights",
    "make_replay_buffer",
    "transitions_from_trajectory",
]
