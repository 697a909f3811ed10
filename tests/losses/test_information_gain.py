"""Tests of jaxrl_llm.losses.information_gain against float64 numpy transcriptions.

The references below are written from the digest of L2T §4.3 (paper) and from ML-TASA/L2T's
`fill_episode_deltas` + verl GRPO (code), with Python loops over rows and episodes; they share no
code with the implementation.
"""

from collections import defaultdict

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm.losses.information_gain import (
    answer_score,
    code_sequence_scores,
    fitting_gain,
    l2t_advantages,
    length_penalty_rewards,
    process_rewards,
    truncated_mean,
)

# ----------------------------------------------------------------------------------------------
# float64 references
# ----------------------------------------------------------------------------------------------


def ref_trimmed_mean(values, trim_fraction):
    values = np.sort(np.asarray(values, np.float64))
    n = values.size
    if n == 0:
        return 0.0
    cut = int(np.floor(n * trim_fraction / 2))
    return float(values[cut : n - cut].mean())


def ref_group_zscore(values, group_ids, valid, eps=1e-6):
    groups = defaultdict(list)
    for i, g in enumerate(group_ids):
        if valid[i]:
            groups[int(g)].append(values[i])
    out = np.zeros(len(values))
    for i, g in enumerate(group_ids):
        if not valid[i]:
            continue
        members = np.asarray(groups[int(g)])
        if members.size == 1:
            mean, std = 0.0, 1.0
        elif np.all(members == members[0]):
            continue
        else:
            mean, std = members.mean(), members.std(ddof=1)
        out[i] = (values[i] - mean) / (std + eps)
    return out


def ref_paper(outcome, r_prg, episode_mask, token_episode, mask, old_logp, group_ids, alpha, trim, ratio_eps):
    batch, steps = mask.shape
    token_rewards = np.zeros((batch, steps))
    r_tilde = np.zeros(batch)
    row_valid = np.zeros(batch, bool)
    for i in range(batch):
        episodes = [k for k in range(episode_mask.shape[1]) if episode_mask[i, k]]
        num = max(len(episodes), 1)
        for k in episodes:
            tokens = [t for t in range(steps) if mask[i, t] and token_episode[i, t] == k]
            if not tokens:
                continue
            big_r = outcome[i] / num + alpha * r_prg[i, k]
            w = np.array([max(-old_logp[i, t], 0.0) for t in tokens])
            if w.sum() <= 0:
                w = np.ones(len(tokens))
            for t, wt in zip(tokens, w):
                token_rewards[i, t] = wt / w.sum() * big_r
        inside = [t for t in range(steps) if mask[i, t] and token_episode[i, t] >= 0]
        row_valid[i] = bool(inside)
        r_tilde[i] = ref_trimmed_mean(token_rewards[i, inside], trim)
    seq_adv = ref_group_zscore(r_tilde, group_ids, row_valid)
    adv = np.zeros((batch, steps))
    for i in range(batch):
        for t in range(steps):
            if mask[i, t] and token_episode[i, t] >= 0:
                ratio = 1.0 if abs(r_tilde[i]) <= ratio_eps else token_rewards[i, t] / r_tilde[i]
                adv[i, t] = seq_adv[i] * ratio
    return adv, token_rewards, r_tilde, seq_adv


def ref_code(outcome, scores, episode_mask, episode_ends, mask, group_ids):
    """fill_episode_deltas on a token tensor, outcome on the last valid token, then the token sum."""
    batch, steps = mask.shape
    reward = np.zeros((batch, steps))
    for i in range(batch):
        positions = [int(episode_ends[i, k]) for k in range(episode_mask.shape[1]) if episode_mask[i, k]]
        values = [scores[i, k] for k in range(episode_mask.shape[1]) if episode_mask[i, k]]
        r = outcome[i]
        if len(values) == 0:
            r -= 0.01
        else:
            for j in range(len(positions) - 1):
                reward[i, positions[j] : positions[j + 1]] = values[j + 1] - values[j]
        valid_len = int(mask[i].sum())
        if valid_len:
            reward[i, valid_len - 1] = r
    score = reward.sum(-1)
    row_valid = mask.any(axis=1)
    seq_adv = ref_group_zscore(score, group_ids, row_valid)
    return seq_adv[:, None] * mask, score


# ----------------------------------------------------------------------------------------------
# Random ragged batches
# ----------------------------------------------------------------------------------------------

B, T, K = 8, 24, 4
GROUP_IDS = np.array([0, 0, 0, 1, 1, 1, 2, 2])


def random_batch(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, T + 1, size=B)
    lengths[5] = 0  # an all-masked row
    mask = np.arange(T)[None, :] < lengths[:, None]
    num_episodes = rng.integers(1, K + 1, size=B)
    num_episodes[2] = 1  # K = 1
    token_episode = -np.ones((B, T), np.int64)
    episode_mask = np.zeros((B, K), bool)
    ends = -np.ones((B, K), np.int64)
    for i in range(B):
        if lengths[i] == 0:
            continue
        n = min(num_episodes[i], lengths[i] // 2)
        cuts = np.sort(rng.choice(np.arange(1, lengths[i] - 1), size=n, replace=False))
        start = cuts[0] - 1 if i % 2 else 0  # odd rows: one token before the first episode
        bounds = list(cuts[1:]) + [lengths[i] - (i % 3 == 0)]  # some rows end with an outside token
        for k, end in enumerate(bounds):
            token_episode[i, start:end] = k
            episode_mask[i, k] = True
            ends[i, k] = end - 1
            start = end
    old_logp = -rng.exponential(1.0, size=(B, T))
    old_logp[0, token_episode[0] == 0] = 0.0  # zero surprise in an episode -> uniform weights
    outcome = rng.integers(0, 2, size=B).astype(np.float64)
    r_prg = rng.normal(size=(B, K)) * episode_mask
    # Group 2 gets equal rewards: identical rows.
    for name in ("mask", "token_episode", "episode_mask", "ends", "old_logp", "outcome", "r_prg"):
        array = locals()[name]
        array[7] = array[6]
    return dict(mask=mask, token_episode=token_episode, episode_mask=episode_mask, ends=ends,
                old_logp=old_logp, outcome=outcome, r_prg=r_prg)


class L2TAdvantagesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_paper_pipeline_matches_float64_reference(self):
        for seed in range(3):
            batch = random_batch(seed)
            for trim in (0.05, 0.5):
                fn = self.variant(
                    lambda o, r, em, te, m, lp, g, trim=trim: l2t_advantages(
                        o, r, em, te, m, g, 3, variant="paper", old_logp=lp, alpha=0.8, trim_fraction=trim
                    )
                )
                with jax.enable_x64(True):
                    adv, aux = fn(
                        jnp.asarray(batch["outcome"]), jnp.asarray(batch["r_prg"]),
                        jnp.asarray(batch["episode_mask"]), jnp.asarray(batch["token_episode"]),
                        jnp.asarray(batch["mask"]), jnp.asarray(batch["old_logp"]), jnp.asarray(GROUP_IDS),
                    )
                    ref_adv, ref_tok, ref_tilde, ref_seq = ref_paper(
                        batch["outcome"], batch["r_prg"], batch["episode_mask"], batch["token_episode"],
                        batch["mask"], batch["old_logp"], GROUP_IDS, 0.8, trim, 1e-6,
                    )
                    assert adv.dtype == jnp.float64
                    np.testing.assert_allclose(aux["token_rewards"], ref_tok, rtol=1e-12, atol=1e-14)
                    np.testing.assert_allclose(aux["sequence_rewards"], ref_tilde, rtol=1e-12, atol=1e-14)
                    np.testing.assert_allclose(aux["sequence_advantages"], ref_seq, rtol=1e-10, atol=1e-12)
                    np.testing.assert_allclose(adv, ref_adv, rtol=1e-9, atol=1e-10)
                    np.testing.assert_array_equal(adv[5], 0.0)  # all-masked row
                    np.testing.assert_array_equal(adv[6:], 0.0)  # equal rewards in a group
                    assert np.all(np.isfinite(adv))

    @chex.variants(with_jit=True, without_jit=True)
    def test_code_variant_matches_fill_episode_deltas_and_verl_grpo(self):
        for seed in range(3):
            batch = random_batch(seed)
            scores = np.cumsum(np.random.default_rng(seed + 10).uniform(size=(B, K)), axis=1) * batch["episode_mask"]
            deltas = np.diff(scores, axis=1, prepend=0.0)
            fn = self.variant(
                lambda o, d, em, te, m, e, g: l2t_advantages(o, d, em, te, m, g, 3, variant="code", episode_ends=e)
            )
            with jax.enable_x64(True):
                adv, aux = fn(
                    jnp.asarray(batch["outcome"]), jnp.asarray(deltas), jnp.asarray(batch["episode_mask"]),
                    jnp.asarray(batch["token_episode"]), jnp.asarray(batch["mask"]), jnp.asarray(batch["ends"]),
                    jnp.asarray(GROUP_IDS),
                )
                ref_adv, ref_score = ref_code(
                    batch["outcome"], scores, batch["episode_mask"], batch["ends"], batch["mask"], GROUP_IDS
                )
                valid = batch["mask"].any(axis=1)
                np.testing.assert_allclose(np.asarray(aux["sequence_rewards"])[valid], ref_score[valid], rtol=1e-12)
                np.testing.assert_allclose(adv, ref_adv, rtol=1e-9, atol=1e-10)

    def test_code_format_penalty_and_small_r_tilde_guard(self):
        # No episode -> outcome − 0.01 (code); r̃ = 0 -> ratio 1, token advantage = Â (paper).
        score = code_sequence_scores(
            jnp.array([1.0, 1.0]), jnp.zeros((2, 2)), jnp.array([[False, False], [True, True]]),
            jnp.array([[-1, -1], [3, 7]]),
        )
        np.testing.assert_allclose(score, [0.99, 1.0])
        token_episode = jnp.array([[0, 0, 1, 1], [0, 0, 1, 1]])
        r_prg = jnp.array([[0.5, -0.5], [1.0, 1.0]]) / 0.8  # row 0: R = (0.5, -0.5) -> r̃ = 0
        adv, aux = l2t_advantages(
            jnp.zeros(2), r_prg, jnp.ones((2, 2), bool), token_episode, jnp.ones((2, 4), bool),
            jnp.array([0, 0]), 1, trim_fraction=0.0,
        )
        np.testing.assert_allclose(aux["sequence_rewards"], [0.0, 0.5], atol=1e-7)
        seq = np.asarray(aux["sequence_advantages"])
        np.testing.assert_allclose(adv[0], np.full(4, seq[0]), rtol=1e-6)
        np.testing.assert_allclose(adv[1], np.full(4, seq[1]), rtol=1e-6)  # uniform tokens: ratio 1 exactly
        adv_seq, _ = l2t_advantages(
            jnp.zeros(2), r_prg, jnp.ones((2, 2), bool), jnp.array([[0, -1, 1, 1], [0, 0, 1, -1]]),
            jnp.ones((2, 4), bool), jnp.array([0, 0]), 1, outside_tokens="sequence",
        )
        assert float(adv_seq[0, 1]) != 0.0 and float(adv_seq[1, 3]) != 0.0


class PiecesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_truncated_mean_equals_trimmed_mean(self):
        rng = np.random.default_rng(1)
        values = rng.normal(size=(5, 90))
        mask = np.arange(90)[None, :] < np.array([90, 45, 39, 1, 0])[:, None]
        got = self.variant(lambda v, m: truncated_mean(v, m, 0.05))(jnp.asarray(values), jnp.asarray(mask))
        want = [ref_trimmed_mean(values[i, mask[i]], 0.05) for i in range(5)]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_fitting_gain_answer_score_and_process_reward(self):
        logp = jnp.log(jnp.array([[[0.5, 0.5], [0.8, 0.5]], [[0.1, 1.0], [0.2, 1.0]]]))  # [B=2, K+1=2, A=2]
        answer_mask = jnp.array([[True, True], [True, False]])[None].repeat(2, axis=0)
        j_r = self.variant(lambda lp, m: answer_score(lp, m, "prob"))(logp, answer_mask)
        np.testing.assert_allclose(j_r, [[0.25, 0.8], [0.1, 0.2]], rtol=1e-6)
        np.testing.assert_allclose(answer_score(logp, answer_mask, "log_prob"), np.log(j_r), rtol=1e-6)
        np.testing.assert_allclose(
            answer_score(logp, answer_mask, "geometric_mean_prob")[0], [0.5, 0.8], rtol=1e-6
        )
        gain = self.variant(fitting_gain)(jnp.array([[0.1, 0.3, 0.2], [0.5, 0.9, 7.0]]), jnp.array([[1, 1], [1, 0]]))
        np.testing.assert_allclose(gain, [[0.2, -0.1], [0.4, 0.0]], rtol=1e-6)
        np.testing.assert_allclose(
            process_rewards(gain, jnp.full((2, 2), 0.05), jnp.array([[1, 1], [1, 0]])), [[0.15, -0.15], [0.35, 0.0]],
            rtol=1e-6,
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_length_penalty_rewards(self):
        outcome = jnp.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
        lengths = jnp.array([10, 30, 20, 10, 5, 5])
        groups = jnp.array([0, 0, 0, 0, 1, 1])
        got = self.variant(lambda o, n, g: length_penalty_rewards(o, n, g, 2, coef=1.0))(outcome, lengths, groups)
        lam = 0.5 - (np.array([10, 30, 20, 10]) - 10) / 20
        want = np.concatenate([[1 + lam[0], 1 + lam[1], min(0, lam[2]), min(0, lam[3])], [1.0, 1.0]])
        np.testing.assert_allclose(got, want, rtol=1e-6)
        linear = length_penalty_rewards(outcome, lengths, groups, kind="linear", coef=0.5, budget=40)
        np.testing.assert_allclose(linear, outcome - 0.5 * lengths / 40, rtol=1e-6)
        with pytest.raises(ValueError, match="budget"):
            length_penalty_rewards(outcome, lengths, groups, kind="linear")

    def test_rejects_unknown_variant(self):
        with pytest.raises(ValueError, match="variant"):
            l2t_advantages(jnp.zeros(1), jnp.zeros((1, 1)), jnp.ones((1, 1)), jnp.zeros((1, 2), int),
                           jnp.ones((1, 2)), jnp.zeros(1, int), variant="other")
