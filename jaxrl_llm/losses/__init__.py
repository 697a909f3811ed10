"""Pure loss and advantage functions of arrays (never of a model).

The public names are loaded lazily (PEP 562): importing this package imports no JAX, so JAX-free
code such as the configs can read `jaxrl_llm.losses.names`; `from jaxrl_llm.losses import ppo_loss`
imports the defining submodule on first access, exactly like an eager import would.
"""

import importlib
import sys
import types

# Public name -> submodule that defines it.
_EXPORTS = {
    "clipped_value_loss": "ppo",
    "ppo_loss": "ppo",
    "generalized_advantage_estimation": "gae",
    # Group-relative advantages, KL estimators, PPO-clip/GRPO-family losses and GiGPO.
    "GiGPOAdvantages": "gigpo",
    "anchor_state_group_ids": "gigpo",
    "discounted_step_returns": "gigpo",
    "gigpo_advantages": "gigpo",
    "group_advantages": "group_advantages",
    "group_advantages_dense": "group_advantages",
    "kl_divergence_estimate": "kl",
    "aggregate_loss": "policy_gradient",
    "policy_gradient_loss": "policy_gradient",
    "ppo_clip_token_loss": "policy_gradient",
    # ShiQ's soft Bellman losses on shifted logits; offline preference losses (DPO, ORPO, DRO, BT).
    "implied_log_policy": "bellman",
    "next_action_values": "bellman",
    "sequence_reward_to_tokens": "bellman",
    "shifted_q_values": "bellman",
    "shifted_state_values": "bellman",
    "shiq_loss": "bellman",
    "shiq_residuals": "bellman",
    "turn_rewards_to_tokens": "bellman",
    "bradley_terry_loss": "preference",
    "dpo_loss": "preference",
    "dro_loss": "preference",
    "orpo_log_odds_ratio": "preference",
    "orpo_loss": "preference",
    # L2T's information-gain process rewards and credit assignment (paper and released-code variants).
    "CREDIT_VARIANTS": "information_gain",
    "J_R_KINDS": "information_gain",
    "LENGTH_PENALTY_KINDS": "information_gain",
    "OUTSIDE_TOKEN_RULES": "information_gain",
    "answer_score": "information_gain",
    "code_sequence_scores": "information_gain",
    "episode_rewards": "information_gain",
    "fitting_gain": "information_gain",
    "l2t_advantages": "information_gain",
    "length_penalty_rewards": "information_gain",
    "process_rewards": "information_gain",
    "spread_to_tokens": "information_gain",
    "truncated_mean": "information_gain",
    # Option names (JAX-free).
    "LOSS_AGG_MODES": "names",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps an exported function bound when a submodule of the same name is imported.

    After loading `jaxrl_llm.losses.group_advantages`, the import system sets the package attribute
    `group_advantages` to that submodule; the eager imports this package used to do left the
    function there instead, and `from jaxrl_llm.losses import group_advantages` must keep giving the
    function whichever order modules are imported in.
    """

    def __setattr__(self, name, value):
        if (
            isinstance(value, types.ModuleType)
            and value.__name__ == f"{__name__}.{name}"
            and _EXPORTS.get(name) == name
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
