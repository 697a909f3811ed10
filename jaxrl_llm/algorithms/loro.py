"""LORO, "LLM Offline, RL Online": warm-starting off-policy RL with a language model's episodes
(Duong, Yang & Zhang, "Improving the Data-efficiency of Reinforcement Learning by
Warm-starting with LLM", arXiv 2505.10861; §7 of `shared/papers/rl-methods.md`).

The method, on a gymnax environment with a text interface (`envs.describe_state`):

1. A prior plays tau episodes in the real environment (`rollout.prior.collect_episodes`):
   a language model prompted with the observation's sentence, one batched `generate` call per
   step for all environments, its reply parsed into an action (a failed parse is replaced by
   a random action and counted), or any scripted policy (`--prior heuristic`). The steps are
   stored as (s_t, a_t, r_t, s_{t+1}, terminated_t, truncated_t): unlike the official code,
   s_{t+1} is the observation that *followed* a_t (it stored s_{t+1} in place of s_t), and
   the step limit is a truncation that still bootstraps, not a terminal state.
2. Offline pretraining: the online learner's own update, `learn`, on batches drawn uniformly
   from the first n episodes for K gradient steps (`algorithms.offline.pretrain_offline`):
   Double DQN for discrete actions,

       y = r + gamma (1 - terminated) Q_target(s', argmax_a Q(s', a)),   L = Huber(Q(s, a) - y),

   with the target network copied every `pretrain_target_update_interval` steps; SAC (critic,
   actor and temperature steps, `algorithms.sac`) for continuous actions, its dataset actions
   mapped into the unit box it stores.
3. Online training of the same learner from the pretrained parameters, optimiser state and
   target network, with an **empty** replay buffer (the prior's data is not kept), constant
   epsilon-greedy exploration (DQN) and learning from the first step.

Baselines with the same learner, budget and evaluation (`arms`): "online" (random init,
empty buffer), "mix" (random init, the first n prior episodes pre-filled into the replay
buffer, no pretraining: the official `finetune` mode), "prior" (the prior as the policy: its
collected episodes) and "random". LORO and online with the same seed start from the same
network and environment states: only the pretraining differs.

Measured on CartPole-v1 (one CPU run each, seed 0, 30k frames = 150 evaluations of 5
episodes; the prior: the heuristic with `prior_epsilon` 0.3, mean return 38 over 30 episodes),
cumulative evaluation return (the paper's, Qwen-7B prior: LORO 27078, online 24411, LLM 5140,
random 3079):

    official settings (lr 5e-5, K 1000):  LORO 11705, online 20293, Mix 19809, prior 5740, random 3260
    lr 1e-3, K 3000:                      LORO 16804, online 19281

With the official settings pretraining leaves the two actions' Q-values nearly equal and the
greedy policy pushes one way (return ~9) for the first ~6k frames. With lr 1e-3 and K 3000 the
pretrained greedy policy balances for all 200 steps (initial evaluation 200) and LORO leads for
~5k frames (4285 vs 2111 over the first 25 evaluations), then falls behind as DQN at that rate
unlearns it. A deterministic prior (`prior_epsilon` 0: one action per state) gave LORO 13435,
Mix 17952 with the official settings.

`make_loro(config, prior_episodes, arm) -> Algorithm` is the training contract (see
`training.algorithm`) for the trained arms; its `init` runs the pretraining, so
`training.make_train(make_loro(...))` compiles pretraining and online training into one
function of the key, `jax.vmap`pable over seeds, and `training.run` checkpoints and resumes
it. `run_experiment(config, out_dir)` is `jaxrl-llm loro`: the prior's episodes, every arm,
and a summary of each arm's cumulative evaluation return (the paper's metric, `summarize`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxrl_llm import envs
from jaxrl_llm.algorithms import dqn, sac
from jaxrl_llm.algorithms.configs.dqn import DQNConfig
from jaxrl_llm.algorithms.configs.loro import HEURISTIC_PRIOR, LORO_ARMS, TRAINED_ARMS, LOROConfig
from jaxrl_llm.algorithms.configs.sac import SACConfig
from jaxrl_llm.algorithms.off_policy import action_box
from jaxrl_llm.algorithms.offline import pretrain_offline
from jaxrl_llm.envs.describe_state import text_interface
from jaxrl_llm.rollout.evaluate import evaluate_policy
from jaxrl_llm.rollout.prior import (
    PriorAct,
    PriorEpisodes,
    collect_episodes,
    heuristic_prior,
    lm_prior,
    load_episodes,
    save_episodes,
    with_epsilon,
)
from jaxrl_llm.rollout.replay import Transition, make_replay_buffer
from jaxrl_llm.training import Algorithm
from jaxrl_llm.training import make_train as make_train_from_algorithm

__all__ = [
    "LOROConfig",
    "OneHotQNetwork",
    "collect_prior",
    "dqn_config",
    "evaluation_points",
    "is_discrete",
    "learner_dataset",
    "make_learner",
    "make_loro",
    "make_prior",
    "make_train",
    "pretrained_init",
    "random_returns",
    "run_experiment",
    "sac_config",
    "summarize",
]

DQN_LEARNING_RATE = 5e-5  # the official DoubleDQN setting
SAC_LEARNING_RATE = 3e-4  # d3rlpy's SAC default (the official code's configured rate is ignored)
PRETRAIN_STREAM = 1  # fold_in index of the pretraining key: init itself uses the arm's key unchanged


# ----------------------------------------------------------------------------- learners


def make_env(config: LOROConfig):
    return envs.make_configured(config.env, config.env_kwargs, config.max_episode_steps)


def is_discrete(config: LOROConfig) -> bool:
    """Discrete actions (Double DQN) or continuous ones (SAC), read from the environment."""
    env, env_params = make_env(config)
    return hasattr(env.action_space(env_params), "n")


def learner_settings(config: LOROConfig) -> dict:
    """What the Double DQN and SAC learners share: one environment, the run's budget and replay,
    learning from the first step (no random warm-up), the network shape."""
    return dict(
        env=config.env,
        env_kwargs=config.env_kwargs,
        max_episode_steps=config.max_episode_steps,
        seed=config.seed,
        total_frames=config.total_frames,
        num_envs=1,
        train_frequency=config.train_frequency,
        gradient_steps=config.gradient_steps,
        buffer_size=config.buffer_size,
        learning_starts=0,
        batch_size=config.batch_size,
        gamma=config.gamma,
        hidden_sizes=config.hidden_sizes,
        activation=config.activation,
        eval_episodes=config.eval_episodes,
    )


def dqn_config(config: LOROConfig, **overrides) -> DQNConfig:
    """The Double DQN settings of `config` (constant epsilon, no random warm-up, no learning-rate
    decay, one environment)."""
    settings = dict(
        learner_settings(config),
        learning_rate=config.learning_rate or DQN_LEARNING_RATE,
        anneal_lr=False,
        max_grad_norm=config.max_grad_norm,
        loss="huber",
        double_q=True,
        target_update_interval=config.target_update_interval,
        tau=1.0,
        exploration_fraction=0.0,
        exploration_initial_eps=config.epsilon,
        exploration_final_eps=config.epsilon,
        eval_every=config.eval_every // config.train_frequency,
    )
    return DQNConfig(**{**settings, **overrides})


def sac_config(config: LOROConfig) -> SACConfig:
    """The SAC settings of `config` (d3rlpy's defaults, no random warm-up, one environment)."""
    return SACConfig(
        **learner_settings(config),
        tau=0.005,
        learning_rate=config.learning_rate or SAC_LEARNING_RATE,
        eval_interval=config.eval_every,
    )


class OneHotQNetwork(nn.Module):
    """`dqn.QNetwork` on one-hot codes of a discrete observation `obs[B]` (int): the official
    code's `OneHotWrapper` for FrozenLake and CliffWalking, whose observation is a cell index."""

    num_states: int
    num_actions: int
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        one_hot = jax.nn.one_hot(obs.reshape(obs.shape[0]), self.num_states)
        return dqn.QNetwork(self.num_actions, self.hidden_sizes, self.activation)(one_hot)


def q_network(config: LOROConfig):
    """The Q-network of `config`'s environment: one-hot inputs for a discrete observation space."""
    env, env_params = make_env(config)
    observations = env.observation_space(env_params)
    num_actions = int(env.action_space(env_params).n)
    hidden = tuple(config.hidden_sizes)
    if hasattr(observations, "n"):
        return OneHotQNetwork(int(observations.n), num_actions, hidden, config.activation)
    return dqn.QNetwork(num_actions, hidden, config.activation)


def _with_prefilled_buffer(algorithm: Algorithm, items: Transition, capacity: int) -> Algorithm:
    """`algorithm` (SAC) whose `init` writes `items` into its empty replay buffer.

    `make_sac` has no `prefill=` of its own (DQN's `make_dqn` has); a flashbax item buffer's
    `add` depends only on its capacity, so a buffer of the same capacity fills it.
    """
    buffer = make_replay_buffer(capacity=capacity, min_size=1, sample_batch_size=1, add_batch_size=1)

    def init(key: jax.Array):
        train_state, collect_state = algorithm.init(key)
        filled = buffer.prefill(collect_state.buffer_state, items)
        return train_state, collect_state.replace(buffer_state=filled)

    return dataclasses.replace(algorithm, init=init)


def make_learner(config: LOROConfig, prefill: Transition | None = None) -> Algorithm:
    """Double DQN or SAC (by the action space) with `config`'s settings; `prefill`:
    transitions in the learner's action convention (`learner_dataset`) written into the
    replay buffer at `init`."""
    if is_discrete(config):
        return dqn.make_dqn(dqn_config(config), q_network(config), prefill=prefill)
    algorithm = sac.make_sac(sac_config(config))
    if prefill is None:
        return algorithm
    return _with_prefilled_buffer(algorithm, prefill, config.buffer_size)


def learner_dataset(config: LOROConfig, transitions: Transition) -> Transition:
    """Prior transitions (environment actions) as the learner stores them: int32 actions for
    DQN; for SAC, actions mapped affinely from the environment's box into `[-1, 1]^A`."""
    env, env_params = make_env(config)
    as_array = lambda x: np.asarray(x)
    transitions = jax.tree.map(as_array, transitions)
    box = action_box(env, env_params)
    if box is None:
        action = transitions.action.astype(np.int32)
    else:
        low, high = box
        action = transitions.action.reshape(-1, *low.shape).astype(np.float32)
        action = np.clip(2.0 * (action - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)
    return transitions.replace(
        action=action,
        reward=transitions.reward.astype(np.float32),
        terminated=transitions.terminated.astype(bool),
        truncated=transitions.truncated.astype(bool),
    )


def pretrained_init(
    algorithm: Algorithm,
    learn: Callable[..., Any],
    dataset: Any,
    num_steps: int,
    batch_size: int,
    *,
    steps_per_call: int = 1,
    to_batch: Callable[[Any], Any] | None = None,
) -> Algorithm:
    """`algorithm` whose `init(key)` is `algorithm.init(key)` followed by `num_steps` offline
    gradient steps of `learn` on `dataset` (`offline.pretrain_offline`, not jitted on its own:
    it compiles with the rest of `init`), sampled with `fold_in(key, PRETRAIN_STREAM)`.

    Unlike `offline.starting_from` (one fixed pretrained state compiled in as a constant),
    every key pretrains its own network, so a run vmapped over seeds pretrains each seed.
    """

    def init(key: jax.Array):
        train_state, collect_state = algorithm.init(key)
        train_state, _ = pretrain_offline(
            learn,
            train_state,
            dataset,
            num_steps,
            batch_size,
            jax.random.fold_in(key, PRETRAIN_STREAM),
            steps_per_call=steps_per_call,
            to_batch=to_batch,
            jit=False,
        )
        return train_state, collect_state

    return dataclasses.replace(algorithm, init=init)


def make_loro(
    config: LOROConfig, prior_episodes: PriorEpisodes | None = None, arm: str = "loro"
) -> Algorithm:
    """The `Algorithm` of a trained arm (see the module docstring).

    Args:
      config: the settings.
      prior_episodes: the prior's episodes (`collect_prior`); "loro" and "mix" use the first
        `config.pretrain_episodes`, "online" none.
      arm: "loro" (pretrain, then online from an empty buffer), "online" or "mix".

    Metrics per update are the learner's (`dqn.make_dqn` / `sac.make_sac`), among them
    `eval_return_mean` (NaN between evaluations), `episode_return_mean` and `episodes`;
    `summarize` turns them into the cumulative returns.
    """
    if arm not in TRAINED_ARMS:
        raise ValueError(f"make_loro: arm={arm!r} is invalid: must be one of {list(TRAINED_ARMS)}.")
    if arm == "online":
        return make_learner(config)
    if prior_episodes is None:
        raise ValueError(f"make_loro: arm={arm!r} needs the prior's episodes (collect_prior(config)).")
    data = learner_dataset(config, prior_episodes.first(config.pretrain_episodes))
    if arm == "mix":
        return make_learner(config, prefill=data)
    algorithm = make_learner(config)
    if is_discrete(config):
        pretraining = dqn_config(config, target_update_interval=config.pretrain_target_update_interval)
        learn, to_batch = dqn.make_dqn(pretraining, q_network(config)).learn, dqn.offline_batch
    else:
        learn, to_batch = algorithm.learn, None
    return pretrained_init(
        algorithm,
        learn,
        data,
        config.pretrain_steps,
        config.batch_size,
        steps_per_call=config.gradient_steps,
        to_batch=to_batch,
    )


def make_train(config: LOROConfig, prior_episodes: PriorEpisodes | None = None, arm: str = "loro"):
    """`train(key) -> (final LoopState, metrics [num_updates])` of a trained arm, pretraining
    included; jittable and vmappable over keys."""
    return make_train_from_algorithm(make_loro(config, prior_episodes, arm))


# ----------------------------------------------------------------------------- priors


def make_prior(config: LOROConfig, verbose: bool = False) -> PriorAct:
    """`config.prior` as a `PriorAct`: the environment's heuristic, or a language model loaded
    with `models.load` (nothing is downloaded); with probability `config.prior_epsilon` a
    decision is a uniformly random action instead."""
    env, env_params = make_env(config)
    interface = text_interface(config.env, env, env_params)
    if config.prior == HEURISTIC_PRIOR:
        return with_epsilon(heuristic_prior(interface), config.prior_epsilon, env, env_params)
    from jaxrl_llm.algorithms.lm_task import parse_overrides
    from jaxrl_llm.models import load

    if verbose:
        print(f"loading {config.prior} ...", file=sys.stderr, flush=True)
    params, model_config, tokenizer = load(
        config.prior, key=jax.random.PRNGKey(config.seed), **parse_overrides(config.model_overrides)
    )
    if tokenizer is None:
        raise ValueError(f"prior model {config.prior!r} came without a tokenizer.")
    space = env.action_space(env_params)
    action_shape = () if hasattr(space, "n") else tuple(space.shape)
    act = lm_prior(
        interface,
        params,
        model_config,
        tokenizer,
        action_shape,
        max_new_tokens=config.prior_max_new_tokens,
        temperature=config.prior_temperature,
        top_p=config.prior_top_p,
        think=config.prior_think,
    )
    return with_epsilon(act, config.prior_epsilon, env, env_params)


def collect_prior(
    config: LOROConfig, act: PriorAct | None = None, key: jax.Array | None = None
) -> PriorEpisodes:
    """`config.prior_episodes` episodes of `act` (default `make_prior(config)`) in rounds of
    `config.prior_envs` environments; the key defaults to one derived from `config.seed`."""
    env, env_params = make_env(config)
    act = act or make_prior(config)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2) if key is None else key
    return collect_episodes(key, env, env_params, act, config.prior_episodes, config.prior_envs)


def random_returns(config: LOROConfig, num_episodes: int = 100, key: jax.Array | None = None) -> np.ndarray:
    """Returns `[num_episodes]` of uniformly random actions (the "random" arm)."""
    env, env_params = make_env(config)
    space = env.action_space(env_params)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 3) if key is None else key

    def act(params, obs, key):
        return jax.vmap(space.sample)(jax.random.split(key, num_episodes))

    returns = jax.jit(evaluate_policy, static_argnums=(1, 3, 5, 6))(
        key, env, env_params, act, None, num_episodes, int(env_params.max_steps_in_episode)
    )
    return np.asarray(returns)


# ----------------------------------------------------------------------------- the paper's metric


def evaluation_points(eval_returns: Any, eval_every: int) -> np.ndarray:
    """Indices of the updates whose evaluations count: one per window of `eval_every` updates.

    Update `u` evaluates the parameters after `u` updates and falls in window `ceil(u /
    eval_every)`; update 0 (DQN's evaluation of the initial parameters) is left out, and of
    several evaluations in one window the last counts. DQN evaluates at multiples of
    `eval_every` and at the last update, SAC at `k * eval_every - 1`: both then count
    `num_updates / eval_every` windows, and a DQN run extended by `--resume` (whose old last
    update was evaluated too) counts the same windows as one run to the new budget.
    """
    evals = np.asarray(eval_returns, np.float64)
    updates = np.flatnonzero(np.isfinite(evals) & (np.arange(len(evals)) > 0))
    windows = -(-updates // eval_every)
    last_of_window = np.append(windows[1:] != windows[:-1], True) if len(updates) else np.zeros(0, bool)
    return updates[last_of_window]


def summarize(metrics: dict[str, Any], eval_every: int) -> dict[str, float]:
    """The cumulative returns of a trained arm from its per-update metrics (arrays or CSV
    columns); `eval_every` in updates (`config.eval_every // config.train_frequency`).

    - `cumulative_eval_return`: the sum of the mean greedy evaluation returns over the run,
      one per `eval_every` updates (`evaluation_points`; the paper's metric); `evaluations`
      counts them. DQN's evaluation of the initial parameters at update 0 is reported apart,
      as `initial_eval_return`.
    - `mean_eval_return`, `final_eval_return`: their mean and the last one.
    - `cumulative_train_return`: the sum of the returns of every training episode that ended
      (what the exploring agent earned while learning), over `train_episodes` episodes.
    """
    evals = np.asarray(metrics["eval_return_mean"], np.float64)
    counted = evals[evaluation_points(evals, eval_every)]
    returns = np.nan_to_num(np.asarray(metrics["episode_return_mean"], np.float64))
    episodes = np.asarray(metrics["episodes"], np.float64)
    summary = {
        "cumulative_eval_return": float(counted.sum()),
        "evaluations": int(len(counted)),
        "mean_eval_return": float(counted.mean()) if len(counted) else math.nan,
        "final_eval_return": float(counted[-1]) if len(counted) else math.nan,
        "cumulative_train_return": float((returns * episodes).sum()),
        "train_episodes": int(episodes.sum()),
    }
    if np.isfinite(evals[0]):
        summary["initial_eval_return"] = float(evals[0])
    return summary


def _policy_summary(returns: np.ndarray, evaluations: int) -> dict[str, float]:
    """A fixed policy (the prior, random) in the paper's terms: each evaluation expects its mean
    return, so the cumulative evaluation return is `evaluations` times it."""
    mean = float(np.mean(returns))
    return {
        "cumulative_eval_return": mean * evaluations,
        "evaluations": evaluations,
        "mean_eval_return": mean,
        "episodes": int(len(returns)),
    }


# ----------------------------------------------------------------------------- the experiment


EXPERIMENT_FILES = ("config.json", "prior", "summary.json", "summary.md", "comparison.png", *TRAINED_ARMS)
PRIOR_FILE = "episodes.npz"


def _prepare(out_dir: Path, config_dict: dict, resume: bool, overwrite: bool, allow_changes=()) -> None:
    from jaxrl_llm.errors import IncompatibleRunError
    from jaxrl_llm.training.run_dir import check_writable

    check_writable(out_dir)
    entries = [p for p in out_dir.iterdir() if not p.name.startswith(".")]
    if not resume and entries:
        foreign = sorted(p.name for p in entries if p.name not in EXPERIMENT_FILES)
        if not overwrite or foreign:
            reason = (
                f"it holds files that are not LORO's ({', '.join(foreign)})" if foreign else "it is not empty"
            )
            raise IncompatibleRunError(
                f"{out_dir}: {reason}. Pass --resume to continue the experiment in it, --overwrite to "
                "discard it (LORO's files only), or choose another --out; nothing was changed."
            )
        for path in entries:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if resume:
        if not (out_dir / "config.json").exists():
            raise IncompatibleRunError(
                f"nothing to resume: {out_dir} holds no LORO experiment (no config.json)."
            )
        stored = json.loads((out_dir / "config.json").read_text())
        free = {"total_frames", "arms", *allow_changes}
        changed = sorted(
            k for k in set(stored) | set(config_dict) if k not in free and stored.get(k) != config_dict.get(k)
        )
        if changed:
            lines = "\n".join(f"  {k}: stored {stored.get(k)!r}, now {config_dict.get(k)!r}" for k in changed)
            raise IncompatibleRunError(
                f"Cannot resume {out_dir}: its config differs from this one:\n{lines}\nResume with the "
                f"stored values, add --allow-changes {' '.join(changed)}, or choose another --out."
            )
    (out_dir / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True))


def _plot(out_dir: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for i, (arm, (frames, cumulative)) in enumerate(curves.items()):
        ax.plot(frames, cumulative, lw=1.8 if arm == "loro" else 1.2, color=f"C{i}", label=arm)
    ax.set_xlabel("frames")
    ax.set_ylabel("cumulative evaluation return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "comparison.png")
    plt.close(fig)


def _markdown(config: LOROConfig, results: dict[str, dict]) -> str:
    columns = {
        "cumulative eval return": ("cumulative_eval_return", ".1f"),
        "mean eval return": ("mean_eval_return", ".2f"),
        "initial eval return": ("initial_eval_return", ".2f"),
        "final eval return": ("final_eval_return", ".2f"),
        "cumulative train return": ("cumulative_train_return", ".1f"),
    }
    cell = lambda value, spec: "-" if value is None or not math.isfinite(value) else format(value, spec)
    lines = [
        f"# LORO on {config.env} (prior: {config.prior}, seed {config.seed})",
        "",
        f"{config.total_frames} frames per trained arm, greedy evaluations every {config.eval_every} "
        f"frames ({config.eval_episodes} episodes each). Cumulative evaluation return: the sum of the "
        "evaluations' mean returns (the paper's metric); for the prior and random policies, their mean "
        "episode return times the number of evaluations.",
        "",
        "| arm | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for arm, result in results.items():
        cells = [cell(result.get(key), spec) for key, spec in columns.values()]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_experiment(
    config: LOROConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    allow_changes: tuple[str, ...] = (),
    progress: bool = True,
    checkpoint_every: int = 25,
    max_to_keep: int = 3,
    checkpoint_seconds: float = 120.0,
    checkpoint_overhead: float = 0.2,
    stall_seconds: float = 120.0,
    on_stall: Callable[[str], None] | None = None,
    parallel: str = "single",
    mesh: str | None = None,
) -> dict[str, dict]:
    """`jaxrl-llm loro`: the prior's episodes, then every arm of `config.arms`, written under
    `out_dir`:

        config.json                  this config
        prior/episodes.npz           the prior's transitions (reused by --resume), summary.json
                                     (returns, parse-failure rate), replies.txt (a model's replies)
        loro/ online/ mix/           one `training.run` per trained arm: config.json, metrics.csv,
                                     learning_curve.png, tb/, checkpoints/
        summary.json, summary.md     per arm: cumulative / mean / final evaluation return, ...
        comparison.png               cumulative evaluation return against frames, every arm

    With `resume`, the stored prior episodes are reused and each trained arm resumes from its
    last checkpoint (an arm not started yet starts). Returns the summary.
    """
    from jaxrl_llm.config import to_dict
    from jaxrl_llm.training import run as run_training
    from jaxrl_llm.training.loop import MIN_FRAMES_PER_CHUNK
    from jaxrl_llm.training.metrics import read_metrics
    from jaxrl_llm.training.watchdog import exit_stalled

    out_dir = Path(out_dir)
    say = partial(print, file=sys.stderr, flush=True) if progress else (lambda *a, **k: None)
    config_dict = {"algorithm": "loro", **to_dict(config)}
    _prepare(out_dir, config_dict, resume, overwrite, allow_changes)
    arm_config = {k: v for k, v in config_dict.items() if k != "arms"}
    evaluations = config.total_frames // config.eval_every
    eval_updates = config.eval_every // config.train_frequency
    results: dict[str, dict] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    prior = None
    if config.uses_prior_data:
        prior_dir = out_dir / "prior"
        prior_dir.mkdir(exist_ok=True)
        if resume and (prior_dir / PRIOR_FILE).exists():
            prior = load_episodes(prior_dir / PRIOR_FILE)
            say(f"loaded the prior's {prior.num_episodes} episodes from {prior_dir / PRIOR_FILE}")
        else:
            say(f"collecting {config.prior_episodes} episodes of the prior ({config.prior}) ...")
            prior = collect_prior(config, make_prior(config, verbose=progress))
            save_episodes(prior_dir / PRIOR_FILE, prior)
        (prior_dir / "summary.json").write_text(json.dumps(prior.summary(), indent=2))
        if prior.replies:
            (prior_dir / "replies.txt").write_text("\n---\n".join(prior.replies) + "\n")
        say(
            f"prior: mean return {prior.returns.mean():.2f} over {prior.num_episodes} episodes, "
            f"parse failures {prior.parse_failures}/{prior.decisions}"
        )

    for arm in (a for a in LORO_ARMS if a in config.arms):
        if arm in TRAINED_ARMS:
            arm_dir = out_dir / arm
            say(f"training arm {arm!r} in {arm_dir} ...")
            run_training(
                make_loro(config, prior, arm),
                {**arm_config, "arm": arm},
                arm_dir,
                seed=config.seed,
                resume=resume and (arm_dir / "config.json").exists(),
                checkpoint_every=checkpoint_every,
                max_to_keep=max_to_keep,
                progress=progress,
                title=f"LORO arm {arm} on {config.env} (prior {config.prior}, seed {config.seed})",
                checkpoint_seconds=checkpoint_seconds,
                checkpoint_overhead=checkpoint_overhead,
                allow_changes=allow_changes,
                stall_seconds=stall_seconds,
                on_stall=on_stall or exit_stalled,
                parallel=parallel,
                mesh=mesh,
                min_chunk_frames=MIN_FRAMES_PER_CHUNK,
            )
            rows = read_metrics(arm_dir / "metrics.csv")
            columns = {k: np.array([r[k] for r in rows]) for k in rows[0]}
            results[arm] = summarize(columns, eval_updates)
            points = evaluation_points(columns["eval_return_mean"], eval_updates)
            frames = (points + 1) * config.train_frequency
            curves[arm] = (frames, np.cumsum(columns["eval_return_mean"][points]))
        elif arm == "prior":
            results[arm] = {**_policy_summary(prior.returns, evaluations), **prior.summary()}
        else:
            results[arm] = _policy_summary(random_returns(config), evaluations)
        if arm in ("prior", "random"):
            steps = np.arange(1, evaluations + 1)
            curves[arm] = (steps * config.eval_every, steps * results[arm]["mean_eval_return"])
        say(f"{arm}: cumulative evaluation return {results[arm]['cumulative_eval_return']:.1f}")

    (out_dir / "summary.json").write_text(json.dumps(results, indent=2))
    (out_dir / "summary.md").write_text(_markdown(config, results))
    _plot(out_dir, curves, f"LORO on {config.env} (prior {config.prior}, seed {config.seed})")
    return results
