"""Trains every algorithm a few updates on one device, under shard_map, under pmap and
rule-sharded on a mesh ("sharded:data=2,fsdp=4") on 8 CPU devices, through the algorithm
contract (`training.compose`).

Executed by test_parallel.py in a subprocess, because the device count must be set
before jax is imported. Prints, per algorithm, the max |Δparam| of each mode against
single-device, the last loss, how far training moved the parameters, and for sharded modes
the parameter bytes on the fullest device against the parameters' total bytes.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from jaxrl_llm.algorithms import dqn, group_rl, lm_agent, lm_grpo, lm_sft, ppo, reward_model, sac, td3  # noqa: E402
from jaxrl_llm.algorithms.configs.lm_agent import LMAgentConfig  # noqa: E402
from jaxrl_llm.training import compose, make_train, train_on_host  # noqa: E402
from jaxrl_llm.training.sharding import bytes_per_device, make_mesh  # noqa: E402

NUM_UPDATES = 3

# LM cases train with SGD: Adam's first steps are ~lr * sign(g), which turns float32
# reduction-order noise in gradients ~0 into lr-sized differences between the modes.
LM_TASK = dict(model="tiny", arithmetic_kinds=("add",), max_operand=9, max_prompt_tokens=24)


def with_random_advantages(algorithm):
    """An untrained LM rarely earns a reward, which leaves every advantage 0; random
    advantages give a gradient to compare whatever the sampled completions were."""

    def collect(state, params, key, **frozen):
        state, batch, metrics = algorithm.collect(state, params, key, **frozen)
        noise = jax.random.normal(jax.random.fold_in(key, 7), batch.advantage.shape)
        return state, batch.replace(advantage=noise), metrics

    return dataclasses.replace(algorithm, collect=collect)


CASES = {
    "ppo": lambda: ppo.make_ppo(
        ppo.PPOConfig(
            num_envs=16, num_steps=32, num_minibatches=4, update_epochs=2, total_frames=16 * 32 * NUM_UPDATES
        )
    ),
    # 8 groups: each of 8 devices holds one whole group
    "grpo": lambda: group_rl.make_group_rl(
        group_rl.GroupRLConfig(
            algorithm="grpo",
            num_groups=8,
            group_size=4,
            episode_steps=12,
            env_kwargs={"size": 4},
            total_frames=32 * 12 * NUM_UPDATES,
        )
    ),
    "gigpo": lambda: group_rl.make_group_rl(
        group_rl.GroupRLConfig(
            num_groups=8,
            group_size=4,
            episode_steps=12,
            env_kwargs={"size": 4},
            total_frames=32 * 12 * NUM_UPDATES,
        )
    ),
    "lm_grpo": lambda: with_random_advantages(
        lm_grpo.make_lm_grpo(
            lm_grpo.LMGRPOConfig(
                **LM_TASK, prompts_per_update=8, group_size=2, max_new_tokens=4, num_updates=NUM_UPDATES
            ),
            optimizer=optax.sgd(0.1),
            verbose=False,
        )
    ),
    # 2 groups x 4 members x 2 turns = 16 rows, 2 per device
    "lm_agent": lambda: with_random_advantages(
        lm_agent.make_lm_agent(
            LMAgentConfig(
                env_kwargs={"size": 3},
                num_groups=2,
                group_size=4,
                max_turns=2,
                history_length=1,
                num_updates=NUM_UPDATES,
                model_overrides={"hidden_size": "32", "intermediate_size": "64", "num_layers": "1"},
            ),
            optimizer=optax.sgd(0.1),
            verbose=False,
        )
    ),
    "sft": lambda: lm_sft.make_sft(
        lm_sft.SFTConfig(**LM_TASK, batch_size=16, num_updates=NUM_UPDATES),
        optimizer=optax.sgd(0.1),
        verbose=False,
    ),
    # 16 of the bundled pairs train (all of them each update), 4 held out are scored in collect
    "reward_model": lambda: reward_model.make_reward_model(
        reward_model.RewardModelConfig(
            model="tiny", max_prompt_tokens=32, max_completion_tokens=24, batch_size=16, eval_pairs=4,
            eval_every=2, num_updates=NUM_UPDATES,
        ),
        optimizer=optax.sgd(0.1),
        verbose=False,
    ),
    # off-policy: learning from the first update, 8 x 4 gradient steps' rows split over 8 devices
    "dqn": lambda: dqn.make_dqn(
        dqn.DQNConfig(
            total_frames=3 * 64,
            train_frequency=64,
            gradient_steps=4,
            batch_size=32,
            learning_starts=0,
            eval_episodes=0,
        )
    ),
    "sac": lambda: sac.make_sac(
        sac.SACConfig(
            total_frames=3 * 32,
            train_frequency=32,
            gradient_steps=4,
            batch_size=32,
            learning_starts=0,
            eval_interval=0,
        )
    ),
    "sac_discrete": lambda: sac.make_sac(
        sac.SACConfig(
            env="CartPole-v1",
            total_frames=3 * 32,
            train_frequency=32,
            gradient_steps=4,
            batch_size=32,
            learning_starts=0,
            eval_interval=0,
        )
    ),
    # with a ReaCritic critic: its noise and dropout come from per-row keys of the global
    # row index (the critic contract), so the split over devices must not change them
    "td3": lambda: td3.make_td3(
        td3.TD3Config(
            total_frames=3 * 32,
            train_frequency=32,
            gradient_steps=4,
            batch_size=32,
            learning_starts=0,
            eval_interval=0,
            critic="reacritic",
            reacritic_width=16,
            reacritic_steps=4,
            reacritic_depth=1,
        )
    ),
}


def train(algorithm, mode):
    """`mode`: 'single', 'shard_map', 'pmap' or 'sharded:<mesh shape>'."""
    mode, _, mesh_shape = mode.partition(":")
    composed = compose(algorithm, mode, make_mesh(mesh_shape) if mesh_shape else None)
    key = jax.random.PRNGKey(0)
    if algorithm.host_collect:
        return train_on_host(composed, key)
    return jax.jit(make_train(composed))(key)


def max_diff(p, q):
    return max(
        float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True)
    )


def compare(algorithm, modes=("shard_map", "pmap")):
    results = {}
    for mode in ("single", *modes):
        state, metrics = train(algorithm, mode)
        results[mode] = (state.train_state.params, float(metrics[algorithm.loss_metric][-1]))
    start = compose(algorithm).init(jax.random.PRNGKey(0)).train_state.params
    base = results["single"][0]
    report = {
        mode: {"max_abs_param_diff": max_diff(p, base), "loss": loss} for mode, (p, loss) in results.items()
    }
    total = sum(leaf.nbytes for leaf in jax.tree.leaves(base))
    for mode, (params, _) in results.items():
        if mode.startswith("sharded"):
            report[mode]["fullest_device_param_fraction"] = max(bytes_per_device(params).values()) / total
    report["param_change_vs_start"] = max_diff(base, start)
    return report


def main(names, modes):
    report = {name: compare(CASES[name](), modes) for name in names}
    report["num_devices"] = len(jax.devices())
    print(json.dumps(report))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("algorithms", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--modes", default="shard_map;pmap;sharded:data=2,fsdp=4", help="';'-separated parallel modes"
    )
    args = parser.parse_args()
    main(args.algorithms, tuple(args.modes.split(";")))
