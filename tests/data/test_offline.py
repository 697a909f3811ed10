"""Offline JSON Lines datasets: the bundled samples, errors that name file, line and field, and
the fixed-shape tokenisation."""

from dataclasses import astuple

import numpy as np
import pytest

from jaxrl_llm.data import DatasetFormatError, offline
from jaxrl_llm.losses.bellman import sequence_reward_to_tokens, turn_rewards_to_tokens
from jaxrl_llm.models.char_tokenizer import char_tokenizer


def test_bundled_samples_read_and_hold_correct_and_wrong_answers():
    samples = offline.read_rewarded_jsonl(offline.REWARDS_SAMPLE_FILE)
    pairs = offline.read_preference_jsonl(offline.PAIRS_SAMPLE_FILE)
    assert len(samples) == 2 * len(pairs) >= 20
    assert {s.reward for s in samples} == {0.0, 1.0}
    for sample in samples:  # the rewarded answer is the exact answer
        question = sample.prompt.removeprefix("What is ").removesuffix("?")
        assert (sample.completion.split("#### ")[-1] == str(eval(question))) == (sample.reward == 1.0)
    assert all(p.chosen != p.rejected for p in pairs)
    assert samples[0].source == f"{offline.REWARDS_SAMPLE_FILE}:1"


REWARD_LINE = '{"prompt": "What is 1 + 1?", "completion": "#### 2", "reward": 1.0}'


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"prompt": "What is 1 + 1?", "reward": 1.0}', r"field 'completion' is missing; each line needs"),
        ('{"prompt": "What is 1 + 1?", "completion": "#### 2", "reward": 1.0', r"not valid JSON \(.*column"),
        ('{"prompt": "1 + 1?", "completion": "#### 2", "reward": "1.0"}', r"'reward' must be a finite number \(or a list of them\), got str"),
        ('{"prompt": 11, "completion": "#### 2", "reward": 1.0}', r"'prompt' must be a string, got int 11"),
        ('{"prompt": "1 + 1?", "completion": "#### 2", "reward": NaN}', r"'reward' must be a finite number"),
        ('{"prompt": "1 + 1?", "completion": "#### 2", "reward": true}', r"'reward' must be a finite number \(or a list of them\), got bool"),
        ('["1 + 1?", "#### 2", 1.0]', r"expected a JSON object with fields 'prompt', 'completion', 'reward', got a JSON list"),
        ('{"prompt": "1 + 1?", "completion": ["1 + 1", " = 2"], "reward": [1.0]}', r"2 turn\(s\) needs one reward per turn"),
        ('{"prompt": "1 + 1?", "completion": "#### 2", "reward": [1.0]}', r"1 turn\(s\) needs one reward per turn"),
        ('{"prompt": "1 + 1?", "completion": ["a", 2], "reward": [1.0, 0.0]}', r"'completion' must be a string or a non-empty list of them"),
        ('{"prompt": "1 + 1?", "completion": [], "reward": []}', r"'completion' must be a string or a non-empty list"),
        ('{"prompt": "1 + 1?", "completion": "#### 2", "reward": {"r": 1}}', r"'reward' must be a finite number \(or a list of them\), got dict"),
    ],
)
def test_a_malformed_rewarded_line_names_file_line_and_field(tmp_path, bad_line, message):
    path = tmp_path / "rewards.jsonl"
    path.write_text(f"{REWARD_LINE}\n\n{bad_line}\n{REWARD_LINE}\n")
    with pytest.raises(DatasetFormatError, match=message) as error:
        offline.read_rewarded_jsonl(path)
    assert str(error.value).startswith(f"{path}:3: ")  # the blank line 2 still counts


def test_a_malformed_pair_names_the_missing_field(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "1 + 1?", "chosen": "#### 2"}\n')
    with pytest.raises(DatasetFormatError, match=rf"^{path}:1: field 'rejected' is missing; .*\"rejected\": "):
        offline.read_preference_jsonl(path)


def test_empty_and_missing_files_are_explained(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DatasetFormatError, match=rf"^{empty}: no records found \(empty file\?\); write one JSON"):
        offline.read_preference_jsonl(empty)
    with pytest.raises(DatasetFormatError, match="file not found"):
        offline.read_rewarded_jsonl(tmp_path / "nope.jsonl")
    assert isinstance(DatasetFormatError("x"), ValueError)  # the CLI prints ValueErrors in one line


def test_encoding_left_pads_prompts_and_right_pads_completions_with_eos():
    tokenizer = char_tokenizer()
    samples = offline.read_rewarded_jsonl(offline.REWARDS_SAMPLE_FILE)[:3]
    tokens, mask, rewards, prompt_len = offline.encode_rewarded(tokenizer, samples, 64, 32)
    assert prompt_len % 16 == 0 and tokens.shape == mask.shape and tokens.shape[1] == prompt_len + 24
    np.testing.assert_array_equal(rewards.sum(1), [s.reward for s in samples])
    np.testing.assert_array_equal(rewards, sequence_reward_to_tokens(rewards.sum(1), mask[:, prompt_len:]))
    for row, sample in enumerate(samples):
        prompt = tokenizer.decode(tokens[row, :prompt_len][mask[row, :prompt_len]])
        assert prompt == f"Q: {sample.prompt}\nA: " and mask[row, prompt_len - 1]  # the chat template
        ids = tokens[row, prompt_len:][mask[row, prompt_len:]]
        assert ids[-1] == tokenizer.eos_token_id and tokenizer.decode(ids[:-1]) == sample.completion
        assert mask[row, prompt_len:][: len(ids)].all()  # contiguous from the first completion position


def test_pairs_share_the_prompt_and_one_shape():
    tokenizer = char_tokenizer()
    pairs = offline.read_preference_jsonl(offline.PAIRS_SAMPLE_FILE)
    tokens, mask, prompt_len = offline.encode_pairs(tokenizer, pairs, 64, 32)
    assert tokens.shape[:2] == (len(pairs), 2) and mask.shape == tokens.shape
    np.testing.assert_array_equal(tokens[:, 0, :prompt_len], tokens[:, 1, :prompt_len])
    chosen = tokens[3, 0, prompt_len:][mask[3, 0, prompt_len:]]
    rejected = tokens[3, 1, prompt_len:][mask[3, 1, prompt_len:]]
    assert tokenizer.decode(chosen[:-1]) == pairs[3].chosen and tokenizer.decode(rejected[:-1]) == pairs[3].rejected


def test_a_too_long_completion_names_its_line_and_the_flag():
    pairs = offline.read_preference_jsonl(offline.PAIRS_SAMPLE_FILE)
    with pytest.raises(ValueError, match=rf"^{offline.PAIRS_SAMPLE_FILE}:1: the completion is \d+ tokens .*raise --max-completion-tokens"):
        offline.encode_pairs(char_tokenizer(), pairs, 64, 8)


def test_pairs_from_rewarded_and_a_written_file_reads_back(tmp_path):
    samples = offline.read_rewarded_jsonl(offline.REWARDS_SAMPLE_FILE)
    pairs = offline.pairs_from_rewarded(samples)
    bundled = offline.read_preference_jsonl(offline.PAIRS_SAMPLE_FILE)  # the same pairs (a prompt repeats)
    assert sorted(astuple(p)[:3] for p in pairs) == sorted(astuple(p)[:3] for p in bundled)
    tied = [offline.RewardedCompletion("p", "a", 0.5), offline.RewardedCompletion("p", "b", 0.5)]
    three = [offline.RewardedCompletion("q", c, r) for c, r in (("x", 0.0), ("y", 1.0), ("z", 0.2))]
    assert offline.pairs_from_rewarded(tied + three) == [offline.PreferencePair("q", "y", "x")]
    for records, read in ((samples, offline.read_rewarded_jsonl), (pairs, offline.read_preference_jsonl)):
        path = tmp_path / "written.jsonl"
        offline.write_jsonl(path, records)
        assert read(path) == records


def test_turn_rewards_sit_on_the_last_token_of_each_turn(tmp_path):
    """A completion given as turns: ids = each turn's ids concatenated + eos, each turn's reward on
    its last token (the last turn's on eos), as `turn_rewards_to_tokens` places them."""
    path = tmp_path / "turns.jsonl"
    path.write_text(
        '{"prompt": "What is 1 + 2 + 3?", "completion": ["1 + 2 = 3.", " 3 + 3 = 6."], "reward": [0.5, 1]}\n'
        '{"prompt": "What is 2 + 2?", "completion": "#### 4", "reward": 1.0}\n'
    )
    samples = offline.read_rewarded_jsonl(path)
    assert samples[0].turns == (("1 + 2 = 3.", " 3 + 3 = 6."), (0.5, 1.0)) and samples[0].total_reward == 1.5
    assert samples[0].text == "1 + 2 = 3. 3 + 3 = 6." and samples[1].turns == (("#### 4",), (1.0,))
    tokenizer = char_tokenizer()
    tokens, mask, rewards, prompt_len = offline.encode_rewarded(tokenizer, samples, 64, 32)
    actions = mask[:, prompt_len:]
    first_turn = len("1 + 2 = 3.")
    turn_ids = np.stack([np.arange(actions.shape[1]) >= first_turn, np.zeros(actions.shape[1])]).astype(int)
    expected = turn_rewards_to_tokens(np.asarray([[0.5, 1.0], [1.0, 0.0]]), turn_ids, actions)
    np.testing.assert_array_equal(rewards, expected)
    assert rewards[0, first_turn - 1] == 0.5 and tokenizer.decode(tokens[0, prompt_len:][actions[0]][:-1]) == samples[0].text
    offline.write_jsonl(tmp_path / "back.jsonl", samples)
    assert offline.read_rewarded_jsonl(tmp_path / "back.jsonl") == samples
    pair = offline.pairs_from_rewarded([samples[0], offline.RewardedCompletion(samples[0].prompt, "#### 7", 0.0)])
    assert pair == [offline.PreferencePair(samples[0].prompt, samples[0].text, "#### 7")]


def test_an_empty_inner_turn_is_refused():
    sample = offline.RewardedCompletion("What is 1 + 1?", ("1 + 1", "", " = 2"), (0.0, 0.0, 1.0), "f.jsonl:4")
    with pytest.raises(ValueError, match=r"^f.jsonl:4: turn 1 of the completion is empty"):
        offline.encode_rewarded(char_tokenizer(), [sample], 64, 32)
