"""On-device agent text: observation tokens equal the host tokenizer's, prompts, action parsing."""

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm import envs
from jaxrl_llm.envs.render import cell_codes
from jaxrl_llm.models.char_tokenizer import char_tokenizer
from jaxrl_llm.rollout import agent_text

ENV_CASES = [("Maze-v0", {"size": 5}), ("FrozenLake-misc", {"is_slippery": False}), ("Sokoban-v0", {})]


@pytest.fixture(scope="module")
def bpe_tokenizer(smollm2_gguf):
    from gguf import GGUFReader

    from jaxrl_llm.models.checkpoints.gguf import read_metadata
    from jaxrl_llm.models.tokenizer import tokenizer_from_gguf_metadata

    return tokenizer_from_gguf_metadata(read_metadata(GGUFReader(smollm2_gguf)))


def _states(env, env_params, count):
    """`count` distinct-ish states: resets and a few random steps (host list of unbatched states)."""

    @jax.jit
    def state_after(key, num_steps):
        reset_key, step_key = jax.random.split(key)
        _, state = env.reset(reset_key, env_params)

        def step(i, state):
            action_key, env_key = jax.random.split(jax.random.fold_in(step_key, i))
            action = jax.random.randint(action_key, (), 0, env.num_actions)
            new_state = env.step(env_key, state, action, env_params)[1]
            return jax.tree.map(lambda new, old: jnp.where(i < num_steps, new, old), new_state, state)

        return jax.lax.fori_loop(0, 3, step, state)

    return [state_after(jax.random.PRNGKey(i), i % 4) for i in range(count)]


@pytest.mark.parametrize("env_id, env_kwargs", ENV_CASES)
@pytest.mark.parametrize("which", ["chars", "bpe"])
def test_device_observation_ids_equal_the_host_tokenizer_ids(env_id, env_kwargs, which, request):
    tokenizer = char_tokenizer() if which == "chars" else request.getfixturevalue("bpe_tokenizer")
    env, env_params = envs.make(env_id, **env_kwargs)
    text = agent_text.build_agent_text(env, env_params, tokenizer)
    assert text.style == ("chars" if which == "chars" else "spaced")
    observe = jax.jit(lambda state: agent_text.observation_tokens(text, cell_codes(env, state)))
    for state in _states(env, env_params, 6):
        tokens, mask = observe(state)
        chex.assert_shape(tokens, (text.observation_length,))
        host_text = agent_text.observation_text(text.style, np.asarray(cell_codes(env, state)))
        expected = tokenizer.encode(host_text, add_special_tokens=False)
        assert np.asarray(tokens)[np.asarray(mask)].tolist() == expected
        assert tokenizer.decode(expected) == host_text


def test_prompt_is_the_concatenation_of_its_pieces_with_history_oldest_first():
    tokenizer = char_tokenizer()
    env, env_params = envs.make("Maze-v0", size=4)
    text = agent_text.build_agent_text(env, env_params, tokenizer, history_length=2, prompt_style="compact")
    states = _states(env, env_params, 3)
    observe = jax.jit(lambda state: agent_text.observation_tokens(text, cell_codes(env, state)))
    observations = [observe(s) for s in states]
    push, build = jax.jit(agent_text.push_history), jax.jit(partial(agent_text.build_prompt, text))
    history = push(agent_text.empty_history(text), *observations[0], 2)  # "down"
    tokens, mask = build(history, *observations[1])
    chex.assert_shape(tokens, (text.prompt_length,))
    obs_text = [agent_text.observation_text("chars", np.asarray(cell_codes(env, s))) for s in states]
    head, tail = agent_text.chat_pieces(tokenizer)
    expected = head + "was:\n" + obs_text[0] + "did: down\n" + "now:\n" + obs_text[1] + tail
    assert tokenizer.decode(np.asarray(tokens)[np.asarray(mask)].tolist()) == expected
    # a third push drops the oldest pair; an invalid answer shows as "invalid"
    history = push(history, *observations[1], len(text.action_words))
    history = push(history, *observations[2], 0)
    tokens, mask = build(history, *observations[0])
    expected = (
        (head + "was:\n" + obs_text[1] + "did: invalid\n" + "was:\n" + obs_text[2] + "did: up\n" + "now:\n")
        + obs_text[0]
        + tail
    )
    assert tokenizer.decode(np.asarray(tokens)[np.asarray(mask)].tolist()) == expected


def test_full_prompt_states_task_legend_actions_and_format(bpe_tokenizer):
    env, env_params = envs.make("Maze-v0", size=4)
    text = agent_text.build_agent_text(env, env_params, bpe_tokenizer)
    head = bpe_tokenizer.decode(text.head.tolist())
    asked = bpe_tokenizer.decode(text.question.tolist())
    assert text.action_format == "tag"
    assert "<|im_start|>user" in head and "goal G" in head and "legend: #=wall" in head
    assert "Choose one action from: up, right, down, left" in asked and "<action>left</action>" in asked


def _parse_texts(text, tokenizer, answers: list[str], stop: int, width: int = 24):
    """`(actions, valid)` of answers (each followed by the stop token), parsed in one vmapped call."""
    tokens = np.full((len(answers), width), text.pad_token, np.int32)
    mask = np.zeros((len(answers), width), bool)
    for row, answer in enumerate(answers):
        ids = tokenizer.encode(answer, add_special_tokens=False) + [stop]
        tokens[row, : len(ids)], mask[row, : len(ids)] = ids, True
    parse = jax.jit(jax.vmap(lambda t, m: agent_text.parse_actions(text, t, m, (stop,))))
    actions, valid = parse(tokens, mask)
    return np.asarray(actions).tolist(), np.asarray(valid).tolist()


@pytest.mark.parametrize("which", ["chars", "bpe"])
def test_actions_parse_from_tags_or_a_bare_word_and_anything_else_is_invalid(which, request):
    tokenizer = char_tokenizer() if which == "chars" else request.getfixturevalue("bpe_tokenizer")
    env, env_params = envs.make("Maze-v0", size=4)
    text = agent_text.build_agent_text(env, env_params, tokenizer)
    stop = tokenizer.eos_token_id
    cases = {
        "up": (0, True),
        " Left \n": (3, True),
        "DOWN": (2, True),
        "upp": (0, False),
        "up down": (0, False),
    }
    cases.update(
        {"": (0, False), "go right": (1, True), "The action is: down.": (2, True), "supper": (0, False)}
    )
    cases.update({"left then left": (3, True), "uplift": (0, False), "go up, then right": (0, False)})
    if which == "bpe":  # the character tokenizer cannot spell < and >
        cases.update(
            {
                "<action>right</action>": (1, True),
                "<think>the goal is below</think><action>down</action>": (2, True),
                "<action>left</action> then <action>up</action>": (3, True),
                "<action>jump</action>": (0, False),
                "<action>up": (0, True),  # a broken tag that still names one action
            }
        )
    actions, valid = _parse_texts(text, tokenizer, list(cases), stop)
    for (answer, (expected_action, expected_valid)), action, ok in zip(cases.items(), actions, valid):
        assert ok == expected_valid, answer
        if expected_valid:
            assert action == expected_action, answer


def test_parsing_ignores_how_the_answer_was_split_into_tokens_and_text_after_the_stop(bpe_tokenizer):
    env, env_params = envs.make("Maze-v0", size=4)
    text = agent_text.build_agent_text(env, env_params, bpe_tokenizer)
    stop = bpe_tokenizer.eos_token_id
    letters = [bpe_tokenizer.convert_tokens_to_ids(c) for c in "left"]  # one token per letter
    width = 8
    tokens = np.array(letters + [stop, *bpe_tokenizer.encode("up", add_special_tokens=False), 0, 0], np.int32)
    mask = np.arange(width) < 6  # the "up" after the stop token is masked-in garbage
    action, valid = jax.jit(lambda t, m: agent_text.parse_actions(text, t, m, (stop,)))(tokens, mask)
    assert bool(valid) and int(action) == 3


def test_canonical_answers_round_trip_through_the_parser():
    tokenizer = char_tokenizer()
    env, env_params = envs.make("FrozenLake-misc", is_slippery=False)
    text = agent_text.build_agent_text(env, env_params, tokenizer)
    stop = tokenizer.eos_token_id
    answers = jax.vmap(lambda a: agent_text.canonical_answer(text, a, stop, 8))
    tokens, mask = jax.jit(answers)(jnp.arange(env.num_actions))
    parsed, valid = jax.jit(jax.vmap(lambda t, m: agent_text.parse_actions(text, t, m, (stop,))))(
        tokens, mask
    )
    for action in range(env.num_actions):
        decoded = tokenizer.decode(np.asarray(tokens[action])[np.asarray(mask[action])].tolist())
        assert decoded == text.answer_text(action) + "<eos>"
    assert np.asarray(valid).all() and np.asarray(parsed).tolist() == list(range(env.num_actions))


def test_bad_settings_are_explained():
    env, env_params = envs.make("Maze-v0", size=4)
    with pytest.raises(ValueError, match="observation style 'pixels' is invalid"):
        agent_text.build_agent_text(env, env_params, char_tokenizer(), style="pixels")
    with pytest.raises(ValueError, match="history_length=-1"):
        agent_text.build_agent_text(env, env_params, char_tokenizer(), history_length=-1)
    cart, cart_params = envs.make("CartPole-v1")
    with pytest.raises(TypeError, match="No language description for CartPole"):
        agent_text.build_agent_text(cart, cart_params, char_tokenizer())
