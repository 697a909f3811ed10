"""A prior policy's episodes in a JAX environment, stored as off-policy transitions (LORO's
data collection, arXiv 2505.10861 §7.1).

A prior is any callable

    act(obs[N, ...] numpy, key, active[N] bool) -> PriorDecision(action[N, ...], parsed[N], clipped[N])

batched over `N` environments played side by side (`active[i]` False: environment `i` has
finished its episode; its row is ignored). Three are built here:

- `lm_prior(...)`: a language model. Each step the prompt is rebuilt from scratch on the host
  (system prompt + the observation's sentence, `envs.describe_state`), all `N` environments
  are sampled in one `rollout.generate` call (finished ones inactive, the shared system prompt
  prefilled once as a KV-cache prefix), and each reply is parsed into an action; a reply that
  names none has `parsed=False`.
- `heuristic_prior(interface)`: the environment's scripted policy (`TextInterface.heuristic`),
  jitted; every decision parses.
- `random_prior(env, env_params)`: uniform actions;
- `with_epsilon(act, epsilon, env, env_params)`: any prior, each decision replaced by a
  uniformly random action with probability `epsilon` (a deterministic heuristic's episodes
  hold one action per state; a model's sampling temperature gives it variety).

`collect_episodes(key, env, env_params, act, num_episodes, num_envs)` plays `num_episodes`
whole episodes in rounds of `num_envs` environments and returns them as `PriorEpisodes`:
transitions `(s_t, a_t, r_t, s_{t+1}, terminated_t, truncated_t)` in episode order, where
`s_{t+1}` is the observation that followed `a_t` (before any reset) and `terminated` and
`truncated` are kept apart, so a step cut by the time limit still bootstraps. The official
code did neither: it stored `s_{t+1}` in place of `s_t` (appending the observation after
`env.step`, dropping `s_0`) and treated the step limit as terminal (§7.4.1, §7.4.6). A decision
that did not parse is replaced by a uniformly random action (the official code used a fixed
default action) and counted in `parse_failures`; the stored action is the one taken.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.envs.describe_state import TextInterface
from jaxrl_llm.envs.registry import has_success
from jaxrl_llm.rollout.replay import Transition
from jaxrl_llm.rollout.sampling import generate

__all__ = [
    "PriorAct",
    "PriorDecision",
    "PriorEpisodes",
    "collect_episodes",
    "heuristic_prior",
    "lm_prior",
    "load_episodes",
    "random_prior",
    "with_epsilon",
    "save_episodes",
]


@dataclass(frozen=True)
class PriorDecision:
    """One step's decisions for `N` environments (numpy): `action[N, ...]` (anything where
    `parsed` is False), `parsed[N]`, `clipped[N]` (a continuous action was clipped into the
    box), and the model's `replies` (None for a scripted prior)."""

    action: np.ndarray
    parsed: np.ndarray
    clipped: np.ndarray
    replies: Sequence[str] | None = None


PriorAct = Callable[[np.ndarray, jax.Array, np.ndarray], PriorDecision]


@dataclass(frozen=True)
class PriorEpisodes:
    """A prior's episodes (numpy arrays).

    `transitions`: `Transition` with leaves `[n, ...]`, the steps of episode 0 in time order,
    then episode 1, ...; `episode[n]` is each step's episode index. `returns`, `lengths`,
    `success` are `[num_episodes]`. `decisions` counts the prior's decisions (= n),
    `parse_failures` those replaced by a random action, `clipped` the continuous actions
    clipped into the box. `replies` keeps the model's first replies (for reading).
    """

    transitions: Transition
    episode: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    success: np.ndarray
    decisions: int
    parse_failures: int
    clipped: int
    replies: tuple[str, ...] = field(default=())

    @property
    def num_episodes(self) -> int:
        return len(self.returns)

    @property
    def parse_failure_rate(self) -> float:
        return self.parse_failures / max(self.decisions, 1)

    def first(self, num_episodes: int) -> Transition:
        """The transitions of episodes `0 .. num_episodes - 1` (leaves `[m, ...]`)."""
        if not 1 <= num_episodes <= self.num_episodes:
            raise ValueError(
                f"first({num_episodes}): there are {self.num_episodes} episodes; ask for 1 to "
                f"{self.num_episodes}."
            )
        keep = self.episode < num_episodes
        return jax.tree.map(lambda x: x[keep], self.transitions)

    def summary(self) -> dict[str, float]:
        """Mean/min/max return and length, success rate and parse statistics (JSON-ready)."""
        return {
            "episodes": self.num_episodes,
            "return_mean": float(self.returns.mean()),
            "return_min": float(self.returns.min()),
            "return_max": float(self.returns.max()),
            "length_mean": float(self.lengths.mean()),
            "success_rate": float(self.success.mean()),
            "decisions": self.decisions,
            "parse_failures": self.parse_failures,
            "parse_failure_rate": self.parse_failure_rate,
            "clipped": self.clipped,
        }


# ----------------------------------------------------------------------------- collection


def _step_function(env, env_params):
    reports_success = has_success(env)

    @jax.jit
    def step(key, state, action):
        keys = jax.random.split(key, action.shape[0])
        obs, state, reward, terminated, truncated, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            keys, state, action, env_params
        )
        success = info["success"] if reports_success else jnp.zeros_like(terminated)
        return (
            obs,
            state,
            reward.astype(jnp.float32),
            terminated,
            truncated,
            info["final_observation"],
            success,
        )

    return step


def _random_actions(env, env_params):
    space = env.action_space(env_params)

    @partial(jax.jit, static_argnums=1)
    def sample(key, num):
        return jax.vmap(space.sample)(jax.random.split(key, num))

    return lambda key, num: np.asarray(sample(key, num))


def collect_episodes(
    key: jax.Array,
    env,
    env_params,
    act: PriorAct,
    num_episodes: int,
    num_envs: int | None = None,
    keep_replies: int = 32,
) -> PriorEpisodes:
    """`num_episodes` whole episodes of `act` (see the module docstring).

    Episodes run in rounds of `num_envs` environments (default: all at once); a round ends
    when each of its episodes has ended (terminated, or truncated at the environment's step
    limit). Episode `r * num_envs + i` is environment `i` of round `r`.
    """
    if num_episodes < 1:
        raise ValueError(f"collect_episodes: num_episodes={num_episodes} must be >= 1.")
    num_envs = min(num_envs or num_episodes, num_episodes)
    step = _step_function(env, env_params)
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    random_actions = _random_actions(env, env_params)
    limit = int(env_params.max_steps_in_episode)
    pieces: list[tuple[int, dict[str, np.ndarray]]] = []
    returns, lengths, successes = [], [], []
    decisions = failures = clipped = 0
    replies: list[str] = []
    for first_episode in range(0, num_episodes, num_envs):
        key, reset_key = jax.random.split(key)
        obs, state = reset(jax.random.split(reset_key, num_envs), env_params)
        alive = np.arange(num_envs) < num_episodes - first_episode
        members = alive.copy()
        steps: list[dict[str, np.ndarray]] = []
        for _ in range(limit):
            if not alive.any():
                break
            key, act_key, fallback_key, step_key = jax.random.split(key, 4)
            obs_np = jax.tree.map(np.asarray, obs)
            decision = act(obs_np, act_key, alive.copy())
            parsed = np.asarray(decision.parsed, bool)
            action = np.where(
                parsed.reshape((-1,) + (1,) * (np.ndim(decision.action) - 1)),
                decision.action,
                random_actions(fallback_key, num_envs),
            )
            decisions += int(alive.sum())
            failures += int((alive & ~parsed).sum())
            clipped += int((alive & np.asarray(decision.clipped, bool)).sum())
            if decision.replies is not None and len(replies) < keep_replies:
                replies += [r for r, a in zip(decision.replies, alive) if a][: keep_replies - len(replies)]
            action = jnp.asarray(action, env.action_space(env_params).dtype)
            obs, state, reward, terminated, truncated, final_obs, success = jax.device_get(
                step(step_key, state, action)
            )
            steps.append(
                dict(
                    obs=obs_np,
                    action=np.asarray(action),
                    reward=reward,
                    next_obs=final_obs,
                    terminated=terminated,
                    truncated=truncated,
                    success=success,
                    alive=alive.copy(),
                )
            )
            alive &= ~(terminated | truncated)
        if alive.any():  # cannot happen with gymnax's truncation at max_steps_in_episode
            raise RuntimeError("collect_episodes: an episode outlived the environment's step limit.")
        stacked = {k: np.stack([s[k] for s in steps]) for k in steps[0]}  # [T, N, ...]
        for i in np.flatnonzero(members):
            rows = stacked["alive"][:, i]
            episode = {k: v[rows, i] for k, v in stacked.items() if k != "alive"}
            pieces.append((first_episode + int(i), episode))
            returns.append(episode["reward"].sum())
            lengths.append(int(rows.sum()))
            successes.append(bool(episode["success"].any()))
    pieces.sort(key=lambda piece: piece[0])
    cat = lambda name: np.concatenate([p[name] for _, p in pieces])
    transitions = Transition(
        obs=cat("obs"),
        action=cat("action"),
        reward=cat("reward").astype(np.float32),
        next_obs=cat("next_obs"),
        terminated=cat("terminated").astype(bool),
        truncated=cat("truncated").astype(bool),
    )
    episode_index = np.concatenate([np.full(len(p["reward"]), i, np.int32) for i, p in pieces])
    return PriorEpisodes(
        transitions,
        episode_index,
        np.asarray(returns, np.float32),
        np.asarray(lengths, np.int32),
        np.asarray(successes, bool),
        decisions,
        failures,
        clipped,
        tuple(replies),
    )


def save_episodes(path: str | Path, episodes: PriorEpisodes) -> None:
    """Writes `episodes` to `path` (.npz; the replies and counts in its `meta` entry)."""
    t = episodes.transitions
    meta = {
        "decisions": episodes.decisions,
        "parse_failures": episodes.parse_failures,
        "clipped": episodes.clipped,
        "replies": list(episodes.replies),
    }
    with open(path, "wb") as f:
        np.savez(
            f,
            obs=t.obs,
            action=t.action,
            reward=t.reward,
            next_obs=t.next_obs,
            terminated=t.terminated,
            truncated=t.truncated,
            episode=episodes.episode,
            returns=episodes.returns,
            lengths=episodes.lengths,
            success=episodes.success,
            meta=np.asarray(json.dumps(meta)),
        )


def load_episodes(path: str | Path) -> PriorEpisodes:
    """The `PriorEpisodes` `save_episodes` wrote to `path`."""
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        transitions = Transition(
            *(data[name] for name in ("obs", "action", "reward", "next_obs", "terminated", "truncated"))
        )
        return PriorEpisodes(
            transitions,
            data["episode"],
            data["returns"],
            data["lengths"],
            data["success"],
            meta["decisions"],
            meta["parse_failures"],
            meta["clipped"],
            tuple(meta["replies"]),
        )


# ----------------------------------------------------------------------------- priors


def heuristic_prior(interface: TextInterface) -> PriorAct:
    """The environment's scripted policy (`interface.heuristic`), jitted; always parsed."""
    policy = jax.jit(interface.heuristic)

    def act(obs: np.ndarray, key: jax.Array, active: np.ndarray) -> PriorDecision:
        action = np.asarray(policy(jnp.asarray(obs), key))
        ones = np.ones(len(active), bool)
        return PriorDecision(action, ones, ~ones)

    return act


def with_epsilon(act: PriorAct, epsilon: float, env, env_params) -> PriorAct:
    """`act` whose decisions are replaced by uniformly random actions with probability
    `epsilon` each (an exploring prior, the scripted counterpart of a model's sampling
    temperature: a deterministic policy's data holds one action per state, which leaves
    Q-learning nothing to compare it with)."""
    if epsilon == 0.0:
        return act
    sample = _random_actions(env, env_params)

    def noisy(obs: np.ndarray, key: jax.Array, active: np.ndarray) -> PriorDecision:
        act_key, coin_key, action_key = jax.random.split(key, 3)
        decision = act(obs, act_key, active)
        explore = np.asarray(jax.random.uniform(coin_key, (len(active),))) < epsilon
        action = np.where(
            explore.reshape((-1,) + (1,) * (np.ndim(decision.action) - 1)),
            sample(action_key, len(active)),
            decision.action,
        )
        # `parsed` stays the model's: a failed parse is still counted (its row gets a random
        # action either way)
        return dataclasses.replace(decision, action=action, clipped=decision.clipped & ~explore)

    return noisy


def random_prior(env, env_params) -> PriorAct:
    """Uniformly random actions (always parsed)."""
    sample = _random_actions(env, env_params)

    def act(obs: np.ndarray, key: jax.Array, active: np.ndarray) -> PriorDecision:
        ones = np.ones(len(active), bool)
        return PriorDecision(sample(key, len(active)), ones, ~ones)

    return act


def _chat_pieces(tokenizer, system: str) -> tuple[str, str]:
    """The chat text around one user message: (everything before it, everything after it)."""
    marker = "\x00USER\x00"
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": marker}],
        add_generation_prompt=True,
        tokenize=False,
    )
    head, tail = text.split(marker)
    return head, tail


def lm_prior(
    interface: TextInterface,
    params: Any,
    model_config: Any,
    tokenizer: Any,
    action_shape: tuple[int, ...] = (),
    *,
    max_new_tokens: int = 16,
    temperature: float = 0.9,
    top_p: float = 0.6,
    think: bool = False,
    pad_to_multiple_of: int = 32,
) -> PriorAct:
    """A language model as the prior (see the module docstring).

    Args:
      interface: the environment's prompt pieces and parser.
      params, model_config, tokenizer: the model (`models.load`).
      action_shape: one action's shape (`()` discrete, `(1,)` Pendulum).
      max_new_tokens, temperature, top_p: sampling (the paper: temperature 0.9, top-p 0.6).
      think: ask for step-by-step reasoning first (needs far more new tokens).
      pad_to_multiple_of: prompts are left-padded to a multiple of this many tokens, so
        steps with slightly different sentence lengths reuse one compiled sampler.
    """
    from jaxrl_llm.models.llama import prefix_cache
    from jaxrl_llm.models.tokenizer import stop_token_ids

    head, tail = _chat_pieces(tokenizer, interface.system)
    head_ids = tokenizer.encode(head, add_special_tokens=False)
    prefix = prefix_cache(params, model_config, head_ids) if head_ids else None
    stop = stop_token_ids(tokenizer)
    pad = int(tokenizer.pad_token_id or 0)

    def act(obs: np.ndarray, key: jax.Array, active: np.ndarray) -> PriorDecision:
        rows = len(active)
        encoded = [
            tokenizer.encode(interface.user(obs[i], think) + tail, add_special_tokens=False)
            for i in range(rows)
        ]
        width = -(-max(map(len, encoded)) // pad_to_multiple_of) * pad_to_multiple_of
        tokens = np.full((rows, width), pad, np.int32)
        mask = np.zeros((rows, width), bool)
        for i, ids in enumerate(encoded):
            tokens[i, width - len(ids) :], mask[i, width - len(ids) :] = ids, True
        out = generate(
            params,
            model_config,
            tokens,
            mask,
            key,
            max_new_tokens,
            temperature,
            top_p,
            stop_tokens=stop,
            pad_token=pad,
            active=jnp.asarray(active),
            prefix=prefix,
        )
        generated, kept = np.asarray(out.tokens), np.asarray(out.mask)
        replies = [
            tokenizer.decode(
                [t for t, k in zip(generated[i], kept[i]) if k and t not in stop], skip_special_tokens=True
            )
            for i in range(rows)
        ]
        parsed = [interface.parse(reply, think) for reply in replies]
        ok = np.array([p.action is not None for p in parsed])
        action = np.array([p.action if p.action is not None else 0 for p in parsed])
        action = action.astype(np.int32 if not action_shape else np.float32).reshape((rows, *action_shape))
        clipped = np.array([p.clipped for p in parsed])
        return PriorDecision(action, ok, clipped, replies)

    return act
