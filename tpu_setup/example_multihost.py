"""Data-parallel PPO on every host of a TPU slice (or locally, as one CPU process).

Run the same command on every worker (tpu_setup/launch.sh does it):

    python tpu_setup/example_multihost.py --steps 20 --global-envs 64

What happens on each host:
1. `distributed.initialize()` joins the JAX runtime of the slice (no-op on one CPU process).
2. A 1-D `data` mesh spans all *global* devices (every host's chips).
3. Parameters are initialised from the same seed on every host, then replicated on the mesh.
4. Each update, every host steps only its own envs (`host_local_slice` of the global
   env count) with its own PRNG stream, computes GAE locally, and the host-local
   `[envs_per_host, T, ...]` batches are joined into one global `[global_envs, T, ...]`
   `jax.Array` sharded on `data` (`global_batch_from_host_local`).
5. `build_step(ppo_update, "shard_map", mesh)` runs the PPO epochs with gradients
   averaged over all devices of all hosts; the new parameters are identical everywhere.
6. Only process 0 prints.

Locally: `python tpu_setup/example_multihost.py --steps 2` (add
`XLA_FLAGS=--xla_force_host_platform_device_count=4` to try 4 CPU devices).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import jax
import numpy as np

from jaxrl_llm.training import distributed

# Before anything else touches JAX's backend.
distributed.initialize()

from jaxrl_llm import envs
from jaxrl_llm.algorithms import ppo
from jaxrl_llm.rollout import reset, run_steps
from jaxrl_llm.training import build_step, data_mesh
from jaxrl_llm.training.train_state import create as create_train_state


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="PPO updates to run")
    parser.add_argument(
        "--global-envs",
        type=int,
        default=None,
        help="environments across all hosts (default: 8 per global device)",
    )
    parser.add_argument("--num-steps", type=int, default=32, help="rollout length T per update")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    info = distributed.process_info()
    log = print if info.is_coordinator else (lambda *a, **k: None)
    print(f"[process {info.process_index}/{info.process_count}] {info}", flush=True)

    global_envs = args.global_envs or 8 * info.device_count
    config = ppo.PPOConfig(
        env=args.env,
        seed=args.seed,
        num_envs=global_envs,
        num_steps=args.num_steps,
        num_minibatches=4,
        update_epochs=2,
        total_frames=max(args.steps, 1) * global_envs * args.num_steps,
    )
    rows = distributed.host_local_slice(global_envs)  # this host's envs
    local_envs = rows.stop - rows.start

    mesh = data_mesh()  # all global devices on `data`
    env, env_params = envs.make_configured(config.env, config.env_kwargs, config.max_episode_steps)
    network = ppo.make_network(config, env, env_params)
    tx = ppo.make_optimizer(config)
    policy = ppo.make_policy(network)

    # Same seed on every host -> identical initial parameters, then replicated on the mesh.
    key = jax.random.PRNGKey(config.seed)
    key, params_key = jax.random.split(key)
    obs, _ = env.reset(params_key, env_params)
    params = network.init(params_key, np.asarray(obs)[None])
    state = create_train_state(params, tx)
    state = distributed.replicate_from_host(state, mesh)

    # Host-local rollout: own envs, own PRNG stream (folded with the process index).
    host_key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), info.process_index)
    host_key, env_key = jax.random.split(host_key)
    rollout_state = reset(env_key, env, env_params, local_envs)

    @jax.jit
    def collect(params, rollout_state, key):
        traj, rollout_state = run_steps(key, env, env_params, policy, params, rollout_state, config.num_steps)
        _, next_v = network.apply(params, traj.next_obs.reshape(-1, *traj.next_obs.shape[2:]))
        batch = ppo.collect_batch(traj, next_v.reshape(traj.reward.shape), config)  # [n_local, T, ...]
        return batch, rollout_state, traj.reward.sum() / local_envs

    step = build_step(partial(ppo.ppo_update, network=network, tx=tx, config=config), "shard_map", mesh)

    log(
        f"mesh {dict(mesh.shape)} | global envs {global_envs} | envs per host {local_envs} "
        f"(rows {rows.start}:{rows.stop} on process 0) | T {config.num_steps}",
        flush=True,
    )
    for update in range(args.steps):
        start = time.perf_counter()
        host_params = jax.device_get(state.params)  # replicated -> this host's copy
        host_key, rollout_key = jax.random.split(host_key)
        local_batch, rollout_state, local_reward = collect(host_params, rollout_state, rollout_key)
        batch = distributed.global_batch_from_host_local(local_batch, mesh)  # [global_envs, T, ...]
        # The update key must be the same on every host: derive it from the update index.
        shared_key = distributed.replicate_from_host(jax.random.fold_in(key, update), mesh)
        state, metrics = step(state, batch, shared_key)
        loss = float(metrics["loss"])  # replicated scalar; also bounds the steps in flight
        log(
            f"update {update + 1}/{args.steps} loss {loss:.4f} "
            f"reward/env (process 0) {float(local_reward):.2f} ({time.perf_counter() - start:.2f}s)",
            flush=True,
        )
    log("done", flush=True)


if __name__ == "__main__":
    main()
