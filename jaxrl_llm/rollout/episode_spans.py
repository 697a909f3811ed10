"""Episodes inside sampled completions as token spans, on device with fixed shapes (L2T).

L2T (Wang et al. 2025, "Learning to Think", arXiv 2505.10425, §4.1) treats a completion as a session
of K episodes z_1..z_K; episode k is the action taken in state s_k = (x, z_{1:k−1}). The paper
separates episodes with prompt-induced `<think>…</think>` blocks; the released code
(ML-TASA/L2T, `gsm8k_l2t.py`) asks for `<episode_k>…</episode_k>` inside one `<think>`. Three
splitters are provided, all jittable with static shapes:

* `spans_from_tags(tokens, mask, open_patterns, close_patterns, num_episodes)`: tag-delimited
  episodes (`episode_tag_patterns` or `think_tag_patterns` build the patterns on the host);
* `spans_from_chunks(mask, chunk_size, num_episodes)`: fixed-length chunks of the valid tokens;
* `spans_from_token_episode(token_episode, num_episodes)`: the per-episode summary of any
  per-token assignment (shared by the two above).

**Tags are token-id sequences.** Under byte-level BPE a tag is several tokens, and its first or
last token can merge with its neighbours (SmolLM2: `"<think>"` → `['<', 'think', '>']`, but
`" <episode_1>"` → `[' <', 'episode', '_', '1', '>']`). `tag_patterns` therefore encodes each tag
once per context in `contexts_before` × `contexts_after` (default: nothing, a space, one and two
newlines on either side, plus `>` and `.` before and `<` after: SmolLM2 merges `"><"` of adjacent
tags `</episode_1><episode_2>` and `".<"` into one token), keeps the minimal run of tokens that overlaps the tag's characters
(a token straddling the tag and its context belongs to the tag), and deduplicates. On device a
tag occurrence is any exact match of one of these id sequences inside the valid tokens; when
patterns of different lengths end at the same position the longest one fixes the tag's start.
A tag written in a context whose merge is not among the encoded contexts is not recognised (add
the context); with a character tokenizer every context gives the same pattern.

**Rules of `spans_from_tags`** (episodes are numbered by order of appearance, not by the digit in
`<episode_k>`; nesting is not supported):

* An episode starts at the first token of an opening tag and ends at the last token of the next
  closing tag; **an unclosed episode runs until the next opening tag or to the last valid token**.
  A closing tag with no open episode is ignored (its tokens are outside every episode).
* `include_tags=True` (default): the tag tokens belong to their episode; `False`: only the content
  between the tags does (an empty episode `<episode_1></episode_1>` then has no token).
* Tokens outside every episode get index −1 (text before the first tag, between episodes, and the
  answer after `</think>`).
* **More than `num_episodes` episodes**: `overflow="merge_last"` (default) assigns every later
  episode's tokens to the last slot K_max − 1 (nothing is dropped; its end is the last overflow
  episode's end); `overflow="drop"` gives them −1. `num_found` reports the uncapped count.
* **No opening tag at all**: `no_tags="whole"` (default) makes the whole valid completion one
  episode (index 0), `"chunks"` falls back to `spans_from_chunks` with `chunk_size`, `"none"` leaves
  the row without episodes (all −1; the caller may penalise the format, as the code's −0.01 does).
  A row with no valid token has no episode in every mode.

Outputs (`EpisodeSpans`): `token_episode [B, T]` int32 in [−1, K), and per episode `[B, K]`:
`valid` (the episode exists), `starts`, `ends` (inclusive token positions), `lengths` (tokens
assigned). An existing episode with no token (empty content with `include_tags=False`) has
`lengths = 0`, `ends` = the last token of its opening tag (the prefix boundary after which J_r is
measured) and `starts = ends + 1`. Invalid slots hold `starts = ends = −1`, `lengths = 0`.
Valid episodes are always the first `min(num_found, K)` slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_CONTEXTS_AFTER",
    "DEFAULT_CONTEXTS_BEFORE",
    "NO_TAG_RULES",
    "OVERFLOW_RULES",
    "EpisodeSpans",
    "TagPatterns",
    "episode_tag_patterns",
    "spans_from_chunks",
    "spans_from_tags",
    "spans_from_token_episode",
    "tag_patterns",
    "think_tag_patterns",
]

DEFAULT_CONTEXTS_BEFORE = ("", " ", "\n", "\n\n", ">", ".")
DEFAULT_CONTEXTS_AFTER = ("", " ", "\n", "\n\n", "<")
OVERFLOW_RULES = ("merge_last", "drop")
NO_TAG_RULES = ("whole", "chunks", "none")
_PAD_ID = -1  # pattern padding; token ids are never negative


class TagPatterns(NamedTuple):
    """Token-id sequences that each spell one tag: `ids [P, L]` (padded with −1), `lengths [P]`."""

    ids: chex.Array
    lengths: chex.Array


class EpisodeSpans(NamedTuple):
    """Episode spans of a batch of completions (see the module docstring for the rules)."""

    token_episode: chex.Array  # [B, T] int32, episode index of each token, −1 outside episodes
    valid: chex.Array  # [B, K] bool, the episode exists
    starts: chex.Array  # [B, K] int32, first token position (inclusive)
    ends: chex.Array  # [B, K] int32, last token position (inclusive)
    lengths: chex.Array  # [B, K] int32, number of tokens in the episode
    num_found: chex.Array  # [B] int32, episodes found before capping at K (1 for the "whole" fallback)


# ----------------------------------------------------------------------------------------------
# Host side: tag strings -> token-id patterns (once per tokenizer).
# ----------------------------------------------------------------------------------------------


def _tag_token_run(tokenizer, tag: str, before: str, after: str) -> tuple[int, ...]:
    text = before + tag + after
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    lo, hi = len(before), len(before) + len(tag)
    run = [
        token_id
        for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
        if start < hi and end > lo
    ]
    if not run:
        raise ValueError(f"tag_patterns: the tag {tag!r} encodes to no token in context {text!r}")
    return tuple(int(i) for i in run)


def tag_patterns(
    tokenizer,
    tags: Sequence[str],
    contexts_before: Sequence[str] = DEFAULT_CONTEXTS_BEFORE,
    contexts_after: Sequence[str] = DEFAULT_CONTEXTS_AFTER,
) -> TagPatterns:
    """Every distinct token-id run that spells one of `tags` in the given contexts (host, numpy).

    Needs a fast tokenizer (`return_offsets_mapping`). A token that straddles the tag and its
    context (e.g. `' <'`) is part of the pattern.
    """
    runs = sorted(
        {
            _tag_token_run(tokenizer, tag, before, after)
            for tag in tags
            for before in contexts_before
            for after in contexts_after
        }
    )
    if not runs:
        raise ValueError("tag_patterns: no tags given")
    width = max(len(run) for run in runs)
    ids = np.full((len(runs), width), _PAD_ID, np.int32)
    for row, run in enumerate(runs):
        ids[row, : len(run)] = run
    return TagPatterns(ids=ids, lengths=np.array([len(run) for run in runs], np.int32))


def episode_tag_patterns(tokenizer, max_number: int, **contexts) -> tuple[TagPatterns, TagPatterns]:
    """(opening, closing) patterns of `<episode_k>` / `</episode_k>` for k = 1..max_number (code's format)."""
    if max_number < 1:
        raise ValueError(f"episode_tag_patterns: max_number must be >= 1, got {max_number}")
    numbers = range(1, max_number + 1)
    return (
        tag_patterns(tokenizer, [f"<episode_{k}>" for k in numbers], **contexts),
        tag_patterns(tokenizer, [f"</episode_{k}>" for k in numbers], **contexts),
    )


def think_tag_patterns(tokenizer, **contexts) -> tuple[TagPatterns, TagPatterns]:
    """(opening, closing) patterns of `<think>` / `</think>` (the paper's episode markers)."""
    return tag_patterns(tokenizer, ["<think>"], **contexts), tag_patterns(tokenizer, ["</think>"], **contexts)


# ----------------------------------------------------------------------------------------------
# Device side.
# ----------------------------------------------------------------------------------------------


def _shift_right(x: chex.Array, d: int, fill) -> chex.Array:
    """y[:, t] = x[:, t − d] (fill where t < d)."""
    if d == 0:
        return x
    return jnp.pad(x[:, :-d], ((0, 0), (d, 0)), constant_values=fill)


def _shift_left(x: chex.Array, d: int, fill) -> chex.Array:
    """y[:, t] = x[:, t + d] (fill where t + d ≥ T)."""
    if d == 0:
        return x
    return jnp.pad(x[:, d:], ((0, 0), (0, d)), constant_values=fill)


def _match_tags(tokens: chex.Array, mask: chex.Array, patterns: TagPatterns):
    """(starts, ends, covered) `[B, T]` bool of tag occurrences made of valid tokens only."""
    ids = jnp.asarray(patterns.ids, jnp.int32)
    lengths = jnp.asarray(patterns.lengths, jnp.int32)
    num_patterns, width = ids.shape
    if width > tokens.shape[1]:
        ids, width = ids[:, : tokens.shape[1]], tokens.shape[1]  # longer patterns can never match
        lengths = jnp.where(lengths > width, tokens.shape[1] + 1, lengths)
    # Invalid tokens become −2: never equal to a token id nor to the −1 pattern padding.
    seen = jnp.where(mask, tokens.astype(jnp.int32), -2)
    shifted = [_shift_right(seen, d, -2) for d in range(width)]  # shifted[d][t] = token at t − d

    def longest_match_ending_here(p, longest):
        length = lengths[p]
        hit = jnp.ones(seen.shape, bool)
        for d in range(width):  # position t − d must hold pattern[length − 1 − d]
            wanted = ids[p, jnp.clip(length - 1 - d, 0, width - 1)]
            hit = hit & ((d >= length) | (shifted[d] == wanted))
        return jnp.where(hit, jnp.maximum(longest, length), longest)

    longest = jax.lax.fori_loop(0, num_patterns, longest_match_ending_here, jnp.zeros(seen.shape, jnp.int32))
    ends = longest > 0
    starts = jnp.zeros_like(ends)
    covered = jnp.zeros_like(ends)
    for d in range(width):  # the tag ending at t + d covers t when d < its length
        ahead = _shift_left(longest, d, 0)
        starts = starts | (ahead == d + 1)
        covered = covered | (ahead > d)
    return starts, ends, covered


def _cummax_position(events: chex.Array) -> chex.Array:
    """Largest t' ≤ t with events[:, t'], or −1."""
    positions = jnp.where(events, jnp.arange(events.shape[1], dtype=jnp.int32), -1)
    return jax.lax.cummax(positions, axis=1)


def _validate(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed values are {allowed}.")


def _cap(raw_index: chex.Array, num_episodes: int, overflow: str) -> chex.Array:
    if overflow == "merge_last":
        return jnp.where(raw_index >= 0, jnp.minimum(raw_index, num_episodes - 1), -1)
    return jnp.where(raw_index < num_episodes, raw_index, -1)


def spans_from_token_episode(
    token_episode: chex.Array,
    num_episodes: int,
    num_found: chex.Array | None = None,
    boundary_episode: chex.Array | None = None,
) -> EpisodeSpans:
    """Per-episode `starts/ends/lengths/valid [B, K]` of a per-token assignment `token_episode [B, T]`.

    Args:
      token_episode: `[B, T]` int, episode of each token in [−1, K) (−1: none).
      num_episodes: static K.
      num_found: `[B]` number of existing episodes (valid = k < num_found); default: episodes
        with at least one token are valid.
      boundary_episode: optional `[B, T]` int; position t counts as an end candidate of episode
        `boundary_episode[t]` (≥ 0) even when no token is assigned (empty episodes).
    """
    chex.assert_rank(token_episode, 2)
    chex.assert_type(token_episode, int)
    num_steps = token_episode.shape[1]
    slots = num_episodes + 1  # the extra slot collects the −1 tokens
    position = jnp.arange(num_steps, dtype=jnp.int32)

    def per_row(index, boundary):
        segment = jnp.where(index >= 0, index, num_episodes)
        lengths = jax.ops.segment_sum(jnp.ones_like(index), segment, slots)[:num_episodes]
        last = jax.ops.segment_max(jnp.where(index >= 0, position, -1), segment, slots)[:num_episodes]
        first = jax.ops.segment_min(jnp.where(index >= 0, position, num_steps), segment, slots)
        first = first[:num_episodes]
        if boundary is not None:
            boundary_segment = jnp.where(boundary >= 0, boundary, num_episodes)
            candidate = jnp.where(boundary >= 0, position, -1)
            last = jnp.maximum(last, jax.ops.segment_max(candidate, boundary_segment, slots)[:num_episodes])
        return lengths, first, last

    index = token_episode.astype(jnp.int32)
    if boundary_episode is None:
        lengths, first, last = jax.vmap(lambda i: per_row(i, None))(index)
    else:
        lengths, first, last = jax.vmap(per_row)(index, boundary_episode.astype(jnp.int32))
    lengths = lengths.astype(jnp.int32)
    if num_found is None:
        valid = lengths > 0
        num_found = jnp.sum(valid, axis=1).astype(jnp.int32)
    else:
        valid = jnp.arange(num_episodes)[None, :] < num_found[:, None]
    last = jnp.where(valid, jnp.maximum(last, -1), -1)
    first = jnp.where(lengths > 0, first, last + 1)
    first = jnp.where(valid, first, -1)
    return EpisodeSpans(
        token_episode=token_episode.astype(jnp.int32),
        valid=valid,
        starts=first.astype(jnp.int32),
        ends=last.astype(jnp.int32),
        lengths=jnp.where(valid, lengths, 0),
        num_found=jnp.asarray(num_found, jnp.int32),
    )


def spans_from_chunks(
    mask: chex.Array, chunk_size: int, num_episodes: int, overflow: str = "merge_last"
) -> EpisodeSpans:
    """Episodes of `chunk_size` consecutive valid tokens (counted over `mask [B, T]`, any padding side).

    Chunk c holds valid tokens with rank in [c·L, (c+1)·L); the last chunk may be shorter. Chunks
    beyond K follow `overflow` like tagged episodes.
    """
    _validate("overflow", overflow, OVERFLOW_RULES)
    if chunk_size < 1 or num_episodes < 1:
        raise ValueError(f"chunk_size and num_episodes must be >= 1, got {chunk_size}, {num_episodes}")
    chex.assert_rank(mask, 2)
    mask = mask.astype(bool)
    rank = jnp.cumsum(mask.astype(jnp.int32), axis=1) - 1
    raw = jnp.where(mask, rank // chunk_size, -1)
    num_valid = jnp.sum(mask, axis=1, dtype=jnp.int32)
    num_found = (num_valid + chunk_size - 1) // chunk_size
    return spans_from_token_episode(_cap(raw, num_episodes, overflow), num_episodes, num_found)


def spans_from_tags(
    tokens: chex.Array,
    mask: chex.Array,
    open_patterns: TagPatterns,
    close_patterns: TagPatterns,
    num_episodes: int,
    *,
    include_tags: bool = True,
    overflow: str = "merge_last",
    no_tags: str = "whole",
    chunk_size: int | None = None,
) -> EpisodeSpans:
    """Tag-delimited episodes of the completions `tokens [B, T]` (valid where `mask [B, T]`).

    With o_t = 1 where an opening tag starts and c_t = 1 where a closing tag ends, token t is
    inside an episode iff the latest opening-tag start at or before t is not before the latest
    closing-tag end strictly before t (they coincide when BPE merges `"><"` of
    `</episode_1><episode_2>` into one token, which then starts the new episode); its raw index is Σ_{t' ≤ t} o_{t'} − 1. See the module
    docstring for the rules (unclosed, empty, overflow, no tags).
    """
    _validate("overflow", overflow, OVERFLOW_RULES)
    _validate("no_tags", no_tags, NO_TAG_RULES)
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if no_tags == "chunks" and (chunk_size is None or chunk_size < 1):
        raise ValueError("no_tags='chunks' needs a positive chunk_size")
    chex.assert_rank([tokens, mask], 2)
    chex.assert_equal_shape([tokens, mask])
    chex.assert_type(tokens, int)
    mask = mask.astype(bool)

    open_start, open_end, open_cover = _match_tags(tokens, mask, open_patterns)
    _, close_end, close_cover = _match_tags(tokens, mask, close_patterns)
    last_open = _cummax_position(open_start)
    last_close_before = _shift_right(_cummax_position(close_end), 1, -1)
    inside = mask & (last_open >= 0) & (last_open >= last_close_before)
    if not include_tags:
        inside = inside & ~open_cover & ~close_cover
    opened = jnp.cumsum(open_start.astype(jnp.int32), axis=1)
    raw = jnp.where(inside, opened - 1, -1)
    num_found = opened[:, -1]
    token_episode = _cap(raw, num_episodes, overflow)
    boundary = jnp.where(open_end, _cap(opened - 1, num_episodes, overflow), -1)
    tagged = spans_from_token_episode(token_episode, num_episodes, num_found, boundary)

    if no_tags == "none":
        return tagged
    untagged_rows = (num_found == 0)[:, None]
    if no_tags == "whole":
        has_tokens = jnp.any(mask, axis=1)
        fallback = spans_from_token_episode(
            jnp.where(mask, 0, -1).astype(jnp.int32), num_episodes, has_tokens.astype(jnp.int32)
        )
    else:
        fallback = spans_from_chunks(mask, chunk_size, num_episodes, overflow)
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(untagged_rows if a.ndim == 2 else untagged_rows[:, 0], b, a),
        tagged,
        fallback,
    )
