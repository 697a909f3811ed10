"""Offline LM datasets in JSON Lines, and their tokenisation into fixed-shape arrays.

Rewarded completions (ShiQ; any offline RL from scalar rewards), one JSON object per line:

    {"prompt": "What is 3 + 4?", "completion": "#### 7", "reward": 1.0}

or, with a reward per turn (multi-step tasks, agent turns), the completion as a list of turns and
one reward per turn:

    {"prompt": "What is 3 + 4 + 5?", "completion": ["3 + 4 = 7.", " 7 + 5 = 12. #### 12"], "reward": [1.0, 1.0]}

Preference pairs (DPO), one JSON object per line:

    {"prompt": "What is 3 + 4?", "chosen": "#### 7", "rejected": "#### 8"}

Other fields are ignored; blank lines are skipped. A malformed line raises `DatasetFormatError`
naming the file, the line, the field and the fix.

Tokenisation follows SFT (`algorithms/lm_sft.py`): the prompt is shown as the chat prompt of
`data.problems.encode_prompts` (the model's chat template, left-padded), the completion follows it
with an end-of-sequence token, right-padded:

    tokens [M, P + N] = [<pad>.. chat(prompt) | completion <eos> <pad>..],   mask marks real tokens

P is the longest prompt of the file rounded up to a multiple of 16 (at most `max_prompt_tokens`),
N the longest completion rounded up to a multiple of 8 (at most `max_completion_tokens`), so one
file gives one shape; `mask[:, P:]` marks the completion tokens (the actions). A completion given as
turns is the concatenation of each turn's token ids (each turn tokenised on its own, as an agent
emits them), and each turn's reward sits on its last token (the last turn's on the eos): the
`[M, N]` token rewards `losses/bellman.py` reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxrl_llm.data.jsonl import DatasetFormatError, read_jsonl_records
from jaxrl_llm.data.problems import Problem, encode_prompts

SAMPLES = Path(__file__).with_name("samples")
REWARDS_SAMPLE_FILE = SAMPLES / "offline_rewards_sample.jsonl"
PAIRS_SAMPLE_FILE = SAMPLES / "offline_pairs_sample.jsonl"

_REWARD_EXAMPLE = '{"prompt": "What is 3 + 4?", "completion": "#### 7", "reward": 1.0}'
_TURNS_EXAMPLE = '{"prompt": "What is 3 + 4 + 5?", "completion": ["3 + 4 = 7.", " 7 + 5 = 12."], "reward": [1.0, 1.0]}'
_PAIR_EXAMPLE = '{"prompt": "What is 3 + 4?", "chosen": "#### 7", "rejected": "#### 8"}'


@dataclass(frozen=True)
class RewardedCompletion:
    prompt: str
    completion: str | tuple[str, ...]
    """The completion text, or its turns (`text` joins them)."""
    reward: float | tuple[float, ...]
    """The sequence reward, or one reward per turn (`total_reward` sums them)."""
    source: str = field(default="", compare=False)
    """Where it was read, 'file:line' (for error messages)."""

    @property
    def turns(self) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """`(texts, rewards)` of the turns (one turn for a plain completion)."""
        if isinstance(self.completion, str):
            return (self.completion,), (float(self.reward),)
        return tuple(self.completion), tuple(float(r) for r in self.reward)

    @property
    def text(self) -> str:
        return "".join(self.turns[0])

    @property
    def total_reward(self) -> float:
        return float(sum(self.turns[1]))

    def __post_init__(self):
        is_text, is_number = isinstance(self.completion, str), isinstance(self.reward, (int, float))
        if is_text != is_number or (not is_text and len(self.completion) != len(self.reward)):
            where = f"{self.source}: " if self.source else ""
            raise ValueError(
                f"{where}a completion given as {len(self.completion) if not is_text else 1} turn(s) needs one "
                f"reward per turn, got reward={self.reward!r:.60}; e.g. {_TURNS_EXAMPLE}"
            )


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    source: str = field(default="", compare=False)


def read_rewarded_jsonl(path: str | Path) -> list[RewardedCompletion]:
    """Every `{"prompt", "completion", "reward"}` line of `path` (module docstring): a completion
    string with a number, or a list of turns with a list of as many rewards.

    Raises:
      DatasetFormatError: invalid JSON, a missing field, a field of the wrong type (a non-finite
        reward included), turns and rewards of different counts, or no record at all, naming the
        file and the line number.
    """
    fields = {"prompt": "string", "completion": "string or list", "reward": "number or list"}
    records = []
    for where, r in read_jsonl_records(path, fields, _REWARD_EXAMPLE):
        completion, reward = r["completion"], r["reward"]
        completion = tuple(completion) if isinstance(completion, list) else completion
        reward = tuple(float(x) for x in reward) if isinstance(reward, list) else float(reward)
        try:
            records.append(RewardedCompletion(r["prompt"], completion, reward, where))
        except ValueError as error:
            raise DatasetFormatError(str(error)) from None
    return records


def read_preference_jsonl(path: str | Path) -> list[PreferencePair]:
    """Every `{"prompt", "chosen", "rejected"}` line of `path` (module docstring); errors as
    `read_rewarded_jsonl`."""
    fields = {"prompt": "string", "chosen": "string", "rejected": "string"}
    return [
        PreferencePair(r["prompt"], r["chosen"], r["rejected"], where)
        for where, r in read_jsonl_records(path, fields, _PAIR_EXAMPLE)
    ]


def _turn_ids(tokenizer, turns: Sequence[str], where: str) -> tuple[list[int], list[int]]:
    """The token ids of `turns` + eos and the index of each turn's last token (eos ends the last)."""
    ids, ends = [], []
    for index, text in enumerate(turns):
        turn = tokenizer.encode(text, add_special_tokens=False)
        if not turn and index < len(turns) - 1:  # the last turn ends with eos
            raise ValueError(f"{where}: turn {index} of the completion is empty (no tokens); drop it or merge it into a neighbour.")
        ids += turn
        ends.append(len(ids) - 1)
    ids.append(tokenizer.eos_token_id)
    ends[-1] = len(ids) - 1
    return ids, ends


def _encode(
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str | Sequence[str]],
    max_prompt_tokens: int,
    max_completion_tokens: int,
    sources: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray, int, list[list[int]]]:
    """`encode_prompt_completions` plus each row's turn-end positions within the completion."""
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(f"expected as many prompts as completions (> 0), got {len(prompts)} and {len(completions)}.")
    prompt_tokens, prompt_mask = encode_prompts(
        tokenizer, [Problem(prompt, "") for prompt in prompts], max_prompt_tokens, pad_to_multiple_of=16
    )
    encoded, turn_ends = [], []
    for row, completion in enumerate(completions):
        where = sources[row] if sources else f"row {row}"
        turns = (completion,) if isinstance(completion, str) else tuple(completion)
        ids, ends = _turn_ids(tokenizer, turns, where)
        if len(ids) > max_completion_tokens:
            raise ValueError(
                f"{where}: the completion is {len(ids)} tokens long (with end-of-sequence), more than "
                f"max_completion_tokens={max_completion_tokens}: raise --max-completion-tokens (completion "
                f"starts {''.join(turns)[:40]!r})."
            )
        encoded.append(ids)
        turn_ends.append(ends)
    width = min(max_completion_tokens, -(-max(map(len, encoded)) // 8) * 8)
    completion_tokens = np.full((len(encoded), width), tokenizer.pad_token_id or 0, np.int32)
    completion_mask = np.zeros_like(completion_tokens, bool)
    for row, ids in enumerate(encoded):
        completion_tokens[row, : len(ids)] = ids
        completion_mask[row, : len(ids)] = True
    tokens = np.concatenate([prompt_tokens, completion_tokens], axis=1)
    mask = np.concatenate([prompt_mask, completion_mask], axis=1)
    return tokens, mask, prompt_tokens.shape[1], turn_ends


def encode_prompt_completions(
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str | Sequence[str]],
    max_prompt_tokens: int,
    max_completion_tokens: int,
    sources: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """`(tokens, mask, P)`: `[M, P + N]` chat prompts left-padded to P, then completion (a string,
    or its turns) + eos, right-padded to N (module docstring). `sources` name the rows in errors
    ('file:line')."""
    tokens, mask, num_prompt_tokens, _ = _encode(
        tokenizer, prompts, completions, max_prompt_tokens, max_completion_tokens, sources
    )
    return tokens, mask, num_prompt_tokens


def encode_rewarded(
    tokenizer, samples: Sequence[RewardedCompletion], max_prompt_tokens: int, max_completion_tokens: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """`(tokens [M, P + N], mask [M, P + N], rewards [M, N] float32, P)` of rewarded completions:
    `rewards[m, n]` is the reward on completion token n (each turn's on its last token, a plain
    completion's on its eos), 0 elsewhere."""
    tokens, mask, num_prompt_tokens, turn_ends = _encode(
        tokenizer,
        [s.prompt for s in samples],
        [s.turns[0] for s in samples],
        max_prompt_tokens,
        max_completion_tokens,
        [s.source for s in samples],
    )
    rewards = np.zeros((len(samples), tokens.shape[1] - num_prompt_tokens), np.float32)
    for row, (sample, ends) in enumerate(zip(samples, turn_ends)):
        rewards[row, ends] = sample.turns[1]
    return tokens, mask, rewards, num_prompt_tokens


def encode_pairs(
    tokenizer, pairs: Sequence[PreferencePair], max_prompt_tokens: int, max_completion_tokens: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """`(tokens [M, 2, P + N], mask [M, 2, P + N], P)` of preference pairs: index 0 of axis 1 is the
    chosen completion, 1 the rejected one (one shape for both)."""
    sources = [p.source for p in pairs]
    tokens, mask, num_prompt_tokens = encode_prompt_completions(
        tokenizer,
        [p.prompt for p in pairs] * 2,
        [p.chosen for p in pairs] + [p.rejected for p in pairs],
        max_prompt_tokens,
        max_completion_tokens,
        sources + sources,
    )

    def pair_up(x):  # [2M, L] (chosen rows, then rejected rows) -> [M, 2, L]
        return x.reshape(2, len(pairs), x.shape[1]).swapaxes(0, 1)

    return pair_up(tokens), pair_up(mask), num_prompt_tokens


def pairs_from_rewarded(samples: Sequence[RewardedCompletion]) -> list[PreferencePair]:
    """Preference pairs from rewarded completions: for each prompt (in order of first appearance),
    its completions sorted by total reward (turns joined into one text), the i-th best paired with the i-th worst while the first has
    the strictly higher reward (a prompt whose completions all score the same gives no pair)."""
    by_prompt: dict[str, list[RewardedCompletion]] = {}
    for sample in samples:
        by_prompt.setdefault(sample.prompt, []).append(sample)
    pairs = []
    for prompt, group in by_prompt.items():
        ranked = sorted(group, key=lambda s: -s.total_reward)  # stable: file order among equal rewards
        for better, worse in zip(ranked[: len(ranked) // 2], ranked[::-1]):
            if better.total_reward > worse.total_reward:
                pairs.append(PreferencePair(prompt, better.text, worse.text, better.source))
    return pairs


def write_jsonl(path: str | Path, records: Sequence[RewardedCompletion | PreferencePair]) -> None:
    """Writes `records` in the format their reader reads (one JSON object per line; `source` is left out)."""
    lines = []
    for record in records:
        fields = {name: getattr(record, name) for name in record.__dataclass_fields__ if name != "source"}
        fields = {name: list(value) if isinstance(value, tuple) else value for name, value in fields.items()}
        lines.append(json.dumps(fields, ensure_ascii=False) + "\n")
    Path(path).write_text("".join(lines), encoding="utf-8")
