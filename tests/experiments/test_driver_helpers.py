"""The experiment drivers' bookkeeping: the cache of finished jobs, the ReaCritic table's final
return, and the LORO curves' agreement with the library's summary of a run."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

from jaxrl_llm.algorithms import loro
from jaxrl_llm.algorithms.configs.loro import LOROConfig

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
from curves import cached_run  # noqa: E402


def driver(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_driver", EXPERIMENTS / name / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_finished_job_is_read_back_not_rerun(tmp_path):
    calls = []

    def train():
        calls.append(1)
        return {"loss": np.arange(3.0)}, 1.5, 2.5

    first = cached_run(tmp_path / "jobs" / "a.npz", train)
    again = cached_run(tmp_path / "jobs" / "a.npz", train)
    assert len(calls) == 1
    np.testing.assert_array_equal(again[0]["loss"], first[0]["loss"])
    assert again[1:] == (1.5, 2.5)


def test_reacritic_final_return_is_the_mean_of_the_last_two_evaluations():
    nan = np.nan
    evals = np.array([[nan, 1.0, nan, 3.0, nan, 5.0], [2.0, nan, nan, nan, 4.0, nan]])
    np.testing.assert_allclose(driver("reacritic").final_returns(evals), [4.0, 3.0])


def test_loro_curves_end_at_the_summary_of_the_run():
    run = driver("loro")
    config = LOROConfig(total_frames=2_000, eval_every=200)
    updates = config.total_frames // config.train_frequency
    rng = np.random.default_rng(0)
    evals = np.full((3, updates), np.nan)
    evals[:, 0] = -7.0  # DQN's evaluation of the initial parameters: not counted
    evals[:, 200::200] = rng.normal(size=(3, len(range(200, updates, 200))))
    evals[:, -1] = rng.normal(size=3)  # and the last update's
    frames, cumulative = run.cumulative_curves({"eval_return_mean": evals}, config)
    assert cumulative.shape == (3, updates // 200) and frames[-1] == config.total_frames
    for seed in range(3):
        zeros = np.zeros(updates)
        metrics = {"eval_return_mean": evals[seed], "episode_return_mean": zeros, "episodes": zeros}
        summary = loro.summarize(metrics, config.eval_every)
        np.testing.assert_allclose(cumulative[seed, -1], summary["cumulative_eval_return"])


def test_shiq_two_step_task_rewards_the_partial_sum_and_the_total_turn_by_turn():
    shiq = driver("shiq")
    problem = shiq.Problem("What is 3 + 4 + 5?", "12")
    assert shiq.score_partial_then_total("7, 12", problem) == (("7,", " 12"), (1.0, 1.0))
    assert shiq.score_partial_then_total("8, 12", problem) == (("8,", " 12"), (0.0, 1.0))
    assert shiq.score_partial_then_total("7, 13", problem) == (("7,", " 13"), (1.0, 0.0))
    assert shiq.score_partial_then_total("12", problem) == (("12",), (1.0,))  # no comma: one turn
    gold = shiq.TASKS["a + b + c (turn-wise)"].solution(problem)
    assert gold == "7, 12" and sum(shiq.score_partial_then_total(gold, problem)[1]) == shiq.TASKS["a + b + c (turn-wise)"].max_reward
