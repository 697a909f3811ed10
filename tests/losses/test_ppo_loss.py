"""PPO clipped loss against a float64 numpy reference and its gradient by hand."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.losses import ppo_loss


def ppo_reference(logp, old_logp, adv, v, old_v, target, ent, eps, vf, ef):
    ratio = np.exp(logp - old_logp)
    pg = -np.minimum(ratio * adv, np.clip(ratio, 1 - eps, 1 + eps) * adv).mean()
    v_clipped = old_v + np.clip(v - old_v, -eps, eps)
    vl = 0.5 * np.maximum((v - target) ** 2, (v_clipped - target) ** 2).mean()
    return pg + vf * vl - ef * ent.mean()


class PPOLossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_reference(self):
        rng = np.random.default_rng(1)
        args = [rng.normal(size=64) * s for s in (0.3, 0.3, 1.0, 1.0, 1.0, 1.0, 1.0)]
        args[1] = args[0] + rng.normal(size=64) * 0.3  # ratios on both sides of the clip
        loss, metrics = self.variant(ppo_loss, static_argnums=(7, 8, 9))(
            *(jnp.asarray(a, jnp.float32) for a in args), 0.2, 0.5, 0.01
        )
        np.testing.assert_allclose(loss, ppo_reference(*args, 0.2, 0.5, 0.01), rtol=1e-5)
        ratio = np.exp(args[0] - args[1])
        np.testing.assert_allclose(metrics["clip_fraction"], (np.abs(ratio - 1) > 0.2).mean(), rtol=1e-6)

    def test_policy_gradient_vanishes_outside_the_clip_in_the_favoured_direction(self):
        # A > 0 and ratio > 1 + eps: clipped, no gradient; A > 0 and ratio < 1: gradient -A*ratio/B
        old = jnp.log(jnp.array([0.5, 0.5]))
        logp = jnp.log(jnp.array([0.5 * 1.5, 0.5 * 0.9]))
        adv = jnp.array([1.0, 2.0])
        zeros = jnp.zeros(2)
        grad = jax.grad(lambda lp: ppo_loss(lp, old, adv, zeros, zeros, zeros, zeros, 0.2, 0.0, 0.0)[0])(logp)
        np.testing.assert_allclose(np.asarray(grad), [0.0, -2.0 * 0.9 / 2], rtol=1e-5)

    def test_coefficient_spellings_give_the_same_loss(self):
        rng = np.random.default_rng(2)
        args = [
            jnp.asarray(rng.normal(size=16) * s, jnp.float32) for s in (0.3, 0.3, 1.0, 1.0, 1.0, 1.0, 1.0)
        ]
        positional = ppo_loss(*args, 0.2, 0.5, 0.01)
        preferred = ppo_loss(*args, 0.2, value_coef=0.5, entropy_coef=0.01)
        legacy = ppo_loss(*args, clip_eps=0.2, vf_coef=0.5, ent_coef=0.01)
        chex.assert_trees_all_equal(positional, preferred, legacy)
        # The coefficients act: doubling c_v adds c_v · L_V, doubling c_e subtracts c_e · mean H.
        _, metrics = positional
        np.testing.assert_allclose(
            ppo_loss(*args, 0.2, value_coef=1.0, entropy_coef=0.02)[0],
            positional[0] + 0.5 * metrics["value_loss"] - 0.01 * metrics["entropy"],
            rtol=1e-6,
        )
        with self.assertRaisesRegex(TypeError, "vf_coef"):
            ppo_loss(*args, 0.2, 0.5, 0.01, vf_coef=0.5)
        with self.assertRaisesRegex(TypeError, "entropy_coef"):
            ppo_loss(*args, 0.2, 0.5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_float64_loss_and_policy_gradient_match_the_equation(self):
        # Ratios on both sides of the clip (kept away from the kinks), zero advantages, and a batch of
        # a single sample.
        with jax.enable_x64(True):
            rng = np.random.default_rng(3)
            for size in (1, 40):
                old = -rng.exponential(1.0, size=size)
                logp = old + rng.choice([-0.7, -0.1, 0.0, 0.15, 0.6], size=size)
                adv = rng.normal(size=size)
                adv[rng.random(size) < 0.2] = 0.0
                v, old_v, target, ent = (rng.normal(size=size) for _ in range(4))

                def loss_of(logp):
                    return ppo_loss(logp, old, adv, v, old_v, target, ent, 0.2, 0.5, 0.01)

                (loss, metrics), grad = self.variant(jax.value_and_grad(loss_of, has_aux=True))(logp)
                np.testing.assert_allclose(
                    loss, ppo_reference(logp, old, adv, v, old_v, target, ent, 0.2, 0.5, 0.01), rtol=1e-12
                )
                ratio = np.exp(logp - old)
                unclipped_is_min = ratio * adv <= np.clip(ratio, 0.8, 1.2) * adv
                np.testing.assert_allclose(
                    grad, np.where(unclipped_is_min, -adv * ratio / size, 0.0), atol=1e-15
                )
                np.testing.assert_allclose(
                    metrics["approx_kl"], np.mean(ratio - 1 - np.log(ratio)), rtol=1e-12
                )
                np.testing.assert_allclose(metrics["clip_fraction"], np.mean(np.abs(ratio - 1) > 0.2))
