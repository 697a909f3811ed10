import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import chex  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxrl_llm.models import llama  # noqa: E402
from jaxrl_llm.models.llama_config import tiny_config  # noqa: E402
from jaxrl_llm.models.logprobs import token_logprobs_and_entropy  # noqa: E402
from jaxrl_llm.rollout.sampling import (  # noqa: E402
    _generate,
    filter_top_k,
    filter_top_p,
    generate,
    sample_categorical,
)

CONFIG = tiny_config(
    vocab_size=53, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
)
PROMPT = [7, 3, 19, 44, 2]


@pytest.fixture(scope="module")
def params():
    # Larger-than-default init so greedy continuations are not dominated by ties.
    params = llama.init_params(CONFIG, jax.random.key(0))
    return jax.tree_util.tree_map(lambda x: x * 3.0 if x.ndim >= 2 else x, params)


def _left_padded(prompts, width, pad=0):
    tokens = np.full((len(prompts), width), pad)
    mask = np.zeros((len(prompts), width), bool)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = True
    return jnp.asarray(tokens), jnp.asarray(mask)


def _teacher_forced(params, config, prompt_tokens, prompt_mask, output):
    tokens = jnp.concatenate([prompt_tokens, output.tokens], axis=1)
    mask = jnp.concatenate([prompt_mask, output.mask], axis=1)
    logprobs, _ = jax.jit(token_logprobs_and_entropy, static_argnums=1)(params, config, tokens, mask)
    return logprobs[:, prompt_tokens.shape[1] :]


def test_sampled_logprobs_equal_teacher_forced_logprobs(params):
    prompt_tokens, prompt_mask = _left_padded([PROMPT, [11, 12], [5, 9, 30, 31, 32, 40, 1]], 8)
    output = generate(
        params,
        CONFIG,
        prompt_tokens,
        prompt_mask,
        jax.random.key(1),
        max_new_tokens=12,
        temperature=1.0,
        stop_tokens=(4, 9),
    )
    chex.assert_shape([output.tokens, output.logprobs, output.mask], (3, 12))
    expected = _teacher_forced(params, CONFIG, prompt_tokens, prompt_mask, output)
    np.testing.assert_allclose(output.logprobs, np.where(output.mask, expected, 0.0), atol=1e-4)


# Most tests share one compiled program: batch 1, prompt width 8, 10 new tokens, top_k 0, two stop tokens.
WIDTH, NEW, NO_STOP = 8, 10, (-1, -1)


def _greedy(params, tokens, mask_or_lengths, **kwargs):
    kwargs = {"temperature": 0.0, "stop_tokens": NO_STOP, **kwargs}
    return generate(params, CONFIG, tokens, mask_or_lengths, jax.random.key(0), NEW, **kwargs)


def test_greedy_continuation_is_padding_invariant(params):
    reference = _greedy(params, jnp.asarray([PROMPT]), jnp.ones((1, 5), bool)).tokens
    left_tokens, left_mask = _left_padded([PROMPT], WIDTH, pad=17)
    chex.assert_trees_all_equal(_greedy(params, left_tokens, left_mask).tokens, reference)
    right_padded = jnp.asarray([PROMPT + [17] * (WIDTH - 5)])
    chex.assert_trees_all_equal(_greedy(params, right_padded, jnp.asarray([5])).tokens, reference)
    chex.assert_trees_all_equal(_greedy(params, right_padded, right_padded != 17).tokens, reference)


def test_top_k_one_is_greedy_and_greedy_ignores_the_key(params):
    tokens, mask = _left_padded([PROMPT], WIDTH)
    greedy = _greedy(params, tokens, mask)
    other_key = generate(
        params, CONFIG, tokens, mask, jax.random.key(5), NEW, temperature=0.0, stop_tokens=NO_STOP
    )
    chex.assert_trees_all_equal(other_key, greedy)
    top1 = generate(
        params, CONFIG, tokens, mask, jax.random.key(5), NEW, temperature=1.3, top_k=1, stop_tokens=NO_STOP
    )
    chex.assert_trees_all_equal(top1.tokens, greedy.tokens)


def test_mask_stops_after_the_first_stop_token(params):
    tokens, mask = _left_padded([PROMPT], WIDTH)
    free = np.asarray(_greedy(params, tokens, mask).tokens[0])
    stop = int(free[3])
    first = int(np.flatnonzero(free == stop)[0])
    output = _greedy(params, tokens, mask, stop_tokens=(stop, 52), pad_token=51)
    np.testing.assert_array_equal(
        output.mask[0], np.arange(NEW) <= first
    )  # the stop token itself is included
    np.testing.assert_array_equal(output.tokens[0, : first + 1], free[: first + 1])
    assert np.all(np.asarray(output.tokens[0, first + 1 :]) == 51)
    assert np.all(np.asarray(output.logprobs[0, first + 1 :]) == 0)


def test_top_k_and_top_p_filters():
    logits = jnp.log(jnp.array([[0.5, 0.05, 0.3, 0.15]]))
    np.testing.assert_array_equal(jnp.isfinite(filter_top_k(logits, 2)), [[True, False, True, False]])
    np.testing.assert_array_equal(jnp.isfinite(filter_top_p(logits, 0.75)), [[True, False, True, False]])
    np.testing.assert_array_equal(jnp.isfinite(filter_top_p(logits, 0.81)), [[True, False, True, True]])
    np.testing.assert_array_equal(jnp.isfinite(filter_top_p(logits, 0.1)), [[True, False, False, False]])


def test_sample_categorical_matches_the_probabilities_and_never_picks_excluded_tokens():
    probs = np.array([[0.1, 0.0, 0.5, 0.0001, 0.3999], [0.0, 0.0, 0.0, 0.0, 1.0]])
    logits = jnp.log(jnp.asarray(probs, jnp.float32))  # zeros -> -inf: excluded
    draws = 40_000
    keys = jax.random.split(jax.random.key(0), draws)
    samples = np.asarray(jax.jit(jax.vmap(lambda k: sample_categorical(k, logits)))(keys))
    frequencies = np.stack([np.bincount(samples[:, row], minlength=5) / draws for row in range(2)])
    # 5 standard errors of a binomial frequency
    np.testing.assert_allclose(frequencies, probs, atol=5 * np.sqrt(0.25 / draws))
    assert not np.isin(samples[:, 0], [1]).any() and np.all(samples[:, 1] == 4)
    same = sample_categorical(jax.random.key(7), logits), sample_categorical(jax.random.key(7), logits)
    np.testing.assert_array_equal(*same)


def test_top_p_samples_stay_in_the_nucleus(params):
    tokens, mask = _left_padded([PROMPT], WIDTH)
    first_tokens = {
        int(
            generate(
                params,
                CONFIG,
                tokens,
                mask,
                jax.random.key(seed),
                NEW,
                temperature=1.0,
                top_p=0.5,
                stop_tokens=NO_STOP,
            ).tokens[0, 0]
        )
        for seed in range(12)
    }
    logits, _ = jax.jit(llama.forward, static_argnums=1)(
        params, CONFIG, jnp.asarray([PROMPT]), jnp.arange(5)[None]
    )
    allowed = set(np.flatnonzero(np.isfinite(filter_top_p(logits[:, -1], 0.5))[0]).tolist())
    assert first_tokens <= allowed


def test_jit_recompiles_only_on_shape_changes(params):
    tokens, mask = _left_padded([PROMPT], WIDTH)
    _greedy(params, tokens, mask)
    compiled = _generate._cache_size()
    generate(
        params,
        CONFIG,
        tokens + 1,
        mask,
        jax.random.key(3),
        NEW,
        temperature=0.9,
        top_p=0.8,
        stop_tokens=(2, 3),
        pad_token=3,
    )
    _greedy(params, tokens, ~mask, stop_tokens=(5, 6))
    assert _generate._cache_size() == compiled
    _greedy(params, tokens, mask, stop_tokens=(1,))
    assert _generate._cache_size() == compiled + 1


# --- shared-prompt prefill (prompt_copies) and inactive rows ------------------------------------------
# One compiled shape for most of these: 3 unique prompts x 4 copies = 12 rows, width 8, NEW tokens,
# two stop tokens (traced values: greedy and sampled runs share it).

PROMPTS, COPIES, STOPS = [PROMPT, [11, 12], [5, 9, 30, 31, 32, 40, 1]], 4, (4, 9)


def _run(params, tokens, mask, temperature, key=1, **kwargs):
    kwargs = {"stop_tokens": STOPS, "pad_token": 51, **kwargs}
    return generate(params, CONFIG, tokens, mask, jax.random.key(key), NEW, temperature=temperature, **kwargs)


def _rows(output, rows):
    return jax.tree.map(lambda x: np.asarray(x)[rows], output)


def test_shared_prefill_equals_separate_prefills(params):
    """`prompt_copies=G` on U prompts == the same sampler on `jnp.repeat(prompts, G, 0)`.

    Tokens and masks are equal exactly (greedy, and sampled with the same key: each output row
    draws the same uniforms either way). Log-probs agree to ~1e-6, not bitwise: the prefill's
    matmuls run on U instead of U * G rows, and XLA's CPU kernels round differently by batch size.
    """
    tokens, mask = _left_padded(PROMPTS, WIDTH)
    repeated = jnp.repeat(tokens, COPIES, axis=0), jnp.repeat(mask, COPIES, axis=0)
    for temperature in (0.0, 1.0):
        shared = _run(params, tokens, mask, temperature, prompt_copies=COPIES)
        separate = _run(params, *repeated, temperature)
        chex.assert_shape([shared.tokens, shared.logprobs, shared.mask], (len(PROMPTS) * COPIES, NEW))
        np.testing.assert_array_equal(shared.tokens, separate.tokens)
        np.testing.assert_array_equal(shared.mask, separate.mask)
        np.testing.assert_allclose(shared.logprobs, separate.logprobs, rtol=0, atol=1e-5)
        lengths = np.asarray(shared.mask.sum(axis=1))
        assert 0 < lengths.min() < NEW == lengths.max()  # some rows stop early, some run to the end
    # the sampled copies of one prompt differ from each other: every row draws its own uniforms
    assert len({tuple(row) for row in np.asarray(shared.tokens[:COPIES])}) > 1
    expected = _teacher_forced(params, CONFIG, *repeated, shared)
    np.testing.assert_allclose(shared.logprobs, np.where(shared.mask, expected, 0.0), atol=1e-4)


HEAD = [21, 22, 23, 24, 25, 26]


def test_a_shared_prefix_prefilled_once_equals_prefilling_it_in_every_prompt(params):
    """`prefix=prefix_cache(head)` with prompts [U, P] == the prompts `head + prompt` [U, H + P]
    (here with padding holes between head and prompt: positions count real tokens only), also
    with `prompt_copies` and inactive rows; log-probs agree to float rounding."""
    tokens, mask = _left_padded(PROMPTS, WIDTH)
    head = jnp.broadcast_to(jnp.asarray(HEAD), (len(PROMPTS), len(HEAD)))
    whole = jnp.concatenate([head, tokens], axis=1), jnp.concatenate([jnp.ones(head.shape, bool), mask], axis=1)
    prefix = jax.jit(llama.prefix_cache, static_argnums=1)(params, CONFIG, jnp.asarray(HEAD))
    chex.assert_shape(prefix.keys, (CONFIG.num_layers, 1, len(HEAD), CONFIG.num_kv_heads, CONFIG.head_dim))
    for temperature in (0.0, 1.0):
        for kwargs in ({}, {"prompt_copies": COPIES, "active": ACTIVE}):
            shared = _run(params, tokens, mask, temperature, prefix=prefix, **kwargs)
            inline = _run(params, *whole, temperature, **kwargs)
            np.testing.assert_array_equal(shared.tokens, inline.tokens)
            np.testing.assert_array_equal(shared.mask, inline.mask)
            np.testing.assert_allclose(shared.logprobs, inline.logprobs, rtol=0, atol=1e-5)
    # and the prefix matters: without it the continuations differ
    with_prefix = _run(params, tokens, mask, 0.0, prefix=prefix)
    assert not np.array_equal(_run(params, tokens, mask, 0.0).tokens, with_prefix.tokens)


def test_prompt_copies_and_active_are_checked(params):
    tokens, mask = _left_padded(PROMPTS, WIDTH)
    with pytest.raises(ValueError, match="prompt_copies=0"):
        _run(params, tokens, mask, 0.0, prompt_copies=0)
    with pytest.raises(AssertionError):  # `active` is per output row: 12 here, not 3
        _run(params, tokens, mask, 0.0, prompt_copies=COPIES, active=jnp.ones(3, bool))


ACTIVE = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1], bool)  # prompt 1's group is all inactive


def test_inactive_rows_generate_nothing_and_leave_the_others_unchanged(params):
    tokens, mask = _left_padded(PROMPTS, WIDTH)
    for temperature in (0.0, 1.0):
        everyone = _run(params, tokens, mask, temperature, prompt_copies=COPIES)
        some = _run(params, tokens, mask, temperature, prompt_copies=COPIES, active=ACTIVE)
        off = _rows(some, ~ACTIVE)
        assert np.all(off.tokens == 51) and np.all(off.logprobs == 0) and not off.mask.any()
        # same program, same draws per row: the active rows are exactly as if all rows ran
        chex.assert_trees_all_equal(_rows(some, ACTIVE), _rows(everyone, ACTIVE))
    # greedy: as if the inactive rows were not in the batch at all (up to batch-size rounding)
    greedy = _run(params, tokens, mask, 0.0, prompt_copies=COPIES, active=ACTIVE)
    row_prompts = np.repeat(np.arange(len(PROMPTS)), COPIES)[ACTIVE]
    alone = _run(params, tokens[row_prompts], mask[row_prompts], 0.0)
    np.testing.assert_array_equal(greedy.tokens[ACTIVE], alone.tokens)
    np.testing.assert_array_equal(greedy.mask[ACTIVE], alone.mask)
    np.testing.assert_allclose(greedy.logprobs[ACTIVE], alone.logprobs, rtol=0, atol=1e-5)


def test_decode_loop_stops_when_every_active_row_has_stopped(params, monkeypatch):
    """Counts decode steps (a host callback in the step, traced afresh for new_tokens=9)."""
    from jaxrl_llm.rollout import sampling

    steps = []

    original = sampling.decode_forward

    def counting_decode_forward(*args):
        jax.debug.callback(lambda: steps.append(1))
        return original(*args)

    monkeypatch.setattr(sampling, "decode_forward", counting_decode_forward)
    tokens, mask = _left_padded(PROMPTS, WIDTH)

    def run(active):
        steps.clear()
        out = generate(
            params, CONFIG, tokens, mask, jax.random.key(0), 9, temperature=0.0, stop_tokens=STOPS,
            prompt_copies=COPIES, active=active,
        )  # fmt: skip
        jax.effects_barrier()
        return out, len(steps)

    everyone, everyone_steps = run(np.ones(12, bool))
    assert everyone_steps == 9  # prompts 1 and 2 run to the end
    stopping = np.asarray(everyone.mask.sum(axis=1)) < 9  # the rows that emit a stop token
    assert stopping.any() and not stopping.all()
    out, ran = run(stopping)
    assert ran == int(np.asarray(everyone.mask.sum(axis=1))[stopping].max()) < 9
    np.testing.assert_array_equal(out.mask[stopping], everyone.mask[stopping])
    nobody, ran = run(np.zeros(12, bool))
    assert ran == 0 and not nobody.mask.any() and np.all(nobody.tokens == 0)
    assert np.all(nobody.logprobs == 0)


def test_generate_runs_inside_jit_and_a_scan_over_turns(params):
    """Traced prompts, key, temperature and `active` (shrinking turn by turn, as in an agent loop
    where finished episodes stop generating) give the eager results."""
    tokens, mask = _left_padded(PROMPTS, WIDTH)
    actives = jnp.asarray([np.ones(12, bool), ACTIVE, np.zeros(12, bool)])
    keys = jax.random.split(jax.random.key(5), len(actives))

    @jax.jit
    def turns(params, tokens, mask, temperature):
        def turn(count, xs):
            key, active = xs
            out = generate(
                params, CONFIG, tokens, mask, key, NEW, temperature=temperature, stop_tokens=STOPS,
                pad_token=51, active=active, prompt_copies=COPIES,
            )  # fmt: skip
            return count + out.mask.sum(), out

        return jax.lax.scan(turn, jnp.zeros((), jnp.int32), (keys, actives))

    for temperature in (0.0, 1.0):
        count, outs = turns(params, tokens, mask, jnp.float32(temperature))
        for turn, (key, active) in enumerate(zip(keys, actives)):
            eager = generate(
                params, CONFIG, tokens, mask, key, NEW, temperature=temperature, stop_tokens=STOPS,
                pad_token=51, active=active, prompt_copies=COPIES,
            )  # fmt: skip
            np.testing.assert_array_equal(outs.tokens[turn], eager.tokens)
            np.testing.assert_array_equal(outs.mask[turn], eager.mask)
            np.testing.assert_allclose(outs.logprobs[turn], eager.logprobs, rtol=0, atol=1e-5)
        assert int(count) == int(outs.mask.sum()) and not outs.mask[-1].any()


# --- SmolLM2-135M-Instruct (real weights) -------------------------------------------------------------


def _chat_prompts(tokenizer, questions):
    ids = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True
        )["input_ids"]
        for q in questions
    ]
    return _left_padded(ids, max(map(len, ids)), pad=tokenizer.pad_token_id)


@pytest.mark.slow
def test_smollm2_greedy_chat_answers_2_plus_3(smollm2):
    from jaxrl_llm.models.tokenizer import stop_token_ids

    params, config, tokenizer = smollm2
    tokens, mask = _chat_prompts(tokenizer, ["What is 2+3?"])
    output = generate(
        params,
        config,
        tokens,
        mask,
        jax.random.key(0),
        24,
        temperature=0.0,
        stop_tokens=stop_token_ids(tokenizer),
        pad_token=tokenizer.pad_token_id,
    )
    answer = tokenizer.decode(
        np.asarray(output.tokens[0])[np.asarray(output.mask[0])], skip_special_tokens=True
    )
    assert "5" in answer, answer
    assert int(output.tokens[0, int(output.mask[0].sum()) - 1]) in stop_token_ids(tokenizer)


@pytest.mark.slow
def test_smollm2_sampled_logprobs_equal_teacher_forced(smollm2):
    params, config, tokenizer = smollm2
    tokens, mask = _chat_prompts(tokenizer, ["What is 2+3?", "Name a colour of the sky at night."])
    output = generate(
        params,
        config,
        tokens,
        mask,
        jax.random.key(4),
        16,
        temperature=1.0,
        top_p=0.95,
        stop_tokens=(2,),
        pad_token=tokenizer.pad_token_id,
    )
    expected = _teacher_forced(params, config, tokens, mask, output)
    np.testing.assert_allclose(output.logprobs, np.where(output.mask, expected, 0.0), atol=2e-3)
