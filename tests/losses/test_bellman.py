"""Tests of jaxrl_llm.losses.bellman (ShiQ).

(a) a synthetic tree MDP (depth 3, 3 actions, deterministic transitions, known rewards) with a
tabular softmax policy: the KL-regularised optimum from soft value iteration in numpy float64 has
zero ShiQ loss, and gradient descent from the reference logits converges to it;
(b) the residuals and losses equal a float64 numpy transcription of the telescoped equations on
ragged batches; (c) at θ = θ_ref the loss reduces to the reward-only residual.
"""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrl_llm.losses.bellman import (
    implied_log_policy,
    next_action_values,
    sequence_reward_to_tokens,
    shiq_loss,
    shiq_residuals,
    turn_rewards_to_tokens,
)
from jaxrl_llm.losses.preference import dro_loss
from jaxrl_llm.losses.reference.soft_tree_mdp import random_tree_mdp

# Tree MDP (losses/reference/soft_tree_mdp.py): depth 3, 3 actions, deterministic transitions.
# ==============================================================================================


def tree_batch(mdp, logits, ref_logits, rewards):
    """Per-token ShiQ inputs `[A^D, D]` of every path under tabular logits `[S, A]`."""
    states, actions = mdp.all_paths()
    lse, ref_lse = jax.nn.logsumexp(logits, -1), jax.nn.logsumexp(ref_logits, -1)
    return dict(
        target_logits=logits[states, actions],
        logsumexp=lse[states],
        ref_target_logits=ref_logits[states, actions],
        ref_logsumexp=ref_lse[states],
        rewards=rewards[states, actions],
        mask=jnp.ones(states.shape, bool),
    )


LOSS_VARIANTS = {
    "multi_step_full_gradient": dict(one_step_coef=0.0, multi_step_coef=1.0, stop_gradient_targets=False),
    "one_step_full_gradient": dict(one_step_coef=1.0, multi_step_coef=0.0, stop_gradient_targets=False),
    "multi_step_stop_gradient": dict(one_step_coef=0.0, multi_step_coef=1.0, stop_gradient_targets=True),
    "one_step_stop_gradient": dict(one_step_coef=1.0, multi_step_coef=0.0, stop_gradient_targets=True),
}


class TreeMDPTest(parameterized.TestCase):
    @parameterized.parameters(False, True)
    def test_loss_is_zero_at_the_soft_optimum_and_only_there(self, sequence_level):
        beta = 0.5
        mdp = random_tree_mdp(0, sequence_level=sequence_level)
        ref_logits, rewards = mdp.ref_logits, mdp.rewards
        q_star, v_star = mdp.soft_optimum(beta)
        optimum = ref_logits + q_star / beta
        # a per-state shift of the logits leaves the policy unchanged but breaks the Bellman equations
        shifted = optimum + np.arange(mdp.num_states)[:, None] * 0.1

        @jax.jit
        def every_variant(logits):
            batch = tree_batch(mdp, logits, jnp.asarray(ref_logits, jnp.float32), jnp.asarray(rewards, jnp.float32))
            results = [shiq_loss(**batch, beta=beta, **variant) for variant in LOSS_VARIANTS.values()]
            return jnp.stack([loss for loss, _ in results]), results[0][1]["initial_value_mean"]

        losses, initial_value = every_variant(jnp.asarray(optimum, jnp.float32))
        self.assertLess(float(losses.max()), 1e-10)
        np.testing.assert_allclose(initial_value, v_star[0], atol=1e-5)
        losses, _ = every_variant(jnp.asarray(shifted, jnp.float32))
        self.assertGreater(float(losses.min()), 1e-4)

    @parameterized.named_parameters(
        ("multi_step_full_gradient_sequence_reward", "multi_step_full_gradient", True),
        ("multi_step_full_gradient_token_rewards", "multi_step_full_gradient", False),
        ("one_step_full_gradient_sequence_reward", "one_step_full_gradient", True),
        ("multi_step_stop_gradient_sequence_reward", "multi_step_stop_gradient", True),
    )
    def test_gradient_descent_from_the_reference_reaches_the_optimal_policy(self, variant, sequence_level):
        beta = 0.5
        mdp = random_tree_mdp(1, sequence_level=sequence_level)
        ref_logits, rewards = mdp.ref_logits, mdp.rewards
        q_star, _ = mdp.soft_optimum(beta)
        optimal_log_policy = mdp.optimal_log_policy(beta)
        ref_logits32 = jnp.asarray(ref_logits, jnp.float32)
        rewards32 = jnp.asarray(rewards, jnp.float32)
        optimizer = optax.adam(0.05)

        def objective(logits):
            return shiq_loss(**tree_batch(mdp, logits, ref_logits32, rewards32), beta=beta, **LOSS_VARIANTS[variant])[0]

        @jax.jit
        def train(logits):
            def step(carry, _):
                logits, opt_state = carry
                grads = jax.grad(objective)(logits)
                updates, opt_state = optimizer.update(grads, opt_state)
                return (optax.apply_updates(logits, updates), opt_state), None

            (logits, _), _ = jax.lax.scan(step, (logits, optimizer.init(logits)), None, length=600)
            return logits

        learned = train(ref_logits32)
        gap = np.abs(np.asarray(jax.nn.log_softmax(learned, axis=-1)) - optimal_log_policy).max()
        self.assertLess(gap, 1e-2)
        # the shifted logits are the soft Q-values themselves, not just up to a per-state constant
        np.testing.assert_allclose(beta * (learned - ref_logits32), q_star, atol=2e-2)


# ==============================================================================================
# float64 numpy transcription of the telescoped equations, on ragged batches.
# ==============================================================================================

MASKS = np.array(
    [
        [1, 1, 1, 1, 1, 1, 1],  # full
        [1, 1, 1, 1, 0, 0, 0],  # right-padded
        [0, 0, 0, 1, 1, 1, 1],  # left-padded
        [0, 0, 0, 0, 0, 0, 0],  # all masked
        [0, 0, 1, 0, 0, 0, 0],  # a single action
        [1, 1, 0, 0, 1, 1, 0],  # two agent turns around non-action tokens
    ],
    bool,
)


def random_batch(rng, beta_scale=1.0):
    shape = MASKS.shape
    batch = {
        "target_logits": rng.normal(size=shape) * 2,
        "logsumexp": rng.normal(size=shape) + 3,
        "ref_target_logits": rng.normal(size=shape) * 2,
        "ref_logsumexp": rng.normal(size=shape) + 3,
        "rewards": rng.normal(size=shape),
    }
    for value in batch.values():  # garbage where masked
        value[~MASKS] = rng.choice([np.nan, np.inf, 1e30], size=(~MASKS).sum())
    batch["mask"] = MASKS.copy()
    return batch


def numpy_residuals(batch, beta):
    """δ_t = q_t − r_t − v_{t⁺};  Δ_t = v_t + Σ_{k ≥ t} [β(log π − log π_ref)_k − r_k] (telescoped form)."""
    one_step = np.zeros(MASKS.shape)
    multi_step = np.zeros(MASKS.shape)
    for b in range(MASKS.shape[0]):
        actions = np.flatnonzero(batch["mask"][b])
        q = {t: beta * (batch["target_logits"][b, t] - batch["ref_target_logits"][b, t]) for t in actions}
        v = {t: beta * (batch["logsumexp"][b, t] - batch["ref_logsumexp"][b, t]) for t in actions}
        log_ratio = {
            t: (batch["target_logits"][b, t] - batch["logsumexp"][b, t])
            - (batch["ref_target_logits"][b, t] - batch["ref_logsumexp"][b, t])
            for t in actions
        }
        for j, t in enumerate(actions):
            next_v = v[actions[j + 1]] if j + 1 < len(actions) else 0.0
            one_step[b, t] = q[t] - batch["rewards"][b, t] - next_v
            multi_step[b, t] = v[t] + sum(beta * log_ratio[k] - batch["rewards"][b, k] for k in actions[j:])
    return one_step, multi_step


def numpy_aggregate(per_token, mask, mode):
    per_token = np.where(mask, per_token, 0.0)
    counts = mask.sum(-1)
    if mode == "token-mean":
        return per_token.sum() / max(mask.sum(), 1)
    if mode == "seq-mean-token-mean":
        return np.mean(per_token.sum(-1) / np.maximum(counts, 1))
    if mode == "seq-mean-token-sum":
        return np.mean(per_token.sum(-1))
    raise ValueError(mode)


def numpy_shiq_loss(batch, beta, one_step_coef, multi_step_coef, mode):
    one_step, multi_step = numpy_residuals(batch, beta)
    return one_step_coef * numpy_aggregate(0.5 * one_step**2, batch["mask"], mode) + multi_step_coef * (
        numpy_aggregate(0.5 * multi_step**2, batch["mask"], mode)
    )


class ShiQEquationsTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_residuals_and_losses_equal_numpy_float64(self):
        rng = np.random.default_rng(0)
        batch = random_batch(rng)
        beta = 0.3
        expected_one, expected_multi = numpy_residuals(batch, beta)
        inputs = {k: jnp.asarray(v, jnp.float32) if k != "mask" else jnp.asarray(v) for k, v in batch.items()}
        for stop_gradient_targets in (False, True):
            residuals = self.variant(
                functools.partial(shiq_residuals, beta=beta, stop_gradient_targets=stop_gradient_targets)
            )(**inputs)
            np.testing.assert_allclose(residuals["one_step"], expected_one, atol=1e-5)
            np.testing.assert_allclose(residuals["multi_step"], expected_multi, atol=1e-5)
        for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
            loss, info = self.variant(
                functools.partial(shiq_loss, beta=beta, one_step_coef=0.3, multi_step_coef=0.7, loss_agg_mode=mode)
            )(**inputs)
            np.testing.assert_allclose(loss, numpy_shiq_loss(batch, beta, 0.3, 0.7, mode), rtol=1e-5, err_msg=mode)
            np.testing.assert_allclose(info["one_step_loss"], numpy_shiq_loss(batch, beta, 1, 0, mode), rtol=1e-5)
            np.testing.assert_allclose(info["multi_step_loss"], numpy_shiq_loss(batch, beta, 0, 1, mode), rtol=1e-5)
            chex.assert_tree_all_finite(info)

    def test_gradients_match_finite_differences_of_numpy_in_float64(self):
        rng = np.random.default_rng(1)
        batch = random_batch(rng)
        beta = 0.7
        with jax.enable_x64(True):
            inputs = {k: jnp.asarray(v) for k, v in batch.items()}

            def ours(target_logits, logsumexp):
                return shiq_loss(
                    **{**inputs, "target_logits": target_logits, "logsumexp": logsumexp},
                    beta=beta, one_step_coef=0.4, multi_step_coef=0.6, loss_agg_mode="seq-mean-token-mean",
                )[0]

            grads = jax.jit(jax.grad(ours, argnums=(0, 1)))(inputs["target_logits"], inputs["logsumexp"])
            step = 1e-6
            for g, name in zip(grads, ("target_logits", "logsumexp")):
                self.assertTrue(np.all(np.asarray(g)[~MASKS] == 0), name)
                for index in zip(*np.nonzero(MASKS)):
                    plus, minus = dict(batch), dict(batch)
                    plus[name], minus[name] = batch[name].copy(), batch[name].copy()
                    plus[name][index] += step
                    minus[name][index] -= step
                    numeric = (
                        numpy_shiq_loss(plus, beta, 0.4, 0.6, "seq-mean-token-mean")
                        - numpy_shiq_loss(minus, beta, 0.4, 0.6, "seq-mean-token-mean")
                    ) / (2 * step)
                    np.testing.assert_allclose(g[index], numeric, rtol=1e-6, atol=1e-8, err_msg=f"{name}{index}")

    @chex.variants(with_jit=True, without_jit=True)
    def test_stop_gradient_targets_differentiate_only_the_taken_q_value(self):
        rng = np.random.default_rng(2)
        batch = {k: jnp.asarray(v, jnp.float32) if k != "mask" else jnp.asarray(v) for k, v in random_batch(rng).items()}
        beta = 0.5

        def loss(target_logits, logsumexp):
            return shiq_loss(
                **{**batch, "target_logits": target_logits, "logsumexp": logsumexp},
                beta=beta, stop_gradient_targets=True, loss_agg_mode="token-mean",
            )[0]

        grad_target, grad_lse = self.variant(jax.grad(loss, argnums=(0, 1)))(batch["target_logits"], batch["logsumexp"])
        multi_step = shiq_residuals(**batch, beta=beta)["multi_step"]
        # d/dℓ_t ½Δ_t²/N with only q_t = β(ℓ_t − ℓ_ref,t) differentiated: β Δ_t / N
        np.testing.assert_allclose(grad_target, beta * multi_step / MASKS.sum(), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(grad_lse, np.zeros(MASKS.shape))

    @chex.variants(with_jit=True, without_jit=True)
    def test_at_the_reference_q_is_zero_and_the_loss_is_the_reward_only_residual(self):
        rng = np.random.default_rng(3)
        batch = random_batch(rng)
        inputs = {k: jnp.asarray(v, jnp.float32) if k != "mask" else jnp.asarray(v) for k, v in batch.items()}
        inputs["target_logits"], inputs["logsumexp"] = inputs["ref_target_logits"], inputs["ref_logsumexp"]
        residuals = self.variant(functools.partial(shiq_residuals, beta=0.4))(**inputs)
        rewards = np.where(MASKS, batch["rewards"], 0.0)
        np.testing.assert_array_equal(residuals["q"], 0.0)
        np.testing.assert_array_equal(residuals["v"], 0.0)
        np.testing.assert_allclose(residuals["one_step"], -rewards, atol=1e-6)
        reward_to_go = np.where(MASKS, np.cumsum(rewards[:, ::-1], axis=1)[:, ::-1], 0.0)
        np.testing.assert_allclose(residuals["multi_step"], -reward_to_go, atol=1e-5)
        loss, _ = self.variant(functools.partial(shiq_loss, beta=0.4, loss_agg_mode="seq-mean-token-sum"))(**inputs)
        np.testing.assert_allclose(loss, np.mean((0.5 * reward_to_go**2).sum(-1)), rtol=1e-5)

    def test_everything_masked_is_zero_not_nan(self):
        batch = {k: jnp.full((2, 4), jnp.nan) for k in ("target_logits", "logsumexp", "ref_target_logits",
                                                       "ref_logsumexp", "rewards")}
        batch["mask"] = jnp.zeros((2, 4), bool)

        @jax.jit
        def losses_and_grads(target_logits):
            results = []
            for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
                def loss(x):
                    return shiq_loss(**{**batch, "target_logits": x}, beta=0.1, one_step_coef=1.0, loss_agg_mode=mode)
                results.append((jax.value_and_grad(loss, has_aux=True)(target_logits)))
            return results

        for (loss, info), grads in losses_and_grads(batch["target_logits"]):
            self.assertEqual(float(loss), 0.0)
            chex.assert_tree_all_finite(info)
            np.testing.assert_array_equal(grads, 0.0)

    def test_first_token_multi_step_residual_is_the_dro_residual(self):
        """One sequence reward R on the last token: Δ_first = v_θ(x) + β log π_θ/π_ref(y|x) − R."""
        rng = np.random.default_rng(4)
        batch = random_batch(rng)
        beta = 0.2
        sequence_rewards = jnp.asarray(rng.normal(size=MASKS.shape[0]), jnp.float32)
        inputs = {k: jnp.asarray(v, jnp.float32) if k != "mask" else jnp.asarray(v) for k, v in batch.items()}
        inputs["rewards"] = sequence_reward_to_tokens(sequence_rewards, inputs["mask"])
        residuals = shiq_residuals(**inputs, beta=beta)
        non_empty = MASKS.any(-1)
        first = MASKS.argmax(-1)
        rows = np.arange(MASKS.shape[0])
        log_pi = implied_log_policy(inputs["target_logits"], inputs["logsumexp"])
        ref_log_pi = implied_log_policy(inputs["ref_target_logits"], inputs["ref_logsumexp"])
        logps = jnp.where(MASKS, log_pi, 0.0).sum(-1)
        ref_logps = jnp.where(MASKS, ref_log_pi, 0.0).sum(-1)
        _, dro_info = dro_loss(logps, ref_logps, residuals["v"][rows, first], sequence_rewards, beta=beta)
        np.testing.assert_allclose(
            np.asarray(residuals["multi_step"])[rows, first][non_empty],
            np.asarray(dro_info["residuals"])[non_empty],
            atol=1e-5,
        )


class RewardPlacementTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_sequence_reward_goes_on_the_last_action_token(self):
        rewards = jnp.arange(1.0, 7.0)
        placed = self.variant(sequence_reward_to_tokens)(rewards, jnp.asarray(MASKS))
        expected = np.zeros(MASKS.shape)
        for b, last in [(0, 6), (1, 3), (2, 6), (4, 2), (5, 5)]:
            expected[b, last] = b + 1.0
        np.testing.assert_array_equal(placed, expected)

    @chex.variants(with_jit=True, without_jit=True)
    def test_turn_rewards_go_on_the_last_action_token_of_each_turn(self):
        mask = jnp.array([[1, 1, 0, 0, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0]], bool)
        turn_ids = jnp.array([[0, 0, 9, 9, 1, 1, 9], [0, 0, 1, 1, 2, 0, 0], [0] * 7])
        turn_rewards = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
        placed = self.variant(turn_rewards_to_tokens)(turn_rewards, turn_ids, mask)
        np.testing.assert_array_equal(
            placed, [[0, 1, 0, 0, 0, 2, 0], [0, 4, 0, 5, 6, 0, 0], [0] * 7]
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_next_action_values_skip_non_action_tokens(self):
        values = jnp.arange(1.0, 8.0)[None].repeat(2, 0)
        mask = jnp.array([[1, 1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 0, 0]], bool)
        got = self.variant(next_action_values)(values, mask)
        np.testing.assert_array_equal(got, [[2, 5, 5, 5, 6, 0, 0], [3, 3, 0, 0, 0, 0, 0]])
