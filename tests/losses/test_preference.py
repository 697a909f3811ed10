"""Tests of jaxrl_llm.losses.preference: DPO (cDPO, reference-free), ORPO, DRO.

References are float64 numpy transcriptions of the papers' equations (DPO Eq. 7, ORPO Eqs. 2-7,
DRO's squared residual) and of Tunix's `dpo_loss_fn` (google/tunix `tunix/sft/dpo/dpo_trainer.py`:
ORPO with summed log-probs in the odds and a length-normalised SFT term).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.losses.preference import dpo_loss, dro_loss, orpo_log_odds_ratio, orpo_loss


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def numpy_dpo(chosen, rejected, ref_chosen, ref_rejected, beta, eps):
    h = (chosen - ref_chosen) - (rejected - ref_rejected)
    return np.mean(-(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h))


def numpy_orpo(chosen, rejected, chosen_len, rejected_len, lam, eps, normalise):
    chosen_len, rejected_len = np.maximum(chosen_len, 1), np.maximum(rejected_len, 1)
    p_w = chosen / chosen_len if normalise else chosen
    p_l = rejected / rejected_len if normalise else rejected
    log_odds = (p_w - np.log1p(-np.exp(p_w))) - (p_l - np.log1p(-np.exp(p_l)))
    odds_loss = -(1 - eps) * log_sigmoid(log_odds) - eps * log_sigmoid(-log_odds)
    return np.mean(-chosen / chosen_len + lam * odds_loss)


def random_pairs(rng, size=6):
    chosen = -rng.uniform(1.0, 30.0, size)
    rejected = -rng.uniform(1.0, 30.0, size)
    return chosen, rejected, chosen + rng.normal(size=size), rejected + rng.normal(size=size)


class DPOTest(chex.TestCase):
    def test_known_value_by_hand(self):
        # h = (−1 − (−2)) − (−3 − (−2)) = 2; β h = 0.2; −log σ(0.2) = log(1 + e^{−0.2})
        loss, info = dpo_loss(jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]), jnp.array([-2.0]), beta=0.1)
        np.testing.assert_allclose(loss, np.log1p(np.exp(-0.2)), rtol=1e-6)
        np.testing.assert_allclose(info["chosen_rewards"], [0.1], rtol=1e-6)
        np.testing.assert_allclose(info["rejected_rewards"], [-0.1], rtol=1e-6)
        self.assertEqual(float(info["accuracy"]), 1.0)
        # equal log-ratios: log 2 whatever β and ε
        for eps in (0.0, 0.3):
            loss, _ = dpo_loss(jnp.array([-5.0]), jnp.array([-5.0]), jnp.array([-4.0]), jnp.array([-4.0]),
                               beta=0.7, label_smoothing=eps)
            np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_equals_numpy_float64_with_label_smoothing_and_reference_free(self):
        rng = np.random.default_rng(0)
        chosen, rejected, ref_chosen, ref_rejected = random_pairs(rng)
        f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
        for beta, eps in ((0.1, 0.0), (0.5, 0.2)):
            loss, info = self.variant(functools.partial(dpo_loss, beta=beta, label_smoothing=eps))(
                f32(chosen), f32(rejected), f32(ref_chosen), f32(ref_rejected)
            )
            np.testing.assert_allclose(loss, numpy_dpo(chosen, rejected, ref_chosen, ref_rejected, beta, eps), rtol=1e-5)
            chex.assert_shape(info["losses"], (6,))
            free, _ = self.variant(functools.partial(dpo_loss, beta=beta, label_smoothing=eps))(
                f32(chosen), f32(rejected)
            )
            np.testing.assert_allclose(free, numpy_dpo(chosen, rejected, 0.0, 0.0, beta, eps), rtol=1e-5)

    def test_label_smoothing_zero_is_the_plain_sigmoid_loss(self):
        rng = np.random.default_rng(1)
        chosen, rejected, ref_chosen, ref_rejected = map(jnp.asarray, random_pairs(rng))
        smoothed, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.3, label_smoothing=0.0)
        margins = 0.3 * ((chosen - ref_chosen) - (rejected - ref_rejected))
        np.testing.assert_allclose(smoothed, jnp.mean(-jax.nn.log_sigmoid(margins)), rtol=1e-6)

    def test_gradient_raises_chosen_and_lowers_rejected_and_ignores_the_reference(self):
        rng = np.random.default_rng(2)
        pairs = tuple(map(jnp.asarray, random_pairs(rng)))
        grads = jax.grad(lambda *a: dpo_loss(*a, beta=0.2)[0], argnums=(0, 1, 2, 3))(*pairs)
        self.assertTrue(np.all(np.asarray(grads[0]) < 0))  # descent increases log π(y_w)
        self.assertTrue(np.all(np.asarray(grads[1]) > 0))  # and decreases log π(y_l)
        np.testing.assert_array_equal(grads[2], 0.0)
        np.testing.assert_array_equal(grads[3], 0.0)
        # with label smoothing the gradient flips sign once the margin is past the smoothed optimum
        eps = 0.2
        optimum = np.log((1 - eps) / eps)  # argmin of −(1−ε)log σ(m) − ε log σ(−m)
        beyond = jax.grad(lambda c: dpo_loss(c, jnp.array([0.0]), beta=1.0, label_smoothing=eps)[0])(
            jnp.array([optimum + 1.0])
        )
        self.assertGreater(float(beyond[0]), 0.0)

    def test_rejects_a_single_reference(self):
        with self.assertRaisesRegex(ValueError, "both"):
            dpo_loss(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2))


class ORPOTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_equals_numpy_float64_paper_and_tunix_forms(self):
        rng = np.random.default_rng(3)
        chosen, rejected, _, _ = random_pairs(rng)
        chosen_len = rng.integers(1, 20, size=6).astype(float)
        rejected_len = rng.integers(1, 20, size=6).astype(float)
        rejected_len[0] = 0  # an empty completion is clamped to length 1
        rejected[0] = -2.0
        args = [jnp.asarray(x, jnp.float32) for x in (chosen, rejected, chosen_len, rejected_len)]
        for normalise in (True, False):
            loss, info = self.variant(
                functools.partial(orpo_loss, lambda_orpo=0.25, label_smoothing=0.1, length_normalized_odds=normalise)
            )(*args)
            expected = numpy_orpo(chosen, rejected, chosen_len, rejected_len, 0.25, 0.1, normalise)
            np.testing.assert_allclose(loss, expected, rtol=1e-5, err_msg=str(normalise))
            np.testing.assert_allclose(info["sft_losses"], -chosen / chosen_len, rtol=1e-5)

    def test_known_value_by_hand(self):
        # mean log-probs log ½ vs log ¼: odds 1 and 1/3, log odds ratio = log 3; L = log 2 + λ log(4/3)
        loss, info = orpo_loss(
            jnp.array([2 * np.log(0.5)]), jnp.array([3 * np.log(0.25)]), jnp.array([2]), jnp.array([3]), lambda_orpo=0.5
        )
        np.testing.assert_allclose(info["log_odds_ratio"], [np.log(3.0)], rtol=1e-5)
        np.testing.assert_allclose(loss, np.log(2.0) + 0.5 * np.log(4.0 / 3.0), rtol=1e-5)

    def test_certain_sequences_give_finite_values_and_gradients(self):
        value, grads = jax.value_and_grad(
            lambda c, r: orpo_loss(c, r, jnp.array([3.0, 3.0]), jnp.array([3.0, 3.0]))[0], argnums=(0, 1)
        )(jnp.array([0.0, -1e4]), jnp.array([-1e4, 0.0]))
        chex.assert_tree_all_finite((value, grads))
        self.assertTrue(np.isfinite(float(orpo_log_odds_ratio(jnp.array(0.0), jnp.array(-1e-9)))))

    def test_gradient_sign(self):
        grads = jax.grad(lambda c, r: orpo_loss(c, r, jnp.array([4]), jnp.array([4]))[0], argnums=(0, 1))(
            jnp.array([-6.0]), jnp.array([-5.0])
        )
        self.assertLess(float(grads[0][0]), 0.0)
        self.assertGreater(float(grads[1][0]), 0.0)


class DROTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_equals_numpy_float64(self):
        rng = np.random.default_rng(4)
        logps, ref_logps = -rng.uniform(1, 20, 5), -rng.uniform(1, 20, 5)
        values, rewards = rng.normal(size=5), rng.normal(size=5)
        args = [jnp.asarray(x, jnp.float32) for x in (logps, ref_logps, values, rewards)]
        loss, info = self.variant(functools.partial(dro_loss, beta=0.3))(*args)
        residual = values + 0.3 * (logps - ref_logps) - rewards
        np.testing.assert_allclose(loss, np.mean(0.5 * residual**2), rtol=1e-5)
        np.testing.assert_allclose(info["residuals"], residual, rtol=1e-5, atol=1e-6)

    def test_zero_at_the_regularised_optimum_of_a_bandit(self):
        """One prompt, three completions: V* = β log E_ref[e^{R/β}], π* ∝ π_ref e^{R/β} zero the loss."""
        beta = 0.5
        ref_logps = jnp.log(jnp.array([0.2, 0.3, 0.5]))
        rewards = jnp.array([1.0, -0.5, 0.3])
        value = beta * jax.nn.logsumexp(ref_logps + rewards / beta)
        logps = jax.nn.log_softmax(ref_logps + rewards / beta)
        loss, _ = dro_loss(logps, ref_logps, jnp.full(3, value), rewards, beta=beta)
        self.assertLess(float(loss), 1e-12)
        grads = jax.grad(lambda lp, v: dro_loss(lp, ref_logps, v, rewards, beta=beta)[0], argnums=(0, 1))(
            logps, jnp.full(3, value)
        )
        np.testing.assert_allclose(np.concatenate([g for g in grads]), 0.0, atol=1e-6)
