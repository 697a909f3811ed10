"""gymnax-API environments: a registry over gymnax plus our own grid and text tasks.

Importing this package registers our environments with gymnax, so both
`jaxrl_llm.envs.make("Maze-v0")` and `gymnax.make("Maze-v0")` work afterwards.

Task success. Environments with a goal report it themselves, so algorithms never guess
it from returns (CliffWalking's returns are always negative):
- `has_success(env_or_id) -> bool` (static) says whether an environment reports success.
  True for Maze-v0, MiniBehavior-PickPlace-v0, CliffWalking-v0, FrozenLakeRandom-v0,
  Sokoban-v0 and FrozenLake-misc as built by `make` (our subclass of gymnax's;
  `gymnax.make` still gives gymnax's own, which does not report it). False for the other
  gymnax built-ins (CartPole, Pendulum, ...): they have no notion of success.
- Such an environment's `step` returns `info["success"]`, bool `[]` per env, True exactly
  on the transition that ends the episode by reaching the goal / completing the task;
  False on every other step, including failures (a hole) and time-limit truncation. It
  is computed before gymnax's auto-reset, so it belongs to the ending transition (like
  `terminated`). A goal reached on the last allowed step is both `terminated` and
  `truncated`, and a success.
- The rollout stores it as `Trajectory.success` ([T, N] bool), all False for environments
  without success; `rollout.episode_success_rate(trajectory)` is the fraction of finished
  episodes that succeeded. Check `has_success(env)` to tell "no success notion" apart
  from "never succeeded".
- A new environment opts in with the class attribute `reports_success = True` and
  `info["success"]` in `step_env`.
"""

from jaxrl_llm.envs.cliff_walking import CliffWalking
from jaxrl_llm.envs.frozen_lake import FrozenLake
from jaxrl_llm.envs.frozen_lake_random import FrozenLakeRandom
from jaxrl_llm.envs.hetnet import HetNet
from jaxrl_llm.envs.maze import Maze, shortest_path_distance
from jaxrl_llm.envs.minibehavior import MiniBehaviorPickPlace
from jaxrl_llm.envs.registry import has_success, make, make_configured, register, registered_envs
from jaxrl_llm.envs.render import PALETTE, Cell, cell_codes, register_renderer, render_image, render_text
from jaxrl_llm.envs.sokoban import Sokoban

# id -> factory; `make(id, **kwargs)` forwards kwargs to the constructor.
ENV_FACTORIES = {
    "Maze-v0": Maze,
    "MiniBehavior-PickPlace-v0": MiniBehaviorPickPlace,
    "CliffWalking-v0": CliffWalking,
    "FrozenLakeRandom-v0": FrozenLakeRandom,
    "Sokoban-v0": Sokoban,
}
# Continuous-action (Box) environments; ENV_FACTORIES holds only discrete-action ones.
CONTINUOUS_ENV_FACTORIES = {
    "HetNet-v0": HetNet,
}
# gymnax built-ins that `make` replaces by our subclass (gymnax keeps its own under the id).
BUILTIN_REPLACEMENTS = {
    "FrozenLake-misc": FrozenLake,  # adds info["success"]
}
for _env_id, _factory in {**ENV_FACTORIES, **CONTINUOUS_ENV_FACTORIES, **BUILTIN_REPLACEMENTS}.items():
    register(_env_id, _factory)

__all__ = [
    "BUILTIN_REPLACEMENTS",
    "CONTINUOUS_ENV_FACTORIES",
    "ENV_FACTORIES",
    "PALETTE",
    "Cell",
    "CliffWalking",
    "FrozenLake",
    "FrozenLakeRandom",
    "HetNet",
    "Maze",
    "MiniBehaviorPickPlace",
    "Sokoban",
    "cell_codes",
    "has_success",
    "make",
    "make_configured",
    "register",
    "register_renderer",
    "registered_envs",
    "render_image",
    "render_text",
    "shortest_path_distance",
]
