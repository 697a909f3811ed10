"""The LAPACK-free orthogonal init equals jax's, and keeps LAPACK out of compiled training."""

import chex
import jax
import numpy as np
import pytest

from jaxrl_llm.algorithms import group_rl, ppo
from jaxrl_llm.models.initializers import orthogonal


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (128, 128), (2, 3), (3, 5, 7)])
@pytest.mark.parametrize("scale", [1.0, np.sqrt(2), 0.01])
def test_equals_jax_orthogonal_for_the_same_key(shape, scale):
    key = jax.random.key(sum(shape))
    ours = orthogonal(scale)(key, shape)
    reference = jax.nn.initializers.orthogonal(scale)(key, shape)
    chex.assert_shape(ours, shape)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), atol=2e-5 * scale)
    flat = np.asarray(ours, np.float64).reshape(-1, shape[-1]) / scale
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)


def test_rank_one_shape_is_refused():
    with pytest.raises(ValueError, match="rank >= 2"):
        orthogonal()(jax.random.key(0), (5,))


@pytest.mark.parametrize(
    "module, config",
    [
        (ppo, ppo.PPOConfig(total_frames=4 * 128 * 2)),
        (group_rl, group_rl.GroupRLConfig(total_frames=16 * 8 * 48, env="Maze-v0")),
    ],
)
def test_vmapped_training_program_has_no_lapack_call(module, config):
    """Batched LAPACK calls can deadlock jaxlib 0.10's CPU pool; none may be in the program."""
    keys = jax.random.split(jax.random.key(0), 2)
    hlo = jax.jit(jax.vmap(module.make_train(config))).lower(keys).as_text()
    assert "lapack" not in hlo.lower()
