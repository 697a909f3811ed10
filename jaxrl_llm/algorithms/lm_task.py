"""What every LM algorithm loads first: the model (with its tokenizer) and the task's problems."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import numpy as np

from jaxrl_llm import data
from jaxrl_llm.algorithms.configs.lm_grpo import LMTaskConfig
from jaxrl_llm.models.checkpoints import load
from jaxrl_llm.models.llama import count_params


@dataclass(frozen=True)
class LoadedModel:
    params: Any
    model_config: Any
    tokenizer: Any


def _parse_value(value: str) -> Any:
    text = str(value)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_overrides(overrides: dict[str, str]) -> dict[str, Any]:
    """`--model-overrides` strings as values: 'true'/'false' become booleans, numbers numbers
    (`hidden_size 64`, `rope_theta 1e5`), anything else stays a string (`dtype bfloat16`)."""
    return {key: _parse_value(value) for key, value in overrides.items()}


def load_problems(config: LMTaskConfig) -> list:
    if config.task == "gsm8k":
        return data.read_gsm8k_jsonl(config.data_path or data.GSM8K_SAMPLE_FILE)
    return data.generate_problems(
        np.random.default_rng(config.seed), 4096, tuple(config.arithmetic_kinds), config.max_operand
    )


def load_model(config: LMTaskConfig, verbose: bool = True) -> LoadedModel:
    """Loads `config.model`, reporting on stderr (a 135M model takes seconds to minutes on a CPU)."""
    say = partial(print, file=sys.stderr, flush=True) if verbose else lambda *args: None
    say(f"loading {config.model} ...")
    started = time.perf_counter()
    params, model_config, tokenizer = load(
        config.model, key=jax.random.key(config.seed), **parse_overrides(config.model_overrides)
    )
    seconds, millions = time.perf_counter() - started, count_params(params) / 1e6
    say(f"loaded {config.model} in {seconds:.1f} s ({millions:.1f}M parameters)")
    if tokenizer is None:
        raise ValueError(f"model {config.model!r} came without a tokenizer; pass one explicitly.")
    return LoadedModel(params, model_config, tokenizer)


def train_warm_up(
    algorithm, run_config: dict[str, Any], seed: int, *, verbose: bool, out_dir, resume: bool, title: str
):
    """The final parameters of a supervised warm-up `algorithm` (`title` names its plot): in memory when `out_dir` is
    None (a host loop, or one compiled program for a jittable algorithm), else a checkpointed
    run in `out_dir` that `resume` restores instead of training again."""
    from pathlib import Path

    from jaxrl_llm.training import make_train, train_on_host
    from jaxrl_llm.training import run as run_training

    key = jax.random.PRNGKey(seed)
    if out_dir is None:
        if algorithm.host_collect:
            state, _ = train_on_host(algorithm, key, progress=verbose, description="supervised warm-up")
        else:
            state, _ = jax.jit(make_train(algorithm))(key)
        return state.train_state.params
    state = run_training(
        algorithm,
        run_config,
        out_dir,
        seed=seed,
        resume=resume and Path(out_dir).exists(),
        progress=verbose,
        title=title,
    )
    return state.train_state.params
