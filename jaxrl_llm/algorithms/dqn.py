"""DQN (Mnih et al. 2015) and Double DQN (van Hasselt et al. 2016) on gymnax environments.

`make_dqn(config, q_network=None, prefill=None)` is the algorithm (see
`training.algorithm`); `make_train(config)(key)` runs the whole loop in one jitted
function and can be `jax.vmap`ped over keys.

One update:
  collect: `train_frequency` epsilon-greedy steps of `num_envs` environments, their
    transitions added to a FIFO replay buffer (`rollout.replay`), then `gradient_steps`
    batches of `batch_size` transitions drawn uniformly, laid out `[batch_size,
    gradient_steps, ...]`; a greedy evaluation every `eval_every` updates.
  learn: `gradient_steps` gradient steps, one per column of the batch, on the TD loss

      y = r + gamma * (1 - terminated) * Q_target(s', a*),
      a* = argmax_a Q_target(s', a)   (DQN)     or   argmax_a Q_online(s', a)   (Double DQN)
      L  = mean_i loss(Q_online(s_i, a_i) - y_i),   loss = Huber (delta 1) or squared error

    with the target network moved towards the online one every `target_update_interval`
    gradient steps (a hard copy when tau = 1, Polyak averaging otherwise). A truncated
    step bootstraps: `next_obs` precedes the auto-reset. Gradients are averaged over
    `axis_name`, so the batch rows split across devices give the single-device update.

Before `learning_starts` frames (and while the buffer holds fewer than `batch_size`
transitions) actions are uniform and `learn` leaves the state unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxrl_llm import envs
from jaxrl_llm.algorithms.off_policy import polyak_update
from jaxrl_llm.algorithms.configs.dqn import DQNConfig
from jaxrl_llm.models import MLP
from jaxrl_llm.rollout import (
    RecentReturns,
    RolloutState,
    episode_return_mean,
    recent_returns_add,
    recent_returns_init,
    recent_returns_mean,
    reset,
    run_steps,
)
from jaxrl_llm.rollout.evaluate import evaluate_policy
from jaxrl_llm.rollout.replay import (
    Transition,
    example_transition,
    make_replay_buffer,
    transitions_from_trajectory,
)
from jaxrl_llm.training import Algorithm, reduce_mean
from jaxrl_llm.training import make_train as make_train_from_algorithm
from jaxrl_llm.training.optimizers import clipped_adam
from jaxrl_llm.training.parallel import Mode
from jaxrl_llm.training.train_state import TrainState, apply_gradients


# ----------------------------------------------------------------------------- pure pieces


def q_learning_target(
    reward: jax.Array,
    terminated: jax.Array,
    next_q_target: jax.Array,
    gamma: float,
    next_q_online: jax.Array | None = None,
) -> jax.Array:
    """One-step TD targets `y[B] = r + gamma * (1 - terminated) * Q_target(s', a*)`.

    Args:
      reward: `[B]` rewards.
      terminated: `[B]` bool, True where `s'` is terminal (no bootstrap; a time-limit
        truncation is not terminal).
      next_q_target: `[B, A]` target-network values of `s'`.
      gamma: discount.
      next_q_online: `[B, A]` online-network values of `s'` for Double DQN, which picks
        `a* = argmax next_q_online` and evaluates it with the target network; None for
        DQN's `max_a next_q_target`.
    """
    if next_q_online is None:
        next_value = next_q_target.max(-1)
    else:
        best = jnp.argmax(next_q_online, -1)
        next_value = jnp.take_along_axis(next_q_target, best[:, None], -1)[:, 0]
    bootstrap = 1.0 - terminated.astype(next_value.dtype)
    return jax.lax.stop_gradient(reward + gamma * bootstrap * next_value)


def td_loss(q_taken: jax.Array, target: jax.Array, loss: str = "huber") -> jax.Array:
    """Elementwise TD loss `[B]` of `delta = q_taken - target`.

    'huber': `0.5 delta^2` if `|delta| <= 1` else `|delta| - 0.5` (PyTorch's smooth L1 with
    beta 1, SB3's DQN loss); 'mse': `delta^2`.
    """
    delta = q_taken - target
    if loss == "huber":
        return optax.huber_loss(delta, delta=1.0)
    if loss == "mse":
        return jnp.square(delta)
    raise ValueError(f"td_loss: loss={loss!r} is invalid; use 'huber' or 'mse'.")


def linear_epsilon(
    frame: jax.Array, initial: float, final: float, decay_frames: float, learning_starts: int = 0
) -> jax.Array:
    """epsilon at `frame`: 1 before `learning_starts`, then linear from `initial` (frame 0)
    to `final` (frame `decay_frames`), constant after (SB3's linear schedule)."""
    progress = jnp.clip(jnp.asarray(frame, jnp.float32) / max(decay_frames, 1e-8), 0.0, 1.0)
    epsilon = initial + (final - initial) * progress
    return jnp.where(jnp.asarray(frame) < learning_starts, 1.0, epsilon).astype(jnp.float32)


# ----------------------------------------------------------------------------- state and network


@struct.dataclass
class TargetTrainState:
    """A `TrainState` plus target-network parameters; `step` counts gradient steps."""

    step: jax.Array
    params: Any
    opt_state: Any
    target_params: Any


def create_train_state(params: Any, tx: optax.GradientTransformation) -> TargetTrainState:
    """Step 0, fresh optimiser state, target = a copy of `params`."""
    return TargetTrainState(
        jnp.zeros((), jnp.int32), params, tx.init(params), jax.tree.map(jnp.array, params)
    )


def apply_gradients_with_target(
    state: TargetTrainState, grads: Any, tx: optax.GradientTransformation
) -> TargetTrainState:
    updated = apply_gradients(TrainState(state.step, state.params, state.opt_state), grads, tx)
    return state.replace(step=updated.step, params=updated.params, opt_state=updated.opt_state)


class QNetwork(nn.Module):
    """An MLP `obs[B, ...] -> Q[B, num_actions]` over the flattened observation."""

    num_actions: int
    hidden_sizes: Sequence[int] = (256, 256)
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        return MLP(self.hidden_sizes, self.num_actions, self.activation, 1.0, name="q")(x)


def num_discrete_actions(env, env_params, env_id: str = "") -> int:
    space = env.action_space(env_params)
    if not hasattr(space, "n"):
        raise ValueError(
            f"DQN needs a discrete action space, but {env_id or type(env).__name__} has "
            f"{type(space).__name__}: use SAC or TD3 for continuous actions."
        )
    return int(space.n)


def greedy_action(q_network: Any) -> Callable[[Any, Any, jax.Array], jax.Array]:
    """`act(params, obs[B, ...], key) -> argmax_a Q(obs, a)` `[B]` int32 (for evaluation)."""

    def act(params, obs, key):
        return jnp.argmax(q_network.apply(params, obs), -1).astype(jnp.int32)

    return act


def epsilon_greedy_policy(q_network: Any, num_actions: int):
    """A `rollout.Policy` over `(params, epsilon)`: per env, a uniform action with
    probability epsilon, else the greedy one; log-probs are zeros."""

    def policy(policy_params, obs, key):
        params, epsilon = policy_params
        greedy = jnp.argmax(q_network.apply(params, obs), -1).astype(jnp.int32)
        explore_key, action_key = jax.random.split(key)
        explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
        random_action = jax.random.randint(action_key, greedy.shape, 0, num_actions, jnp.int32)
        action = jnp.where(explore, random_action, greedy)
        return action, jnp.zeros(greedy.shape, jnp.float32), {}

    return policy


# ----------------------------------------------------------------------------- learn


@struct.dataclass
class DQNBatch:
    """One update's replayed data, leaves `[batch_size, gradient_steps, ...]` (rows first,
    so data parallelism splits rows): column `j` is gradient step `j`'s batch.

    `active[B, K]` (all equal): False before learning starts, when `learn` is a no-op.
    """

    transitions: Transition
    active: jax.Array


def offline_batch(transitions: Transition) -> DQNBatch:
    """Transitions `[B, K, ...]` as an always-active `DQNBatch` (for `pretrain_offline`)."""
    return DQNBatch(transitions, jnp.ones(transitions.reward.shape, bool))


def dqn_loss(
    params: Any, target_params: Any, transitions: Transition, *, q_network: Any, config: DQNConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean TD loss of a `[B]` batch of transitions and its metrics."""
    batch_size = transitions.reward.shape[0]
    if config.double_q:  # one forward pass of the online network over s and s'
        both = jax.tree.map(lambda o, n: jnp.concatenate([o, n]), transitions.obs, transitions.next_obs)
        q_both = q_network.apply(params, both)
        q, next_q_online = q_both[:batch_size], q_both[batch_size:]
    else:
        q, next_q_online = q_network.apply(params, transitions.obs), None
    next_q_target = q_network.apply(target_params, transitions.next_obs)
    target = q_learning_target(
        transitions.reward, transitions.terminated, next_q_target, config.gamma, next_q_online
    )
    q_taken = jnp.take_along_axis(q, transitions.action.astype(jnp.int32)[:, None], -1)[:, 0]
    loss = td_loss(q_taken, target, config.loss).mean()
    return loss, {"loss": loss, "q_mean": q_taken.mean(), "td_abs_mean": jnp.abs(q_taken - target).mean()}


def dqn_update(
    state: TargetTrainState,
    batch: DQNBatch,
    key: jax.Array,
    axis_name: str | None = None,
    *,
    q_network: Any,
    tx: optax.GradientTransformation,
    config: DQNConfig,
) -> tuple[TargetTrainState, dict[str, jax.Array]]:
    """`gradient_steps` DQN steps, one per column of `batch` (the `learn` of `make_dqn`).

    A no-op returning zero metrics when `batch.active` is False. Deterministic (`key` is
    unused). Metrics are means over the gradient steps: `loss`, `q_mean`, `td_abs_mean`,
    `grad_norm` (before clipping), and `gradient_steps`, the total taken so far.
    """
    del key
    columns = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), batch.transitions)  # [K, B, ...]
    loss_fn = partial(dqn_loss, q_network=q_network, config=config)

    def gradient_step(state: TargetTrainState, transitions: Transition):
        grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, state.target_params, transitions)
        grads = reduce_mean(grads, axis_name)
        metrics = reduce_mean({**metrics, "grad_norm": optax.tree.norm(grads)}, axis_name)
        state = apply_gradients_with_target(state, grads, tx)
        refresh = state.step % config.target_update_interval == 0
        moved = polyak_update(state.params, state.target_params, config.tau)
        target = jax.tree.map(lambda m, t: jnp.where(refresh, m, t), moved, state.target_params)
        return state.replace(target_params=target), metrics

    def learn(state):
        state, metrics = jax.lax.scan(gradient_step, state, columns)
        return state, jax.tree.map(jnp.mean, metrics)

    def skip(state):
        _, shapes = jax.eval_shape(learn, state)
        return state, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), shapes)

    state, metrics = jax.lax.cond(batch.active.any(), learn, skip, state)
    return state, {**metrics, "gradient_steps": state.step.astype(jnp.float32)}


# ----------------------------------------------------------------------------- the algorithm


@struct.dataclass
class DQNCollectState:
    rollout_state: RolloutState
    buffer_state: Any  # the replay buffer (flashbax state)
    recent_returns: RecentReturns  # the last 100 finished training episodes, for logging
    update: jax.Array  # updates collected so far (int32)


def make_q_network(config: DQNConfig, env, env_params) -> QNetwork:
    return QNetwork(
        num_discrete_actions(env, env_params, config.env), tuple(config.hidden_sizes), config.activation
    )


def make_optimizer(config: DQNConfig) -> optax.GradientTransformation:
    """Adam after global-norm clipping; the learning rate decays linearly to 0 over
    `num_updates * gradient_steps` gradient steps when `anneal_lr` (offline pretraining
    steps count too: turn `anneal_lr` off to pretrain with the same optimiser)."""
    learning_rate = config.learning_rate
    if config.anneal_lr:
        learning_rate = optax.linear_schedule(learning_rate, 0.0, config.num_updates * config.gradient_steps)
    return clipped_adam(learning_rate, config.max_grad_norm)


def make_dqn(config: DQNConfig, q_network: Any = None, prefill: Transition | None = None) -> Algorithm:
    """DQN / Double DQN as an `Algorithm` (see the module docstring).

    Args:
      config: the hyperparameters.
      q_network: any `init(key, obs[1, ...]) -> params`, `apply(params, obs[B, ...]) ->
        Q[B, num_actions]` pair (a Flax module qualifies); by default `QNetwork`, an MLP
        of `config.hidden_sizes`.
      prefill: transitions `[n, ...]` (e.g. an offline dataset) written into the replay
        buffer at `init`, before any online frame; only the newest `buffer_size` are
        kept. They are compiled into `init` as constants. Set `learning_starts=0` to
        learn from them from the first update.

    Metrics per update: from collect `episode_return_mean` (NaN when no training episode
    ended), `episode_return_last100`, `episodes`, `epsilon`, `buffer_size` and, when
    `eval_episodes > 0`, `eval_return_mean` (greedy return of the parameters the update
    starts from, over `eval_episodes` episodes; NaN between evaluations); from learn
    `loss`, `q_mean`, `td_abs_mean`, `grad_norm`, `gradient_steps`.
    """
    env, env_params = envs.make_configured(config.env, config.env_kwargs, config.max_episode_steps)
    num_actions = num_discrete_actions(env, env_params, config.env)
    q_network = q_network or make_q_network(config, env, env_params)
    tx = make_optimizer(config)
    policy = epsilon_greedy_policy(q_network, num_actions)
    act = greedy_action(q_network)
    buffer = make_replay_buffer(
        capacity=config.buffer_size,
        min_size=min(config.batch_size, config.buffer_size),
        sample_batch_size=config.batch_size,
        add_batch_size=config.frames_per_update,
        prioritized=False,
    )
    decay_frames = config.exploration_fraction * config.total_frames
    eval_steps = int(getattr(env_params, "max_steps_in_episode", 1000))
    num_updates = config.num_updates

    def init(key: jax.Array) -> tuple[TargetTrainState, DQNCollectState]:
        params_key, env_key = jax.random.split(key)
        obs, _ = env.reset(env_key, env_params)
        obs = jax.tree.map(jnp.asarray, obs)
        params = q_network.init(params_key, jax.tree.map(lambda x: x[None], obs))
        rollout_state = reset(env_key, env, env_params, config.num_envs)
        buffer_state = buffer.init(example_transition(obs, jnp.zeros((), jnp.int32)))
        if prefill is not None:
            buffer_state = buffer.prefill(buffer_state, prefill)
        collect_state = DQNCollectState(rollout_state, buffer_state, recent_returns_init(100), jnp.int32(0))
        return create_train_state(params, tx), collect_state

    def collect(state: DQNCollectState, params, key: jax.Array):
        rollout_key, sample_key, eval_key = jax.random.split(key, 3)
        frame = state.update * config.frames_per_update
        epsilon = linear_epsilon(
            frame,
            config.exploration_initial_eps,
            config.exploration_final_eps,
            decay_frames,
            config.learning_starts,
        )
        trajectory, rollout_state = run_steps(
            rollout_key,
            env,
            env_params,
            policy,
            (params, epsilon),
            state.rollout_state,
            config.train_frequency,
        )
        transitions = transitions_from_trajectory(trajectory)
        transitions = transitions.replace(action=transitions.action.astype(jnp.int32))
        buffer_state = buffer.add(state.buffer_state, transitions)
        sample_keys = jax.random.split(sample_key, config.gradient_steps)
        drawn = jax.vmap(buffer.sample, in_axes=(None, 0))(buffer_state, sample_keys)  # [K, B, ...]
        drawn = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), drawn)  # [B, K, ...]
        frames_after = frame + config.frames_per_update
        active = (frames_after > config.learning_starts) & buffer.can_sample(buffer_state)
        batch = DQNBatch(drawn, jnp.broadcast_to(active, (config.batch_size, config.gradient_steps)))
        recent = recent_returns_add(state.recent_returns, trajectory)
        metrics = {
            "episode_return_mean": episode_return_mean(trajectory),
            "episode_return_last100": recent_returns_mean(recent),
            "episodes": trajectory.episode_ended.sum().astype(jnp.float32),
            "epsilon": epsilon,
            "buffer_size": buffer.size(buffer_state).astype(jnp.float32),
        }
        if config.eval_episodes:
            evaluate_now = (state.update % config.eval_every == 0) | (state.update == num_updates - 1)
            metrics["eval_return_mean"] = jax.lax.cond(
                evaluate_now,
                lambda: evaluate_policy(
                    eval_key, env, env_params, act, params, config.eval_episodes, eval_steps
                ).mean(),
                lambda: jnp.float32(jnp.nan),
            )
        next_state = DQNCollectState(rollout_state, buffer_state, recent, state.update + 1)
        return next_state, batch, metrics

    return Algorithm(
        init,
        collect,
        partial(dqn_update, q_network=q_network, tx=tx, config=config),
        num_updates,
        config.frames_per_update,
        progress_metric="eval_return_mean" if config.eval_episodes else "episode_return_last100",
        raw_progress_metric="episode_return_last100" if config.eval_episodes else "episode_return_mean",
    )


def make_train(config: DQNConfig, parallel: Mode = "single", q_network: Any = None):
    """`train(key) -> (final LoopState, metrics [num_updates])`, jittable and vmappable."""
    return make_train_from_algorithm(make_dqn(config, q_network), parallel)
