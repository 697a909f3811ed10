"""The option names the loss functions accept, importable without JAX.

The configs validate their choice fields against these constants (the CLI imports the configs for
`--help`, which must not import JAX), and the loss modules validate their own arguments against the
same constants, so the two can never drift apart. This module imports nothing.
"""

# policy_gradient.aggregate_loss / policy_gradient_loss `loss_agg_mode` (formulas in policy_gradient.py).
LOSS_AGG_MODES = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
    "token-sum-norm",
)

# policy_gradient.ppo_clip_token_loss `importance_sampling_level`: PPO/GRPO, GSPO, GSPO-token.
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence", "sequence_token")

# kl.kl_divergence_estimate `estimator`: Schulman's k1, k2, k3 ...
KL_ESTIMATORS = ("k1", "k2", "k3")
# ... also accepted under verl's names.
KL_ESTIMATOR_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}
# Every spelling `kl_divergence_estimate` accepts.
KL_ESTIMATOR_NAMES = KL_ESTIMATORS + tuple(KL_ESTIMATOR_ALIASES)

# group_advantages.group_advantages: scale of the centred reward ("group" std = GRPO, "batch" std =
# Lite PPO / TRL scale_rewards="batch", "none" = Dr. GRPO), baseline, and the rule for groups of one.
GROUP_NORMALIZATIONS = ("group", "batch", "none")
GROUP_BASELINES = ("mean", "leave_one_out")
SINGLETON_RULES = ("raw_reward", "zero")

# gigpo.gigpo_advantages: "std" = verl-agent mean_std_norm, "none" = mean_norm; episode statistics over
# step rows (verl-agent code) or over trajectories (paper Eq. 3).
GIGPO_NORMALIZATIONS = ("std", "none")
GIGPO_EPISODE_BASELINES = ("steps", "trajectories")

# The GiGPO normalization that does what a `group_advantages` normalization does to the episode
# return (std of the episode group, or no scaling). "batch" has no GiGPO counterpart, so a setting
# shared by GRPO and GiGPO takes its value from these keys.
GROUP_TO_GIGPO_NORMALIZATION = {"group": "std", "none": "none"}

# LM-GRPO `reward`: the task's outcome reward (exact match + format) with GRPO group advantages, L2T's
# dense information-gain reward with its credit assignment (algorithms/l2t_rewards.py), or the
# outcome plus a length penalty (the "length penalty" baseline of L2T's Table 1).
LM_REWARDS = ("outcome", "l2t", "length-penalty")

# information_gain: L2T credit assignment `variant`, J_r `kind` of `answer_score`, and the
# `length_penalty_rewards` forms. information_gain.py keeps its own copies (CREDIT_VARIANTS, J_R_KINDS,
# LENGTH_PENALTY_KINDS); tests/algorithms/test_lm_grpo_l2t.py checks that they agree.
L2T_VARIANTS = ("paper", "code")
L2T_SCORE_KINDS = ("prob", "geometric_mean_prob", "log_prob", "mean_log_prob")
LENGTH_PENALTY_KINDS = ("kimi", "linear")

# How an LM-GRPO L2T run splits a completion into episodes (rollout.episode_spans): fixed-length chunks
# of tokens, `<episode_k>…</episode_k>` tags (the released code's format) or `<think>…</think>` blocks
# (the paper's); completions without tags fall back to chunks.
L2T_EPISODE_SPLITS = ("chunks", "episode-tags", "think-tags")
