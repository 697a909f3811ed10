"""Supervised next-token warm-up of a causal LM on problems with known answers.

Trains log pi(completion | chat prompt) with the completion `"<answer><eos>"` (or any
`target_text(problem)`), loss = −Σ_t m_t log pi(y_t | y_<t) / Σ_t m_t over completion
tokens only. Used to give a tiny from-scratch model the task format before RL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl_llm.data import Problem
from jaxrl_llm.data.problems import encode_prompts
from jaxrl_llm.models.logprobs import token_logprobs_and_entropy


def answer_only(problem: Problem) -> str:
    return problem.answer


def encode_supervised(
    tokenizer,
    problems: Sequence[Problem],
    max_prompt_tokens: int,
    max_target_tokens: int,
    target_text: Callable[[Problem], str] = answer_only,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(tokens, mask, target_mask)` `[B, P + N]`: left-padded prompt, then target + eos, right-padded."""
    # padded to the longest prompt of the whole set (one shape), not to the maximum allowed
    prompt_tokens, prompt_mask = encode_prompts(tokenizer, problems, max_prompt_tokens, pad_to_multiple_of=16)
    targets = np.full((len(problems), max_target_tokens), tokenizer.pad_token_id or 0, np.int32)
    target_mask = np.zeros_like(targets, bool)
    for row, problem in enumerate(problems):
        ids = tokenizer.encode(target_text(problem), add_special_tokens=False) + [tokenizer.eos_token_id]
        if len(ids) > max_target_tokens:
            raise ValueError(f"target of {len(ids)} tokens exceeds max_target_tokens={max_target_tokens}.")
        targets[row, : len(ids)] = ids
        target_mask[row, : len(ids)] = True
    tokens = np.concatenate([prompt_tokens, targets], axis=1)
    mask = np.concatenate([prompt_mask, target_mask], axis=1)
    loss_mask = np.concatenate([np.zeros_like(prompt_mask), target_mask], axis=1)
    return tokens, mask, loss_mask


def next_token_loss(params, model_config, tokens, mask, loss_mask) -> jax.Array:
    """Mean negative log-likelihood of the `loss_mask` tokens."""
    log_probs, _ = token_logprobs_and_entropy(params, model_config, tokens, mask)
    weights = loss_mask.astype(log_probs.dtype)
    return -(log_probs * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def supervised_finetune(
    params,
    model_config,
    tokenizer,
    problems: Sequence[Problem],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    max_prompt_tokens: int,
    max_target_tokens: int,
    target_text: Callable[[Problem], str] = answer_only,
    progress: bool = True,
):
    """`steps` Adam steps on random minibatches of `problems`; returns `(params, losses[steps])`.

    One jitted step per host iteration, so `progress` can show a bar with the running loss
    (warm-up of a 135M model takes minutes on a CPU).
    """
    from tqdm.auto import tqdm

    tokens, mask, loss_mask = (
        jnp.asarray(x)
        for x in encode_supervised(tokenizer, problems, max_prompt_tokens, max_target_tokens, target_text)
    )
    tx = optax.adam(learning_rate)

    @jax.jit
    def train_step(params, opt_state, key):
        rows = jax.random.choice(key, tokens.shape[0], (batch_size,))
        loss, grads = jax.value_and_grad(next_token_loss)(
            params, model_config, tokens[rows], mask[rows], loss_mask[rows]
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, losses = tx.init(params), []
    with tqdm(total=steps, desc="supervised warm-up", unit="step", disable=not progress) as bar:
        for key in jax.random.split(jax.random.PRNGKey(seed), steps):
            params, opt_state, loss = train_step(params, opt_state, key)
            losses.append(float(loss))  # waits for the step, so the bar shows finished steps
            bar.set_postfix(loss=f"{losses[-1]:.3g}", refresh=False)
            bar.update()
    return params, jnp.asarray(losses)
