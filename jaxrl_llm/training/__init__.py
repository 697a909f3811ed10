"""The algorithm contract and its composer, train state, data-parallel step builders, orbax
checkpoints, metrics and the host loop."""

from jaxrl_llm.training.algorithm import Algorithm, LoopState, compose
from jaxrl_llm.training.checkpoint import CheckpointStore
from jaxrl_llm.training.loop import NonFiniteLossError, TrainFunctions, TrainingInterrupted, make_train, run, train_on_host
from jaxrl_llm.training.run_dir import IncompatibleRunError, prepare_run_dir
from jaxrl_llm.training.parallel import build_step, data_mesh, reduce_mean, reduce_sum, shard_index
from jaxrl_llm.training.train_state import TrainState, apply_gradients

__all__ = [
    "Algorithm",
    "LoopState",
    "compose",
    "CheckpointStore",
    "IncompatibleRunError",
    "NonFiniteLossError",
    "TrainFunctions",
    "TrainState",
    "TrainingInterrupted",
    "apply_gradients",
    "build_step",
    "data_mesh",
    "make_train",
    "prepare_run_dir",
    "reduce_mean",
    "reduce_sum",
    "run",
    "shard_index",
    "train_on_host",
]
