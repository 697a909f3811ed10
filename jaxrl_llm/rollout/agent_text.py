"""Token-level text of a language-model agent's turn, computed on device.

Everything the agent loop needs from the tokenizer is tokenized once on the host into small
tables (`AgentText`); each turn's prompt, observation and action parse are then array
lookups, so a multi-turn episode runs inside one compiled program.

Observation rendering (`observation_text` / `observation_tokens`). A grid's `Cell` codes
(`envs.render.cell_codes`) become one line per grid row. The layout is chosen so that
tokenization is position-independent, i.e. the ids of a grid are the concatenation of
per-cell and per-line ids:
- `"spaced"` (byte-level BPE tokenizers such as SmolLM2's): each cell is its symbol after a
  space (`" # . A"`), each row ends in `"\\n"`. The BPE pre-tokenizer splits before every
  space-led symbol and around the newline, so no merge crosses a cell.
- `"chars"` (the character tokenizer): one character per cell, `"\\n"` per row.
`"auto"` picks `"chars"` for vocabularies of at most 512 tokens, else `"spaced"`. Each cell
code has a row of up to `Lc` ids plus a mask, so a symbol that takes several tokens still
works (masked slots are simply holes in the prompt, see below).

Prompt window (fixed length, so one compiled shape). Pieces, each tokenized on its own and
concatenated (piece boundaries fall after a newline or before the observation, where the
pre-tokenizer splits anyway):

    head       = chat-template head + "<task> <legend>\\n"
    k x past   = "Earlier observation:\\n" <obs> "Action: " <canonical action text> "\\n"
    current    = "Current observation:\\n" <obs>
    question   = "Choose one action from: <actions>. Reply only with ... like <action>up</action>."
    tail       = chat-template tail (e.g. "<|im_end|>\\n<|im_start|>assistant\\n")

`prompt_style="compact"` drops the instructions and the question and shortens the headers to
"was:", "did:", "now:" (a from-scratch model learns the format by supervised warm-up, and
the prompt's length is most of a tiny model's cost); `"auto"` is compact for vocabularies of
at most 512 tokens.

with the `history_length` = k most recent (observation, action) pairs, oldest first. Unused
history slots (the first turns) and unused slots of multi-token cells are masked: the
decoder's positions count only real tokens (`positions_from_mask`) and attention skips
masked slots, so the model sees exactly the compacted text.

Answer format and parsing (`parse_actions`). The action is read from the generated text up
to (excluding) the stop token, case-insensitively, by the first rule that applies:
- `"<action>W</action>"` anywhere in it (first occurrence wins; the paper's format, which
  lets a model think first);
- the whole answer, stripped of surrounding whitespace, equal to an action word `W`;
- the answer naming exactly one action word as a whole word ("The action is: down." ->
  down; "left, then down" names two and is invalid). Small instruction-tuned models
  (SmolLM2-135M) rarely keep to a format, but often say one action in a sentence.
Anything else is an invalid action. Parsing runs on bytes: a `[V, Lb]` table of every
token's UTF-8 bytes (tokens longer than `Lb` keep their first `Lb` bytes) turns the
generated ids into a byte string on device, so how the model split the answer into tokens
does not matter. The canonical answer (`"<action>W</action>"` with `action_format="tag"`,
`"W"` with `"word"`; `"auto"`: the tag when the tokenizer can spell `<` and `>`) is what the
prompt asks for, what history shows and what supervised warm-up teaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.algorithms.configs.lm_agent import ACTION_FORMATS, OBSERVATION_STYLES, PROMPT_STYLES
from jaxrl_llm.envs.language import describe
from jaxrl_llm.envs.render import Cell, cell_codes, legend_text, symbol_of

INVALID_ACTION_TEXT = "invalid"
FULL_HEADERS = {"past": "Earlier observation:\n", "action": "Action: ", "current": "Current observation:\n"}
COMPACT_HEADERS = {"past": "was:\n", "action": "did: ", "current": "now:\n"}
TOKEN_BYTES = 24  # bytes kept per vocabulary entry for parsing (99.9% of SmolLM2's tokens fit in 32)
_WHITESPACE = (9, 10, 13, 32)


@dataclass(frozen=True)
class AgentText:
    """Host-built token tables of one (environment, tokenizer) pair; see the module docstring.

    Arrays are numpy (small, turned into constants of the compiled rollout).
    """

    style: str
    action_format: str
    action_words: tuple[str, ...]
    history_length: int
    head: np.ndarray  # [Lh] int32
    past_header: np.ndarray  # [Lp]
    action_header: np.ndarray  # [La]
    newline: np.ndarray  # [1..]
    current_header: np.ndarray  # [Lcur]
    question: np.ndarray  # [Lq] after the current observation ("full" prompts; empty when compact)
    tail: np.ndarray  # [Lt]
    cell_tokens: np.ndarray  # [num_cells, Lc] int32 ids of each Cell code
    cell_mask: np.ndarray  # [num_cells, Lc] bool
    line_end: np.ndarray  # [Ln] ids ending each grid row
    answer_tokens: np.ndarray  # [A + 1, Lw] canonical answer ids per action, last row "invalid"
    answer_mask: np.ndarray  # [A + 1, Lw]
    token_bytes: np.ndarray  # [V, TOKEN_BYTES] uint8
    token_lengths: np.ndarray  # [V] int32
    tag_patterns: np.ndarray  # [A, Lpat] uint8 "<action>w</action>"
    tag_lengths: np.ndarray  # [A]
    word_patterns: np.ndarray  # [A, Lword] uint8
    word_lengths: np.ndarray  # [A]
    grid_shape: tuple[int, int]
    pad_token: int

    @property
    def observation_length(self) -> int:
        rows, cols = self.grid_shape
        return rows * (cols * self.cell_tokens.shape[1] + len(self.line_end))

    @property
    def history_slot_length(self) -> int:
        return (
            len(self.past_header)
            + self.observation_length
            + len(self.action_header)
            + self.answer_tokens.shape[1]
            + len(self.newline)
        )

    @property
    def prompt_length(self) -> int:
        return (
            len(self.head)
            + self.history_length * self.history_slot_length
            + len(self.current_header)
            + self.observation_length
            + len(self.question)
            + len(self.tail)
        )

    def answer_text(self, action: int) -> str:
        """The canonical answer for `action` (what the prompt asks for)."""
        word = self.action_words[action]
        return f"<action>{word}</action>" if self.action_format == "tag" else word


def _encode(tokenizer, text: str) -> np.ndarray:
    return np.asarray(tokenizer.encode(text, add_special_tokens=False), np.int32)


def _padded_rows(rows: list[np.ndarray], pad: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(1, max(len(r) for r in rows))
    tokens = np.full((len(rows), width), pad, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)], mask[i, : len(r)] = r, True
    return tokens, mask


def _byte_rows(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode() for s in strings]
    width = max(1, max(len(b) for b in encoded))
    table = np.zeros((len(encoded), width), np.uint8)
    for i, b in enumerate(encoded):
        table[i, : len(b)] = np.frombuffer(b, np.uint8)
    return table, np.array([len(b) for b in encoded], np.int32)


def resolve_style(style: str, tokenizer) -> str:
    if style not in OBSERVATION_STYLES:
        raise ValueError(f"observation style {style!r} is invalid: choose one of {OBSERVATION_STYLES}.")
    if style == "auto":
        return "chars" if len(tokenizer) <= 512 else "spaced"
    return style


def resolve_prompt_style(prompt_style: str, tokenizer) -> str:
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {prompt_style!r} is invalid: choose one of {PROMPT_STYLES}.")
    if prompt_style == "auto":
        return "compact" if len(tokenizer) <= 512 else "full"
    return prompt_style


def resolve_action_format(action_format: str, tokenizer) -> str:
    if action_format not in ACTION_FORMATS:
        raise ValueError(f"action format {action_format!r} is invalid: choose one of {ACTION_FORMATS}.")
    if action_format != "auto":
        return action_format
    spelled = tokenizer.decode(tokenizer.encode("<action>", add_special_tokens=False))
    return "tag" if spelled == "<action>" else "word"


def cell_text(style: str, cell: Cell) -> str:
    return (" " if style == "spaced" else "") + symbol_of(cell)


def observation_text(style: str, codes: np.ndarray) -> str:
    """The text of a grid of `Cell` codes `[H, W]` in `style` (host-side; what `observation_tokens` encodes)."""
    return "".join("".join(cell_text(style, Cell(int(c))) for c in row) + "\n" for row in np.asarray(codes))


def chat_pieces(tokenizer) -> tuple[str, str]:
    """(head, tail) of the tokenizer's chat template around one user message."""
    marker = "\x00MESSAGE\x00"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": marker}], add_generation_prompt=True, tokenize=False
    )
    head, tail = text.split(marker)
    return head, tail


def instructions(env) -> str:
    """The preamble of a full prompt: the task and the legend."""
    return f"{describe(env).task} {legend_text(env)}.\n"


def question(env, action_format: str) -> str:
    """What a full prompt asks after the current observation: the actions and the answer format
    (last, next to the answer: SmolLM2-135M follows it there far more often than in the preamble)."""
    words = describe(env).action_words
    if action_format == "tag":
        return (
            f"Choose one action from: {', '.join(words)}. Reply only with the action inside tags, "
            f"like <action>{words[-1]}</action>."
        )
    return f"Reply with one word: {', '.join(words[:-1])} or {words[-1]}."


def build_agent_text(
    env,
    env_params,
    tokenizer,
    *,
    history_length: int = 2,
    style: str = "auto",
    action_format: str = "auto",
    prompt_style: str = "auto",
) -> AgentText:
    """Tokenizes everything an agent turn needs for `env` (see the module docstring)."""
    if history_length < 0:
        raise ValueError(f"history_length={history_length} is invalid: must be >= 0.")
    style = resolve_style(style, tokenizer)
    action_format = resolve_action_format(action_format, tokenizer)
    compact = resolve_prompt_style(prompt_style, tokenizer) == "compact"
    headers = COMPACT_HEADERS if compact else FULL_HEADERS
    words = describe(env).action_words
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    _, state = env.reset(jax.random.PRNGKey(0), env_params)
    grid_shape = tuple(int(n) for n in cell_codes(env, state).shape)

    cell_tokens, cell_mask = _padded_rows([_encode(tokenizer, cell_text(style, c)) for c in Cell], pad)
    chat_head, chat_tail = chat_pieces(tokenizer)
    canonical = [f"<action>{w}</action>" if action_format == "tag" else w for w in words]
    answer_tokens, answer_mask = _padded_rows(
        [_encode(tokenizer, text) for text in [*canonical, INVALID_ACTION_TEXT]], pad
    )
    vocabulary = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
    token_bytes, token_lengths = _byte_rows(
        [v.encode()[:TOKEN_BYTES].decode(errors="ignore") for v in vocabulary]
    )
    token_bytes = np.pad(token_bytes, ((0, 0), (0, TOKEN_BYTES - token_bytes.shape[1])))
    tag_patterns, tag_lengths = _byte_rows([f"<action>{w}</action>" for w in words])
    word_patterns, word_lengths = _byte_rows(list(words))
    text = AgentText(
        style=style,
        action_format=action_format,
        action_words=words,
        history_length=history_length,
        head=_encode(tokenizer, chat_head + ("" if compact else instructions(env))),
        past_header=_encode(tokenizer, headers["past"]),
        action_header=_encode(tokenizer, headers["action"]),
        newline=_encode(tokenizer, "\n"),
        current_header=_encode(tokenizer, headers["current"]),
        question=_encode(tokenizer, "" if compact else question(env, action_format)),
        tail=_encode(tokenizer, chat_tail),
        cell_tokens=cell_tokens,
        cell_mask=cell_mask,
        line_end=_encode(tokenizer, "\n"),
        answer_tokens=answer_tokens,
        answer_mask=answer_mask,
        token_bytes=token_bytes,
        token_lengths=token_lengths,
        tag_patterns=tag_patterns,
        tag_lengths=tag_lengths,
        word_patterns=word_patterns,
        word_lengths=word_lengths,
        grid_shape=grid_shape,
        pad_token=pad,
    )
    for name in ("head", "past_header", "action_header", "newline", "current_header", "line_end"):
        if not len(getattr(text, name)):
            raise ValueError(f"the tokenizer encodes the agent prompt's {name} as no tokens.")
    return text


# ---- device side ---------------------------------------------------------------------------


def observation_tokens(text: AgentText, codes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(tokens, mask)` `[observation_length]` of one grid of `Cell` codes `[H, W]` (jittable)."""
    rows, cols = text.grid_shape
    cells = jnp.asarray(text.cell_tokens)[codes].reshape(rows, -1)
    cell_mask = jnp.asarray(text.cell_mask)[codes].reshape(rows, -1)
    line_end = jnp.broadcast_to(jnp.asarray(text.line_end), (rows, len(text.line_end)))
    tokens = jnp.concatenate([cells, line_end], axis=1).reshape(-1)
    mask = jnp.concatenate([cell_mask, jnp.ones(line_end.shape, bool)], axis=1).reshape(-1)
    return tokens, mask


def _piece(ids: np.ndarray) -> tuple[jax.Array, jax.Array]:
    return jnp.asarray(ids, jnp.int32), jnp.ones(len(ids), bool)


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class History:
    """The k most recent (observation, action) pairs of one agent, oldest first."""

    observation: jax.Array  # [k, Lo] int32
    observation_mask: jax.Array  # [k, Lo] bool
    answer: jax.Array  # [k] int32 action index, A for "invalid"
    filled: jax.Array  # [k] bool

    def tree_flatten(self):
        return (self.observation, self.observation_mask, self.answer, self.filled), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def empty_history(text: AgentText) -> History:
    k, length = text.history_length, text.observation_length
    return History(
        jnp.full((k, length), text.pad_token, jnp.int32),
        jnp.zeros((k, length), bool),
        jnp.zeros((k,), jnp.int32),
        jnp.zeros((k,), bool),
    )


def push_history(history: History, obs_tokens, obs_mask, answer) -> History:
    """Drops the oldest pair and appends (observation, answer) as the newest."""

    def push(stack, item):
        return jnp.concatenate([stack[1:], item[None]], axis=0)

    return History(
        push(history.observation, obs_tokens),
        push(history.observation_mask, obs_mask),
        push(history.answer, jnp.asarray(answer, jnp.int32)),
        push(history.filled, jnp.ones((), bool)),
    )


def build_prompt(text: AgentText, history: History, obs_tokens, obs_mask) -> tuple[jax.Array, jax.Array]:
    """`(tokens, mask)` `[prompt_length]` of one turn (module docstring's layout; jittable)."""
    pieces = [_piece(text.head)]
    for slot in range(text.history_length):
        filled = history.filled[slot]
        answer = history.answer[slot]
        slot_pieces = [
            _piece(text.past_header),
            (history.observation[slot], history.observation_mask[slot]),
            _piece(text.action_header),
            (jnp.asarray(text.answer_tokens)[answer], jnp.asarray(text.answer_mask)[answer]),
            _piece(text.newline),
        ]
        pieces += [(tokens, mask & filled) for tokens, mask in slot_pieces]
    pieces += [_piece(text.current_header), (obs_tokens, obs_mask), _piece(text.question), _piece(text.tail)]
    tokens = jnp.concatenate([t for t, _ in pieces])
    mask = jnp.concatenate([m for _, m in pieces])
    return jnp.where(mask, tokens, text.pad_token), mask


def _lower(byte_values: jax.Array) -> jax.Array:
    upper = (byte_values >= 65) & (byte_values <= 90)
    return jnp.where(upper, byte_values + 32, byte_values)


def answer_bytes(
    text: AgentText, tokens: jax.Array, mask: jax.Array, stop_tokens
) -> tuple[jax.Array, jax.Array]:
    """`(bytes [M * TOKEN_BYTES], length)`: the lower-cased answer text of one generation `[M]`
    up to its first stop token, left-aligned (zeros after `length`)."""
    is_stop = jnp.any(tokens[:, None] == jnp.asarray(stop_tokens, jnp.int32).reshape(1, -1), axis=-1)
    before_stop = jnp.cumsum(is_stop) == 0
    kept = mask & before_stop
    lengths = jnp.where(kept, jnp.asarray(text.token_lengths)[tokens], 0)
    offsets = jnp.cumsum(lengths) - lengths
    within = jnp.arange(TOKEN_BYTES)[None, :] < lengths[:, None]
    size = tokens.shape[0] * TOKEN_BYTES
    targets = jnp.where(within, offsets[:, None] + jnp.arange(TOKEN_BYTES)[None, :], size)
    stream = (
        jnp.zeros(size + 1, jnp.uint8)
        .at[targets.reshape(-1)]
        .set(jnp.asarray(text.token_bytes)[tokens].reshape(-1))
    )
    return _lower(stream[:size].astype(jnp.int32)), lengths.sum()


def _windows(stream: jax.Array, width: int) -> jax.Array:
    """`[S, width]` the `width` bytes starting at each position (zero beyond the end)."""
    padded = jnp.pad(stream, (0, width))
    return padded[jnp.arange(stream.shape[0])[:, None] + jnp.arange(width)[None, :]]


def _matches(windows: jax.Array, patterns: np.ndarray, lengths: np.ndarray) -> jax.Array:
    """`[A, S]` pattern `a` (its first `lengths[a]` bytes) starts at position `s`."""
    width = patterns.shape[1]
    relevant = jnp.arange(width)[None, :] < jnp.asarray(lengths)[:, None]  # [A, width]
    equal = windows[None, :, :width] == jnp.asarray(patterns, jnp.int32)[:, None, :]
    return jnp.all(equal | ~relevant[:, None, :], axis=-1)


def parse_actions(
    text: AgentText, tokens: jax.Array, mask: jax.Array, stop_tokens
) -> tuple[jax.Array, jax.Array]:
    """`(action [], valid [])` of one generation `tokens [M]`, `mask [M]` (module docstring's rule)."""
    stream, length = answer_bytes(text, tokens, mask, stop_tokens)
    size = stream.shape[0]
    positions = jnp.arange(size)
    tag_width = int(text.tag_patterns.shape[1])
    tag_hits = _matches(_windows(stream, tag_width), text.tag_patterns, text.tag_lengths)
    tag_hits &= positions[None, :] + jnp.asarray(text.tag_lengths)[:, None] <= length
    first_hit = jnp.min(jnp.where(tag_hits, positions[None, :], size), axis=1)  # [A]
    tag_action = jnp.argmin(first_hit)
    tagged = first_hit[tag_action] < size

    visible = (positions < length) & ~jnp.isin(stream, jnp.asarray(_WHITESPACE))
    start = jnp.argmax(visible)
    end = size - jnp.argmax(visible[::-1])
    word_lengths = jnp.asarray(text.word_lengths)
    word_width = int(text.word_patterns.shape[1])
    word_hits = _matches(_windows(stream, word_width), text.word_patterns, text.word_lengths)
    bare = word_hits[:, start] & (end - start == word_lengths) & jnp.any(visible)

    # whole-word mentions: no letter right before or right after the word
    is_letter = (stream >= 97) & (stream <= 122)
    letter_before = jnp.concatenate([jnp.zeros(1, bool), is_letter[:-1]])
    after = positions[None, :] + word_lengths[:, None]
    letter_after = jnp.take(jnp.pad(is_letter, (0, word_width)), after)
    mentions = word_hits & ~letter_before[None, :] & ~letter_after & (after <= length)
    mentioned = jnp.any(mentions, axis=1)
    single_mention = jnp.sum(mentioned) == 1

    action = jnp.where(tagged, tag_action, jnp.where(jnp.any(bare), jnp.argmax(bare), jnp.argmax(mentioned)))
    return action.astype(jnp.int32), tagged | jnp.any(bare) | single_mention


def canonical_answer(
    text: AgentText, action: jax.Array, stop_token: int, width: int
) -> tuple[jax.Array, jax.Array]:
    """`(tokens, mask)` `[width]`: the canonical answer of `action` followed by `stop_token`."""
    ids = jnp.asarray(text.answer_tokens)[action]
    present = jnp.asarray(text.answer_mask)[action]
    length = present.sum()
    tokens = jnp.full((width,), text.pad_token, jnp.int32)
    tokens = tokens.at[: ids.shape[0]].set(jnp.where(present, ids, text.pad_token)[:width])
    tokens = tokens.at[length].set(stop_token)
    return tokens, jnp.arange(width) <= length


def describe_text(text: AgentText) -> dict[str, Any]:
    """Sizes worth logging: prompt, observation and answer lengths in tokens."""
    return {
        "prompt_tokens": text.prompt_length,
        "observation_tokens": text.observation_length,
        "answer_tokens": int(text.answer_tokens.shape[1]),
    }
