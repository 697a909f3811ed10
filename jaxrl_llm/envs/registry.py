"""One `make` for every gymnax environment and ours, and which of them report success.

Our environments are registered with `gymnax.register` at import time, so a plain
`gymnax.make("Maze-v0")` works too once `jaxrl_llm.envs` has been imported. gymnax refuses
to re-register one of its built-in ids, so a factory registered here under such an id
(our `FrozenLake-misc`, which adds `info["success"]`) is built by `make` only.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

import gymnax

EnvFactory = Callable[..., Any]

# Every factory registered through `register`, by id: `make` builds these, gymnax the rest.
_FACTORIES: dict[str, EnvFactory] = {}


def register(env_id: str, factory: EnvFactory) -> None:
    """Registers `factory` under `env_id` (idempotent for re-imports).

    `make(env_id)` builds `factory` from then on. The id is also registered with gymnax
    unless gymnax already knows it (gymnax refuses to replace an id, so replacing one of
    its built-ins only affects `make` and `has_success`).

    A factory whose environments report success (see `has_success`) carries the attribute
    `reports_success = True` (a class attribute for an environment class).
    """
    _FACTORIES[env_id] = factory
    if env_id not in gymnax.registered_envs:
        gymnax.register(env_id, factory)


def registered_envs() -> list[str]:
    """Every id `make` accepts: gymnax's built-ins followed by ours."""
    return list(gymnax.registered_envs)


def has_success(env: Any) -> bool:
    """Whether an environment reports task success in `info["success"]`.

    A static Python bool (never traced), so algorithms can branch on it at build time and
    tell "this environment has no notion of success" (False: CartPole, Pendulum and the
    other gymnax built-ins) apart from "succeeded in none of its episodes" (True, with
    `info["success"]` / `Trajectory.success` all False).

    An environment reports success when it declares `reports_success = True` (our Maze,
    MiniBehavior, CliffWalking, FrozenLakeRandom, and the `FrozenLake-misc` that `make`
    builds); its `step` then returns `info["success"]`, a bool `[]` per env that is True
    exactly on the transition that ends the episode by reaching the goal / completing
    the task (not on failures such as holes, nor on time-limit truncation). gymnax
    wrappers forward the attribute to the environment they wrap.

    Args:
      env: an environment instance, or an id as accepted by `make` (looked up without
        building the environment).

    Raises:
      ValueError: for an unknown id.
    """
    if isinstance(env, str):
        _check_known(env)
        env = _FACTORIES.get(env)  # gymnax built-ins we did not replace: no success notion
    return bool(getattr(env, "reports_success", False))


def _check_known(env_id: str) -> None:
    known = registered_envs()
    if env_id not in known:
        close = difflib.get_close_matches(env_id, known, n=5, cutoff=0.3)
        if not close:  # fall back to a case-insensitive substring match
            close = [k for k in known if env_id.lower().split("-")[0] in k.lower()][:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown environment {env_id!r}.{hint} All ids: jaxrl_llm.envs.registered_envs().")


def make(env_id: str, **env_kwargs: Any):
    """Builds an environment by id.

    `env_kwargs` are checked against the environment's constructor and converted to
    its parameter types (`"0.5"` or `1` to a float, `"false"`/`0` to a bool, ...), so
    values typed on the command line work.

    Returns:
      `(env, env_params)` exactly as `gymnax.make` does.

    Raises:
      ValueError: for an unknown id (naming the closest valid ids), an unknown
        keyword (listing the accepted ones) or a value of the wrong type.
    """
    _check_known(env_id)
    factory = _FACTORIES.get(env_id)
    if factory is None:  # a gymnax built-in
        if not env_kwargs:
            return gymnax.make(env_id)
        env, _ = gymnax.make(env_id)
        return gymnax.make(env_id, **convert_env_kwargs(env_id, type(env), env_kwargs))
    env = factory(**convert_env_kwargs(env_id, factory, env_kwargs)) if env_kwargs else factory()
    return env, env.default_params


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _convert(env_id: str, name: str, value: Any, parameter: inspect.Parameter) -> Any:
    default = parameter.default
    annotation = str(parameter.annotation)
    kind = type(default) if default not in (None, inspect.Parameter.empty) else None
    if kind is None:  # no usable default: read the (string) annotation
        kind = next((t for t in (bool, int, float, str) if annotation.startswith(t.__name__)), None)
    try:
        if kind is bool and not isinstance(value, bool):
            text = str(value).lower()
            if text not in _TRUE + _FALSE:
                raise ValueError
            return text in _TRUE
        if kind is int and not isinstance(value, bool):
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError
            return int(as_float)
        if kind is float and not isinstance(value, bool):
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{env_id}: --env-kwargs {name}={value!r} is not a valid {kind.__name__} "
            f"(the default is {default!r})."
        ) from None
    return value


def convert_env_kwargs(env_id: str, env_class: type, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Checks `env_kwargs` against `env_class`'s constructor and converts their types."""
    parameters = dict(inspect.signature(env_class).parameters)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(env_kwargs)
    unknown = sorted(set(env_kwargs) - set(parameters))
    if unknown:
        accepted = ", ".join(f"{n}={p.default!r}" for n, p in parameters.items()) or "none"
        raise ValueError(
            f"{env_id} does not take --env-kwargs {', '.join(unknown)}. It accepts (with defaults): {accepted}."
        )
    return {name: _convert(env_id, name, value, parameters[name]) for name, value in env_kwargs.items()}


def make_configured(
    env_id: str, env_kwargs: dict[str, Any] | None = None, max_episode_steps: int | None = None
):
    """`make(env_id, **env_kwargs)`, with the params' step limit replaced when given."""
    env, env_params = make(env_id, **(env_kwargs or {}))
    if max_episode_steps is not None:
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={max_episode_steps} is invalid: must be >= 1.")
        if not hasattr(env_params, "max_steps_in_episode"):
            raise ValueError(f"{env_id} has no step limit (max_steps_in_episode) to override.")
        env_params = env_params.replace(max_steps_in_episode=max_episode_steps)
    return env, env_params
