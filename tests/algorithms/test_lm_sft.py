"""Supervised fine-tuning: gradient accumulation over micro-batches changes neither the update
nor the loss it reports."""

import chex
import jax
import numpy as np

from jaxrl_llm.algorithms import lm_sft
from jaxrl_llm.training import train_on_host

SMALL = {"hidden_size": "32", "intermediate_size": "64", "num_layers": "1"}


def test_micro_batches_give_the_same_update_and_loss():
    results = []
    for micro in (0, 2):
        config = lm_sft.SFTConfig(
            model="tiny",
            model_overrides=SMALL,
            arithmetic_kinds=("add",),
            max_operand=9,
            max_prompt_tokens=24,
            max_target_tokens=4,
            batch_size=8,
            micro_batch_size=micro,
            num_updates=2,
        )
        state, metrics = train_on_host(lm_sft.make_sft(config, verbose=False), jax.random.PRNGKey(0))
        results.append((state.train_state.params, np.asarray(metrics["loss"])))
    (whole_params, whole_loss), (micro_params, micro_loss) = results
    np.testing.assert_allclose(micro_loss, whole_loss, rtol=1e-5)  # 4 slices, not 4x the loss
    assert 1.0 < whole_loss[0] < 10.0  # a cross-entropy over the tiny vocabulary, not a multiple
    chex.assert_trees_all_close(micro_params, whole_params, atol=1e-5)
