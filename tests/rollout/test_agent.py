"""The compiled multi-turn agent loop against a host-driven reference loop, turn by turn."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm.algorithms import lm_agent
from jaxrl_llm.algorithms.configs.lm_agent import LMAgentConfig
from jaxrl_llm.algorithms.lm_task import load_model
from jaxrl_llm.envs.render import cell_codes
from jaxrl_llm.rollout import agent_text
from jaxrl_llm.rollout.agent import episode_metrics
from jaxrl_llm.rollout.env_rollout import reset_grouped
from jaxrl_llm.rollout.sampling import generate

SMALL_MODEL = {"hidden_size": "64", "intermediate_size": "128", "num_layers": "2"}


def small_config(**fields) -> LMAgentConfig:
    defaults = dict(
        env="FrozenLake-misc",
        env_kwargs={"is_slippery": False},
        num_groups=2,
        group_size=3,
        max_turns=5,
        max_new_tokens=7,
        model_overrides=SMALL_MODEL,
        remat=False,
    )
    return LMAgentConfig(**{**defaults, **fields})


@pytest.fixture(scope="module")
def warmed_up():
    """A small from-scratch model after a short random-walk warm-up: it answers mostly valid
    actions, with some invalid ones, so both paths of the loop are exercised."""
    config = small_config(sft_warmup_steps=40, sft_learning_rate=3e-3)
    return lm_agent.setup(config, load_model(config, verbose=False), verbose=False)


def host_reference_rows(run: lm_agent.AgentSetup, params, key) -> dict[str, np.ndarray]:
    """The same episodes, greedy, driven from Python: host rendering and tokenization of each
    prompt piece, one `generate` call per environment and turn, Python parsing and stepping."""
    config, text, tokenizer, env = run.config, run.text, run.tokenizer, run.env
    batch = config.num_envs
    reset_key, _ = jax.random.split(key)
    env_state = reset_grouped(reset_key, env, run.env_params, config.num_groups, config.group_size).env_state
    states = [jax.tree.map(lambda x, b=b: x[b], env_state) for b in range(batch)]
    words = text.action_words
    head, tail = agent_text.chat_pieces(tokenizer)
    history = [[] for _ in range(batch)]
    done = [False] * batch
    step = jax.jit(env.step_env)
    encode = lambda s: tokenizer.encode(s, add_special_tokens=False)
    rows = {
        name: np.zeros((batch, config.max_turns), dtype)
        for name, dtype in [
            ("action", np.int32),
            ("valid_action", bool),
            ("active", bool),
            ("reward", np.float32),
            ("terminated", bool),
        ]
    }
    rows["prompt"] = [[None] * config.max_turns for _ in range(batch)]
    rows["answer"] = [[None] * config.max_turns for _ in range(batch)]
    pattern = re.compile(r"<action>(%s)</action>" % "|".join(words))
    for turn in range(config.max_turns):
        for b in range(batch):
            if done[b]:
                continue
            obs = agent_text.observation_text(text.style, np.asarray(cell_codes(env, states[b])))
            ids = encode(head)
            for past_obs, past_answer in history[b][-config.history_length :]:
                ids += (
                    encode("was:\n") + encode(past_obs) + encode("did: ") + encode(past_answer) + encode("\n")
                )
            ids += encode("now:\n") + encode(obs) + encode(tail)
            out = generate(
                params,
                run.model_config,
                jnp.asarray([ids]),
                jnp.asarray([len(ids)]),
                jax.random.PRNGKey(0),
                config.max_new_tokens,
                temperature=0.0,
                stop_tokens=run.stop_tokens,
                pad_token=text.pad_token,
            )
            answer_ids = np.asarray(out.tokens[0])[np.asarray(out.mask[0])].tolist()
            answer = tokenizer.decode([t for t in answer_ids if t not in run.stop_tokens])
            tagged = pattern.search(answer.lower())
            mentioned = {w for w in words if re.search(rf"(?<![a-z]){w}(?![a-z])", answer.lower())}
            word = tagged.group(1) if tagged else answer.strip().lower()
            if word not in words and len(mentioned) == 1:
                word = mentioned.pop()
            valid = word in words
            action = words.index(word) if valid else 0
            rows["prompt"][b][turn], rows["answer"][b][turn] = ids, answer_ids
            rows["active"][b, turn], rows["valid_action"][b, turn] = True, valid
            rows["action"][b, turn] = action
            if valid:
                _, states[b], reward, terminated, _ = step(
                    jax.random.PRNGKey(0), states[b], action, run.env_params
                )
                rows["reward"][b, turn], rows["terminated"][b, turn] = float(reward), bool(terminated)
                done[b] = bool(terminated)
            history[b].append((obs, text.answer_text(action) if valid else "invalid"))
    return rows


def test_compiled_rows_reproduce_the_host_driven_loop_turn_by_turn(warmed_up):
    run = warmed_up
    key = jax.random.PRNGKey(3)
    rows = jax.jit(lambda p, k: lm_agent.rollout(run, p, k, temperature=0.0))(run.base_params, key)
    reference = host_reference_rows(run, run.base_params, key)
    config = run.config
    chex.assert_shape(rows.prompt_tokens, (config.num_envs, config.max_turns, run.text.prompt_length))
    for name in ("active", "valid_action", "action", "terminated"):
        np.testing.assert_array_equal(np.asarray(getattr(rows, name)), reference[name], err_msg=name)
    np.testing.assert_allclose(np.asarray(rows.reward), reference["reward"])
    for b in range(config.num_envs):
        for turn in range(config.max_turns):
            if not reference["active"][b, turn]:
                assert not rows.answer_mask[b, turn].any()
                continue
            prompt = np.asarray(rows.prompt_tokens[b, turn])[np.asarray(rows.prompt_mask[b, turn])]
            assert prompt.tolist() == reference["prompt"][b][turn], (b, turn)
            answer = np.asarray(rows.answer_tokens[b, turn])[np.asarray(rows.answer_mask[b, turn])]
            assert answer.tolist() == reference["answer"][b][turn], (b, turn)
    assert rows.valid_action.sum() > 0  # the warm-up taught the format: valid moves were compared


def test_rows_hold_ids_and_members_of_a_group_share_their_first_prompt(warmed_up):
    run = warmed_up
    rows = jax.jit(lambda p, k: lm_agent.rollout(run, p, k))(run.base_params, jax.random.PRNGKey(0))
    config = run.config
    g = config.group_size
    np.testing.assert_array_equal(rows.group_id[:, 0], np.arange(config.num_envs) // g)
    np.testing.assert_array_equal(rows.trajectory_id[:, 0], np.arange(config.num_envs))
    np.testing.assert_array_equal(rows.turn[0], np.arange(config.max_turns))
    first = np.asarray(rows.prompt_tokens[:, 0]).reshape(config.num_groups, g, -1)
    assert (first == first[:, :1]).all()
    assert rows.active[:, 0].all()
    # once an episode ends its later turns are inactive padding
    ended = np.cumsum(np.asarray(rows.terminated), axis=1) - np.asarray(rows.terminated)
    assert not (np.asarray(rows.active) & (ended > 0)).any()
    assert not np.asarray(rows.reward)[~np.asarray(rows.active)].any()


def test_invalid_answers_do_not_move_the_environment_and_are_counted():
    config = small_config(num_groups=1, group_size=2, max_turns=3)
    run = lm_agent.setup(config, load_model(config, verbose=False), verbose=False)
    # a random model answers garbage: every turn is invalid, the agent never moves
    rows = jax.jit(lambda p, k: lm_agent.rollout(run, p, k, temperature=0.0))(
        run.base_params, jax.random.PRNGKey(0)
    )
    assert not rows.valid_action.any() and rows.active.all()
    assert (np.asarray(rows.anchor_obs) == np.asarray(rows.anchor_obs[:, :1])).all()
    metrics = episode_metrics(rows)
    assert float(metrics["invalid_action_fraction"]) == 1.0 and float(metrics["success_rate"]) == 0.0
    advantage, _ = lm_agent.row_advantages(rows, config)
    # every row is penalised equally, so the group-relative advantages are all 0
    np.testing.assert_allclose(np.asarray(advantage), 0.0, atol=1e-6)


def test_the_rollout_runs_under_vmap_over_seeds(warmed_up):
    run = warmed_up
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    rows = jax.jit(jax.vmap(lambda k: lm_agent.rollout(run, run.base_params, k)))(keys)
    chex.assert_shape(rows.action, (2, run.config.num_envs, run.config.max_turns))
    single = jax.jit(lambda k: lm_agent.rollout(run, run.base_params, k))(keys[1])
    np.testing.assert_array_equal(np.asarray(rows.action[1]), np.asarray(single.action))
