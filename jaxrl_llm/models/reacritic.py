"""ReaCritic: a transformer critic that "reasons" over copies of its input (You & Du 2025,
arXiv 2505.10992, "Reasoning Transformer-based DRL Critic-model Scaling").

For one row `x = [flatten(s); a]` (or `flatten(s)` for a state-value critic):

    e       = W_in x + b_in                                   e in R^h
    X^0_i   = e + E_i + sigma * eps_i,   eps_i ~ N(0, I_h),   i = 1..H   (H "horizontal" steps)
    X^l     = X^{l-1} + Attn_causal(LN(X^{l-1}))              l = 1..V   (V "vertical" steps)
    X^l     = X^l + Dropout(W_2 GELU(W_1 LN(X^l)))            (pre-LN blocks, MLP width 4h)
    w       = softmax_i(p^T X^V_i)                            attention pooling over the H steps
    z       = sum_i w_i X^V_i
    Q(s, a) = W_out LN(z) + b_out

`E` `[H, h]` is a learned step embedding; `Attn_causal` is multi-head self-attention
(`num_heads`, fused qkv projection, output projection) in which step i attends to steps
j <= i only, with dropout on the attention weights. The Gaussian noise is applied in *every*
pass (targets and the actor's Q evaluation included), as in the official code, which adds
it unconditionally; dropout is on unless `deterministic=True` (the official SAC never puts
its critics in eval mode, so the algorithms here call them with dropout on too).

Randomness comes from explicit keys, one per batch row: `keys[B]` (raw `uint32[B, 2]` or
typed `key<...>[B]`). Row b draws one uniform vector `u_b ~ U(-1, 1)` from `keys[b]` per
pass and slices it: the noise first (`eps = sqrt(2) erfinv(u)`, as `jax.random.normal`
does), then block l's dropout masks (attention weights, then MLP output; keep iff
`(u + 1) / 2 >= rate`); member k of an ensemble uses `fold_in(keys[b], k)` as its row key.
A row's noise thus depends only on its own key, so the algorithms can hand every row a key
derived from its *global* index and get the same numbers on one device or many. (One draw
per row rather than a key per site: every PRNG call site inlines a threefry hash, and on
XLA:CPU a handful of them doubled the compile time of a SAC update.)

    ReaCriticCore(x[B, D], keys)                     -> out[B, num_outputs]
    ReaCritic(obs[B, ...], action[B, A], keys)       -> q[B]        one Q(s, a)
    ReaCriticEnsemble(obs, action, keys)             -> q[K, B]     K critics (SAC/TD3 twin Q)
    DiscreteReaCriticEnsemble(obs, keys)             -> q[K, B, A]  K critics of every action
    ReaCriticValue(obs[B, ...], keys)                -> v[B]        state value (PPO)

Ensembles `vmap` one `ReaCriticCore` over stacked parameters (`params["critics"]` leaves
carry a leading `[K]` axis), so K critics cost one batched pass.

Choices where the paper is silent (or where we follow the official code,
`NICE-HKU/ReaCritic`, `critic_scaling/networks.py`):
* Dense kernels use PyTorch's default `nn.Linear` scale, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`,
  with zero biases (PyTorch draws biases from the same uniform); the step embedding is
  `N(0, 1)` like `nn.Embedding`; LayerNorm eps 1e-5 and exact (erf) GELU, PyTorch's defaults.
* Defaults h = 256, 4 heads, dropout 0.1, sigma = 0.01, H = 8, V = 1 (the official `main.py`;
  the README table uses H = 20, V = 3). The configs default to h = 64 for CPU runs.
* H = 1 is a single token (attention is then the identity mix) and V = 0 skips the
  transformer entirely: embedding + step embedding + noise -> pooling -> LN -> Linear.
* No key bias in the attention and no bias in the pooling scores (the official code's
  `nn.Linear`s have both): softmax is shift-invariant, so neither can change the output and
  their true gradient is 0. In float32 it is rounding noise, which Adam (eps 1e-8) turns
  into lr-sized random steps; that also broke the agreement of sharded and single-device
  runs (1e-3 instead of 1e-7 in the parameters).
* The state-value and discrete-action variants (not in the paper, which only has Q(s, a))
  feed `flatten(s)` and read `num_outputs` values from the final Linear.
"""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CausalSelfAttention",
    "DiscreteReaCriticEnsemble",
    "ReaCritic",
    "ReaCriticCore",
    "ReaCriticEnsemble",
    "ReaCriticValue",
    "ReasoningBlock",
    "fold_keys",
    "row_uniforms",
]

# PyTorch's nn.Linear kernel init: Var = 1 / (3 fan_in), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
LAYER_NORM_EPS = 1e-5


def _dense(features: int, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=torch_linear_init, name=name)


def fold_keys(keys: jax.Array, data: int | jax.Array) -> jax.Array:
    """`fold_in(keys[b], data)` for every row key `b`: `[B]` keys -> `[B]` keys."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, data)


_OPEN_LOW = float(np.nextafter(np.float32(-1.0), np.float32(0.0)))


def row_uniforms(keys: jax.Array, size: int) -> jax.Array:
    """`u[B, size] ~ U(-1, 1)` (open at -1), row b from `keys[b]` alone."""
    return jax.vmap(lambda k: jax.random.uniform(k, (size,), jnp.float32, _OPEN_LOW, 1.0))(keys)


def _gaussian(u: jax.Array) -> jax.Array:
    """Standard normal draws from `u ~ U(-1, 1)`: `sqrt(2) erfinv(u)` (`jax.random.normal`'s map)."""
    return math.sqrt(2.0) * jax.lax.erf_inv(u)


def _dropout(x: jax.Array, rate: float, u: jax.Array | None) -> jax.Array:
    """Inverted dropout of `x[B, ...]`, keeping entries where `(u + 1) / 2 >= rate`
    (`u[B, prod(x.shape[1:])] ~ U(-1, 1)`); None: no dropout."""
    if u is None or rate == 0.0:
        return x
    keep = (u >= 2.0 * rate - 1.0).reshape(x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).astype(jnp.float32)


def _check_keys(keys: jax.Array | None, rows: int, needs_keys: bool, name: str) -> None:
    if keys is None:
        if needs_keys:
            raise ValueError(
                f"{name} draws noise or dropout and needs keys: one PRNG key per batch row "
                f"(raw uint32[{rows}, 2] or typed [{rows}]); pass deterministic=True with "
                "noise_std=0 for a key-free pass."
            )
        return
    if keys.shape[0] != rows:
        raise ValueError(f"{name}: keys have {keys.shape[0]} rows, the batch has {rows}.")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over `x[B, H, h]` in which step i sees steps j <= i:

        A = softmax((X Wq + bq)(X Wk)^T / sqrt(d) + M),  M_ij = 0 if j <= i else -inf,
        out = (Dropout(A) (X Wv + bv)) Wo + bo,   per head, d = h / num_heads.

    `u[B, num_heads * H * H] ~ U(-1, 1)` draws the dropout mask of `A`; None: no dropout.
    """

    num_heads: int = 4
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, u: jax.Array | None = None) -> jax.Array:
        chex.assert_rank(x, 3)
        batch, steps, width = x.shape
        if width % self.num_heads:
            raise ValueError(
                f"CausalSelfAttention: width {width} is not divisible by {self.num_heads} heads."
            )
        head_dim = width // self.num_heads
        qkv = nn.Dense(3 * width, use_bias=False, kernel_init=torch_linear_init, name="qkv")(x)
        q, k, v = jnp.split(qkv, 3, axis=-1)  # no key bias: it shifts every logit of a row equally
        q = q + self.param("query_bias", nn.initializers.zeros, (width,))
        v = v + self.param("value_bias", nn.initializers.zeros, (width,))
        q, k, v = (t.reshape(batch, steps, self.num_heads, head_dim) for t in (q, k, v))  # [B, H, heads, d]
        logits = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(head_dim)
        causal = jnp.tril(jnp.ones((steps, steps), bool))
        logits = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)  # [B, heads, H, H]
        weights = _dropout(weights, self.dropout_rate, u)
        out = jnp.einsum("bhts,bshd->bthd", weights, v).reshape(batch, steps, width)
        return _dense(width, "proj")(out)


class ReasoningBlock(nn.Module):
    """One pre-LN transformer block ("vertical reasoning step") on `x[B, H, h]`:

        x = x + Attn_causal(LN(x));   x = x + Dropout(W2 GELU(W1 LN(x))),  W1: h -> 4h.

    `u[B, num_uniforms(H, h)] ~ U(-1, 1)` draws the dropout masks (attention weights, then
    MLP output); None: no dropout (deterministic).
    """

    num_heads: int = 4
    dropout_rate: float = 0.1

    def num_uniforms(self, steps: int, width: int) -> int:
        return self.num_heads * steps * steps + steps * width

    @nn.compact
    def __call__(self, x: jax.Array, u: jax.Array | None = None) -> jax.Array:
        _, steps, width = x.shape
        attn_u = mlp_u = None
        if u is not None:
            attn_u, mlp_u = u[:, : self.num_heads * steps * steps], u[:, self.num_heads * steps * steps :]
        h = nn.LayerNorm(epsilon=LAYER_NORM_EPS, name="ln1")(x)
        x = x + CausalSelfAttention(self.num_heads, self.dropout_rate, name="attn")(h, attn_u)
        h = nn.LayerNorm(epsilon=LAYER_NORM_EPS, name="ln2")(x)
        h = _dense(width, "mlp_out")(nn.gelu(_dense(4 * width, "mlp_in")(h), approximate=False))
        return x + _dropout(h, self.dropout_rate, mlp_u)


class ReaCriticCore(nn.Module):
    """The ReaCritic network on an input vector: `x[B, D] -> out[B, num_outputs]` (see the
    module docstring for the equations and the use of `keys[B]`)."""

    width: int = 256
    num_steps: int = 8
    depth: int = 1
    num_heads: int = 4
    dropout_rate: float = 0.1
    noise_std: float = 0.01
    num_outputs: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, keys: jax.Array | None = None, deterministic: bool = False) -> jax.Array:
        chex.assert_rank(x, 2)
        if self.num_steps < 1 or self.depth < 0:
            raise ValueError(
                f"ReaCritic needs num_steps >= 1 and depth >= 0, got {self.num_steps}, {self.depth}."
            )
        steps, width = self.num_steps, self.width
        uses_dropout = not deterministic and self.dropout_rate > 0 and self.depth > 0
        uses_noise = self.noise_std > 0
        _check_keys(keys, x.shape[0], uses_noise or uses_dropout, type(self).__name__)
        blocks = [
            ReasoningBlock(self.num_heads, self.dropout_rate, name=f"block{i}") for i in range(self.depth)
        ]
        sizes = [steps * width if uses_noise else 0]
        sizes += [block.num_uniforms(steps, width) if uses_dropout else 0 for block in blocks]
        u = row_uniforms(keys, sum(sizes)) if sum(sizes) else None
        slices = np.cumsum([0, *sizes])
        draw = lambda i: None if not sizes[i] else u[:, slices[i] : slices[i + 1]]

        embedding = _dense(width, "embed")(x.astype(jnp.float32))  # [B, h]
        step_embedding = self.param("step_embedding", nn.initializers.normal(1.0), (steps, width))
        seq = embedding[:, None, :] + step_embedding[None]  # [B, H, h]
        if uses_noise:
            seq = seq + self.noise_std * _gaussian(draw(0)).reshape(-1, steps, width)
        for i, block in enumerate(blocks):
            seq = block(seq, draw(i + 1))
        scores = nn.Dense(1, use_bias=False, kernel_init=torch_linear_init, name="step_scores")(seq)
        weights = jax.nn.softmax(scores, axis=1)  # [B, H, 1]
        pooled = (weights * seq).sum(1)  # [B, h]
        pooled = nn.LayerNorm(epsilon=LAYER_NORM_EPS, name="ln_out")(pooled)
        return _dense(self.num_outputs, "head")(pooled)


class _Settings(nn.Module):
    """The fields every ReaCritic wrapper forwards to `ReaCriticCore`."""

    width: int = 256
    num_steps: int = 8
    depth: int = 1
    num_heads: int = 4
    dropout_rate: float = 0.1
    noise_std: float = 0.01

    def core_kwargs(self) -> dict:
        return {
            "width": self.width,
            "num_steps": self.num_steps,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "dropout_rate": self.dropout_rate,
            "noise_std": self.noise_std,
        }


def _ensemble(
    module: _Settings, x: jax.Array, keys, deterministic: bool, num_critics: int, num_outputs: int
) -> jax.Array:
    """`num_critics` cores with stacked parameters, member k on row keys `fold_in(keys, k)`:
    `[K, B, num_outputs]`."""
    members = nn.vmap(
        ReaCriticCore,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(None, 0, None),
        out_axes=0,
        axis_size=num_critics,
    )(**module.core_kwargs(), num_outputs=num_outputs, name="critics")
    member_keys = None
    if keys is not None:
        member_keys = jax.vmap(lambda k: fold_keys(keys, k))(jnp.arange(num_critics))
    return members(x, member_keys, deterministic)


class ReaCritic(_Settings):
    """One ReaCritic `Q(s, a)`: `(obs[B, ...], action[B, A], keys[B]) -> q[B]`."""

    @nn.compact
    def __call__(self, obs, action, keys=None, deterministic: bool = False) -> jax.Array:
        x = jnp.concatenate([_flatten(obs), _flatten(action)], -1)
        return ReaCriticCore(**self.core_kwargs(), name="core")(x, keys, deterministic)[:, 0]


class ReaCriticEnsemble(_Settings):
    """`num_critics` independent ReaCritics (SAC's and TD3's clipped double-Q; DDPG uses 1):
    `(obs[B, ...], action[B, A], keys[B]) -> q[K, B]`."""

    num_critics: int = 2

    @nn.compact
    def __call__(self, obs, action, keys=None, deterministic: bool = False) -> jax.Array:
        x = jnp.concatenate([_flatten(obs), _flatten(action)], -1)
        return _ensemble(self, x, keys, deterministic, self.num_critics, 1)[..., 0]


class DiscreteReaCriticEnsemble(_Settings):
    """`num_critics` ReaCritics over the state that output every action's value (discrete
    SAC): `(obs[B, ...], keys[B]) -> q[K, B, A]`."""

    num_actions: int = 2
    num_critics: int = 2

    @nn.compact
    def __call__(self, obs, keys=None, deterministic: bool = False) -> jax.Array:
        return _ensemble(self, _flatten(obs), keys, deterministic, self.num_critics, self.num_actions)


class ReaCriticValue(_Settings):
    """A state-value ReaCritic (PPO's value head): `(obs[B, ...], keys[B]) -> v[B]`."""

    @nn.compact
    def __call__(self, obs, keys=None, deterministic: bool = False) -> jax.Array:
        return ReaCriticCore(**self.core_kwargs(), name="core")(_flatten(obs), keys, deterministic)[:, 0]
