"""LORO's config (importable without JAX: the CLI builds its flags from it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxrl_llm.config import EnvKwarg, check_mlp, check_range

LORO_ARMS = ("loro", "online", "mix", "prior", "random")
"""What `jaxrl-llm loro` can run: LORO; pure online RL from a random init; "Mix" (the prior's
episodes in the replay buffer, no pretraining); the prior as the policy; a random policy."""
TRAINED_ARMS = ("loro", "online", "mix")
"""The arms that train an off-policy learner (each a checkpointed run of its own)."""
PRIOR_ENVS = ("CartPole-v1", "Pendulum-v1", "FrozenLake-misc", "CliffWalking-v0")
"""Environments with a state translator, action parser and heuristic (`envs.describe_state`)."""
HEURISTIC_PRIOR = "heuristic"


@dataclass(frozen=True)
class LOROConfig:
    """LORO: LLM Offline, RL Online (Duong, Yang & Zhang, arXiv 2505.10861).

    A prior (a language model, or `--prior heuristic`, the environment's scripted policy) plays
    `prior_episodes` (tau) episodes; Double DQN (discrete actions) or SAC (continuous) is
    pretrained offline on the first `pretrain_episodes` (n) of them for `pretrain_steps` (K)
    gradient steps, then trains online from an empty replay buffer for `total_frames` frames.
    The baselines (`arms`) use the same learner and budget.

    Defaults follow the official code: tau = 30, n = 10, K = 1000 (of {1000, 3000}), episodes of
    at most 200 steps (`max_episode_steps`; the paper's CartPole-v0 limit), epsilon-greedy
    with a constant epsilon = 0.1 online, Double DQN with learning rate 5e-5, batch 256,
    gamma 0.99, a target copy every 1000 gradient steps (every 200 while pretraining), one
    gradient step per environment step, a 100k FIFO buffer, and generation at temperature 0.9,
    top-p 0.6. Learning starts at once (d3rlpy's `fit_online` has no random warm-up), in every
    arm. SAC takes d3rlpy's defaults (learning rate 3e-4, tau 0.005) and explores with its own
    stochastic policy (`epsilon` applies to DQN only). The paper's budgets, in episodes of 200
    frames: 150 for CartPole and FrozenLake (`total_frames` 30000, the default), 200 for
    CliffWalking and Pendulum (40000). The paper's metric is the cumulative evaluation
    return: the greedy policy is evaluated every `eval_every` frames (one "episode" of the
    official loop) and the mean returns are summed over the run.
    """

    env: str = "CartPole-v1"
    """One of CartPole-v1, Pendulum-v1, FrozenLake-misc, CliffWalking-v0 (those with a text interface)."""
    env_kwargs: dict[str, EnvKwarg] = field(default_factory=dict)
    """Constructor arguments of the environment, e.g. --env-kwargs is_slippery false."""
    max_episode_steps: int | None = 200
    """Step limit of every episode (the official max_episode_len); None keeps the environment's."""
    seed: int = 0
    arms: tuple[str, ...] = LORO_ARMS
    """What to run and compare: loro, online, mix, prior (the prior as the policy), random."""

    prior: str = HEURISTIC_PRIOR
    """'heuristic' (the environment's scripted policy) or a model for models.load:
    'smollm2-135m-instruct' (bundled), 'tiny', a .gguf file or an HF directory."""
    model_overrides: dict[str, str] = field(default_factory=dict)
    """LlamaConfig overrides of the prior model, e.g. {'param_dtype': 'bfloat16'}."""
    prior_episodes: int = 30
    """tau: episodes the prior plays."""
    prior_envs: int = 10
    """Environments the prior plays side by side (a language model samples them in one batch)."""
    prior_max_new_tokens: int = 8
    """Tokens a language model may generate per decision (raise it with --prior-think)."""
    prior_temperature: float = 0.9
    prior_top_p: float = 0.6
    prior_think: bool = False
    """Ask the model to think step by step before answering (the paper's CoT mode)."""
    prior_epsilon: float = 0.0
    """Probability that a prior decision is replaced by a uniformly random action (0: the paper's
    collection). A deterministic heuristic's episodes hold one action per state, so Q-learning
    on them cannot tell the actions apart: give it some (e.g. 0.3), as a model's sampling
    temperature does."""

    pretrain_episodes: int = 10
    """n: the first n prior episodes are LORO's pretraining data (and Mix's buffer)."""
    pretrain_steps: int = 1_000
    """K: offline gradient steps before online training."""
    pretrain_target_update_interval: int = 200
    """Double DQN's target copy interval (gradient steps) while pretraining."""

    total_frames: int = 30_000
    """Online environment frames of each trained arm."""
    train_frequency: int = 1
    """Environment steps per update (one environment)."""
    gradient_steps: int = 1
    """Gradient steps per update (online, and per call while pretraining)."""
    epsilon: float = 0.1
    """Constant epsilon of epsilon-greedy online exploration (DQN)."""
    learning_rate: float | None = None
    """None: 5e-5 for Double DQN (the official setting), 3e-4 for SAC (d3rlpy's default)."""
    batch_size: int = 256
    buffer_size: int = 100_000
    gamma: float = 0.99
    target_update_interval: int = 1_000
    """Double DQN's target copy interval (gradient steps) online."""
    max_grad_norm: float = 10.0
    """Global-norm gradient clipping of Double DQN."""
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    eval_every: int = 200
    """Frames between greedy evaluations (the official loop evaluates after every 200 frames)."""
    eval_episodes: int = 5
    """Episodes per evaluation (the official code used 1)."""

    def __post_init__(self):
        name = type(self).__name__
        if self.env not in PRIOR_ENVS:
            raise ValueError(
                f"{name}.env={self.env!r} is invalid: the prior's text interface exists for "
                f"{', '.join(PRIOR_ENVS)}."
            )
        unknown = [arm for arm in self.arms if arm not in LORO_ARMS]
        if not self.arms or unknown or len(set(self.arms)) != len(self.arms):
            raise ValueError(
                f"{name}.arms={self.arms!r} is invalid: must be distinct names from {list(LORO_ARMS)}."
            )
        if self.max_episode_steps is not None:
            check_range(self, "max_episode_steps", 1)
        if not self.prior:
            raise ValueError(f"{name}.prior='' is invalid: 'heuristic' or a model name or path.")
        check_range(self, "prior_episodes", 1)
        check_range(self, "prior_envs", 1)
        check_range(self, "prior_max_new_tokens", 1)
        check_range(self, "prior_temperature", 0.0)
        check_range(self, "prior_top_p", 0.0, 1.0, low_inclusive=False)
        check_range(self, "prior_epsilon", 0.0, 1.0)
        check_range(self, "pretrain_episodes", 1, self.prior_episodes)
        check_range(self, "train_frequency", 1)
        check_range(self, "gradient_steps", 1)
        check_range(self, "pretrain_steps", self.gradient_steps)
        if self.pretrain_steps % self.gradient_steps:
            raise ValueError(
                f"{name}.pretrain_steps={self.pretrain_steps} is invalid: must be a multiple of "
                f"gradient_steps={self.gradient_steps}."
            )
        check_range(self, "pretrain_target_update_interval", 1)
        check_range(self, "eval_every", self.train_frequency)
        if self.eval_every % self.train_frequency:
            raise ValueError(
                f"{name}.eval_every={self.eval_every} is invalid: must be a multiple of "
                f"train_frequency={self.train_frequency} (frames per update)."
            )
        check_range(self, "total_frames", self.eval_every)
        check_range(self, "epsilon", 0.0, 1.0)
        if self.learning_rate is not None:
            check_range(self, "learning_rate", 0.0, low_inclusive=False)
        check_range(self, "batch_size", 1)
        check_range(self, "buffer_size", max(self.batch_size * self.gradient_steps, self.train_frequency))
        check_range(self, "gamma", 0.0, 1.0)
        check_range(self, "target_update_interval", 1)
        check_range(self, "max_grad_norm", 0.0, low_inclusive=False)
        check_range(self, "eval_episodes", 1)
        check_mlp(self)

    @property
    def uses_prior_data(self) -> bool:
        """Whether an arm needs the prior's episodes (all but online and random)."""
        return any(arm in self.arms for arm in ("loro", "mix", "prior"))
