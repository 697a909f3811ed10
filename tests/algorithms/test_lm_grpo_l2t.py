"""LM-GRPO with L2T's dense reward and the length-penalty baseline (tiny model, small overrides)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm.algorithms import l2t_rewards, lm_grpo
from jaxrl_llm.data import Problem
from jaxrl_llm.losses import information_gain, names
from jaxrl_llm.models.logprobs import token_logprobs_and_entropy
from jaxrl_llm.rollout.episode_spans import spans_from_chunks
from jaxrl_llm.training import compose

SMALL = {"hidden_size": "32", "intermediate_size": "64", "num_layers": "1"}
TINY = {
    "model": "tiny",
    "model_overrides": SMALL,
    "arithmetic_kinds": ("add",),
    "max_operand": 9,
    "prompts_per_update": 2,
    "group_size": 4,
    "max_prompt_tokens": 24,
    "max_new_tokens": 6,
    "format_reward_weight": 0.0,
    "learning_rate": 1e-2,
    "l2t_chunk_size": 2,
    "l2t_max_episodes": 2,
    "remat": False,  # compiles faster; the tiny model needs no memory savings
}


@pytest.fixture(scope="module")
def tiny_run():
    return lm_grpo.setup(lm_grpo.LMGRPOConfig(**TINY, num_updates=2), verbose=False)


def _with(tiny_run, **fields):
    config = lm_grpo.LMGRPOConfig(**{**TINY, **fields}, num_updates=2)
    return lm_grpo.setup(
        config,
        params=tiny_run.base_params,
        model_config=tiny_run.model_config,
        tokenizer=tiny_run.tokenizer,
        verbose=False,
    )


def test_batched_answer_scores_equal_separate_teacher_forced_passes(tiny_run):
    """J_r at every boundary from the one masked [B·(K+1), L] pass equals a loop of separate
    passes over prompt + completion prefix (stop tokens dropped) + cue + answer."""
    tokenizer, params, config = tiny_run.tokenizer, tiny_run.base_params, tiny_run.model_config
    problems = [Problem("What is 1 + 2?", "3"), Problem("What is 13 + 12?", "25"), Problem("9 + 9?", "18")]
    prompt_tokens, prompt_mask = lm_grpo.encode_prompts(tokenizer, problems, 24)
    rng = np.random.default_rng(0)
    width, chunk, slots = 7, 2, 3
    completion = rng.integers(4, 60, (3, width)).astype(np.int32)
    lengths = np.array([7, 3, 5])
    completion_mask = np.arange(width)[None] < lengths[:, None]
    eos = tokenizer.eos_token_id
    completion[1, 2] = eos  # row 1 ends with its stop token: left out of every prefix
    content = completion_mask & (completion != eos)
    targets, target_mask, scored = l2t_rewards.encode_answer_targets(
        tokenizer, [p.answer for p in problems], "\n#### "
    )
    spans = spans_from_chunks(jnp.asarray(completion_mask), chunk, slots)  # row 0 overflows into slot 2
    prefix = l2t_rewards.boundary_prefix_lengths(spans)
    inputs = [prompt_tokens, prompt_mask, completion, content, prefix, targets, target_mask, scored]
    scores = jax.jit(
        lambda *xs, kind, slices: l2t_rewards.boundary_scores(
            params, config, *xs, kind=kind, num_slices=slices
        ),
        static_argnames=("kind", "slices"),
    )
    batched = scores(*map(jnp.asarray, inputs), kind="log_prob", slices=1)
    np.testing.assert_allclose(
        scores(*map(jnp.asarray, inputs), kind="log_prob", slices=2), batched, rtol=1e-6, atol=1e-6
    )
    assert batched.shape == (3, slots + 1)
    np.testing.assert_array_equal(np.asarray(prefix), [[0, 2, 4, 7], [0, 2, 3, 0], [0, 2, 4, 5]])
    valid = np.concatenate([np.ones((3, 1), bool), np.asarray(spans.valid)], axis=1)
    checked, padded = 0, 48  # separate right-padded rows of one shape: one compiled pass
    separate = jax.jit(lambda tokens, mask: token_logprobs_and_entropy(params, config, tokens, mask)[0])
    for i in range(3):
        for j in range(slots + 1):
            if not valid[i, j]:
                continue
            kept = [t for t, keep in zip(completion[i, : prefix[i, j]], content[i, : prefix[i, j]]) if keep]
            answer = targets[i][target_mask[i]]
            sequence = np.concatenate([prompt_tokens[i][prompt_mask[i]], kept, answer]).astype(np.int32)
            row = np.zeros((1, padded), np.int32)
            row[0, : len(sequence)] = sequence
            logprobs = separate(jnp.asarray(row), jnp.asarray(np.arange(padded)[None] < len(sequence)))
            answer_logprobs = np.asarray(logprobs[0, len(sequence) - len(answer) : len(sequence)])
            answer_logprobs = answer_logprobs[scored[i][target_mask[i]]]
            np.testing.assert_allclose(batched[i, j], answer_logprobs.sum(), rtol=2e-5, atol=2e-5)
            checked += 1
    assert checked == 11


def test_answer_targets_score_only_the_answer_and_need_a_cue_token(tiny_run):
    tokens, mask, scored = l2t_rewards.encode_answer_targets(tiny_run.tokenizer, ["7", "123"], "\n#### ")
    assert tokens.shape == (2, 16) and mask.sum(1).tolist() == [7, 9]
    assert scored.sum(1).tolist() == [1, 3] and not scored[:, :6].any()
    assert tiny_run.tokenizer.decode(tokens[1][scored[1]].tolist()) == "123"
    with pytest.raises(ValueError, match="l2t_answer_cue=''"):
        l2t_rewards.encode_answer_targets(tiny_run.tokenizer, ["7"], "")


def _train(run, updates=2):
    fns = compose(lm_grpo.make_lm_grpo(run.config, run, verbose=False))
    state = fns.init(jax.random.PRNGKey(0))
    before = jax.tree.map(np.array, state.train_state.params)
    history = []
    for _ in range(updates):
        state, metrics = fns.update(state)
        history.append(metrics)
    moved = any(
        not np.array_equal(a, np.asarray(b))
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.train_state.params))
    )
    return state, history, moved


@pytest.mark.parametrize(
    "fields",
    [
        {"reward": "l2t", "l2t_variant": "paper", "lora_rank": 2},
        {"reward": "l2t", "l2t_variant": "code"},
    ],
    ids=["paper-lora", "code"],
)
def test_l2t_updates_are_finite_and_move_the_parameters(tiny_run, fields):
    run = _with(tiny_run, **fields)
    state, history, moved = _train(run)
    last = history[-1]
    assert int(state.train_state.step) == 2 and moved
    for name in ("loss", "l2t_fitting_gain_mean", "l2t_penalty_mean", "l2t_answer_score_end"):
        assert all(np.isfinite(m[name]) for m in history), name
    assert 1 <= last["l2t_episodes_per_completion"] <= 2  # <= 6 tokens in chunks of 2, K = 2
    assert 1 <= last["completion_length_mean"] <= 6  # generated tokens per completion
    if fields["l2t_variant"] == "paper":  # adapters moved after update 1: a positive penalty
        assert state.collect_state.reference_adapters is not None
        assert history[0]["l2t_penalty_mean"] >= 0 and last["l2t_penalty_mean"] > 0
    else:
        assert state.collect_state.reference_adapters is None and last["l2t_penalty_mean"] == 0


def test_length_penalty_updates_are_finite(tiny_run):
    run = _with(tiny_run, reward="length-penalty", length_penalty_kind="linear", length_penalty_coef=0.5)
    state, history, moved = _train(run)
    assert all(np.isfinite(m["loss"]) for m in history) and int(state.train_state.step) == 2
    assert moved or history[-1]["zero_std_group_fraction"] == 1.0
    shape = l2t_rewards.make_reward_shaping(run.config, run.model_config, run.tokenizer)
    completion_mask = np.arange(6)[None] < np.array([6, 3, 3, 1, 2, 2, 2, 2])[:, None]
    correct = np.array([1, 1, 0, 0, 0, 0, 0, 0], np.float32)
    group_ids = jnp.repeat(jnp.arange(2), 4)
    advantage, metrics = shape(
        None,
        None,
        None,
        completion_mask=completion_mask,
        reward=correct,
        correct=correct,
        group_ids=group_ids,
    )
    shaped = correct - 0.5 * completion_mask.sum(1) / 6
    group = shaped[:4]
    np.testing.assert_allclose(advantage[:4], (group - group.mean()) / (group.std(ddof=1) + 1e-6), rtol=1e-5)
    np.testing.assert_allclose(advantage[4:], 0.0)  # equal lengths, all wrong: a zero-std group
    assert metrics["zero_std_group_fraction"] == 0.5


def test_outcome_reward_has_no_shaping():
    assert l2t_rewards.make_reward_shaping(lm_grpo.LMGRPOConfig(**TINY), None, None) is None
    assert lm_grpo.LMGRPOConfig().reward == "outcome"


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"reward": "l2T"},
            r"LMGRPOConfig.reward='l2T' is invalid: must be one of \['outcome', 'l2t', 'length-penalty'\]",
        ),
        (
            {"l2t_variant": "verl"},
            r"LMGRPOConfig.l2t_variant='verl' is invalid: must be one of \['paper', 'code'\]",
        ),
        ({"l2t_episodes": "lines"}, r"LMGRPOConfig.l2t_episodes='lines' is invalid: must be one of"),
        ({"l2t_score": "logit"}, r"LMGRPOConfig.l2t_score='logit' is invalid"),
        ({"length_penalty_kind": "cosine"}, r"LMGRPOConfig.length_penalty_kind='cosine' is invalid"),
        ({"l2t_chunk_size": 0}, r"LMGRPOConfig.l2t_chunk_size=0 is invalid: must lie in"),
        ({"l2t_beta": -1.0}, r"LMGRPOConfig.l2t_beta=-1.0 is invalid"),
        ({"l2t_answer_cue": ""}, r"LMGRPOConfig.l2t_answer_cue='' is invalid"),
    ],
)
def test_config_errors_name_the_field_and_the_allowed_values(fields, message):
    with pytest.raises(ValueError, match=message):
        lm_grpo.LMGRPOConfig(**fields)


def test_option_names_agree_with_the_loss_module():
    assert names.L2T_VARIANTS == information_gain.CREDIT_VARIANTS
    assert names.L2T_SCORE_KINDS == information_gain.J_R_KINDS
    assert names.LENGTH_PENALTY_KINDS == information_gain.LENGTH_PENALTY_KINDS


def test_cli_reports_a_bad_reward_in_one_line(tmp_path, capsys):
    from jaxrl_llm import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(
            [
                "lm-grpo",
                "--reward",
                "l2",
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
                "--compile-cache",
                "",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    text = " ".join(err.replace("│", " ").split())  # tyro wraps the message in a box
    assert "LMGRPOConfig.reward='l2' is invalid: must be one of" in text and "Traceback" not in err


def test_tag_splitter_reads_episode_tags_and_falls_back_to_chunks():
    from jaxrl_llm.models.char_tokenizer import DEFAULT_ALPHABET, char_tokenizer

    tokenizer = char_tokenizer(DEFAULT_ALPHABET + "<>_")
    config = lm_grpo.LMGRPOConfig(**{**TINY, "l2t_episodes": "episode-tags", "l2t_max_episodes": 3})
    split = jax.jit(l2t_rewards.make_episode_splitter(config, tokenizer))  # as inside the trainer
    texts = ["<episode_1>12</episode_1><episode_2>3</episode_2>#### 5", "12345"]
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    tokens = np.zeros((2, 64), np.int32)
    mask = np.zeros((2, 64), bool)
    for row, seq in enumerate(ids):
        tokens[row, : len(seq)], mask[row, : len(seq)] = seq, True
    spans = split(jnp.asarray(tokens), jnp.asarray(mask))
    first, second = len("<episode_1>12</episode_1>"), len("<episode_1>12</episode_1><episode_2>3</episode_2>")
    np.testing.assert_array_equal(spans.ends[0], [first - 1, second - 1, -1])
    np.testing.assert_array_equal(spans.ends[1], [1, 3, 4])  # untagged: chunks of l2t_chunk_size=2
