"""DDPG (Lillicrap et al. 2016): a deterministic actor, one critic, Gaussian exploration
noise and Polyak-averaged targets.

DDPG is TD3 (`algorithms.td3`) without its three additions: one critic instead of the
clipped double-Q minimum, no target policy smoothing, and the actor and targets updated
on every critic step. SB3 writes it the same way (its `DDPG` is a `TD3` with
`policy_delay=1`, `n_critics=1`, no target noise). So this module holds no algorithm code:
`make_ddpg` runs TD3's `collect` and `learn` on a `DDPGConfig`, whose `policy_delay`,
`policy_noise` and `noise_clip` are the fixed properties 1, 0 and 0. With one critic
TD3's target and actor loss are DDPG's (eqs. 5-6 of the paper):

    y = r + gamma * (1 - terminated) * Qbar(s', mubar(s')),    L_critic = 0.5 * mean_b (Q(s_b, a_b) - y_b)^2
    L_actor = -mean_b Q(s_b, mu(s_b))

The critic is `config.critic` ('mlp' or 'reacritic') under the critic contract of
`algorithms.sac`.
"""

from __future__ import annotations

from typing import Any

import jax

from jaxrl_llm.algorithms.configs.ddpg import DDPGConfig
from jaxrl_llm.algorithms.td3 import TD3TrainState, critic_loss, make_td3, td3_actor_loss, td3_target
from jaxrl_llm.algorithms.td3 import evaluate as td3_evaluate
from jaxrl_llm.training import Algorithm
from jaxrl_llm.training import make_train as make_train_from_algorithm
from jaxrl_llm.training.parallel import Mode

__all__ = [
    "DDPGConfig",
    "DDPGTrainState",
    "critic_loss",
    "ddpg_actor_loss",
    "ddpg_target",
    "evaluate",
    "make_ddpg",
    "make_train",
]

DDPGTrainState = TD3TrainState
ddpg_target = td3_target
"""`y = r + discount * min_k Qbar_k(s', mubar(s'))`; with DDPG's one critic, `Qbar(s', mubar(s'))`."""
ddpg_actor_loss = td3_actor_loss
"""`-mean_b Q(s_b, mu(s_b))`."""


def make_ddpg(config: DDPGConfig, actor: Any = None, critic: Any = None) -> Algorithm:
    """DDPG as an `Algorithm`: `td3.make_td3` on a `DDPGConfig` (see the module docstring).

    `actor.apply(params, obs[B, ...]) -> action[B, A]` in [-1, 1] and
    `critic.apply(params, obs, action[B, A], keys[B]) -> q[K, B]` (K = `num_critics`, 1 by
    default); defaults: the config's MLP actor and `config.critic` critic. Metrics: TD3's
    (`actor_updated` is always 1 once learning has started).
    """
    if not isinstance(config, DDPGConfig):
        raise TypeError(f"make_ddpg takes a DDPGConfig, got {type(config).__name__} (use make_td3).")
    return make_td3(config, actor, critic)


def evaluate(config: DDPGConfig, params, key: jax.Array, num_episodes: int | None = None, actor: Any = None):
    """Returns `[num_episodes]` (default `config.eval_episodes`) of the deterministic policy
    of `params` (`train_state.params`) over whole episodes of `config`'s environment."""
    return td3_evaluate(config, params, key, num_episodes, actor)


def make_train(config: DDPGConfig, parallel: Mode = "single"):
    """`train(key) -> (final LoopState, metrics [num_updates])`, jittable and vmappable."""
    return make_train_from_algorithm(make_ddpg(config), parallel)
