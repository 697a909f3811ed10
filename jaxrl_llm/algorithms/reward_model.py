"""A Bradley-Terry reward model: the Llama-family decoder plus a scalar head on the last real
token (`models/reward_head.py`), trained on preference pairs {prompt, chosen, rejected} with

    ℓ = −log σ(r(x, y_c) − r(x, y_r))        (`losses/preference.py::bradley_terry_loss`)

(InstructGPT; the loss of the HelpSteer3 BT reward models, which add a per-pair margin or weight
from their −3..3 ratings; the JSON Lines pairs read here carry no rating).

As an `Algorithm`: the pairs are read and tokenised once (`data/offline.py`, as DPO reads them:
`[M, 2, P + N]`, chosen at index 0), `eval_pairs` of them held out by a seeded draw; `frozen`
holds both sets and, under LoRA, the base weights (none of them checkpointed or compiled in as
constants). `collect` draws `batch_size` training pairs on device (without replacement within
an update, from the loop's key, so a resumed run draws the same ones) and every `eval_every`
updates scores the held-out pairs with the parameters the update starts from
(`eval_accuracy`, NaN in between); `learn` takes one clipped-Adam step on the mean loss over
the pairs, accumulated over micro-batches and averaged over devices (equal row shares make
both exact). The trained parameters are `{"decoder", "head"}` (under LoRA the decoder entry
holds the adapters: `model_params` turns them into weights); `reward_head.sequence_rewards`
scores sequences with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxrl_llm.algorithms.configs.reward_model import RewardModelConfig
from jaxrl_llm.algorithms.lm_task import LoadedModel, load_model
from jaxrl_llm.algorithms.offline_lm import PairBatch, draw_rows, pair_data
from jaxrl_llm.data.offline import PreferencePair
from jaxrl_llm.losses.preference import bradley_terry_loss
from jaxrl_llm.models.lora import model_weights, trainable_weights
from jaxrl_llm.models.reward_head import init_head, sequence_rewards
from jaxrl_llm.training import Algorithm, TrainState
from jaxrl_llm.training.gradient_steps import microbatch_count, repeated_gradient_steps
from jaxrl_llm.training.optimizers import clipped_adam
from jaxrl_llm.training.train_state import create as create_train_state

__all__ = [
    "RewardModelConfig",
    "RewardModelFrozen",
    "held_out_accuracy",
    "make_reward_model",
    "model_params",
    "pair_objective",
    "pair_rewards",
    "split_pairs",
]


@struct.dataclass
class RewardModelFrozen:
    """What `collect` and `learn` read and never change (the algorithm's `frozen`)."""

    base: Any  # the decoder weights LoRA adapts (None when every parameter trains)
    train: PairBatch  # the training pairs
    held_out: PairBatch | None  # the evaluation pairs (None: no evaluation)


@struct.dataclass
class RewardCollectState:
    update: jax.Array  # int32 count of collected batches


def split_pairs(data: PairBatch, num_held_out: int, seed: int) -> tuple[PairBatch, PairBatch | None]:
    """`(train, held_out)`: `num_held_out` rows drawn by `numpy.random.default_rng(seed)`, the
    rest (in file order) to train on."""
    rows = data.tokens.shape[0]
    if num_held_out >= rows:
        raise ValueError(
            f"RewardModelConfig.eval_pairs={num_held_out} is invalid: the data has {rows} preference pairs, "
            "so none would be left to train on; lower --eval-pairs (0 holds none out)."
        )
    if not num_held_out:
        return data, None
    held = np.sort(np.random.default_rng(seed).choice(rows, num_held_out, replace=False))
    kept = np.setdiff1d(np.arange(rows), held)
    take = lambda index: jax.tree.map(lambda x: x[index], data)  # noqa: E731
    return take(kept), take(held)


# ------------------------------------------------------------------------------------------------
# Rewards and the loss
# ------------------------------------------------------------------------------------------------


def model_params(trainable: dict, base: Any = None) -> dict:
    """The reward model's weights `{"decoder", "head"}` from the trained ones: the decoder entry
    is LoRA adapters of `base` when `base` is given, else the decoder weights themselves."""
    decoder = model_weights(base, trainable["decoder"])
    return {"decoder": decoder, "head": trainable["head"]}


def pair_rewards(params: dict, model_config, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """`[B, 2]` rewards of the pairs `tokens, mask [B, 2, L]` (chosen, rejected), one forward pass."""
    rows, sides, length = tokens.shape
    flat = sequence_rewards(params, model_config, tokens.reshape(rows * sides, length), mask.reshape(rows * sides, length))
    return flat.reshape(rows, sides)


def pair_objective(params: dict, batch: PairBatch, *, model_config) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The Bradley-Terry loss of a batch of pairs (mean over pairs) and its metrics."""
    rewards = pair_rewards(params, model_config, batch.tokens, batch.mask)
    loss, info = bradley_terry_loss(rewards[:, 0], rewards[:, 1])
    rewards = jax.lax.stop_gradient(rewards)
    return loss, {
        "loss": loss,
        "accuracy": info["accuracy"],
        "margin_mean": info["margin_mean"],
        "chosen_reward_mean": rewards[:, 0].mean(),
        "rejected_reward_mean": rewards[:, 1].mean(),
    }


def held_out_accuracy(params: dict, data: PairBatch, model_config, pairs_per_pass: int) -> jax.Array:
    """Fraction of the pairs of `data` whose chosen reward beats the rejected one (a tie is
    wrong), scored `pairs_per_pass` pairs per forward pass."""

    def rewards_of(pair):
        tokens, mask = pair
        return pair_rewards(params, model_config, tokens[None], mask[None])[0]

    rewards = jax.lax.map(rewards_of, (data.tokens, data.mask), batch_size=pairs_per_pass)
    return jnp.mean(rewards[:, 0] > rewards[:, 1])


# ------------------------------------------------------------------------------------------------
# The algorithm
# ------------------------------------------------------------------------------------------------


def reward_model_step(
    train_state: TrainState,
    batch: PairBatch,
    key: jax.Array,
    axis_name: str | None = None,
    *,
    frozen: RewardModelFrozen,
    model_config,
    tx: optax.GradientTransformation,
    micro_batch_size: int,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step on the mean loss over the (per-device) pairs, over micro-batches of
    `micro_batch_size` pairs (0: all at once)."""
    del key
    num_microbatches = microbatch_count(batch.tokens.shape[0], micro_batch_size)

    def loss_fn(trainable, micro: PairBatch):
        return pair_objective(model_params(trainable, frozen.base), micro, model_config=model_config)

    return repeated_gradient_steps(
        train_state, loss_fn, tx, 1, axis_name, batch=batch, num_microbatches=num_microbatches
    )


def make_reward_model(
    config: RewardModelConfig,
    loaded: LoadedModel | None = None,
    dataset: Sequence[PreferencePair] | None = None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    verbose: bool = True,
) -> Algorithm:
    """The reward model as an `Algorithm` (jittable: whole chunks of updates compile into one
    program).

    The decoder is loaded from `config.model` unless `loaded` is given; `dataset` is a list of
    `data.offline.PreferencePair` (default: read from `config.data_path`, else the bundled
    arithmetic sample); `optimizer` replaces the config's clipped Adam.

    Metrics per update: from learn `loss`, `accuracy` (chosen reward > rejected on the batch),
    `margin_mean` (mean r_c − r_r), `chosen_reward_mean`, `rejected_reward_mean`; from collect
    `eval_accuracy` when `eval_pairs > 0`.
    """
    if dataset is not None and not len(dataset):
        raise ValueError("make_reward_model: the dataset holds no preference pairs.")
    loaded = loaded or load_model(config, verbose)
    train_data, held_out = split_pairs(pair_data(config, loaded.tokenizer, dataset), config.eval_pairs, config.seed)
    tx = optimizer or clipped_adam(config.learning_rate, config.max_grad_norm or None)
    hidden_size = loaded.model_config.hidden_size

    def init(key: jax.Array):
        head_key, lora_key = jax.random.split(key)
        decoder = trainable_weights(lora_key, loaded.params, config.lora_rank, config.lora_alpha)
        trainable = {"decoder": decoder, "head": init_head(head_key, hidden_size, config.head_init_scale)}
        return create_train_state(trainable, tx), RewardCollectState(jnp.zeros((), jnp.int32))

    def evaluate(state: RewardCollectState, trainable, frozen: RewardModelFrozen) -> jax.Array:
        due = (state.update % config.eval_every == 0) | (state.update == config.num_updates - 1)
        score = partial(held_out_accuracy, model_config=loaded.model_config, pairs_per_pass=config.batch_size)
        return jax.lax.cond(
            due, lambda: score(model_params(trainable, frozen.base), frozen.held_out), lambda: jnp.float32(jnp.nan)
        )

    def collect(state: RewardCollectState, trainable, key: jax.Array, *, frozen: RewardModelFrozen):
        batch = draw_rows(key, frozen.train, config.batch_size)
        metrics = {} if frozen.held_out is None else {"eval_accuracy": evaluate(state, trainable, frozen)}
        return RewardCollectState(state.update + 1), batch, metrics

    learn = partial(
        reward_model_step, model_config=loaded.model_config, tx=tx, micro_batch_size=config.micro_batch_size
    )
    return Algorithm(
        init,
        collect,
        learn,
        config.num_updates,
        config.batch_size,
        progress_metric="eval_accuracy" if held_out is not None else "accuracy",
        raw_progress_metric="accuracy" if held_out is not None else None,
        frame_name="pair",
        frozen=RewardModelFrozen(loaded.params if config.lora_rank else None, train_data, held_out),
    )
