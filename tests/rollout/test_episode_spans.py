"""Tests of jaxrl_llm.rollout.episode_spans with a character tokenizer and SmolLM2's BPE tokenizer.

With the character tokenizer every character is one token, so a row's per-token episode index is
rendered as a string (the episode digit, or the character itself outside episodes) and compared
with a hand-written expectation.
"""

import functools

import chex
import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_llm.models.char_tokenizer import DEFAULT_ALPHABET, char_tokenizer
from jaxrl_llm.models.checkpoints.gguf import read_metadata
from jaxrl_llm.models.tokenizer import tokenizer_from_gguf_metadata
from jaxrl_llm.rollout.episode_spans import (
    episode_tag_patterns,
    spans_from_chunks,
    spans_from_tags,
    tag_patterns,
    think_tag_patterns,
)

CHAR = char_tokenizer(DEFAULT_ALPHABET + "<>_")


def encode_batch(tokenizer, texts, width, left_pad=False):
    tokens = np.zeros((len(texts), width), np.int32)
    mask = np.zeros((len(texts), width), bool)
    for i, text in enumerate(texts):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert len(ids) <= width
        lo = width - len(ids) if left_pad else 0
        tokens[i, lo : lo + len(ids)] = ids
        mask[i, lo : lo + len(ids)] = True
    return jnp.asarray(tokens), jnp.asarray(mask)


def render(text, token_episode, mask):
    """For the character tokenizer: the episode digit of each valid character, the character outside."""
    index = np.asarray(token_episode)[np.asarray(mask)]
    assert len(index) == len(text)
    return "".join(ch if k < 0 else str(k) for ch, k in zip(text, index))


THINK = think_tag_patterns(CHAR)


class CharTokenizerTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_think_blocks_edge_cases(self):
        def ep(k, part):
            return str(k) * len(part)

        cases = [
            # text, include_tags=True, include_tags=False
            ("ab<think>xy</think>z<think>q</think>ans",
             "ab" + ep(0, "<think>xy</think>") + "z" + ep(1, "<think>q</think>") + "ans",
             "ab<think>00</think>z<think>1</think>ans"),
            ("<think>abc", ep(0, "<think>abc"), "<think>000"),  # unclosed: runs to the end
            ("<think>ab<think>c</think>", ep(0, "<think>ab") + ep(1, "<think>c</think>"),
             "<think>00<think>1</think>"),  # unclosed, then the next opening tag
            ("<think></think>x<think>y", ep(0, "<think></think>") + "x" + ep(1, "<think>y"),
             "<think></think>x<think>1"),  # an empty episode
            ("a</think>b<think>c</think>", "a</think>b" + ep(0, "<think>c</think>"),
             "a</think>b<think>0</think>"),  # a stray closing tag
            ("no tags here", ep(0, "no tags here"), ep(0, "no tags here")),  # whole-completion fallback
        ]
        texts = [c[0] for c in cases]
        tokens, mask = encode_batch(CHAR, texts, 48)
        for include, column in ((True, 1), (False, 2)):
            fn = self.variant(functools.partial(spans_from_tags, num_episodes=3, include_tags=include))
            spans = fn(tokens, mask, THINK[0], THINK[1])
            for i, case in enumerate(cases):
                assert render(case[0], spans.token_episode[i], mask[i]) == case[column], (include, case)
            np.testing.assert_array_equal(spans.num_found, [2, 1, 2, 2, 1, 1])
            np.testing.assert_array_equal(spans.valid.sum(axis=1), [2, 1, 2, 2, 1, 1])
        # Content-only spans of the empty-episode row: episode 0 has no token, ends at its opening tag.
        np.testing.assert_array_equal(spans.lengths[3], [0, 1, 0])
        np.testing.assert_array_equal(spans.ends[3], [6, 23, -1])
        np.testing.assert_array_equal(spans.starts[3], [7, 23, -1])
        np.testing.assert_array_equal(spans.ends[0], [10, 27, -1])
        np.testing.assert_array_equal(spans.starts[0], [9, 27, -1])
        np.testing.assert_array_equal(spans.ends[1], [9, -1, -1])

    @chex.variants(with_jit=True, without_jit=True)
    def test_episode_tags_overflow_and_no_tag_rules(self):
        opening, closing = episode_tag_patterns(CHAR, 4)
        text = "<think><episode_1>a</episode_1> <episode_2>bb</episode_2><episode_3>c</episode_3></think>A"
        texts = [text, "plain answer"]
        tokens, mask = encode_batch(CHAR, texts, 100, left_pad=True)

        def run(**kwargs):
            return self.variant(functools.partial(spans_from_tags, include_tags=False, **kwargs))(
                tokens, mask, opening, closing
            )

        merged = run(num_episodes=2, overflow="merge_last", no_tags="none")
        assert render(text, merged.token_episode[0], mask[0]) == (
            "<think><episode_1>0</episode_1> <episode_2>11</episode_2><episode_3>1</episode_3></think>A"
        )
        assert render(texts[1], merged.token_episode[1], mask[1]) == texts[1]  # no_tags="none"
        np.testing.assert_array_equal(merged.num_found, [3, 0])
        np.testing.assert_array_equal(merged.valid, [[True, True], [False, False]])
        offset = 100 - len(text)
        np.testing.assert_array_equal(merged.ends[0], [offset + 18, offset + text.index("c")])
        np.testing.assert_array_equal(merged.lengths[0], [1, 3])

        dropped = run(num_episodes=2, overflow="drop", no_tags="chunks", chunk_size=5)
        assert render(text, dropped.token_episode[0], mask[0]) == (
            "<think><episode_1>0</episode_1> <episode_2>11</episode_2><episode_3>c</episode_3></think>A"
        )
        np.testing.assert_array_equal(dropped.ends[0], [offset + 18, offset + text.index("bb") + 1])
        assert render(texts[1], dropped.token_episode[1], mask[1]) == "0000011111er"  # chunk fallback, third chunk dropped

    @chex.variants(with_jit=True, without_jit=True)
    def test_chunks(self):
        mask = jnp.asarray(np.arange(10)[None, :] >= np.array([0, 3, 10])[:, None])  # left padding
        spans = self.variant(functools.partial(spans_from_chunks, chunk_size=3, num_episodes=3))(mask)
        np.testing.assert_array_equal(
            spans.token_episode,
            [[0, 0, 0, 1, 1, 1, 2, 2, 2, 2], [-1, -1, -1, 0, 0, 0, 1, 1, 1, 2], [-1] * 10],
        )
        np.testing.assert_array_equal(spans.num_found, [4, 3, 0])
        np.testing.assert_array_equal(spans.ends, [[2, 5, 9], [5, 8, 9], [-1, -1, -1]])
        np.testing.assert_array_equal(spans.starts, [[0, 3, 6], [3, 6, 9], [-1, -1, -1]])
        np.testing.assert_array_equal(spans.lengths, [[3, 3, 4], [3, 3, 1], [0, 0, 0]])

    def test_tags_in_masked_tokens_are_ignored(self):
        tokens, mask = encode_batch(CHAR, ["<think>ab</think>"], 17)
        mask = mask.at[0, 0].set(False)  # the opening tag's first character is padding
        spans = spans_from_tags(tokens, mask, *THINK, num_episodes=2, no_tags="none")
        np.testing.assert_array_equal(spans.token_episode, -1)
        assert int(spans.num_found[0]) == 0


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_gguf):
    return tokenizer_from_gguf_metadata(read_metadata(gguf.GGUFReader(smollm2_gguf)))


def test_bpe_tags_are_matched_as_token_sequences(smollm2_tokenizer):
    tok = smollm2_tokenizer
    opening, closing = episode_tag_patterns(tok, 3)
    # A tag is several BPE tokens; " <" merges a preceding space into the tag's first token.
    assert tok.encode("<episode_1>") == [44, 37236, 79, 33, 46]
    assert [2067, 37236, 79, 33, 46] in [list(r[: n]) for r, n in zip(opening.ids, opening.lengths)]
    episodes = ["First, 3 + 4 = 7.", "Then 7 * 2 = 14.", "So the answer is 14."]
    text = (
        "<think>\n<episode_1>" + episodes[0] + "</episode_1> <episode_2>" + episodes[1]
        + "</episode_2>\n\n<episode_3>" + episodes[2] + "</episode_3>\n</think>\nThe answer is 14."
    )
    unclosed = "<think><episode_1>" + episodes[0] + "</episode_1><episode_2>" + episodes[1]
    tokens, mask = encode_batch(tok, [text, unclosed, "no tags at all"], 96)
    fn = jax.jit(functools.partial(spans_from_tags, num_episodes=3, include_tags=False))
    spans = fn(tokens, mask, opening, closing)
    np.testing.assert_array_equal(spans.num_found, [3, 2, 1])  # 1: the whole-completion fallback
    for row, expected in ((0, episodes), (1, episodes[:2])):
        for k, content in enumerate(expected):
            ids = np.asarray(tokens[row])[np.asarray(spans.token_episode[row]) == k]
            assert tok.decode(ids).strip() == content
            assert int(spans.ends[row, k]) == int(np.flatnonzero(np.asarray(spans.token_episode[row]) == k)[-1])
    with_tags = jax.jit(functools.partial(spans_from_tags, num_episodes=3))(tokens, mask, opening, closing)
    second = np.asarray(tokens[0])[np.asarray(with_tags.token_episode[0]) == 1]
    assert tok.decode(second) == " <episode_2>" + episodes[1] + "</episode_2>"
    np.testing.assert_array_equal(with_tags.token_episode[2], np.where(mask[2], 0, -1))  # whole fallback

    think_open, think_close = think_tag_patterns(tok)
    think = spans_from_tags(tokens, mask, think_open, think_close, num_episodes=2)
    inside = tok.decode(np.asarray(tokens[0])[np.asarray(think.token_episode[0]) == 0])
    assert inside.startswith("<think>") and inside.endswith("</think>")


def test_tag_patterns_reject_empty_tag_list():
    with pytest.raises(ValueError):
        tag_patterns(CHAR, [])
