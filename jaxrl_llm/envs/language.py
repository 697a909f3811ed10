"""What a language-model agent is told about a grid environment: its task and its action words.

`describe(env) -> LanguageSpec(task, action_words)`: `task` is one sentence naming the goal
in the symbols `render_text` draws; `action_words[i]` is the word for discrete action `i`
(each environment's own order: Maze, CliffWalking, MiniBehavior and Sokoban move up, right,
down, left; FrozenLake left, down, right, up). Add an environment with `register_language`.
"""

from __future__ import annotations

from typing import NamedTuple

from gymnax.environments.misc import frozen_lake

from jaxrl_llm.envs.cliff_walking import CliffWalking
from jaxrl_llm.envs.frozen_lake_random import FrozenLakeRandom
from jaxrl_llm.envs.maze import Maze
from jaxrl_llm.envs.minibehavior import MiniBehaviorPickPlace
from jaxrl_llm.envs.sokoban import Sokoban

__all__ = ["LanguageSpec", "describe", "register_language"]

URDL_WORDS = ("up", "right", "down", "left")
LDRU_WORDS = ("left", "down", "right", "up")


class LanguageSpec(NamedTuple):
    task: str
    action_words: tuple[str, ...]


_SPECS: dict[type, LanguageSpec] = {}


def register_language(env_type: type, task: str, action_words: tuple[str, ...]) -> None:
    """Describes `env_type` (and its subclasses) to language-model agents."""
    if len(set(action_words)) != len(action_words) or not all(
        w.isalpha() and w.islower() for w in action_words
    ):
        raise ValueError(f"action words must be distinct lower-case words, got {action_words!r}.")
    _SPECS[env_type] = LanguageSpec(task, tuple(action_words))


def describe(env) -> LanguageSpec:
    """The `LanguageSpec` of `env`; raises TypeError for an environment without one."""
    for env_type in type(env).__mro__:
        if env_type in _SPECS:
            spec = _SPECS[env_type]
            if len(spec.action_words) != env.num_actions:
                raise ValueError(
                    f"{type(env).__name__} has {env.num_actions} actions but its language spec names "
                    f"{len(spec.action_words)}: {spec.action_words}."
                )
            return spec
    supported = ", ".join(sorted(t.__name__ for t in _SPECS))
    raise TypeError(f"No language description for {type(env).__name__}; supported: {supported}.")


register_language(Maze, "Move the agent A to the goal G. Walls # block moves.", URDL_WORDS)
register_language(
    CliffWalking,
    "Walk the agent A from the start S to the goal G without stepping on the cliff C.",
    URDL_WORDS,
)
register_language(
    MiniBehaviorPickPlace,
    "Pick up the object O and drop it next to the table T.",
    (*URDL_WORDS, "pick", "drop"),
)
register_language(
    Sokoban, "Push the box B onto the target + by walking into it. Walls # block moves.", URDL_WORDS
)
_LAKE_TASK = "Walk the agent A to the goal G over frozen tiles F without falling into a hole H."
register_language(frozen_lake.FrozenLake, _LAKE_TASK, LDRU_WORDS)
register_language(FrozenLakeRandom, _LAKE_TASK, LDRU_WORDS)
