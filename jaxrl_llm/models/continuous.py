"""Actors and Q-critics for off-policy actor-critic methods (SAC, TD3).

Actions live in the unit box `[-1, 1]^A`; the algorithm maps them to the environment's
box (`scale_action`). Every module flattens the observation's trailing axes and runs
`MLP`s (orthogonal init without LAPACK, safe under `vmap` over seeds).

    TanhGaussianActor(obs[B, ...])          -> TanhGaussian(mean[B, A], log_std[B, A])
    DeterministicActor(obs[B, ...])         -> action[B, A] in [-1, 1]
    QEnsemble(obs[B, ...], action[B, A], keys)  -> q[K, B]      (K independent critics)
    DiscreteQEnsemble(obs[B, ...], keys)        -> q[K, B, A]
    LogitsActor(obs[B, ...])                    -> logits[B, A]

The critics take the per-row PRNG keys of the critic contract (see `algorithms.sac`) and,
being deterministic, ignore them; `models.reacritic` has critics that use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from jaxrl_llm.models.mlp import MLP


def _flatten(obs: jax.Array) -> jax.Array:
    return obs.reshape(obs.shape[0], -1).astype(jnp.float32)


def log1m_tanh_squared(u: jax.Array) -> jax.Array:
    """`log(1 - tanh(u)^2)` computed stably: `2 (log 2 - u - softplus(-2u))`."""
    return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))


@struct.dataclass
class TanhGaussian:
    """`a = tanh(u)`, `u ~ N(mean, exp(log_std)^2)` per action dimension (`[..., A]`).

    Its density by the change of variables (Haarnoja et al. 2018, appendix C):
        log pi(a|s) = sum_i [ log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2) ].
    """

    mean: jax.Array
    log_std: jax.Array

    def log_prob_pre_tanh(self, u: jax.Array) -> jax.Array:
        """`log pi(tanh(u))` `[...]` from the pre-squash sample `u` `[..., A]`."""
        z = (u - self.mean) * jnp.exp(-self.log_std)
        gaussian = -0.5 * z**2 - self.log_std - 0.5 * math.log(2.0 * math.pi)
        return (gaussian - log1m_tanh_squared(u)).sum(-1)

    def sample_and_log_prob(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A reparameterised sample `a` `[..., A]` in (-1, 1) and `log pi(a)` `[...]`."""
        u = self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape, self.mean.dtype)
        return jnp.tanh(u), self.log_prob_pre_tanh(u)

    def mode(self) -> jax.Array:
        """The deterministic action `tanh(mean)` (used for evaluation)."""
        return jnp.tanh(self.mean)


class TanhGaussianActor(nn.Module):
    """A state-dependent diagonal Gaussian squashed by tanh; `log_std` clipped to
    `[log_std_min, log_std_max]` (SAC's usual [-20, 2])."""

    action_dim: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> TanhGaussian:
        out = MLP(self.hidden_sizes, 2 * self.action_dim, self.activation, 0.01, name="actor")(_flatten(obs))
        mean, log_std = jnp.split(out, 2, axis=-1)
        return TanhGaussian(mean, jnp.clip(log_std, self.log_std_min, self.log_std_max))


class DeterministicActor(nn.Module):
    """`tanh(MLP(obs))`: TD3's deterministic policy in the unit box."""

    action_dim: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.tanh(
            MLP(self.hidden_sizes, self.action_dim, self.activation, 0.01, name="actor")(_flatten(obs))
        )


class LogitsActor(nn.Module):
    """Logits `[B, A]` of a categorical policy (discrete SAC)."""

    num_actions: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden_sizes, self.num_actions, self.activation, 0.01, name="actor")(_flatten(obs))


class QEnsemble(nn.Module):
    """`num_critics` independent MLPs `Q_k(s, a)` on `concat(obs, action)`: `q[K, B]`."""

    num_critics: int = 2
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array, keys: jax.Array | None = None) -> jax.Array:
        del keys  # deterministic
        x = jnp.concatenate([_flatten(obs), action.reshape(action.shape[0], -1).astype(jnp.float32)], -1)
        return jnp.stack(
            [
                MLP(self.hidden_sizes, 1, self.activation, 1.0, name=f"q{k}")(x)[:, 0]
                for k in range(self.num_critics)
            ]
        )


class DiscreteQEnsemble(nn.Module):
    """`num_critics` independent MLPs giving every action's value: `q[K, B, A]`."""

    num_actions: int
    num_critics: int = 2
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array, keys: jax.Array | None = None) -> jax.Array:
        del keys  # deterministic
        x = _flatten(obs)
        return jnp.stack(
            [
                MLP(self.hidden_sizes, self.num_actions, self.activation, 1.0, name=f"q{k}")(x)
                for k in range(self.num_critics)
            ]
        )
