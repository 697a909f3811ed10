"""The algorithm contract: the README's example runs and learns; the composer's checks."""

import dataclasses
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrl_llm.training import Algorithm, LoopState, compose, make_train, run, train_on_host
from jaxrl_llm.training.algorithm import _check_splits
from jaxrl_llm.training.train_state import apply_gradients, create

README = Path(__file__).parents[2] / "README.md"


def readme_example() -> dict:
    text = README.read_text()
    code = re.search(r"<!-- contract-example -->\n```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    return namespace


def test_readme_example_learns_the_best_arm(capsys):
    namespace = readme_example()
    assert float(capsys.readouterr().out) > 0.7
    metrics = namespace["metrics"]
    assert metrics["reward_mean"].shape == (150,) and float(metrics["reward_mean"][:10].mean()) < 0.6


def test_readme_example_vmaps_over_seeds_and_equals_single_runs():
    algorithm = readme_example()["make_bandit_reinforce"](num_updates=5)
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    _, batched = jax.jit(jax.vmap(make_train(algorithm)))(keys)
    for i, key in enumerate(keys):
        _, single = jax.jit(make_train(algorithm))(key)
        np.testing.assert_allclose(batched["loss"][i], single["loss"], rtol=1e-6)


def counting(host_collect: bool, frozen=None) -> Algorithm:
    tx = optax.sgd(1.0)

    def init(key):
        return create(jnp.zeros(()), tx), jnp.zeros((), jnp.int32)

    def collect(count, params, key, **kwargs):
        assert ("frozen" in kwargs) == (frozen is not None)  # collect sees the frozen arrays too
        return count + 1, {"x": jnp.ones((4,))}, {"collected": count.astype(jnp.float32)}

    def learn(state, batch, key, axis_name, **kwargs):
        shift = kwargs["frozen"]["shift"] if frozen is not None else 0.0
        grads = -batch["x"].mean() - shift
        return apply_gradients(state, grads, tx), {"loss": state.params}

    return Algorithm(init, collect, learn, 3, 4, host_collect=host_collect, frozen=frozen)


def test_make_train_refuses_a_host_driven_algorithm():
    with pytest.raises(ValueError, match="collects its data on the host.*training.run"):
        make_train(counting(host_collect=True))


def test_compose_threads_collect_state_key_and_frozen_arrays():
    frozen = {"shift": jnp.float32(2.0)}
    state, metrics = train_on_host(counting(host_collect=True, frozen=frozen), jax.random.PRNGKey(0))
    assert isinstance(state, LoopState)
    assert int(state.collect_state) == 3 and float(state.train_state.params) == 9.0  # 3 steps of +3
    np.testing.assert_array_equal(metrics["collected"], [0, 1, 2])
    assert "shift" not in str(jax.tree_util.tree_structure(state))  # frozen arrays are not state


def test_compiled_runs_take_frozen_arrays_as_an_argument(tmp_path):
    algorithm = counting(host_collect=False, frozen={"shift": jnp.float32(2.0)})
    train = jax.jit(make_train(algorithm))
    state, _ = train(jax.random.PRNGKey(0), {"shift": jnp.float32(5.0)})
    assert float(state.train_state.params) == 18.0  # 3 steps of +6: the argument, not the default
    text = jax.jit(make_train(algorithm)).lower(jax.random.PRNGKey(0), {"shift": jnp.float32(5.0)}).as_text()
    assert "2.000000e+00" not in text  # the default frozen value is not compiled in
    state = run(algorithm, {}, tmp_path / "run", seed=0, progress=False)
    assert float(state.train_state.params) == 9.0


def test_compose_splits_the_key_once_per_update():
    keys = []
    algorithm = counting(host_collect=True)
    recording = dataclasses.replace(
        algorithm,
        collect=lambda s, p, k: (keys.append(np.asarray(jax.random.key_data(k))), algorithm.collect(s, p, k))[
            1
        ],
    )
    fns = compose(recording)
    state = fns.init(jax.random.PRNGKey(0))
    for _ in range(2):
        state, _ = fns.update(state)
    assert not np.array_equal(keys[0], keys[1])


def test_a_batch_that_does_not_split_over_the_devices_is_explained():
    _check_splits({"obs": jnp.zeros((16, 3))}, 8)
    with pytest.raises(ValueError, match=r"\['obs'\] has 12 rows, which do not split evenly over 8 devices"):
        _check_splits({"obs": jnp.zeros((12, 3))}, 8)


def full_finetuning(frozen_params: jax.Array) -> Algorithm:
    """Starts its policy from the very array that is also its frozen reference (as an LM's full
    fine-tuning does) and learns on the host, one step per update."""
    tx = optax.sgd(0.5)

    def init(key):
        return create(frozen_params, tx), jnp.zeros((), jnp.int32)

    def collect(count, params, key, *, frozen):
        return count + 1, {"x": params - frozen}, {}

    def learn(state, batch, key, axis_name, *, frozen):
        return apply_gradients(state, -jnp.ones_like(state.params), tx), {"loss": jnp.sum(batch["x"])}

    return Algorithm(init, collect, learn, 3, 1, host_collect=True, frozen=frozen_params)


def test_the_step_donates_the_train_state_but_not_the_frozen_arrays():
    reference = jnp.arange(4.0)
    fns = compose(full_finetuning(reference))
    state = fns.init(jax.random.PRNGKey(0))
    assert state.train_state.params is not reference  # init's alias of the frozen array was copied
    first = state
    for _ in range(3):
        state, metrics = fns.update(state)
    # the old state's buffers went to the step; the reference is intact and still read
    assert first.train_state.params.is_deleted()
    assert not reference.is_deleted()
    np.testing.assert_array_equal(reference, np.arange(4.0))
    np.testing.assert_allclose(state.train_state.params, np.arange(4.0) + 1.5)
    assert float(metrics["loss"]) == 4.0  # the third collect saw params - reference = 1.0 per entry
    with pytest.raises(ValueError, match="consumed by an earlier update.*donate_state=False"):
        fns.update(first)
    kept = compose(full_finetuning(reference), donate_state=False)
    start = kept.init(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(kept.update(start)[0].train_state.params, kept.update(start)[0].train_state.params)

