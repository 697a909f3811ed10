"""MLP actor-critic for vector observations (PPO baselines, toy-env GRPO)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.models.distributions import Categorical, DiagGaussian
from jaxrl_llm.models.initializers import orthogonal

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu}


class MLP(nn.Module):
    """Dense layers with orthogonal init (LAPACK-free, see `initializers`); the last layer has
    gain `output_gain`."""

    hidden_sizes: Sequence[int]
    output_size: int
    activation: str = "tanh"
    output_gain: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.activation]
        for width in self.hidden_sizes:
            x = act(nn.Dense(width, kernel_init=orthogonal(np.sqrt(2)))(x))
        return nn.Dense(self.output_size, kernel_init=orthogonal(self.output_gain))(x)


class ActorCritic(nn.Module):
    """Separate actor and critic networks over a flattened observation.

    `__call__(obs[B, ...], keys=None) -> (distribution, value[B])`; a discrete policy when
    `continuous=False` (logits over `action_dim` actions), else a diagonal Gaussian
    with a state-independent log standard deviation. The critic is an MLP, or `critic`:
    any module `critic(obs[B, ...], keys[B]) -> value[B]` (e.g. `ReaCriticValue`), called
    with the per-row PRNG keys `keys` (see `algorithms.ppo`); the MLP ignores them.
    """

    action_dim: int
    continuous: bool = False
    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"
    critic: nn.Module | None = None

    @nn.compact
    def __call__(self, obs: jax.Array, keys: jax.Array | None = None):
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        actor_out = MLP(self.hidden_sizes, self.action_dim, self.activation, 0.01, name="actor")(x)
        if self.critic is None:
            value = MLP(self.hidden_sizes, 1, self.activation, 1.0, name="critic")(x)[:, 0]
        else:
            value = self.critic(obs, keys)
        if self.continuous:
            log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
            return DiagGaussian(actor_out, jnp.broadcast_to(log_std, actor_out.shape)), value
        return Categorical(actor_out), value


class ValueMLP(nn.Module):
    """A state-value MLP over a flattened observation: `obs[B, ...] -> value[B]` (takes and
    ignores per-row `keys`, like every deterministic critic)."""

    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array, keys: jax.Array | None = None) -> jax.Array:
        del keys  # deterministic
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        return MLP(self.hidden_sizes, 1, self.activation, 1.0, name="critic")(x)[:, 0]


class CategoricalPolicy(nn.Module):
    """An MLP policy over observations with any leading batch axes: `obs[..., *obs_shape]`.

    `obs_rank` trailing axes form one observation (flattened); with
    `num_obs_categories > 0` the observation is a scalar integer (e.g. a grid cell
    index) and is one-hot encoded first.
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (128, 128)
    obs_rank: int = 1
    num_obs_categories: int = 0
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array) -> Categorical:
        if self.num_obs_categories:
            x = jax.nn.one_hot(obs, self.num_obs_categories)
        else:
            lead = obs.shape[: obs.ndim - self.obs_rank]
            x = obs.reshape(*lead, -1).astype(jnp.float32)
        return Categorical(MLP(self.hidden_sizes, self.num_actions, self.activation, 0.01, name="actor")(x))
