"""Tests of jaxrl_llm.losses.preference.bradley_terry_loss: float64 numpy reference of
−log σ(r_c − r_r − m) averaged over the unmasked pairs, its edge cases and its gradient."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.losses import bradley_terry_loss


def numpy_bradley_terry(chosen, rejected, margin=0.0, mask=None):
    """(loss, accuracy, margin mean) in float64: −log σ(z) = log(1 + e^{−z})."""
    weights = np.ones_like(chosen) if mask is None else np.asarray(mask, np.float64)
    delta = chosen - rejected
    losses = np.logaddexp(0.0, -(delta - margin))
    count = max(weights.sum(), 1.0)
    return (weights * losses).sum() / count, (weights * (delta > 0)).sum() / count, (weights * delta).sum() / count


def random_rewards(rng, size=7):
    return rng.normal(size=size) * 2.0, rng.normal(size=size) * 2.0


f32 = functools.partial(jnp.asarray, dtype=jnp.float32)


class BradleyTerryTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_equals_numpy_float64_with_and_without_margin_and_mask(self):
        rng = np.random.default_rng(0)
        chosen, rejected = random_rewards(rng)
        margin = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], size=7)  # Llama 2's "margin small" values
        mask = np.array([1, 1, 0, 1, 0, 1, 1], bool)
        loss_fn = self.variant(bradley_terry_loss)
        for m, w in ((None, None), (margin, None), (None, mask), (margin, mask)):
            loss, info = loss_fn(f32(chosen), f32(rejected), None if m is None else f32(m), w)
            expected, accuracy, margin_mean = numpy_bradley_terry(chosen, rejected, 0.0 if m is None else m, w)
            np.testing.assert_allclose(loss, expected, rtol=1e-5)
            np.testing.assert_allclose(info["accuracy"], accuracy, rtol=1e-6)
            np.testing.assert_allclose(info["margin_mean"], margin_mean, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(info["margins"], chosen - rejected, rtol=1e-5, atol=1e-6)
            chex.assert_shape(info["losses"], (7,))

    @chex.variants(with_jit=True, without_jit=True)
    def test_equal_rewards_give_log_2_and_count_as_wrong(self):
        loss, info = self.variant(bradley_terry_loss)(jnp.full(4, 3.5), jnp.full(4, 3.5))
        np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)
        self.assertEqual(float(info["accuracy"]), 0.0)  # ties are not wins
        # a margin equal to the reward gap is a tie of the shifted comparison
        loss, _ = self.variant(bradley_terry_loss)(jnp.array([2.0]), jnp.array([0.5]), jnp.array([1.5]))
        np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_large_differences_stay_finite(self):
        chosen, rejected = f32([1e4, -1e4, 80.0, -80.0]), f32([-1e4, 1e4, -80.0, 80.0])
        loss_fn = self.variant(lambda c, r: bradley_terry_loss(c, r)[0])
        loss, grads = jax.value_and_grad(loss_fn, argnums=(0, 1))(chosen, rejected)
        chex.assert_tree_all_finite((loss, grads))
        # −log σ(2e4) ≈ 0, −log σ(−2e4) = 2e4, −log σ(±160) ≈ 0 / 160: the mean is exact in float32
        np.testing.assert_allclose(loss, (2e4 + 160.0) / 4, rtol=1e-6)
        # d/dr_c = −σ(−Δ)/B: 0 for a won pair, −1/B for a pair lost by far
        np.testing.assert_allclose(grads[0], [0.0, -0.25, 0.0, -0.25], atol=1e-7)
        np.testing.assert_allclose(grads[1], [0.0, 0.25, 0.0, 0.25], atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_all_masked_is_zero_with_zero_gradients(self):
        loss_fn = self.variant(lambda c, r: bradley_terry_loss(c, r, mask=jnp.zeros(3, bool)))
        (loss, info), grads = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(f32([1, 2, 3]), f32([3, 2, 1]))
        self.assertEqual(float(loss), 0.0)
        self.assertEqual(float(info["accuracy"]), 0.0)
        self.assertEqual(float(info["margin_mean"]), 0.0)
        np.testing.assert_array_equal(np.concatenate(grads), 0.0)

    def test_gradient_matches_finite_differences_in_float64(self):
        rng = np.random.default_rng(1)
        chosen, rejected = random_rewards(rng, 5)
        margin = rng.uniform(0.0, 1.0, 5)
        mask = np.array([1, 0, 1, 1, 1], bool)
        with jax.enable_x64(True):
            args = (jnp.asarray(chosen), jnp.asarray(rejected))
            loss_fn = lambda c, r: bradley_terry_loss(c, r, jnp.asarray(margin), jnp.asarray(mask))[0]  # noqa: E731
            chex.assert_type(loss_fn(*args), jnp.float64)
            jax.test_util.check_grads(loss_fn, args, order=2, modes=("rev",), eps=1e-4)
            # and the closed form: d/dr_c = −w σ(−(Δ − m)) / Σ w, d/dr_r its negative
            grad_chosen, grad_rejected = jax.grad(loss_fn, argnums=(0, 1))(*args)
            weights = mask.astype(np.float64)
            expected = -weights / weights.sum() / (1.0 + np.exp(chosen - rejected - margin))
            np.testing.assert_allclose(grad_chosen, expected, rtol=1e-10)
            np.testing.assert_allclose(grad_rejected, -expected, rtol=1e-10)

    def test_the_margin_is_a_constant(self):
        grad = jax.grad(lambda m: bradley_terry_loss(f32([1.0]), f32([0.0]), m)[0])(f32([0.5]))
        np.testing.assert_array_equal(grad, 0.0)

    def test_rejects_mismatched_shapes_and_integer_rewards(self):
        with self.assertRaises(AssertionError):
            bradley_terry_loss(jnp.zeros(3), jnp.zeros(4))
        with self.assertRaises(AssertionError):
            bradley_terry_loss(jnp.zeros((3, 1)), jnp.zeros((3, 1)))
        with self.assertRaises(AssertionError):
            bradley_terry_loss(jnp.zeros(3, jnp.int32), jnp.zeros(3, jnp.int32))
        with self.assertRaises(AssertionError):
            bradley_terry_loss(jnp.zeros(3), jnp.zeros(3), mask=jnp.ones(4, bool))
