"""Runs the PPO and GiGPO updates single-device, under shard_map and under pmap on 8 CPU devices.

Executed by test_parallel.py in a subprocess, because the device count must be set
before jax is imported. Prints, per algorithm, the max |Δparam| of each mode against
single-device.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402
from functools import partial  # noqa: E402

import jax  # noqa: E402
import optax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxrl_llm.algorithms import group_rl, lm_grpo, ppo  # noqa: E402
from jaxrl_llm.training import build_step, data_mesh  # noqa: E402


def ppo_case():
    """PPO's update on a fixed batch from a rollout with once-updated params."""
    config = ppo.PPOConfig(num_envs=16, num_steps=32, num_minibatches=4, update_epochs=2)
    fns = ppo.make_train_functions(config)
    runner = jax.jit(fns.init)(jax.random.PRNGKey(0))
    runner, _ = jax.jit(fns.update)(runner)  # one real update so params are not at init
    env, env_params = ppo.envs.make(config.env)
    network = ppo.make_network(config, env, env_params)
    step_fn = partial(ppo.ppo_update, network=network, tx=ppo.make_optimizer(config), config=config)
    traj, _ = ppo.run_steps(
        jax.random.PRNGKey(1),
        env,
        env_params,
        ppo.make_policy(network),
        runner.train_state.params,
        runner.rollout_state,
        config.num_steps,
    )
    _, next_values = network.apply(runner.train_state.params, traj.next_obs.reshape(-1, 4))
    batch = ppo.collect_batch(traj, next_values.reshape(traj.reward.shape), config)
    return step_fn, runner.train_state, batch


def gigpo_case():
    """GiGPO's update: 8 groups x 4 members, so each of 8 devices holds one whole group."""
    config = group_rl.GroupRLConfig(num_groups=8, group_size=4, episode_steps=12, env_kwargs={"size": 4})
    parts = group_rl.make_parts(config)
    runner = jax.jit(group_rl.make_train_functions(config).init)(jax.random.PRNGKey(0))
    params = runner.train_state.params
    batch, _ = group_rl.collect_group_batch(jax.random.PRNGKey(1), params, params, parts, config)
    step_fn = partial(group_rl.group_policy_update, network=parts.network, tx=parts.tx, config=config)
    return step_fn, runner.train_state, batch


def lm_grpo_case():
    """LM-GRPO's step on a tiny model: 8 prompts x 2 completions, one group per device."""
    config = lm_grpo.LMGRPOConfig(
        model="tiny",
        arithmetic_kinds=("add",),
        max_operand=9,
        prompts_per_update=8,
        group_size=2,
        max_prompt_tokens=24,
        max_new_tokens=4,
        learning_rate=1e-3,
    )
    run = lm_grpo.setup(config)
    fns = lm_grpo.make_train_functions(run)
    state = fns.init(jax.random.PRNGKey(0))
    captured = {}
    real_step = lm_grpo.build_step

    def capturing_build_step(step_fn, mode):  # record the batch that one real update feeds its step
        inner = real_step(step_fn, mode)

        def step(state, batch, key):
            captured["batch"] = batch
            return inner(state, batch, key)

        return step

    lm_grpo.build_step = capturing_build_step
    try:
        lm_grpo.make_train_functions(run).update(state)
    finally:
        lm_grpo.build_step = real_step

    # SGD: the parameter change is proportional to the gradient (Adam's first steps are
    # ~lr * sign(g), which turns float32 reduction-order noise in g ~ 0 into lr-sized diffs)
    step_fn = partial(lm_grpo.grpo_step, run=run, tx=optax.sgd(0.1))
    # An untrained model rarely earns a reward, which would leave every advantage 0; random
    # advantages give a gradient to compare whatever the sampled completions were.
    batch = captured["batch"]
    batch = batch.replace(advantage=jax.random.normal(jax.random.PRNGKey(2), batch.advantage.shape))
    # the step's state is (train_state, frozen base params)
    return step_fn, (state.train_state, run.base_params), batch


def trained_params(state):
    """The trained parameters of a step state: a TrainState, or (TrainState, frozen params)."""
    return state[0].params if isinstance(state, tuple) else state.params


def compare(step_fn, state0, batch, mesh):
    results = {}
    for mode in ("single", "shard_map", "pmap"):
        step = build_step(step_fn, mode, mesh)
        state = state0
        for i in range(3):
            state, metrics = step(state, batch, jax.random.PRNGKey(10 + i))
            jax.block_until_ready(metrics)  # bound the steps in flight (see training/parallel.py)
        params = trained_params(state)
        results[mode] = (params, float(metrics["loss"]))
    base = results["single"][0]
    max_diff = lambda p, q: max(
        float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q))
    )
    report = {
        mode: {"max_abs_param_diff": max_diff(p, base), "loss": loss} for mode, (p, loss) in results.items()
    }
    report["param_change_vs_start"] = max_diff(base, trained_params(state0))
    return report


def main():
    mesh = data_mesh(8)
    report = {
        name: compare(*case(), mesh)
        for name, case in (("ppo", ppo_case), ("gigpo", gigpo_case), ("lm_grpo", lm_grpo_case))
    }
    report["num_devices"] = len(jax.devices())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
