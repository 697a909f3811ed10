"""L2T's parameter compression penalty per episode with one forward-mode JVP (arXiv 2505.10425).

Theorem 4.2 of "Learning to Think" (Wang et al. 2025) approximates the compression term of the
dense process reward (Eq. 3) on a low-rank parameter proxy θ̃ by a rank-1 empirical Fisher:

    I(θ̃_k; s_k) − I(θ̃_{k−1}; s_{k−1})  ≃  Δθ̃ᵀ (g_k g_kᵀ) Δθ̃ = (Δθ̃ · g_k)²,
    g_k = ∇_θ̃ log π_θ(z_k | s_k) = ∇_θ̃ Σ_{t ∈ episode k} log π_θ(z_t | z_{<t}, x)

and the penalty entering r^prg_k is

    C_k = β [ (Δθ̃ · g_k)²  +  λ ‖Δθ̃‖² ]       (β = 0.6 paper, 1e-2 code; λ = Fisher damping)

where λ adds the damping λI to the rank-1 Fisher (F + λI; the paper reports "Fisher damping
1e-5", the digest's §4.2; λ = 0 is the undamped quadratic). The damping term is the same for every
episode of a rollout, so it shifts r^prg but not its differences between episodes.

**One JVP for all episodes.** The map θ̃ ↦ L(θ̃) = [Σ_{t∈k} log π_θ̃(z_{b,t})]_{b,k} ∈ R^{B×K} is
evaluated by one teacher-forced pass over the whole completion (every episode's prefix s_k is the
completion's own prefix), and `jax.jvp(L, (θ̃,), (Δθ̃,))` returns its directional derivative
∂L/∂θ̃ · Δθ̃ = [Δθ̃ · g_{b,k}]_{b,k} exactly, for every b and k at once, at the cost of about one
extra forward pass (no finite differences, no per-episode gradients).

**Which Δθ̃ (ambiguous in the paper).** "θ̃_k − θ̃_{k−1}" is undefined inside one rollout (the
parameters do not change between episodes); the released code (`compute_information_fd`) uses
Δw = w − w_0 with w_0 the weights at actor initialisation, and we do the same: Δθ̃ = θ̃ − θ̃_0
for any pytree θ̃. The subset is the caller's choice: the paper's "low-rank proxy" maps naturally
to LoRA adapters (`lora_compression_penalty`: θ̃ = the adapter factors {A, B}, θ̃_0 their values
at the reference point); the code's one transformer layer is any other pytree passed to
`compression_penalty` with a `logprob_fn` that splices it into the full parameters. The code
computes it once per sequence on the whole response with a central finite difference
(ε = 1e-3) of −Σ_t log π; that is K = 1 here (the square removes the sign).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import chex
import jax
import jax.numpy as jnp

from jaxrl_llm.models.llama_config import LlamaConfig
from jaxrl_llm.models.logprobs import completion_logprobs_and_entropy
from jaxrl_llm.models.lora import LoraAdapters, apply_lora

__all__ = [
    "compression_penalty",
    "episode_directional_derivatives",
    "episode_logprob_sums",
    "lora_compression_penalty",
    "lora_logprob_fn",
]


def episode_logprob_sums(token_logprobs: chex.Array, token_episode: chex.Array, num_episodes: int) -> chex.Array:
    """log π(z_k | s_k) = Σ_{t: token_episode[b, t] = k} log π(z_t) per episode: `[B, T] -> [B, K]`."""
    chex.assert_rank([token_logprobs, token_episode], 2)
    chex.assert_equal_shape([token_logprobs, token_episode])
    chex.assert_type(token_episode, int)
    segment = jnp.where(token_episode >= 0, token_episode, num_episodes)
    values = jnp.where(token_episode >= 0, token_logprobs, 0.0)
    sums = jax.vmap(lambda v, s: jax.ops.segment_sum(v, s, num_episodes + 1))(values, segment)
    return sums[:, :num_episodes]


def _tree_sub(a, b):
    return jax.tree_util.tree_map(lambda x, y: x - y.astype(x.dtype), a, b)


def _tree_sq_norm(tree) -> chex.Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))


def episode_directional_derivatives(
    logprob_fn: Callable,
    theta,
    direction,
    token_episode: chex.Array,
    num_episodes: int,
) -> tuple[chex.Array, chex.Array]:
    """(log π(z_k|s_k) `[B, K]`, direction · ∇_θ log π(z_k|s_k) `[B, K]`) from one `jax.jvp`.

    Args:
      logprob_fn: θ ↦ teacher-forced token log-probs `[B, T]` aligned with `token_episode`.
      theta: pytree of the parameters to differentiate (the low-rank subset θ̃).
      direction: pytree like `theta` (Δθ̃).
      token_episode: `[B, T]` int episode of each token (−1: outside every episode).
      num_episodes: static K.
    """

    def episode_sums(params):
        return episode_logprob_sums(logprob_fn(params), token_episode, num_episodes)

    return jax.jvp(episode_sums, (theta,), (direction,))


def compression_penalty(
    logprob_fn: Callable,
    theta,
    theta_ref,
    token_episode: chex.Array,
    num_episodes: int,
    *,
    beta: float = 0.6,
    damping: float = 1e-5,
    episode_mask: Optional[chex.Array] = None,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """C_{b,k} = β [(Δθ̃ · g_{b,k})² + λ ‖Δθ̃‖²] with Δθ̃ = θ − θ_ref (module docstring).

    Args:
      logprob_fn, token_episode, num_episodes: as in `episode_directional_derivatives`.
      theta, theta_ref: pytrees of the same structure (current and reference subset).
      beta: β; damping: λ (Fisher damping).
      episode_mask: optional `[B, K]` valid episodes (others get 0).

    Returns:
      `(penalty [B, K], aux)`; aux: "episode_logprobs" `[B, K]`, "directional_derivative" `[B, K]`
      (Δθ̃ · g), "delta_sq_norm" scalar ‖Δθ̃‖². Treat the penalty as a reward (stop its gradient
      when it enters a policy-gradient loss).
    """
    delta = _tree_sub(theta, theta_ref)
    logprobs, derivative = episode_directional_derivatives(logprob_fn, theta, delta, token_episode, num_episodes)
    delta_sq = _tree_sq_norm(delta).astype(derivative.dtype)
    penalty = beta * (jnp.square(derivative) + damping * delta_sq)
    if episode_mask is not None:
        chex.assert_equal_shape([penalty, episode_mask])
        penalty = jnp.where(episode_mask.astype(bool), penalty, 0.0)
    aux = {"episode_logprobs": logprobs, "directional_derivative": derivative, "delta_sq_norm": delta_sq}
    return penalty, aux


def lora_logprob_fn(
    base_params,
    config: LlamaConfig,
    scale: float,
    tokens: chex.Array,
    mask: chex.Array,
    num_prompt_tokens: int,
    temperature: float = 1.0,
    chunk_size: int = 128,
) -> Callable:
    """adapter weights ↦ teacher-forced completion log-probs `[B, N]` of `tokens[:, P:]` under
    W + scale · A B (`apply_lora`; padding 0). `tokens, mask [B, P + N]`."""

    def logprob_fn(adapter_weights):
        params = apply_lora(base_params, LoraAdapters(weights=adapter_weights, scale=scale))
        logprobs, _ = completion_logprobs_and_entropy(
            params, config, tokens, mask, num_prompt_tokens, temperature, chunk_size
        )
        return logprobs

    return logprob_fn


def lora_compression_penalty(
    base_params,
    config: LlamaConfig,
    adapters: LoraAdapters,
    adapters_ref: LoraAdapters,
    tokens: chex.Array,
    mask: chex.Array,
    num_prompt_tokens: int,
    token_episode: chex.Array,
    num_episodes: int,
    *,
    beta: float = 0.6,
    damping: float = 1e-5,
    episode_mask: Optional[chex.Array] = None,
    temperature: float = 1.0,
    chunk_size: int = 128,
) -> tuple[chex.Array, dict[str, chex.Array]]:
    """`compression_penalty` with θ̃ = the LoRA factors {A, B}, Δθ̃ = adapters − adapters_ref.

    `token_episode [B, N]` indexes the completion tokens `tokens[:, P:]` (as `rollout.episode_spans`
    gives it for the completion).
    """
    if adapters.scale != adapters_ref.scale:
        raise ValueError(f"adapters.scale={adapters.scale} differs from adapters_ref.scale={adapters_ref.scale}")
    logprob_fn = lora_logprob_fn(
        base_params, config, adapters.scale, tokens, mask, num_prompt_tokens, temperature, chunk_size
    )
    return compression_penalty(
        logprob_fn,
        adapters.weights,
        adapters_ref.weights,
        token_episode,
        num_episodes,
        beta=beta,
        damping=damping,
        episode_mask=episode_mask,
    )
