"""A question with a verifiable answer, and how it is shown to a chat model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ANSWER_INSTRUCTION = "Solve the problem. End your reply with the final answer as '#### <number>'."


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str  # canonical final answer, e.g. "42" or "-3.5"


def chat_messages(problem: Problem, system: str = ANSWER_INSTRUCTION) -> list[dict[str, str]]:
    """The problem as chat messages for `tokenizer.apply_chat_template`."""
    return [{"role": "system", "content": system}, {"role": "user", "content": problem.question}]


def encode_prompts(
    tokenizer, problems, max_prompt_tokens: int, pad_to_multiple_of: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Chat-formatted prompts, left-padded: `(tokens, mask)` `[B, P]`.

    P is `max_prompt_tokens`, or with `pad_to_multiple_of` > 0 the longest prompt rounded up
    to that multiple (capped at `max_prompt_tokens`): shorter batches then run shorter
    programs, at the cost of one compilation per distinct P.
    """
    if not problems:
        raise ValueError("No prompts to encode: the problem list is empty (check the dataset or the filter that built it).")
    encoded = []
    for problem in problems:
        text = tokenizer.apply_chat_template(
            chat_messages(problem), add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > max_prompt_tokens:
            raise ValueError(
                f"A prompt has {len(ids)} tokens but max_prompt_tokens={max_prompt_tokens}; "
                f"raise --max-prompt-tokens (prompt starts {problem.question[:60]!r})."
            )
        encoded.append(ids)
    width = max_prompt_tokens
    if pad_to_multiple_of > 0:
        longest = max(len(ids) for ids in encoded)
        width = min(max_prompt_tokens, -(-longest // pad_to_multiple_of) * pad_to_multiple_of)
    tokens = np.full((len(problems), width), tokenizer.pad_token_id or 0, np.int32)
    mask = np.zeros((len(problems), width), bool)
    for row, ids in enumerate(encoded):
        tokens[row, width - len(ids) :] = ids
        mask[row, width - len(ids) :] = True
    return tokens, mask
