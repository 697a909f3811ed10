"""Validation helpers for the frozen dataclass configs.

Every config validates itself in `__post_init__`; an invalid value raises a
`ValueError` naming the config, the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, Union

MESH_AXES = ("data", "fsdp", "tensor")
"""The axes of a rule-sharded mesh (`training/sharding.py`), in device-array order."""

EnvKwarg = Union[int, float, bool, str]
"""A value of `--env-kwargs`; converted to the environment's parameter type by `envs.make`."""


def _fail(config: Any, field: str, allowed: str) -> None:
    value = getattr(config, field)
    raise ValueError(f"{type(config).__name__}.{field}={value!r} is invalid: {allowed}.")


def check_range(
    config: Any,
    field: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Checks `low <= config.field <= high` (bounds optional; exclusivity configurable)."""
    value = getattr(config, field)
    if isinstance(value, float) and not math.isfinite(value):
        _fail(config, field, "must be a finite number")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        bracket = ("[" if low_inclusive else "(") + f"{lo}, {hi}" + ("]" if high_inclusive else ")")
        _fail(config, field, f"must lie in {bracket}")


def check_choice(config: Any, field: str, choices: Iterable[Any]) -> None:
    """Checks `config.field` is one of `choices`."""
    choices = list(choices)
    if getattr(config, field) not in choices:
        _fail(config, field, f"must be one of {choices}")


PER_DEVICE_SHARE = " (and its per-device share when running data-parallel)"
"""`check_divides` note of a batch size that is split over devices too."""


def check_divides(config: Any, numerator: str, denominator: str, note: str = "") -> None:
    """Checks `config.denominator` divides `config.numerator` exactly (`note` ends the message)."""
    n, d = getattr(config, numerator), getattr(config, denominator)
    if n % d:
        _fail(config, denominator, f"must divide {numerator}={n} exactly{note}")


ACTIVATIONS = ("tanh", "relu", "gelu")
"""The activations of `models.mlp.MLP` (listed here: configs import no JAX)."""


def check_mlp(config: Any, widths: str = "hidden_sizes", activation: str = "activation") -> None:
    """Checks an MLP's hidden widths (non-empty, positive) and activation name."""
    sizes = getattr(config, widths)
    if not sizes or min(sizes) < 1:
        _fail(config, widths, "must be non-empty positive widths")
    check_choice(config, activation, ACTIVATIONS)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a (possibly nested) config dataclass."""

    def convert(value):
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        return value

    return {k: convert(v) for k, v in dataclasses.asdict(config).items()}


def parse_mesh_shape(text: str) -> dict[str, int]:
    """`"data=2,fsdp=4"` -> `{"data": 2, "fsdp": 4, "tensor": 1}` (missing axes have size 1)."""
    shape = dict.fromkeys(MESH_AXES, 1)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, size = part.partition("=")
        if name not in MESH_AXES or not size.isdigit() or int(size) < 1:
            raise ValueError(
                f"mesh={text!r} is invalid at {part!r}: write comma-separated axis=size pairs with axes "
                f"from {MESH_AXES} and positive sizes, e.g. 'data=2,fsdp=4'."
            )
        shape[name] = int(size)
    return shape
