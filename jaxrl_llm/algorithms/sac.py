"""Soft actor-critic, continuous (Haarnoja et al. 2018) and discrete (Christodoulou 2019).

`make_sac(config, actor=None, critic=None)` is the algorithm (see `training.algorithm`):
`collect` steps `num_envs` gymnax environments `train_frequency` times with the current
policy (uniformly random actions before `learning_starts` frames), adds the transitions
to a flashbax replay buffer and samples `gradient_steps` batches; `learn` takes one
critic, actor and temperature step per batch. The whole run compiles into one function
(`make_train(config)(key)`), vmappable over seeds.

The losses are pure functions of arrays (they never see a network) and carry their
equations; the off-policy plumbing shared with TD3 (replay batches, action scaling,
Polyak averaging, exploration and greedy evaluation) lives here too.

Actions are kept in the unit box `[-1, 1]^A` everywhere (buffer, networks, losses) and
mapped to the environment's box only when stepping it (`scale_action`).

The critic contract (SAC, TD3, DDPG; PPO's value head follows the same rule): every
critic call takes PRNG keys, one per batch row,

    critic.init(key, obs, action, keys) / critic.apply(params, obs[B], action[B, A], keys[B]) -> q[K, B]
    critic.init(key, obs, keys)         / critic.apply(params, obs[B], keys[B])              -> q[K, B, A]

(the second for discrete actions). Deterministic critics (the MLPs `QEnsemble`,
`DiscreteQEnsemble`) ignore `keys`; stochastic ones draw their noise and dropout from
them, e.g. ReaCritic (`models.reacritic`, `config.critic='reacritic'`), whose Gaussian
input noise is on in every pass, the target and the actor's Q evaluation included.
Critics used to be `apply(params, obs, action)` with no randomness, which left a Flax
critic with dropout or noise no way to get a key inside a jitted step. Each gradient
step splits one critic key off its step key and from it a key per pass (target, online,
actor: `off_policy.critic_keys`), so every pass draws fresh noise, and the same seed gives
the same numbers. A row's key is `fold_in(pass_key, global_row_index)` (`row_keys`), so a
row's noise does not depend on how the batch is split over devices and the data-parallel
modes still equal the single-device one. Keys rather than Flax `rngs=` because the keys
are per row; a deterministic critic costs nothing (the unused keys are dead code to XLA),
and SAC's other random draws are unchanged (the critic key is the third of
`split(step_key, 3)`, whose first two are `split(step_key)`'s), so MLP runs give the same
numbers as before.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxrl_llm import envs
from jaxrl_llm.algorithms.configs.sac import SACConfig, cartpole_config
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
from jaxrl_llm.models.continuous import LogitsActor, TanhGaussian, TanhGaussianActor
from jaxrl_llm.rollout.evaluate import evaluate_policy
from jaxrl_llm.training import Algorithm, reduce_mean
from jaxrl_llm.training import make_train as make_train_from_algorithm
from jaxrl_llm.training.optimizers import clipped_adam
from jaxrl_llm.training.parallel import Mode

__all__ = [
    "SACConfig",
    "SACTrainState",
    "cartpole_config",
    "critic_loss",
    "discrete_sac_actor_loss",
    "discrete_soft_q_target",
    "evaluate",
    "make_sac",
    "make_train",
    "polyak_update",
    "sac_actor_loss",
    "soft_q_target",
    "tanh_gaussian_log_prob",
    "temperature_loss",
]


# --------------------------------------------------------------------------- losses


def tanh_gaussian_log_prob(u: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Log-density of `a = tanh(u)`, `u ~ N(mean, exp(log_std)^2)`, from the pre-squash `u`.

        log pi(a|s) = sum_i [ log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2) ]

    (Haarnoja et al. 2018, eq. 21; the correction computed as
    `2 (log 2 - u - softplus(-2u))`, exact and stable for large |u|.)

    Args:
      u, mean, log_std: `[..., A]`.
    Returns:
      `[...]`.
    """
    chex.assert_equal_shape([u, mean, log_std])
    return TanhGaussian(mean, log_std).log_prob_pre_tanh(u)


def soft_q_target(
    reward: jax.Array, discount: jax.Array, next_q: jax.Array, next_log_prob: jax.Array, alpha: jax.Array
) -> jax.Array:
    """SAC's critic target with the entropy term and clipped double-Q:

        y = r + discount * (min_k Qbar_k(s', a') - alpha * log pi(a'|s')),   a' ~ pi(.|s')

    `discount` is `gamma * (1 - terminated)`: a truncated step still bootstraps.

    Args:
      reward, discount, next_log_prob: `[B]`; next_q: `[K, B]` target critics at `(s', a')`.
    Returns:
      `[B]`, without gradient.
    """
    chex.assert_rank([reward, discount, next_q, next_log_prob], [1, 1, 2, 1])
    soft_value = next_q.min(0) - alpha * next_log_prob
    return jax.lax.stop_gradient(reward + discount * soft_value)


def discrete_soft_q_target(
    reward: jax.Array,
    discount: jax.Array,
    next_q: jax.Array,
    next_log_probs: jax.Array,
    alpha: jax.Array,
) -> jax.Array:
    """Discrete SAC's target, an exact expectation over the next action (Christodoulou
    2019, eq. 10 with clipped double-Q):

        y = r + discount * sum_a pi(a|s') (min_k Qbar_k(s', a) - alpha * log pi(a|s'))

    Args:
      reward, discount: `[B]`; next_q: `[K, B, A]`; next_log_probs: `[B, A]`.
    Returns:
      `[B]`, without gradient.
    """
    chex.assert_rank([reward, discount, next_q, next_log_probs], [1, 1, 3, 2])
    probs = jnp.exp(next_log_probs)
    soft_value = (probs * (next_q.min(0) - alpha * next_log_probs)).sum(-1)
    return jax.lax.stop_gradient(reward + discount * soft_value)


def critic_loss(q: jax.Array, target: jax.Array) -> jax.Array:
    """`0.5 * sum_k mean_b (Q_k(s_b, a_b) - y_b)^2` (SB3's scale). q: `[K, B]`, target: `[B]`."""
    chex.assert_rank([q, target], [2, 1])
    return 0.5 * ((q - target[None]) ** 2).mean(1).sum()


def sac_actor_loss(q_pi: jax.Array, log_prob: jax.Array, alpha: jax.Array) -> jax.Array:
    """`mean_b [alpha * log pi(a_b|s_b) - min_k Q_k(s_b, a_b)]`, `a_b ~ pi(.|s_b)`
    reparameterised (Haarnoja et al. 2018, eq. 12). q_pi: `[K, B]`, log_prob: `[B]`."""
    chex.assert_rank([q_pi, log_prob], [2, 1])
    return (alpha * log_prob - q_pi.min(0)).mean()


def discrete_sac_actor_loss(q: jax.Array, log_probs: jax.Array, alpha: jax.Array) -> jax.Array:
    """`mean_b sum_a pi(a|s_b) [alpha * log pi(a|s_b) - min_k Q_k(s_b, a)]`, the
    expectation taken exactly (Christodoulou 2019, eq. 12); Q gets no gradient.
    q: `[K, B, A]`, log_probs: `[B, A]`."""
    chex.assert_rank([q, log_probs], [3, 2])
    q_min = jax.lax.stop_gradient(q.min(0))
    return (jnp.exp(log_probs) * (alpha * log_probs - q_min)).sum(-1).mean()


def temperature_loss(log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float) -> jax.Array:
    """`-mean_b log(alpha) * (log pi(a_b|s_b) + target_entropy)`, log pi without gradient.

    Its gradient raises alpha while the policy's entropy `-log pi` is below the target
    (Haarnoja et al. 2018b, eq. 18, in log alpha as SB3 does). For discrete SAC pass the
    exact `sum_a pi log pi = -H(pi(.|s))` as `log_prob` (Christodoulou 2019, eq. 11).
    """
    chex.assert_rank([log_alpha, log_prob], [0, 1])
    return -(log_alpha * jax.lax.stop_gradient(log_prob + target_entropy)).mean()


# --------------------------------------------------------------------------- SAC


@struct.dataclass
class SACTrainState:
    """`params = {"actor", "critic", "log_alpha"}` (what `collect` acts with), the target
    critics, one Adam state per part, gradient steps taken and `learn` calls made."""

    params: dict[str, Any]
    target_critic: Any
    opt_state: dict[str, Any]
    step: jax.Array
    updates: jax.Array


def is_discrete(config: SACConfig, env, env_params) -> bool:
    has_n = hasattr(env.action_space(env_params), "n")
    if config.discrete is None:
        return has_n
    if config.discrete != has_n:
        kind = "discrete" if has_n else "continuous"
        raise ValueError(
            f"SACConfig.discrete={config.discrete} is invalid: {config.env} has a {kind} action space."
        )
    return has_n


def default_networks(config: SACConfig, env, env_params):
    """The MLP actor and the `config.critic` critics of `config` for `env`'s action space."""
    space = env.action_space(env_params)
    hidden, act = tuple(config.hidden_sizes), config.activation
    if hasattr(space, "n"):
        n = int(space.n)
        return LogitsActor(n, hidden, act), make_q_critic(config, n)
    dim = int(np.prod(space.shape or (1,)))
    return TanhGaussianActor(dim, hidden, act), make_q_critic(config)


def target_entropy(config: SACConfig, env, env_params) -> float:
    """`config.target_entropy`, else -|A| (continuous) or `target_entropy_scale * log|A|`."""
    if config.target_entropy is not None:
        return float(config.target_entropy)
    space = env.action_space(env_params)
    if hasattr(space, "n"):
        return config.target_entropy_scale * math.log(int(space.n))
    return -float(np.prod(space.shape or (1,)))


def sac_acting(actor, env, env_params, discrete: bool):
    """`(explore, random_action, greedy)` of SAC (see `make_off_policy_collect`): a policy
    sample, a uniform action, and the mode (`argmax` logits or `tanh(mean)`), each
    returning environment actions (and, for the first two, the unit-box ones to store)."""
    if discrete:
        num_actions = int(env.action_space(env_params).n)

        def explore(params, obs, key):
            action = jax.random.categorical(key, actor.apply(params["actor"], obs))
            return action, action

        def random_action(key, n):
            action = jax.random.randint(key, (n,), 0, num_actions)
            return action, action

        def greedy(params, obs):
            return jnp.argmax(actor.apply(params["actor"], obs), -1)

        return explore, random_action, greedy

    low, high = action_box(env, env_params)

    def explore(params, obs, key):
        dist = actor.apply(params["actor"], obs)
        unit, _ = _squash(dist, jax.random.normal(key, dist.mean.shape))
        return scale_action(unit, low, high), unit

    def random_action(key, n):
        unit = jax.random.uniform(key, (n, *low.shape), minval=-1.0, maxval=1.0)
        return scale_action(unit, low, high), unit

    def greedy(params, obs):
        return scale_action(jnp.tanh(actor.apply(params["actor"], obs).mean), low, high)

    return explore, random_action, greedy


def evaluate(config: SACConfig, params, key: jax.Array, num_episodes: int | None = None, actor: Any = None):
    """Returns `[num_episodes]` (default `config.eval_episodes`) of the greedy policy of
    `params` (`train_state.params`) over whole episodes of `config`'s environment."""
    env, env_params = envs.make_configured(config.env, config.env_kwargs, config.max_episode_steps)
    discrete = is_discrete(config, env, env_params)
    actor = actor or default_networks(config, env, env_params)[0]
    greedy = sac_acting(actor, env, env_params, discrete)[2]
    return evaluate_policy(
        key,
        env,
        env_params,
        lambda p, obs, _key: greedy(p, obs),
        params,
        num_episodes or config.eval_episodes,
        max_episode_steps(env_params),
    )


def make_sac(config: SACConfig, actor: Any = None, critic: Any = None) -> Algorithm:
    """SAC as an `Algorithm` (see the module docstring).

    `actor` and `critic` are any `init`/`apply` pairs (Flax modules qualify):
    continuous actions: `actor.apply(params, obs[B, ...])` returns an object with
    pre-squash `mean` and `log_std` `[B, A]` (a `TanhGaussian`) and
    `critic.apply(params, obs, action[B, A], keys[B]) -> q[K, B]`; discrete actions:
    `actor.apply(params, obs) -> logits[B, A]` and
    `critic.apply(params, obs, keys[B]) -> q[K, B, A]` (`keys`: see the critic contract in
    the module docstring). Defaults: `TanhGaussianActor`/`LogitsActor` MLPs and the critics
    of `config.critic` (`QEnsemble`/`DiscreteQEnsemble` MLPs or ReaCritic ensembles).

    Metrics per update: `loss` (critic + actor + temperature losses), `critic_loss`,
    `actor_loss`, `alpha_loss`, `alpha`, `entropy` (-mean log pi of the batch), `q_mean`
    (all 0 before learning starts); `episode_return_mean` (episodes ended in this update,
    NaN if none), `episode_return_last100` (the progress metric), `episodes`; and, when
    `eval_interval > 0`, `eval_return_mean`: the greedy policy's mean return over
    `eval_episodes` whole episodes on updates that cross a multiple of `eval_interval`
    frames, NaN on the others. (Under `jax.vmap` over seeds the evaluation's `lax.cond`
    runs on every update: set `eval_interval=0` there, or evaluate afterwards with
    `evaluate`.)
    """
    env, env_params = envs.make_configured(config.env, config.env_kwargs, config.max_episode_steps)
    discrete = is_discrete(config, env, env_params)
    default_actor, default_critic = default_networks(config, env, env_params)
    actor, critic = actor or default_actor, critic or default_critic
    entropy_target = target_entropy(config, env, env_params)
    txs = {
        "actor": clipped_adam(config.learning_rate, config.max_grad_norm),
        "critic": clipped_adam(config.learning_rate, config.max_grad_norm),
        "log_alpha": optax.adam(config.learning_rate),
    }
    example_obs = jnp.asarray(env.observation_space(env_params).sample(jax.random.PRNGKey(0)))
    example_action = jnp.zeros((), jnp.int32) if discrete else jnp.zeros(action_box(env, env_params)[0].shape)
    explore, random_action, greedy = sac_acting(actor, env, env_params, discrete)
    collect_init, collect = make_off_policy_collect(
        config, env, env_params, explore, random_action, greedy, example_obs, example_action
    )

    def init(key: jax.Array) -> tuple[SACTrainState, OffPolicyCollectState]:
        actor_key, critic_key, env_key = jax.random.split(key, 3)
        obs = example_obs[None]
        actor_params = actor.init(actor_key, obs)
        keys = jax.random.split(critic_key, 1)  # the critic's row keys (only shapes matter here)
        critic_params = (
            critic.init(critic_key, obs, keys)
            if discrete
            else critic.init(critic_key, obs, example_action[None], keys)
        )
        params = {
            "actor": actor_params,
            "critic": critic_params,
            "log_alpha": jnp.asarray(math.log(config.alpha_init), jnp.float32),
        }
        opt_state = {name: tx.init(params[name]) for name, tx in txs.items()}
        zero = jnp.zeros((), jnp.int32)
        state = SACTrainState(params, critic_params, opt_state, zero, zero)
        return state, collect_init(env_key)

    learn = partial(
        sac_learn,
        actor=actor,
        critic=critic,
        txs=txs,
        config=config,
        discrete=discrete,
        entropy_target=entropy_target,
    )
    return Algorithm(
        init,
        collect,
        learn,
        config.num_updates,
        config.frames_per_update,
        progress_metric="episode_return_last100",
        raw_progress_metric="episode_return_mean",
    )


def _squash(dist, noise: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(tanh(u), log pi(tanh(u)))` with `u = mean + std * noise`."""
    u = dist.mean + jnp.exp(dist.log_std) * noise
    return jnp.tanh(u), tanh_gaussian_log_prob(u, dist.mean, dist.log_std)


SAC_METRICS = ("loss", "critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean")


def sac_gradient_step(
    state: SACTrainState,
    batch,
    key: jax.Array,
    axis_name: str | None,
    *,
    actor,
    critic,
    txs,
    config: SACConfig,
    discrete: bool,
    entropy_target: float,
) -> tuple[SACTrainState, dict[str, jax.Array]]:
    """One SAC step on a `[B, ...]` batch: critics, then the actor against the updated
    critics, then the temperature, then (every `target_update_interval` steps) the
    target critics. alpha is the value before this step's temperature update (SB3).
    The target, online and actor passes of the critics each get fresh row keys."""
    params = state.params
    alpha = jnp.exp(params["log_alpha"])
    discount = config.gamma * (1.0 - batch.terminated.astype(jnp.float32))
    reward = batch.reward.astype(jnp.float32)
    next_key, pi_key, critic_key = jax.random.split(key, 3)
    target_keys, q_keys, pi_q_keys = critic_keys(critic_key, batch.reward.shape[0], axis_name, 3)

    if discrete:
        next_log_probs = jax.nn.log_softmax(actor.apply(params["actor"], batch.next_obs))
        next_q = critic.apply(state.target_critic, batch.next_obs, target_keys)
        target = discrete_soft_q_target(reward, discount, next_q, next_log_probs, alpha)

        def q_of_batch(critic_params):
            q = critic.apply(critic_params, batch.obs, q_keys)  # [K, B, A]
            return jnp.take_along_axis(q, batch.action.astype(jnp.int32)[None, :, None], -1)[..., 0]

    else:
        next_dist = actor.apply(params["actor"], batch.next_obs)
        noise = row_normal(next_key, next_dist.mean.shape, axis_name)
        next_action, next_log_prob = _squash(next_dist, noise)
        target = soft_q_target(
            reward,
            discount,
            critic.apply(state.target_critic, batch.next_obs, next_action, target_keys),
            next_log_prob,
            alpha,
        )

        def q_of_batch(critic_params):
            return critic.apply(critic_params, batch.obs, batch.action, q_keys)

    def critic_objective(critic_params):
        q = q_of_batch(critic_params)
        return critic_loss(q, target), q.mean()

    (c_loss, q_mean), grads = jax.value_and_grad(critic_objective, has_aux=True)(params["critic"])
    critic_params, critic_opt = adam_step(
        txs["critic"], params["critic"], grads, state.opt_state["critic"], axis_name
    )

    def actor_objective(actor_params):
        if discrete:
            log_probs = jax.nn.log_softmax(actor.apply(actor_params, batch.obs))
            q = critic.apply(critic_params, batch.obs, pi_q_keys)
            loss = discrete_sac_actor_loss(q, log_probs, alpha)
            log_prob = (jnp.exp(log_probs) * log_probs).sum(-1)  # -H(pi(.|s))
        else:
            dist = actor.apply(actor_params, batch.obs)
            action, log_prob = _squash(dist, row_normal(pi_key, dist.mean.shape, axis_name))
            q_pi = critic.apply(critic_params, batch.obs, action, pi_q_keys)
            loss = sac_actor_loss(q_pi, log_prob, alpha)
        return loss, log_prob

    (a_loss, log_prob), grads = jax.value_and_grad(actor_objective, has_aux=True)(params["actor"])
    actor_params, actor_opt = adam_step(
        txs["actor"], params["actor"], grads, state.opt_state["actor"], axis_name
    )

    log_alpha, alpha_opt = params["log_alpha"], state.opt_state["log_alpha"]
    t_loss = temperature_loss(log_alpha, log_prob, entropy_target)
    if config.autotune_alpha:
        grad = jax.grad(temperature_loss)(log_alpha, log_prob, entropy_target)
        log_alpha, alpha_opt = adam_step(txs["log_alpha"], log_alpha, grad, alpha_opt, axis_name)

    step = state.step + 1
    target_critic = jax.lax.cond(
        step % config.target_update_interval == 0,
        lambda: polyak_update(critic_params, state.target_critic, config.tau),
        lambda: state.target_critic,
    )
    new_state = SACTrainState(
        {"actor": actor_params, "critic": critic_params, "log_alpha": log_alpha},
        target_critic,
        {"actor": actor_opt, "critic": critic_opt, "log_alpha": alpha_opt},
        step,
        state.updates,
    )
    metrics = {
        "critic_loss": c_loss,
        "actor_loss": a_loss,
        "alpha_loss": t_loss,
        "alpha": alpha,
        "entropy": -log_prob.mean(),
        "q_mean": q_mean,
    }
    metrics["loss"] = c_loss + a_loss + (t_loss if config.autotune_alpha else 0.0)
    return new_state, reduce_mean(metrics, axis_name)


def sac_learn(
    state: SACTrainState, batch, key: jax.Array, axis_name: str | None = None, **kwargs
) -> tuple[SACTrainState, dict[str, jax.Array]]:
    """`gradient_steps` SAC steps over a `[B, gradient_steps, ...]` batch (scanned over its
    second axis); skipped (metrics 0) until more than `learning_starts` frames exist."""
    config = kwargs["config"]
    step_fn = partial(sac_gradient_step, axis_name=axis_name, **kwargs)

    def train(state):
        keys = jax.random.split(key, config.gradient_steps)
        state, metrics = jax.lax.scan(lambda s, xs: step_fn(s, *xs), state, (steps_first(batch), keys))
        return state, jax.tree.map(jnp.mean, metrics)

    def skip(state):
        return state, {name: jnp.zeros((), jnp.float32) for name in SAC_METRICS}

    state, metrics = jax.lax.cond(learning_due(state.updates, config), train, skip, state)
    return state.replace(updates=state.updates + 1), metrics


def make_train(config: SACConfig, parallel: Mode = "single"):
    """`train(key) -> (final LoopState, metrics [num_updates])`, jittable and vmappable."""
    return make_train_from_algorithm(make_sac(config), parallel)
