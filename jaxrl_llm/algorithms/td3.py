"""TD3 (Fujimoto et al. 2018): twin critics, target policy smoothing, delayed updates.

`make_td3(config, actor=None, critic=None)` is the algorithm (see `training.algorithm`).
`collect` (shared with SAC, see `off_policy.make_off_policy_collect`) steps `num_envs`
environments with the deterministic actor plus Gaussian exploration noise (uniformly
random actions before `learning_starts` frames), stores the transitions and samples
`gradient_steps` batches; `learn` takes one critic step per batch and, on every
`policy_delay`-th critic step, one actor step and a Polyak update of both targets.
Actions live in the unit box `[-1, 1]^A` (noise scales too) and are mapped to the
environment's box when stepping it.

The critics follow the critic contract of `algorithms.sac`: every call gets per-row PRNG
keys (fresh for the target, online and actor passes), which MLP critics ignore and
ReaCritic (`config.critic='reacritic'`) draws its noise and dropout from. DDPG
(`algorithms.ddpg`) is this code run on a `DDPGConfig`: one critic, `policy_delay` 1, no
target smoothing.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxrl_llm import envs
from jaxrl_llm.algorithms.configs.ddpg import DDPGConfig
from jaxrl_llm.algorithms.configs.td3 import TD3Config
from jaxrl_llm.algorithms.off_policy import (
    OffPolicyCollectState,
    action_box,
    adam_step,
    critic_keys,
    learning_due,
    make_off_policy_collect,
    make_q_critic,
    max_episode_steps,
    polyak_update,
    row_normal,
    scale_action,
    steps_first,
)
from jaxrl_llm.algorithms.sac import critic_loss
from jaxrl_llm.models.continuous import DeterministicActor
from jaxrl_llm.rollout.evaluate import evaluate_policy
from jaxrl_llm.training import Algorithm, reduce_mean
from jaxrl_llm.training import make_train as make_train_from_algorithm
from jaxrl_llm.training.optimizers import clipped_adam
from jaxrl_llm.training.parallel import Mode

__all__ = [
    "TD3Config",
    "TD3TrainState",
    "critic_loss",
    "evaluate",
    "make_td3",
    "make_train",
    "polyak_update",
    "smoothed_target_action",
    "td3_actor_loss",
    "td3_target",
]


def smoothed_target_action(
    next_action: jax.Array, noise: jax.Array, policy_noise: float, noise_clip: float
) -> jax.Array:
    """Target policy smoothing (Fujimoto et al. 2018, eq. 14), in the unit box:

        a' = clip(mu'(s') + clip(policy_noise * eps, -noise_clip, noise_clip), -1, 1),  eps ~ N(0, I)

    Args:
      next_action: `mu'(s')` `[B, A]`; noise: standard normal `eps` `[B, A]`.
    """
    chex.assert_equal_shape([next_action, noise])
    smoothing = jnp.clip(policy_noise * noise, -noise_clip, noise_clip)
    return jnp.clip(next_action + smoothing, -1.0, 1.0)


def td3_target(reward: jax.Array, discount: jax.Array, next_q: jax.Array) -> jax.Array:
    """Clipped double-Q target `y = r + discount * min_k Qbar_k(s', a')` (eq. 10), with
    `discount = gamma * (1 - terminated)` and `a'` from `smoothed_target_action`.

    Args:
      reward, discount: `[B]`; next_q: `[K, B]`.
    Returns:
      `[B]`, without gradient.
    """
    chex.assert_rank([reward, discount, next_q], [1, 1, 2])
    return jax.lax.stop_gradient(reward + discount * next_q.min(0))


def td3_actor_loss(q_pi: jax.Array) -> jax.Array:
    """Deterministic policy gradient objective `-mean_b Q_1(s_b, mu(s_b))` (the first
    critic only, as in the paper). q_pi: `[K, B]`."""
    chex.assert_rank(q_pi, 2)
    return -q_pi[0].mean()


@struct.dataclass
class TD3TrainState:
    """`params = {"actor", "critic"}`, their targets `target_params`, one Adam state per
    part, critic steps taken (`step`) and `learn` calls made (`updates`)."""

    params: dict[str, Any]
    target_params: dict[str, Any]
    opt_state: dict[str, Any]
    step: jax.Array
    updates: jax.Array


TD3_METRICS = ("loss", "critic_loss", "actor_loss", "q_mean", "actor_updated")


def td3_gradient_step(
    state: TD3TrainState,
    batch,
    key: jax.Array,
    axis_name: str | None,
    *,
    actor,
    critic,
    txs,
    config: TD3Config | DDPGConfig,
) -> tuple[TD3TrainState, dict[str, jax.Array]]:
    """One critic step on a `[B, ...]` batch; on every `policy_delay`-th step (counting
    from 1, as SB3) also an actor step against the updated critics and a Polyak update
    of the target actor and critics. With `policy_noise == 0` (DDPG) the target action is
    `mu'(s')` itself. The target, online and actor passes of the critics each get fresh
    row keys."""
    params, targets = state.params, state.target_params
    smoothing_key, critic_key = jax.random.split(key)
    target_keys, q_keys, pi_q_keys = critic_keys(critic_key, batch.reward.shape[0], axis_name, 3)
    discount = config.gamma * (1.0 - batch.terminated.astype(jnp.float32))
    next_action = actor.apply(targets["actor"], batch.next_obs)
    if config.policy_noise > 0:
        noise = row_normal(smoothing_key, next_action.shape, axis_name)
        next_action = smoothed_target_action(next_action, noise, config.policy_noise, config.noise_clip)
    target = td3_target(
        batch.reward.astype(jnp.float32),
        discount,
        critic.apply(targets["critic"], batch.next_obs, next_action, target_keys),
    )

    def critic_objective(critic_params):
        q = critic.apply(critic_params, batch.obs, batch.action, q_keys)
        return critic_loss(q, target), q.mean()

    (c_loss, q_mean), grads = jax.value_and_grad(critic_objective, has_aux=True)(params["critic"])
    critic_params, critic_opt = adam_step(
        txs["critic"], params["critic"], grads, state.opt_state["critic"], axis_name
    )
    step = state.step + 1

    def actor_objective(actor_params):
        action = actor.apply(actor_params, batch.obs)
        return td3_actor_loss(critic.apply(critic_params, batch.obs, action, pi_q_keys))

    def delayed_update():
        a_loss, grads = jax.value_and_grad(actor_objective)(params["actor"])
        actor_params, actor_opt = adam_step(
            txs["actor"], params["actor"], grads, state.opt_state["actor"], axis_name
        )
        new_targets = polyak_update({"actor": actor_params, "critic": critic_params}, targets, config.tau)
        return actor_params, actor_opt, new_targets, reduce_mean(a_loss, axis_name)

    def no_update():
        return params["actor"], state.opt_state["actor"], targets, jnp.zeros((), jnp.float32)

    actor_due = step % config.policy_delay == 0
    actor_params, actor_opt, targets, a_loss = jax.lax.cond(actor_due, delayed_update, no_update)
    new_state = TD3TrainState(
        {"actor": actor_params, "critic": critic_params},
        targets,
        {"actor": actor_opt, "critic": critic_opt},
        step,
        state.updates,
    )
    c_loss, q_mean = reduce_mean((c_loss, q_mean), axis_name)
    metrics = {
        "loss": c_loss + a_loss,
        "critic_loss": c_loss,
        "actor_loss": a_loss,
        "q_mean": q_mean,
        "actor_updated": actor_due.astype(jnp.float32),
    }
    return new_state, metrics


def td3_learn(
    state: TD3TrainState, batch, key: jax.Array, axis_name: str | None = None, **kwargs
) -> tuple[TD3TrainState, dict[str, jax.Array]]:
    """`gradient_steps` TD3 steps over a `[B, gradient_steps, ...]` batch (scanned over its
    second axis); skipped (metrics 0) until more than `learning_starts` frames exist.
    `actor_loss` averages over the steps that updated the actor; `actor_updated` is the
    fraction of steps that did."""
    config = kwargs["config"]
    step_fn = partial(td3_gradient_step, axis_name=axis_name, **kwargs)

    def train(state):
        keys = jax.random.split(key, config.gradient_steps)
        state, m = jax.lax.scan(lambda s, xs: step_fn(s, *xs), state, (steps_first(batch), keys))
        updated = m["actor_updated"].sum()
        actor_loss = jnp.where(updated > 0, m["actor_loss"].sum() / jnp.maximum(updated, 1.0), 0.0)
        metrics = {name: v.mean() for name, v in m.items()}
        metrics["actor_loss"] = actor_loss
        metrics["loss"] = metrics["critic_loss"] + actor_loss
        return state, metrics

    def skip(state):
        return state, {name: jnp.zeros((), jnp.float32) for name in TD3_METRICS}

    state, metrics = jax.lax.cond(learning_due(state.updates, config), train, skip, state)
    return state.replace(updates=state.updates + 1), metrics


def td3_acting(actor, env, env_params, exploration_noise: float):
    """`(explore, random_action, greedy)` of TD3 (see `off_policy.make_off_policy_collect`):
    `mu(s)` plus clipped Gaussian noise, a uniform action, and `mu(s)`."""
    low, high = action_box(env, env_params)

    def explore(params, obs, key):
        mu = actor.apply(params["actor"], obs)
        unit = jnp.clip(mu + exploration_noise * jax.random.normal(key, mu.shape), -1.0, 1.0)
        return scale_action(unit, low, high), unit

    def random_action(key, n):
        unit = jax.random.uniform(key, (n, *low.shape), minval=-1.0, maxval=1.0)
        return scale_action(unit, low, high), unit

    def greedy(params, obs):
        return scale_action(actor.apply(params["actor"], obs), low, high)

    return explore, random_action, greedy


def _env_and_actor(config: TD3Config | DDPGConfig, actor: Any):
    """The environment, its action box and `actor` (default: the config's MLP)."""
    env, env_params = envs.make_configured(config.env, config.env_kwargs, config.max_episode_steps)
    box = action_box(env, env_params)
    if box is None:
        name = type(config).__name__
        raise ValueError(
            f"{name}.env={config.env!r} is invalid: {name.removesuffix('Config')} needs a continuous "
            "(Box) action space."
        )
    action_dim = int(np.prod(box[0].shape))
    actor = actor or DeterministicActor(action_dim, tuple(config.hidden_sizes), config.activation)
    return env, env_params, box, actor


def evaluate(
    config: TD3Config | DDPGConfig, params, key: jax.Array, num_episodes: int | None = None, actor: Any = None
):
    """Returns `[num_episodes]` (default `config.eval_episodes`) of the deterministic policy
    of `params` (`train_state.params`) over whole episodes of `config`'s environment."""
    env, env_params, _, actor = _env_and_actor(config, actor)
    greedy = td3_acting(actor, env, env_params, 0.0)[2]
    return evaluate_policy(
        key,
        env,
        env_params,
        lambda p, obs, _key: greedy(p, obs),
        params,
        num_episodes or config.eval_episodes,
        max_episode_steps(env_params),
    )


def make_td3(config: TD3Config | DDPGConfig, actor: Any = None, critic: Any = None) -> Algorithm:
    """TD3 as an `Algorithm` (see the module docstring); DDPG on a `DDPGConfig`.

    `actor` and `critic` are any `init`/`apply` pairs (Flax modules qualify):
    `actor.apply(params, obs[B, ...]) -> action[B, A]` in [-1, 1] and
    `critic.apply(params, obs, action[B, A], keys[B]) -> q[K, B]` (`keys`: see the critic
    contract in `algorithms.sac`). Defaults: a `DeterministicActor` MLP and the critics of
    `config.critic` (`QEnsemble` MLPs or a `ReaCriticEnsemble`).

    Metrics per update: `loss` (critic_loss + actor_loss), `critic_loss`, `actor_loss`
    (mean over this update's actor steps), `q_mean`, `actor_updated` (fraction of this
    update's critic steps that also moved the actor), all 0 before learning starts; and
    the collect metrics of SAC: `episode_return_mean`, `episode_return_last100` (the
    progress metric), `episodes`, `eval_return_mean` (see `sac.make_sac`).
    """
    env, env_params, (low, _), actor = _env_and_actor(config, actor)
    critic = critic or make_q_critic(config)
    txs = {
        "actor": clipped_adam(config.learning_rate, config.max_grad_norm),
        "critic": clipped_adam(config.learning_rate, config.max_grad_norm),
    }
    example_obs = jnp.asarray(env.observation_space(env_params).sample(jax.random.PRNGKey(0)))
    example_action = jnp.zeros(low.shape, jnp.float32)

    explore, random_action, greedy = td3_acting(actor, env, env_params, config.exploration_noise)

    collect_init, collect = make_off_policy_collect(
        config, env, env_params, explore, random_action, greedy, example_obs, example_action
    )

    def init(key: jax.Array) -> tuple[TD3TrainState, OffPolicyCollectState]:
        actor_key, critic_key, env_key = jax.random.split(key, 3)
        obs = example_obs[None]
        keys = jax.random.split(critic_key, 1)  # the critic's row keys (only shapes matter here)
        params = {
            "actor": actor.init(actor_key, obs),
            "critic": critic.init(critic_key, obs, example_action[None], keys),
        }
        opt_state = {name: tx.init(params[name]) for name, tx in txs.items()}
        zero = jnp.zeros((), jnp.int32)
        return TD3TrainState(params, params, opt_state, zero, zero), collect_init(env_key)

    learn = partial(td3_learn, actor=actor, critic=critic, txs=txs, config=config)
    return Algorithm(
        init,
        collect,
        learn,
        config.num_updates,
        config.frames_per_update,
        progress_metric="episode_return_last100",
        raw_progress_metric="episode_return_mean",
    )


def make_train(config: TD3Config, parallel: Mode = "single"):
    """`train(key) -> (final LoopState, metrics [num_updates])`, jittable and vmappable."""
    return make_train_from_algorithm(make_td3(config), parallel)
