"""Multi-turn language-model agents in gymnax environments: one `lax.scan` over turns.

`agent_rollout` plays `num_groups x group_size` episodes of a grid environment for up to
`max_turns` turns. The `group_size` members of a group share their initial state (GiGPO's
and GRPO's groups). Each turn, for every environment at once and without leaving the device:

1. the observation is rendered to tokens (`agent_text.observation_tokens`) and the turn's
   fixed-length prompt is assembled: preamble, the last `history_length` (observation,
   action) pairs, the current observation (`agent_text.build_prompt`);
2. the policy answers: `policy(prompt_tokens [B, P], prompt_mask, active [B], key, copies)`
   returns a `GenerationOutput` `[B, M]`. With `lm_policy` this is the KV-cache sampler. On
   the first turn the members of a group have the same prompt, so only one prompt per group
   is passed (`copies = group_size`) and the sampler prefills it once and shares its cache;
   the prompts' common head (chat template, task, legend) is prefilled once per rollout;
3. the answer is parsed into an action (`agent_text.parse_actions`). A valid action steps the
   environment (`step_env`, no auto-reset); an invalid one leaves it where it is, with reward
   0, and flags the row (GiGPO's invalid-action penalty is applied by the loss);
4. an episode ends when the environment terminates or after `max_turns` turns. Finished
   episodes are `active` False from then on: they generate nothing and their rows are padding.

Rows come out trajectory-major, `[B, T, ...]` (`AgentRows`), one per (episode, turn): the
prompt, the answer tokens and their sampling log-probs, the parsed action and its validity,
the reward, termination and success flags, the group and trajectory ids, the turn index and
the anchor observation (the environment's raw observation before the action, as verl-agent
uses for GiGPO's step groups).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_llm.envs.registry import has_success
from jaxrl_llm.envs.render import cell_codes
from jaxrl_llm.models.llama import prefix_cache
from jaxrl_llm.rollout import agent_text
from jaxrl_llm.rollout.agent_text import AgentText, History
from jaxrl_llm.rollout.env_rollout import group_ids, reset_grouped
from jaxrl_llm.rollout.sampling import GenerationOutput, generate

Policy = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, int], GenerationOutput]


class AgentRows(NamedTuple):
    """One row per (episode b, turn t); leaves `[B, T, ...]` (B = groups x group size)."""

    prompt_tokens: jax.Array  # [B, T, P] int32
    prompt_mask: jax.Array  # [B, T, P] bool
    answer_tokens: jax.Array  # [B, T, M] int32
    answer_mask: jax.Array  # [B, T, M] bool, through the stop token
    answer_logprobs: jax.Array  # [B, T, M] float32 sampling log-probs
    action: jax.Array  # [B, T] int32 parsed action (0 when invalid)
    valid_action: jax.Array  # [B, T] bool
    active: jax.Array  # [B, T] bool: the episode was still running at this turn (a real row)
    reward: jax.Array  # [B, T] float32 (0 on invalid or inactive rows)
    terminated: jax.Array  # [B, T] bool
    success: jax.Array  # [B, T] bool
    anchor_obs: jax.Array  # [B, T, ...] the raw observation the turn acted on
    group_id: jax.Array  # [B, T] int32
    trajectory_id: jax.Array  # [B, T] int32
    turn: jax.Array  # [B, T] int32

    @property
    def invalid_action(self) -> jax.Array:
        return self.active & ~self.valid_action


def lm_policy(
    params,
    model_config,
    max_new_tokens: int,
    *,
    temperature=1.0,
    top_p=1.0,
    top_k: int = 0,
    stop_tokens=(),
    pad_token: int = 0,
    shared_prefix=None,
) -> Policy:
    """The KV-cache sampler as an agent policy.

    `shared_prefix`: token ids [H] that start every prompt (`AgentText.head`: chat head, task
    and legend). They are prefilled once when the policy is made (once per rollout) and every
    turn prefills only the rest of the window (`generate`'s `prefix`); the samples are the same.
    """
    skip = 0 if shared_prefix is None else len(shared_prefix)
    prefix = None if shared_prefix is None else prefix_cache(params, model_config, shared_prefix)

    def policy(tokens, mask, active, key, copies):
        return generate(
            params,
            model_config,
            tokens[:, skip:],
            mask[:, skip:],
            key,
            max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop_tokens=stop_tokens,
            pad_token=pad_token,
            prompt_copies=copies,
            active=active,
            prefix=prefix,
        )

    return policy


def random_walk_policy(text: AgentText, num_actions: int, stop_token: int, max_new_tokens: int) -> Policy:
    """Answers a uniformly random action in the canonical format (supervised warm-up transcripts)."""

    def policy(tokens, mask, active, key, copies):
        rows = tokens.shape[0] * copies
        actions = jax.random.randint(key, (rows,), 0, num_actions)
        answer, answer_mask = jax.vmap(
            lambda a: agent_text.canonical_answer(text, a, stop_token, max_new_tokens)
        )(actions)
        answer_mask &= active[:, None]
        return GenerationOutput(
            jnp.where(answer_mask, answer, text.pad_token), jnp.zeros(answer.shape, jnp.float32), answer_mask
        )

    return policy


class _Carry(NamedTuple):
    env_state: object
    obs: jax.Array
    history: History
    done: jax.Array  # [B] episode over


def agent_rollout(
    key: jax.Array,
    env,
    env_params,
    text: AgentText,
    policy: Policy,
    *,
    num_groups: int,
    group_size: int,
    max_turns: int,
    stop_tokens=(),
) -> AgentRows:
    """Plays the episodes (module docstring); jittable with everything but `key` static."""
    reset_key, turns_key = jax.random.split(key)
    start = reset_grouped(reset_key, env, env_params, num_groups, group_size)
    batch = num_groups * group_size
    succeeds = has_success(env)
    observe = jax.vmap(lambda state: agent_text.observation_tokens(text, cell_codes(env, state)))
    build = jax.vmap(lambda history, tokens, mask: agent_text.build_prompt(text, history, tokens, mask))
    parse = jax.vmap(lambda tokens, mask: agent_text.parse_actions(text, tokens, mask, stop_tokens))
    step = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))

    def turn(carry: _Carry, inputs):
        turn_index, turn_key = inputs
        policy_key, env_key = jax.random.split(turn_key)
        active = ~carry.done
        obs_tokens, obs_mask = observe(carry.env_state)
        prompt, prompt_mask = build(carry.history, obs_tokens, obs_mask)
        if turn_index is None:  # first turn: one prompt per group
            out = policy(prompt[::group_size], prompt_mask[::group_size], active, policy_key, group_size)
        else:
            out = policy(prompt, prompt_mask, active, policy_key, 1)
        action, valid = parse(out.tokens, out.mask)
        obs, env_state, reward, terminated, info = step(
            jax.random.split(env_key, batch), carry.env_state, action, env_params
        )
        moves = active & valid
        keep = lambda new, old: jnp.where(moves.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
        env_state = jax.tree.map(keep, env_state, carry.env_state)
        terminated = moves & terminated
        success = moves & jnp.asarray(info["success"], bool) if succeeds else jnp.zeros_like(moves)
        answer = jnp.where(valid, action, len(text.action_words))
        history = jax.vmap(agent_text.push_history)(carry.history, obs_tokens, obs_mask, answer)
        row = dict(
            prompt_tokens=prompt,
            prompt_mask=prompt_mask & active[:, None],
            answer_tokens=out.tokens,
            answer_mask=out.mask & active[:, None],
            answer_logprobs=jnp.where(active[:, None], out.logprobs, 0.0),
            action=jnp.where(valid, action, 0),
            valid_action=valid & active,
            active=active,
            reward=jnp.where(moves, reward, 0.0).astype(jnp.float32),
            terminated=terminated,
            success=success,
            anchor_obs=carry.obs,
        )
        return _Carry(env_state, keep(obs, carry.obs), history, carry.done | terminated), row

    keys = jax.random.split(turns_key, max_turns)
    empty = jax.vmap(lambda _: agent_text.empty_history(text))(jnp.arange(batch))
    carry = _Carry(start.env_state, start.obs, empty, jnp.zeros((batch,), bool))
    carry, first = turn(carry, (None, keys[0]))
    _, rest = jax.lax.scan(turn, carry, (jnp.arange(1, max_turns), keys[1:]))
    rows = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0).swapaxes(0, 1), first, rest)
    trajectory = jnp.broadcast_to(jnp.arange(batch, dtype=jnp.int32)[:, None], (batch, max_turns))
    return AgentRows(
        **rows,
        group_id=jnp.broadcast_to(group_ids(num_groups, group_size)[:, None], (batch, max_turns)),
        trajectory_id=trajectory,
        turn=jnp.broadcast_to(jnp.arange(max_turns, dtype=jnp.int32)[None, :], (batch, max_turns)),
    )


def episode_metrics(rows: AgentRows) -> dict[str, jax.Array]:
    """Per-rollout scalars: success rate, return, turns, invalid-action and step-group statistics."""
    turns = rows.active.sum(axis=1)
    return {
        "success_rate": jnp.mean(jnp.any(rows.success, axis=1).astype(jnp.float32)),
        "episode_return_mean": jnp.mean(rows.reward.sum(axis=1)),
        "episode_turns_mean": jnp.mean(turns.astype(jnp.float32)),
        "invalid_action_fraction": rows.invalid_action.sum() / jnp.maximum(rows.active.sum(), 1),
        "answer_tokens_mean": rows.answer_mask.sum() / jnp.maximum(rows.active.sum(), 1),
    }
