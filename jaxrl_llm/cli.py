"""`jaxrl-llm <algorithm> [--flags]`: every config field is a flag.

jaxrl-llm ppo --env CartPole-v1 --seed 0 --out runs/ppo-cartpole
jaxrl-llm ppo --out runs/ppo-cartpole --resume
jaxrl-llm gigpo --env Maze-v0 --out runs/gigpo-maze
jaxrl-llm lm-agent --algorithm gigpo --model tiny --sft-warmup-steps 200 --out runs/lm-agent
jaxrl-llm ppo --cpu-devices 8 --parallel shard_map --num-envs 8 --out runs/ppo-8
jaxrl-llm sac --env Pendulum-v1 --critic reacritic --reacritic-steps 8 --reacritic-depth 1
jaxrl-llm shiq --model tiny --out runs/shiq          # offline, on the bundled rewarded sample
jaxrl-llm dpo --data-path pairs.jsonl --out runs/dpo
jaxrl-llm reward-model --model tiny --out runs/rm    # Bradley-Terry, on the bundled pairs

Only the configs are imported up front (they import no JAX), so `--help` and flag
errors answer at once; JAX, the algorithms and transformers load when a command runs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from jaxrl_llm.algorithms.configs.ddpg import DDPGConfig
from jaxrl_llm.algorithms.configs.dpo import DPOConfig
from jaxrl_llm.algorithms.configs.dqn import DQNConfig
from jaxrl_llm.algorithms.configs.group_rl import GroupRLConfig
from jaxrl_llm.algorithms.configs.lm_agent import LMAgentConfig
from jaxrl_llm.algorithms.configs.lm_grpo import LMGRPOConfig, SFTConfig
from jaxrl_llm.algorithms.configs.loro import LOROConfig
from jaxrl_llm.algorithms.configs.ppo import PPOConfig
from jaxrl_llm.algorithms.configs.reward_model import RewardModelConfig
from jaxrl_llm.algorithms.configs.sac import SACConfig
from jaxrl_llm.algorithms.configs.shiq import ShiQConfig
from jaxrl_llm.algorithms.configs.td3 import TD3Config
from jaxrl_llm.config import to_dict
from jaxrl_llm.errors import IncompatibleRunError, NonFiniteLossError, TrainingInterrupted

DISPLAY_NAMES = {
    "ppo": "PPO",
    "grpo": "GRPO",
    "gigpo": "GiGPO",
    "lm-grpo": "LM-GRPO",
    "lm-agent": "LM agent",
    "sft": "SFT",
    "shiq": "ShiQ",
    "dpo": "DPO",
    "reward-model": "Reward model",
    "dqn": "DQN",
    "sac": "SAC",
    "td3": "TD3",
    "ddpg": "DDPG",
    "loro": "LORO",
}
EXIT_INTERRUPTED = 130  # the shell's code for a Ctrl-C


@dataclass(frozen=True)
class RunOptions:
    """Where and how a run is written."""

    out: Path = Path("runs/default")
    """Output directory: config.json, metrics.csv, tb/, checkpoints/, learning_curve.png."""
    resume: bool = False
    """Continue the run in --out from its latest checkpoint (the config must match, but a larger
    --total-frames / --num-updates extends a run)."""
    overwrite: bool = False
    """Discard the run already in --out and start a new one there."""
    allow_changes: tuple[str, ...] = ()
    """With --resume: config fields that may differ from the stored run, e.g.
    --allow-changes learning_rate (each change is recorded in config.json's history)."""
    checkpoint_every: int = 25
    """Save a checkpoint at least every this many updates (of at least 4096 frames: updates of
    one env step, SAC's, TD3's and DDPG's, are grouped)..."""
    checkpoint_seconds: float = 120.0
    """...whenever this many seconds have passed since the last one..."""
    checkpoint_overhead: float = 0.2
    """...and as soon as saving would cost at most this fraction of the run time (0: off); LM
    runs, whose updates take far longer than a save, are thus saved after every update."""
    keep_checkpoints: int = 3
    """How many of the latest checkpoints to keep."""
    progress: bool = True
    """Show a progress bar."""
    stall_seconds: float = 120.0
    """A wait on XLA:CPU with the CPU idle for this long is a stall (a known jaxlib lost
    wake-up); 0 disables the watchdog."""
    stall_restarts: int = 2
    """A stalled run restarts itself with --resume (from its last checkpoint) this many times,
    then exits with code 75."""
    compile_cache: str = "~/.cache/jaxrl_llm/xla"
    """Persistent XLA compilation cache ('' disables it): later runs skip most of the compile."""
    parallel: Literal["single", "shard_map", "pmap", "sharded"] = "single"
    """Learning over all devices: data-parallel 'shard_map' (a Mesh) or 'pmap', or 'sharded' (the
    state laid out by the FSDP / tensor rule table on --mesh, one global-view jit); the numbers
    equal 'single' (one device). Batch sizes must divide by the device count (for 'sharded', by
    data x fsdp)."""
    mesh: str = ""
    """Mesh shape for --parallel sharded, e.g. 'data=2,fsdp=4' or 'fsdp=4,tensor=2' (axes data,
    fsdp, tensor; sizes multiply to the device count); default: every device on data."""
    cpu_devices: int = 0
    """On a machine without accelerators, split the CPU into this many XLA devices (to try
    --parallel); 0 keeps one."""

    def __post_init__(self):
        # XLA reads its flags when its backend starts, which importing gymnax already does: the
        # devices must be split (and a multi-process job joined) while the command line is
        # parsed, before any command imports
        use_cpu_devices(self.cpu_devices)
        join_distributed()
        if self.mesh and self.parallel != "sharded":
            raise ValueError(f"--mesh {self.mesh} needs --parallel sharded (got --parallel {self.parallel}).")
        if self.mesh:
            from jaxrl_llm.config import parse_mesh_shape  # JAX-free: XLA_FLAGS are not set yet

            parse_mesh_shape(self.mesh)  # a malformed shape fails before the run directory is touched


def enable_compile_cache(directory: str) -> None:
    """Caches compiled programs on disk so a rerun of the same config starts in ~1 s, not ~5 s."""
    import jax

    if directory:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


Flat = tyro.conf.OmitArgPrefixes


STALL_RESTARTS_ENV = "JAXRL_LLM_STALL_RESTARTS"


def restart_after_stall(argv: list[str], max_restarts: int) -> Callable[[str], None]:
    """The CLI's stall action: replace this process by the same command with --resume (the
    run continues from its last checkpoint, bit-for-bit), at most `max_restarts` times in a
    row, then print the message and exit with code 75."""

    def on_stall(message: str) -> None:
        from jaxrl_llm.training.watchdog import exit_stalled

        done = int(os.environ.get(STALL_RESTARTS_ENV, "0"))
        if done >= max_restarts:
            return exit_stalled(message)
        print(
            f"\nwarning: {message}\nRestarting with --resume ({done + 1} of {max_restarts}).", file=sys.stderr
        )
        sys.stderr.flush()
        os.environ[STALL_RESTARTS_ENV] = str(done + 1)
        args = argv if "--resume" in argv else [*argv, "--resume"]
        os.execv(sys.executable, [sys.executable, "-m", "jaxrl_llm.cli", *args])

    return on_stall


DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAXRL_DISTRIBUTED", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES")


def join_distributed() -> None:
    """Joins a multi-process JAX job (`training.distributed.initialize`) when the environment
    describes one: `JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, TPU
    worker variables, or `JAXRL_DISTRIBUTED=1` (a Cloud TPU VM's own metadata). Every process
    runs the same command; process 0 writes the run directory, all write checkpoints.
    `JAXRL_HEARTBEAT_TIMEOUT` (seconds, default 100) bounds how long the others wait for a dead one."""
    if not any(os.environ.get(name) for name in DISTRIBUTED_ENV):
        return
    from jaxrl_llm.training import distributed  # imports JAX without starting its backend

    # a process that dies is noticed by the others after this many seconds without its
    # heartbeat: they stop with an error instead of waiting in a collective forever
    heartbeat = int(os.environ.get("JAXRL_HEARTBEAT_TIMEOUT", "100"))
    distributed.initialize(heartbeat_timeout_seconds=heartbeat)
    # the runtime's preemption notifier swallows SIGTERM; `kill` (and `timeout`) must still stop
    # a process (its last checkpoint is on disk; --resume on every process continues)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def use_cpu_devices(count: int) -> None:
    """Splits the host CPU into `count` XLA devices; must run before JAX's backend starts."""
    if not count:
        return
    bridge = sys.modules.get("jax._src.xla_bridge")
    if bridge is not None and getattr(bridge, "_backends", None):
        import jax

        if jax.local_device_count() != count:
            raise RuntimeError(
                f"--cpu-devices {count}: JAX already started with {jax.local_device_count()} device(s); set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={count} in the environment instead."
            )
        return
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def _train(
    name: str,
    make_algorithm: Callable[[RunOptions], object],
    config,
    run: RunOptions,
    title: str = "",
    chunk_length: int | None = None,
) -> None:
    """Prepares --out first (before minutes of model loading), then builds and runs the algorithm."""
    from jaxrl_llm.training import run as run_training
    from jaxrl_llm.training.loop import MIN_FRAMES_PER_CHUNK
    from jaxrl_llm.training.run_dir import prepare_run_dir

    run_config = {"algorithm": name, **to_dict(config)}
    import jax

    if jax.process_index() == 0:  # one writer of a multi-process run's directory
        prepare_run_dir(run.out, run_config, run.resume, overwrite=run.overwrite, allow_changes=run.allow_changes)
    enable_compile_cache(run.compile_cache)
    subject = getattr(config, "env", None) or config.model
    run_training(
        make_algorithm(run),
        run_config,
        run.out,
        seed=config.seed,
        resume=run.resume,
        checkpoint_every=run.checkpoint_every,
        max_to_keep=run.keep_checkpoints,
        progress=run.progress,
        title=title or f"{DISPLAY_NAMES[name]} on {subject} (seed {config.seed})",
        checkpoint_seconds=run.checkpoint_seconds,
        checkpoint_overhead=run.checkpoint_overhead,
        stall_seconds=run.stall_seconds,
        on_stall=restart_after_stall(_command_line, run.stall_restarts),
        parallel=run.parallel,
        mesh=run.mesh or None,
        prepare_dir=False,
        min_chunk_frames=MIN_FRAMES_PER_CHUNK,  # one-step updates (SAC, TD3) run in longer chunks
        chunk_length=chunk_length,
    )
    print(f"wrote {run.out}/metrics.csv, learning_curve.png, tb/ and checkpoints/")


def ppo(config: Annotated[PPOConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """Train PPO on a gymnax environment."""
    from jaxrl_llm.algorithms import ppo as ppo_lib

    _train("ppo", lambda _: ppo_lib.make_ppo(config), config, run)


def _group_command(algorithm: str):
    def command(
        config: Annotated[GroupRLConfig, Flat] = GroupRLConfig(algorithm=algorithm),
        run: Annotated[RunOptions, Flat] = RunOptions(),
    ) -> None:
        from jaxrl_llm.algorithms import group_rl

        _train(algorithm, lambda _: group_rl.make_group_rl(config), config, run)

    name = DISPLAY_NAMES[algorithm]
    command.__doc__ = f"Train {name} (critic-free group RL) on a multi-step gymnax environment."
    return command


def lm_grpo_command(config: Annotated[LMGRPOConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """GRPO on a language model with verifiable rewards (arithmetic or GSM8K-format tasks)."""
    from jaxrl_llm.algorithms import lm_grpo
    from jaxrl_llm.training.run_dir import WARMUP_DIR

    def make(run: RunOptions):
        loaded = lm_grpo.setup(config, warmup_dir=run.out / WARMUP_DIR, resume=run.resume)
        return lm_grpo.make_lm_grpo(config, loaded)

    _train("lm-grpo", make, config, run)


def lm_agent_command(config: Annotated[LMAgentConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """A language model acting in a gymnax grid environment for several turns, trained with
    GiGPO, GRPO, RLOO or PPO with a value head (--algorithm); rollout, advantages and update
    compile into one program."""
    from jaxrl_llm.algorithms import lm_agent
    from jaxrl_llm.training.run_dir import WARMUP_DIR

    def make(run: RunOptions):
        loaded = lm_agent.setup(config, warmup_dir=run.out / WARMUP_DIR, resume=run.resume)
        return lm_agent.make_lm_agent(config, loaded)

    name = {"gigpo": "GiGPO", "grpo": "GRPO", "rloo": "RLOO", "ppo": "PPO"}[config.algorithm]
    title = f"{name} LM agent ({config.model}) on {config.env} (seed {config.seed})"
    _train("lm-agent", make, config, run, title=title, chunk_length=1)  # updates take seconds


def sft_command(config: Annotated[SFTConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """Supervised next-token training of a language model on the task's answers."""
    from jaxrl_llm.algorithms import lm_sft

    _train("sft", lambda _: lm_sft.make_sft(config), config, run)


def shiq_command(config: Annotated[ShiQConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """Offline ShiQ (shifted soft Q-learning) of a language model on rewarded completions, a JSON
    Lines file of {"prompt", "completion", "reward"} (default: the bundled arithmetic sample)."""
    from jaxrl_llm.algorithms import offline_lm

    _train("shiq", lambda _: offline_lm.make_shiq(config), config, run, chunk_length=1)


def dpo_command(config: Annotated[DPOConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """Offline DPO of a language model on preference pairs, a JSON Lines file of
    {"prompt", "chosen", "rejected"} (default: the bundled arithmetic sample)."""
    from jaxrl_llm.algorithms import offline_lm

    _train("dpo", lambda _: offline_lm.make_dpo(config), config, run, chunk_length=1)


def reward_model_command(config: Annotated[RewardModelConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """A Bradley-Terry reward model (the language model plus a scalar head on the last token) on
    preference pairs, a JSON Lines file of {"prompt", "chosen", "rejected"} (default: the bundled
    arithmetic sample); --eval-pairs of them are held out for eval_accuracy."""
    from jaxrl_llm.algorithms import reward_model

    _train("reward-model", lambda _: reward_model.make_reward_model(config), config, run, chunk_length=1)


def dqn(config: Annotated[DQNConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """Train DQN / Double DQN (--double-q) on a gymnax environment with discrete actions."""
    from jaxrl_llm.algorithms import dqn as dqn_lib

    _train("dqn", lambda _: dqn_lib.make_dqn(config), config, run)


def sac(config: Annotated[SACConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """Train SAC (continuous or discrete actions, read from the environment)."""
    from jaxrl_llm.algorithms import sac as sac_lib

    _train("sac", lambda _: sac_lib.make_sac(config), config, run)


def td3(config: Annotated[TD3Config, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """Train TD3 on a gymnax environment with continuous actions."""
    from jaxrl_llm.algorithms import td3 as td3_lib

    _train("td3", lambda _: td3_lib.make_td3(config), config, run)


def ddpg(config: Annotated[DDPGConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """Train DDPG (TD3's code with one critic, no target smoothing, no policy delay) on a
    gymnax environment with continuous actions."""
    from jaxrl_llm.algorithms import ddpg as ddpg_lib

    _train("ddpg", lambda _: ddpg_lib.make_ddpg(config), config, run)


def loro(config: Annotated[LOROConfig, Flat], run: Annotated[RunOptions, Flat]) -> None:
    """LORO (arXiv 2505.10861): a prior (--prior heuristic, or a language model such as
    smollm2-135m-instruct) plays episodes; Double DQN / SAC pretrains on them offline, then
    trains online; compared with online RL, Mix, the prior and random (--arms). Writes prior/,
    one run per trained arm, summary.json/.md (cumulative evaluation returns), comparison.png."""
    from jaxrl_llm.algorithms import loro as loro_lib

    enable_compile_cache(run.compile_cache)
    loro_lib.run_experiment(
        config,
        run.out,
        resume=run.resume,
        overwrite=run.overwrite,
        allow_changes=run.allow_changes,
        progress=run.progress,
        checkpoint_every=run.checkpoint_every,
        max_to_keep=run.keep_checkpoints,
        checkpoint_seconds=run.checkpoint_seconds,
        checkpoint_overhead=run.checkpoint_overhead,
        stall_seconds=run.stall_seconds,
        on_stall=restart_after_stall(_command_line, run.stall_restarts),
        parallel=run.parallel,
        mesh=run.mesh or None,
    )
    print(f"wrote {run.out}/summary.md, summary.json, comparison.png, prior/ and one run per trained arm")


COMMANDS = {
    "ppo": ppo,
    "grpo": _group_command("grpo"),
    "gigpo": _group_command("gigpo"),
    "lm-grpo": lm_grpo_command,
    "lm-agent": lm_agent_command,
    "sft": sft_command,
    "shiq": shiq_command,
    "dpo": dpo_command,
    "reward-model": reward_model_command,
    "dqn": dqn,
    "sac": sac,
    "td3": td3,
    "ddpg": ddpg,
    "loro": loro,
}


_command_line: list[str] = []  # this invocation's arguments, for a restart after a stall


def main(argv: list[str] | None = None) -> None:
    global _command_line
    _command_line = list(sys.argv[1:] if argv is None else argv)
    try:
        tyro.extras.subcommand_cli_from_dict(COMMANDS, args=argv, prog="jaxrl-llm")
    except (IncompatibleRunError, NonFiniteLossError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingInterrupted as interrupted:
        print(f"\n{interrupted}", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:
        print("\ninterrupted before training started; nothing new was saved.", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


if __name__ == "__main__":
    main()
