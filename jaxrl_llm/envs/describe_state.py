"""What a language model is told about an environment, how its replies become actions, and a
scripted stand-in for it: the text interface of LORO's prior (arXiv 2505.10861, §7 of
`shared/papers/rl-methods.md`).

`text_interface(env_id, env, env_params) -> TextInterface` for CartPole-v1, Pendulum-v1,
FrozenLake-misc and CliffWalking-v0. A `TextInterface` holds

- `system`: the system prompt, "You are an expert-level game player." followed by the game's
  rules, its goal and the action format (the paper's memoryless prompt, rebuilt each step);
- `describe(obs) -> str`: one observation (a single, unbatched one, as numpy) as a sentence;
- `user(obs, think) -> str`: the user message of a step, the sentence and then `question`
  (which repeats the choice: a 135M model follows a format far more often when it is asked
  for last, just before the answer);
- `parse(reply, think) -> ParsedAction`: the action named by the model's reply (the generated
  text only, never the prompt: the official code parsed the decoded prompt as well);
- `heuristic(obs[N, ...], key) -> action[N, ...]`: a jittable scripted policy that can stand in
  for the model (`--prior heuristic`).

Sentences (numbers formatted as shown; `dir` is "right" for a positive value, else "left"):

- CartPole (§7.1 verbatim): "The cart is positioned at {x:.3f}, with a velocity of {|v|:.2f}
  towards the {dir(v)}. The pole is tilted at {|theta|:.2f} radians, rotating at {|omega|:.2f}
  radians per second towards the {dir(omega)}." Like the official sentence it does not say
  which way the pole leans, only which way it turns.
- Pendulum: "The pendulum is at {theta:.3f} radians from upright (0 is upright, positive is
  counterclockwise), rotating {counterclockwise|clockwise} at {|omega|:.2f} radians per
  second." with theta = atan2(sin, cos) of the observation.
- FrozenLake and CliffWalking: "You are at row {r}, column {c}." (row 0 at the top). The rules
  give the start and the goal (and CliffWalking's cliff, part of its rules) but never the
  positions of FrozenLake's holes: the official prompt injected them, which is oracle
  information (§7.4.5). The official grid prompts also carry an episode history; ours are
  memoryless like the others.

Parsing (case-insensitive; `ParsedAction.action` is None for a failed parse, which the caller
replaces by a random action and counts). Which number of the reply counts: with `think` the
*last* one (a reasoning reply ends with its answer: the paper's rule), without it the *first*
one (the prompt asks for the answer alone; a small model often answers "1." and then rambles
on, repeating the observation's numbers, until the token limit).

- Discrete actions (CartPole "1" left / "2" right; FrozenLake "1" left, "2" down, "3" right,
  "4" up; CliffWalking "1" up, "2" right, "3" down, "4" left, i.e. environment action =
  number - 1): that number must be an integer on the list ("2", "'2'", "Action: 2." and "2.0"
  are valid, "3" or "0.5" are not). A reply with no number at all is valid when it names
  exactly one of the action words ("left", "right", ...) as a whole word ("You should push
  left." is left, "push left or push right" is a failure).
- Pendulum: the number inside the first (last with `think`) `<...>`, the requested format
  (e.g. "<1.5>"), else the first (last) number of the reply. A torque outside
  [-max_torque, max_torque] is clipped into it and flagged `clipped` (the parse still counts
  as valid).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.envs import grid

__all__ = [
    "EXPERT_PREFIX",
    "ParsedAction",
    "TEXT_ENVS",
    "TextInterface",
    "parse_discrete",
    "parse_torque",
    "text_interface",
]

EXPERT_PREFIX = "You are an expert-level game player."
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)")
_BRACKETED = re.compile(r"<\s*([-+]?(?:\d+\.\d*|\.\d+|\d+))\s*>")


class ParsedAction(NamedTuple):
    """`action`: an int (discrete) or float (continuous) environment action, None when the
    reply names none; `clipped`: a continuous action was outside the box and was clipped."""

    action: int | float | None
    clipped: bool = False


@dataclass(frozen=True)
class TextInterface:
    """The prompt pieces, translator, parser and scripted policy of one environment."""

    env_id: str
    game: str  # the rules
    goal: str
    actions: str  # what to reply
    question: str  # asked after the observation
    describe: Callable[[np.ndarray], str]
    parse_answer: Callable[[str, bool], ParsedAction]  # (reply, last) -> action
    heuristic: Callable[[jax.Array, jax.Array], jax.Array]

    @property
    def system(self) -> str:
        """The system prompt: the expert preamble, the rules, the goal and the action format."""
        return f"{EXPERT_PREFIX} {self.game} {self.goal} {self.actions}"

    def user(self, obs: np.ndarray, think: bool = False) -> str:
        """The user message of one step: the observation and what to answer.

        `think` asks for step-by-step reasoning before the answer (the paper's CoT mode);
        otherwise for the answer alone (a small model then needs only a few new tokens).
        """
        ask = "Think step by step, then end with your answer." if think else "Reply with the action only."
        return f"{self.describe(obs)} {self.question} {ask}"

    def parse(self, reply: str, think: bool = False) -> ParsedAction:
        """The action of `reply` to a prompt made with the same `think` (see the module docstring)."""
        return self.parse_answer(reply, think)


# ----------------------------------------------------------------------------- parsers


def parse_discrete(reply: str, num_actions: int, words: tuple[str, ...], last: bool = True) -> ParsedAction:
    """Action `k - 1` for the reply's last (`last`) or first number `k` in 1..num_actions (see
    the module docstring); without any number, the one action word the reply names
    (`words[a]` is action `a`)."""
    numbers = _NUMBER.findall(reply)
    if numbers:
        value = float(numbers[-1 if last else 0])
        if value.is_integer() and 1 <= value <= num_actions:
            return ParsedAction(int(value) - 1)
        return ParsedAction(None)
    text = reply.lower()
    named = {a for a, word in enumerate(words) if re.search(rf"\b{re.escape(word)}\b", text)}
    return ParsedAction(named.pop() if len(named) == 1 else None)


def parse_torque(reply: str, max_torque: float, last: bool = True) -> ParsedAction:
    """The torque in the reply's last (`last`) or first `<number>`, else its last (first)
    number, clipped to `[-max_torque, max_torque]` (see the module docstring)."""
    bracketed = _BRACKETED.findall(reply)
    numbers = bracketed or _NUMBER.findall(reply)
    if not numbers:
        return ParsedAction(None)
    value = float(numbers[-1 if last else 0])
    if not math.isfinite(value):
        return ParsedAction(None)
    clipped = float(np.clip(value, -max_torque, max_torque))
    return ParsedAction(clipped, clipped != value)


def _side(value: float) -> str:
    return "right" if value > 0 else "left"


def _question(words: tuple[str, ...]) -> str:
    items = [f"{i + 1} to move {word}" if i == 0 else f"{i + 1} {word}" for i, word in enumerate(words)]
    return f"Which move do you make? Reply {', '.join(items[:-1])} or {items[-1]}."


def _numbered(words: tuple[str, ...], verb: str) -> str:
    items = [f"'{i + 1}' to {verb} {word}" for i, word in enumerate(words)]
    return f"Reply {', '.join(items[:-1])} or {items[-1]}."


# ----------------------------------------------------------------------------- CartPole


def _cartpole(env_id: str, env, env_params) -> TextInterface:
    def describe(obs: np.ndarray) -> str:
        x, v, theta, omega = (float(o) for o in np.asarray(obs).reshape(-1))
        return (
            f"The cart is positioned at {x:.3f}, with a velocity of {abs(v):.2f} towards the {_side(v)}. "
            f"The pole is tilted at {abs(theta):.2f} radians, rotating at {abs(omega):.2f} radians per "
            f"second towards the {_side(omega)}."
        )

    def heuristic(obs: jax.Array, key: jax.Array) -> jax.Array:
        """Push towards the side the pole leans to: right (1) iff theta > 0. A weak prior, like
        the paper's LLMs (a mean return of ~42 over 200 steps, where theta + 0.1 omega > 0
        would already balance the pole for all 200)."""
        del key
        return (obs[:, 2] > 0).astype(jnp.int32)

    angle, track = float(env_params.theta_threshold_radians), float(env_params.x_threshold)
    return TextInterface(
        env_id,
        game=(
            "In the CartPole game you push a cart left or right along a track to keep a pole hinged "
            "on it balanced upright. The round ends when the pole leans more than "
            f"{angle:.4f} radians from vertical or the cart leaves the zone (-{track}, {track}). "
            "Every step the pole stays up scores 1 point."
        ),
        goal="The goal is to keep the pole balanced upright for as long as possible.",
        actions="Reply '1' to push the cart to the left or '2' to push the cart to the right.",
        question="Which action do you take? Reply 1 to push the cart left or 2 to push it right.",
        describe=describe,
        parse_answer=lambda reply, last: parse_discrete(reply, 2, ("left", "right"), last),
        heuristic=heuristic,
    )


# ----------------------------------------------------------------------------- Pendulum


def _pendulum(env_id: str, env, env_params) -> TextInterface:
    max_torque = float(env_params.max_torque)
    # theta'' = 3g/(2l) sin(theta) + 3/(m l^2) u: E = omega^2 / 2 + 3g/(2l) cos(theta) is
    # conserved without torque and is largest, E* = 3g/(2l), upright at rest.
    gravity = 3.0 * float(env_params.g) / (2.0 * float(env_params.l))

    def describe(obs: np.ndarray) -> str:
        cos, sin, omega = (float(o) for o in np.asarray(obs).reshape(-1))
        turning = "counterclockwise" if omega > 0 else "clockwise"
        return (
            f"The pendulum is at {math.atan2(sin, cos):.3f} radians from upright (0 is upright, positive "
            f"is counterclockwise), rotating {turning} at {abs(omega):.2f} radians per second."
        )

    def heuristic(obs: jax.Array, key: jax.Array) -> jax.Array:
        """Energy pumping far from the top, u = max_torque * sign(omega (E* - E)), and a PD
        controller near it (cos theta > 0.8), u = -(8 theta + 2 omega); both clipped."""
        del key
        cos, sin, omega = obs[:, 0], obs[:, 1], obs[:, 2]
        theta = jnp.arctan2(sin, cos)
        energy = 0.5 * omega**2 + gravity * cos
        pump = max_torque * jnp.sign(omega * (gravity - energy))
        balance = -(8.0 * theta + 2.0 * omega)
        torque = jnp.where(cos > 0.8, balance, pump)
        return jnp.clip(torque, -max_torque, max_torque)[:, None].astype(jnp.float32)

    return TextInterface(
        env_id,
        game=(
            "In the Pendulum game you apply a torque to a pendulum hanging from a fixed pivot. Every "
            "step costs points in proportion to the squared angle from upright, plus a little for fast "
            "rotation and for torque. The game lasts a fixed number of steps."
        ),
        goal="The goal is to swing the pendulum upright and keep it balanced there.",
        actions=(
            f"Reply with a torque between -{max_torque:.1f} and {max_torque:.1f} inside angle brackets, "
            "e.g. <1.5>; a positive torque turns the pendulum counterclockwise."
        ),
        question=(
            f"Which torque do you apply? Reply with a number between -{max_torque:.1f} and "
            f"{max_torque:.1f} in angle brackets, e.g. <1.5>."
        ),
        describe=describe,
        parse_answer=lambda reply, last: parse_torque(reply, max_torque, last),
        heuristic=heuristic,
    )


# ----------------------------------------------------------------------------- grids


def _toward_goal(
    position: jax.Array,
    key: jax.Array,
    goal: tuple[int, int],
    shape: tuple[int, int],
    directions: jax.Array,
    forbidden: jax.Array,
    fallback: jax.Array,
) -> jax.Array:
    """A uniformly random move among those that bring `position` `[N]` (row-major) closer to
    `goal` (Manhattan distance) without entering a `forbidden` `[H, W]` cell; `fallback` `[N]`
    where there is none."""
    rows, cols = shape
    here = grid.to_position(position, cols)  # [N, 2]
    target = jnp.clip(here[:, None, :] + directions[None], 0, jnp.array([rows - 1, cols - 1]))  # [N, 4, 2]
    goal_array = jnp.array(goal)
    distance = lambda p: jnp.abs(p - goal_array).sum(-1)
    closer = distance(target) < distance(here)[:, None]
    allowed = closer & ~forbidden[target[..., 0], target[..., 1]]
    choice = jax.random.categorical(key, jnp.where(allowed, 0.0, -jnp.inf), axis=-1)
    return jnp.where(allowed.any(-1), choice, fallback).astype(jnp.int32)


def _grid_sentence(obs: np.ndarray, cols: int) -> str:
    row, col = divmod(int(np.asarray(obs).reshape(-1)[0]), cols)
    return f"You are at row {row}, column {col}."


def _frozen_lake(env_id: str, env, env_params) -> TextInterface:
    from gymnax.environments.misc.frozen_lake import GOAL, START

    desc = np.asarray(env.desc)
    rows, cols = desc.shape
    start = tuple(int(i) for i in np.argwhere(desc == START)[0])
    goal = tuple(int(i) for i in np.argwhere(desc == GOAL)[0])
    words = ("left", "down", "right", "up")  # environment actions 0..3
    no_forbidden = jnp.zeros((rows, cols), bool)  # the holes are not known to the prior

    def heuristic(obs: jax.Array, key: jax.Array) -> jax.Array:
        """A random move among those that reduce the distance to the goal (it knows no holes)."""
        fallback = jnp.zeros(obs.shape[:1], jnp.int32)
        return _toward_goal(
            obs.reshape(-1), key, goal, (rows, cols), grid.DIRECTIONS_LDRU, no_forbidden, fallback
        )

    slippery = (
        " The ice is slippery: a move may go in a direction perpendicular to the intended one."
        if env.is_slippery
        else ""
    )
    return TextInterface(
        env_id,
        game=(
            f"In the FrozenLake game you walk on a frozen lake, a grid of {rows} rows and {cols} columns "
            f"(row 0 is the top, column 0 the left). You start at row {start[0]}, column {start[1]}; the "
            f"goal is at row {goal[0]}, column {goal[1]}. Some tiles are holes, at positions you are not "
            "told: falling into one ends the game with no reward. Reaching the goal scores 1 point; moves "
            f"into the border leave you in place.{slippery}"
        ),
        goal="The goal is to reach the goal tile without falling into a hole.",
        actions=_numbered(words, "move"),
        question=_question(words),
        describe=lambda obs: _grid_sentence(obs, cols),
        parse_answer=lambda reply, last: parse_discrete(reply, 4, words, last),
        heuristic=heuristic,
    )


def _cliff_walking(env_id: str, env, env_params) -> TextInterface:
    from jaxrl_llm.envs.cliff_walking import GOAL_POSITION, NUM_COLS, NUM_ROWS, START_POSITION, cliff_mask

    words = ("up", "right", "down", "left")  # environment actions 0..3
    cliff = cliff_mask()

    def heuristic(obs: jax.Array, key: jax.Array) -> jax.Array:
        """A random move among those that reduce the distance to the goal without entering the
        cliff (part of the rules); up (0) where there is none, i.e. at the start."""
        fallback = jnp.zeros(obs.shape[:1], jnp.int32)
        return _toward_goal(
            obs.reshape(-1), key, GOAL_POSITION, (NUM_ROWS, NUM_COLS), grid.DIRECTIONS_URDL, cliff, fallback
        )

    return TextInterface(
        env_id,
        game=(
            f"In the CliffWalking game you walk on a grid of {NUM_ROWS} rows and {NUM_COLS} columns (row 0 "
            f"is the top, column 0 the left). You start at row {START_POSITION[0]}, column "
            f"{START_POSITION[1]}; the goal is at row {GOAL_POSITION[0]}, column {GOAL_POSITION[1]}. The "
            f"cells of row {NUM_ROWS - 1} between them (columns 1 to {NUM_COLS - 2}) are a cliff: stepping "
            "into it costs 100 points and sends you back to the start. Every other step costs 1 point; "
            "moves into the border leave you in place. The game ends at the goal."
        ),
        goal="The goal is to reach the goal in as few steps as possible without stepping into the cliff.",
        actions=_numbered(words, "move"),
        question=_question(words),
        describe=lambda obs: _grid_sentence(obs, NUM_COLS),
        parse_answer=lambda reply, last: parse_discrete(reply, 4, words, last),
        heuristic=heuristic,
    )


TEXT_ENVS: dict[str, Callable[[str, Any, Any], TextInterface]] = {
    "CartPole-v1": _cartpole,
    "Pendulum-v1": _pendulum,
    "FrozenLake-misc": _frozen_lake,
    "CliffWalking-v0": _cliff_walking,
}
"""The environments with a text interface, by the id `envs.make` takes."""


def text_interface(env_id: str, env, env_params) -> TextInterface:
    """The `TextInterface` of `env` (built by `envs.make(env_id, ...)`; its params give the
    thresholds, torque limit and map the rules state)."""
    if env_id not in TEXT_ENVS:
        raise ValueError(
            f"No text interface (state translator, action parser, heuristic) for {env_id!r}: "
            f"LORO's prior supports {', '.join(TEXT_ENVS)}."
        )
    return TEXT_ENVS[env_id](env_id, env, env_params)
