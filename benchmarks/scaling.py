"""Weak and strong scaling of PPO's and LM-GRPO's learn step under `--parallel sharded`, on 1, 2,
4 and 8 forced CPU devices, and a model on paper of the LM-GRPO step on a TPU v5e slice.

Each device count runs in its own subprocess (`XLA_FLAGS=--xla_force_host_platform_device_count=N`
must be set before jax is imported). In it, for every mesh (default: `data=N`, and for N >= 4 the
FSDP meshes `fsdp=N` and, at N = 8, `data=2,fsdp=4`) and both scalings, the learn step is compiled
exactly as `training.parallel.build_step(..., "sharded", mesh)` compiles it (`jax.jit` of the
single-device step, the state laid out by `training.sharding.tree_shardings`, the batch's rows
split over the mesh's batch axes, metrics replicated), then timed.

  * PPO: `ppo.make_ppo` on CartPole-v1 (MLP 64x64 actor and critic), the batch of one real
    `collect`; `--ppo-envs` environments x `--ppo-steps` steps, 2 epochs x 2 minibatches
    (4 gradient steps per learn step).
  * LM-GRPO: `lm_grpo.make_lm_grpo` on the `tiny` model (~1M parameters, random init, clipped Adam,
    remat on, as the config defaults), its learn step `grpo_step` on a fixed synthetic
    `CompletionBatch` of `--lm-rows` rows x (`--prompt-tokens` + `--completion-tokens`) tokens,
    with the base weights as the frozen argument (as `training.compose` passes them).

Strong scaling keeps the global batch fixed; weak scaling multiplies it by N (at N = 1 the two
are the same program, run once).

The step time is reported but is MEANINGLESS in absolute terms: N forced "devices" share the 2
cores of this host, so N = 8 runs 8 partitions on 2 cores. What does mean something:

  * per-device bytes of the placed train state (parameters + optimizer state), from
    `sharding.bytes_per_device` (max over devices), and XLA's temporary buffers per device
    (`compiled.memory_analysis().temp_size_in_bytes`);
  * collective bytes per step, parsed from the compiled (SPMD-partitioned, per-device) HLO,
    `jit(...).lower(...).compile().as_text()`: every all-reduce, all-gather, reduce-scatter,
    all-to-all and collective-permute (the `-done` half of async pairs), each counted with the
    trip count of the while loops around it (`known_trip_count`; `lax.scan`s of epochs,
    minibatches, micro-batches). Two numbers: **result bytes** (the sum of each collective's
    result shape, per device: for an all-reduce the reduced array, for an all-gather the
    gathered array, for a reduce-scatter the scattered shard) and **ring bytes**, the bytes
    each device sends with ring algorithms on its replica group of size n: all-reduce
    2(n-1)/n x result, all-gather (n-1)/n x result, reduce-scatter (n-1) x result,
    all-to-all (n-1)/n x result, collective-permute 1 x result;
  * matmul FLOPs per device per step: 2 x |result| x |contracted dims| of every `dot` in the
    compiled HLO, with the same trip counts. (`compiled.cost_analysis()["flops"]` is shown too:
    XLA counts each loop body once, so it undercounts scanned steps.)

Cross-check printed with the table: under `data=N` the all-reduce result bytes per gradient step
should equal the gradient bytes (= parameter bytes, float32) plus a few scalars.

The paper model (printed and appended with the table) turns the measured ratios (collective bytes
per parameter byte, matmul FLOPs against 8 x params x tokens) into a step time on a TPU v5e slice;
its assumptions are written out with it.

    python benchmarks/scaling.py                   # 1, 2, 4, 8 devices; appends to RESULTS.md
    python benchmarks/scaling.py --quick --no-write
    python benchmarks/scaling.py --devices 1 8 --reps 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import append_to_section  # benchmarks/ is the script's folder

from jaxrl_llm.training.hlo_accounting import hlo_accounting

HEADER = "## Scaling (benchmarks/scaling.py)"


# ----------------------------------------------------------------------------- worker (one N)


def ppo_case(num_envs: int, args):
    import jax

    from jaxrl_llm.algorithms import ppo

    config = ppo.PPOConfig(
        num_envs=num_envs,
        num_steps=args.ppo_steps,
        num_minibatches=2,
        update_epochs=2,
        total_frames=num_envs * args.ppo_steps,
    )
    algorithm = ppo.make_ppo(config)
    train_state, collect_state = algorithm.init(jax.random.PRNGKey(0))
    _, batch, _ = jax.jit(algorithm.collect)(collect_state, train_state.params, jax.random.PRNGKey(1))
    info = {
        "grad_steps": config.update_epochs * config.num_minibatches,
        "rows": num_envs * args.ppo_steps,
        "batch": f"{num_envs} envs x {args.ppo_steps} steps",
    }
    return algorithm.learn, train_state, None, batch, info


_LM_CACHE: dict = {}


def lm_case(rows: int, args):
    import jax
    import jax.numpy as jnp

    from jaxrl_llm.algorithms import lm_grpo

    if "alg" not in _LM_CACHE:
        config = lm_grpo.LMGRPOConfig(
            model="tiny",
            arithmetic_kinds=("add",),
            max_operand=9,
            max_prompt_tokens=args.prompt_tokens,
            prompts_per_update=1,
            group_size=2,
            max_new_tokens=args.completion_tokens,
            num_updates=1,
        )
        run = lm_grpo.setup(config, verbose=False)
        _LM_CACHE["alg"] = lm_grpo.make_lm_grpo(config, run, verbose=False)
        _LM_CACHE["model"] = run.model_config
    algorithm, model = _LM_CACHE["alg"], _LM_CACHE["model"]
    train_state, _ = algorithm.init(jax.random.PRNGKey(0))
    p, c = args.prompt_tokens, args.completion_tokens
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
    batch = lm_grpo.CompletionBatch(
        tokens=jax.random.randint(k1, (rows, p + c), 1, model.vocab_size, dtype=jnp.int32),
        mask=jnp.ones((rows, p + c), bool),
        completion_mask=jnp.ones((rows, c), bool),
        old_log_prob=-2.0 + 0.1 * jax.random.normal(k2, (rows, c)),
        ref_log_prob=jnp.full((rows, c), -2.0),
        advantage=jax.random.normal(k3, (rows,)),
    )
    info = {
        "grad_steps": 1,
        "rows": rows,
        "tokens": rows * (p + c),
        "batch": f"{rows} rows x {p}+{c} tokens",
        "layers": model.num_layers,
        "hidden": model.hidden_size,
        "intermediate": model.intermediate_size,
        "seq": p + c,
    }
    return algorithm.learn, train_state, algorithm.frozen, batch, info


def worker(args) -> dict:
    import jax
    import numpy as np

    from jaxrl_llm.training.parallel import sharded_program
    from jaxrl_llm.training.sharding import bytes_per_device, make_mesh

    n = jax.device_count()
    assert n == args.worker, (n, args.worker)
    meshes = [m for m in args.meshes.split(";") if _mesh_size(m.replace("N", str(n))) == n] if n > 1 else ["data=1"]
    meshes = list(dict.fromkeys(m.replace("N", str(n)) for m in meshes if n >= 4 or "fsdp" not in m))  # FSDP from N = 4
    scalings = ["strong"] if n == 1 else ["strong", "weak"]
    cases = []
    for algo in args.algos:
        for mesh_shape in meshes:
            for scaling in scalings:
                factor = n if scaling == "weak" else 1
                if algo == "ppo":
                    fn, state, frozen, batch, info = ppo_case(args.ppo_envs * factor, args)
                else:
                    fn, state, frozen, batch, info = lm_case(args.lm_rows * factor, args)
                cases.append(dict(algo=algo, mesh=mesh_shape, scaling=scaling, fn=fn, state=state, frozen=frozen, batch=batch, info=info))

    results = []
    for case in cases:
        mesh = make_mesh(case["mesh"])
        train_state, frozen = case["state"], case["frozen"]
        # not donated: the timed reps below run the step on the same state again
        program, in_shardings = sharded_program(case["fn"], mesh, train_state, case["batch"], frozen)
        placed = jax.device_put((train_state, case["batch"], jax.random.PRNGKey(5), frozen), in_shardings)
        t0 = time.perf_counter()
        compiled = program.lower(*placed).compile()
        compile_s = time.perf_counter() - t0
        text = compiled.as_text()
        hlo = hlo_accounting(text, n)
        try:
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            xla_flops = float(cost.get("flops", float("nan")))
        except Exception:  # noqa: BLE001 (not every backend provides it)
            xla_flops = float("nan")
        try:
            temp_bytes = int(compiled.memory_analysis().temp_size_in_bytes)
        except Exception:  # noqa: BLE001
            temp_bytes = -1
        per_device = bytes_per_device(placed[0])
        params_bytes = sum(x.nbytes for x in jax.tree.leaves(train_state.params))
        results.append(
            {
                "algo": case["algo"],
                "mesh": case["mesh"],
                "scaling": case["scaling"],
                **case["info"],
                "num_devices": n,
                "param_count": sum(int(np.size(x)) for x in jax.tree.leaves(train_state.params)),
                "param_bytes": params_bytes,
                "train_state_bytes": sum(x.nbytes for x in jax.tree.leaves(train_state)),
                "train_state_bytes_per_device_max": max(per_device.values()),
                "frozen_bytes_per_device_max": max(bytes_per_device(placed[3]).values()) if frozen is not None else 0,
                "temp_bytes_per_device": temp_bytes,
                "xla_cost_analysis_flops": xla_flops,
                "compile_s": compile_s,
                **hlo,
                "_compiled": compiled,
                "_placed": placed,
            }
        )
        print(f"[N={n}] compiled {case['algo']} {case['mesh']} {case['scaling']} in {compile_s:.1f} s", file=sys.stderr, flush=True)
    # timed reps, alternating the cases (the machine is shared); each step blocks (a bounded
    # number of steps in flight: see training/parallel.py's note on forced CPU devices)
    times: list[list[float]] = [[] for _ in results]
    for _ in range(args.reps + 1):
        for i, r in enumerate(results):
            t0 = time.perf_counter()
            out = r["_compiled"](*r["_placed"])
            jax.block_until_ready(out)
            times[i].append(time.perf_counter() - t0)
    for r, t in zip(results, times):
        del r["_compiled"], r["_placed"]
        r["step_s_all"] = t[1:]  # the first call of each is untimed (warm-up)
        r["step_s"] = statistics.median(t[1:])
    return {"num_devices": n, "results": results}


def _mesh_size(shape: str) -> int:
    return math.prod(int(part.split("=")[1]) for part in shape.split(",") if "=" in part)


# ----------------------------------------------------------------------------- paper model

# https://docs.cloud.google.com/tpu/docs/v5e (Cloud TPU v5e: system architecture table)
V5E = {
    "peak_bf16_flops": 197e12,  # "Peak compute per chip (bf16): 197 TFLOPs"
    "ici_bidirectional_bytes_per_s": 400e9,  # "Bidirectional ICI bandwidth (per chip): 400 GBps", 4 ports
    "hbm_bytes": 16e9,  # "HBM capacity per chip: 16 GB"
    "topology": "2D torus",
    "source": "https://docs.cloud.google.com/tpu/docs/v5e",
}
# (name, parameters, layers, hidden, MLP width) — SmolLM2-135M's shape (as loaded here), Llama-3.2-1B's
PAPER_MODELS = (
    ("SmolLM2-135M", 134.5e6, 30, 576, 1536),
    ("1B-class (Llama-3.2-1B shape)", 1.24e9, 16, 2048, 8192),
)


def measured_ratios(rows: list[dict]) -> dict:
    """Per LM mesh kind (DP / FSDP) at the largest N: collective bytes per parameter byte by kind."""
    out = {}
    lm = [r for r in rows if r["algo"] == "lm_grpo" and r["scaling"] == "strong"]
    if not lm:
        return out
    top = max(r["num_devices"] for r in lm)
    for r in lm:
        if r["num_devices"] != top:
            continue
        kind = "DP" if r["mesh"].startswith("data=") and "fsdp" not in r["mesh"] else ("FSDP" if r["mesh"].startswith("fsdp=") else None)
        if kind is None:
            continue
        c = r["collectives"]
        out[kind] = {
            "mesh": r["mesh"],
            "all_reduce_per_param_byte": c["all-reduce"]["result_bytes"] / r["param_bytes"],
            "all_gather_per_param_byte": c["all-gather"]["result_bytes"] / r["param_bytes"],
            # reduce-scatter's result is a 1/n shard: operand bytes = result x n
            "reduce_scatter_operand_per_param_byte": c["reduce-scatter"]["result_bytes"] * r["num_devices"] / r["param_bytes"],
            "ring_bytes_per_param_byte": sum(v["ring_bytes"] for v in c.values()) / r["param_bytes"],
            # ring bytes per (global token x layer x (hidden + MLP width)): activation-sized traffic
            "ring_bytes_per_activation": sum(v["ring_bytes"] for v in c.values())
            / (r["tokens"] * r["layers"] * (r["hidden"] + r["intermediate"])),
            "dot_flops_over_8PT": r["dot_flops"] * r["num_devices"] / (8 * r["param_count"] * r["tokens"]),
            "dot_flops_over_formula": r["dot_flops"] * r["num_devices"] / lm_flops(r["param_count"], r["layers"], r["hidden"], r["rows"], r["seq"]),
        }
    return out


def lm_flops(params: float, layers: int, hidden: int, rows: int, seq: int) -> float:
    """Matmul FLOPs of one remat'd training step: 8 P per token (forward 2P, backward 4P, the
    remat forward 2P) + attention scores and values, 4 L T^2 d per sequence forward, x4."""
    return 8 * params * rows * seq + 16 * layers * seq * seq * hidden * rows


def paper_model(ratios: dict, args) -> tuple[str, list[str]]:
    chips, rows, seq, mfu = args.tpu_chips, args.tpu_rows, args.tpu_seq, args.mfu
    send_fast = V5E["ici_bidirectional_bytes_per_s"] / 2  # every port sending: half of the bidirectional figure
    send_slow = send_fast / 4  # one port, one direction (a single ring)
    comm_bytes = 4  # float32 gradients / parameters, as the measured HLO communicates them
    lines = [
        f"| model | mesh ({chips} chips) | matmul FLOPs / step | compute s (MFU {mfu:.0%}) | ring bytes / chip / step | "
        "comm s (4 ports: 200 GB/s) | comm s (1 link: 50 GB/s) | step s, overlapped (max) | step s, serial (sum) | "
        "params + Adam + frozen ref / chip |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    n = chips
    for name, params, layers, hidden, width in PAPER_MODELS:
        flops = lm_flops(params, layers, hidden, rows, seq)
        compute = flops / (chips * V5E["peak_bf16_flops"] * mfu)
        pbytes = params * comm_bytes
        variants = []
        if "DP" in ratios:  # measured: one all-reduce of the gradients (per parameter byte)
            r = ratios["DP"]
            ring = 2 * (n - 1) / n * r["all_reduce_per_param_byte"] * pbytes + (n - 1) / n * r["all_gather_per_param_byte"] * pbytes
            variants.append(("DP", f"data={n}", ring))
        # ZeRO-3 as intended: all-gather the weights in the forward and again in the remat'd
        # backward, reduce-scatter the gradients
        variants.append(("FSDP", f"fsdp={n}, ZeRO-3 as intended", (n - 1) / n * 3 * pbytes))
        if "FSDP" in ratios:  # as compiled now: activation-sized collectives, scaled by activations
            activations = rows * seq * layers * (hidden + width)
            variants.append(("FSDP", f"fsdp={n}, as compiled now", ratios["FSDP"]["ring_bytes_per_activation"] * activations))
        for kind, mesh, ring in variants:
            fast, slow = ring / send_fast, ring / send_slow
            state = params * 16 / (n if kind == "FSDP" else 1)  # f32 params, Adam mu, nu, frozen reference
            lines.append(
                f"| {name} | {mesh} | {flops:.3g} | {compute:.3f} | {_fmt_bytes(ring)} | {fast:.4f} | {slow:.4f} | "
                f"{max(compute, fast):.3f} | {compute + slow:.3f} | {_fmt_bytes(state)}"
                f"{' (> 16 GB HBM)' if state > V5E['hbm_bytes'] else ''} |"
            )
    assumptions = [
        f"TPU v5e figures from {V5E['source']}: 197 TFLOP/s bf16 peak per chip, 400 GB/s bidirectional ICI per "
        "chip over 4 ports (2D torus), 16 GB HBM.",
        f"Slice: {chips} chips (v5litepod-{chips}); workload: one LM-GRPO learn step (one optimizer update, "
        f"update_epochs=1) on {rows} sequences x {seq} tokens, all trained (prompt tokens are scored too; the "
        "loss masks them); sampling and the reference pass are NOT modelled.",
        "Compute: matmul FLOPs = 8 x params x tokens (forward 2P, backward 4P, remat re-forward 2P: remat is the "
        "config default) + attention 16 x layers x seq^2 x hidden per sequence; time = FLOPs / (chips x 197e12 x "
        f"MFU), MFU = {mfu:.0%} (assumed, not measured). The measured tiny-model HLO matmul FLOPs are "
        + ", ".join(f"{k}: {v['dot_flops_over_formula']:.2f}x" for k, v in ratios.items())
        + " this formula (the tiny model's vocabulary projection and small width make it differ).",
        "Communication, DP: the gradient all-reduce measured on the tiny model's compiled HLO at the largest N, "
        "per parameter byte; FSDP 'as intended': ZeRO-3 volumes (all-gather the weights twice, forward and "
        "remat'd backward, reduce-scatter the gradients once: 3 x (n-1)/n x param bytes sent per chip), NOT what "
        "the current HLO does; FSDP 'as compiled now': the measured tiny-model fsdp ring bytes are "
        "activation-sized (XLA all-reduces activations of the global batch with the embed contraction split, "
        "see the note above), so they are scaled by global tokens x layers x (hidden + MLP width) ("
        + ", ".join(f"{k}: {v['ring_bytes_per_activation']:.2f} B per unit" for k, v in ratios.items() if k == "FSDP")
        + "; measured ratios: "
        + "; ".join(
            f"{k} {v['mesh']}: all-reduce {v['all_reduce_per_param_byte']:.2f}, all-gather {v['all_gather_per_param_byte']:.2f}, "
            f"reduce-scatter operand {v['reduce_scatter_operand_per_param_byte']:.2f} x param bytes"
            for k, v in ratios.items()
        )
        + "); in float32 (4 bytes/param: the library's default dtype; bf16 communication would halve them), "
        "with ring algorithms (all-reduce 2(n-1)/n, all-gather and reduce-scatter (n-1)/n of the full array "
        "sent per chip). Bandwidth: 200 GB/s per chip sending (all 4 ports, half of the bidirectional 400 GB/s; "
        "XLA's 2D-torus collectives) and, pessimistically, 50 GB/s (one port, one direction). Latency and "
        "per-collective overheads ignored.",
        "Step time: 'overlapped' = max(compute, comm at 200 GB/s) (XLA's async collectives fully hidden "
        "behind compute); 'serial' = compute + comm at 50 GB/s (no overlap, one link). The truth should lie "
        "between. Weights per chip: 16 bytes/param (f32 params, Adam mu and nu, the frozen reference copy), divided by "
        "the chips under FSDP (as the rule table shards them); activations and the sampler's KV cache not included.",
    ]
    return "\n".join(lines), assumptions


def _fmt_bytes(x: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


# ----------------------------------------------------------------------------- driver


def run_worker(n: int, args) -> dict | None:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as handle:
        out = handle.name
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(n), "--worker-out", out, *args.passthrough]
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()}
    env.setdefault("JAX_PLATFORMS", "cpu")
    print(f"--- N={n}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, env=env, timeout=args.timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        print(f"N={n} timed out after {args.timeout:.0f} s", flush=True)
        return None
    sys.stderr.write(proc.stderr[-4000:] if proc.returncode else "".join(line + "\n" for line in proc.stderr.splitlines() if line.startswith("[N=")))
    if proc.returncode != 0:
        print(proc.stdout[-2000:], f"N={n} failed with exit code {proc.returncode}", sep="\n", flush=True)
        return None
    result = json.loads(Path(out).read_text())
    os.unlink(out)
    result["process_wall_s"] = time.perf_counter() - started
    print(f"N={n}: {result['process_wall_s']:.0f} s", flush=True)
    return result


def scaling_table(rows: list[dict]) -> str:
    lines = [
        "| algo | scaling | N | mesh | global batch | step s (median; MEANINGLESS: N devices on 2 cores) | "
        "train state / device (max) | frozen ref / device | XLA temp / device | all-reduce (n, result bytes) | "
        "all-gather (n, result bytes) | reduce-scatter (n, result bytes) | other collectives | ring bytes sent / device | "
        "matmul FLOPs / device | compile s |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---|---|---|---|---:|---:|---:|",
    ]
    order = {"ppo": 0, "lm_grpo": 1}
    for r in sorted(rows, key=lambda r: (order[r["algo"]], r["scaling"] != "strong", r["num_devices"], r["mesh"])):
        c = r["collectives"]
        other = ", ".join(f"{k} {v['count']:g} / {_fmt_bytes(v['result_bytes'])}" for k, v in c.items() if k in ("all-to-all", "collective-permute") and v["count"])
        cell = lambda k: f"{c[k]['count']:g} / {_fmt_bytes(c[k]['result_bytes'])}" if c[k]["count"] else "-"  # noqa: E731
        lines.append(
            f"| {r['algo']} | {r['scaling']} | {r['num_devices']} | {r['mesh']} | {r['batch']} | {r['step_s']:.4f} | "
            f"{_fmt_bytes(r['train_state_bytes_per_device_max'])} | {_fmt_bytes(r['frozen_bytes_per_device_max']) if r['frozen_bytes_per_device_max'] else '-'} | "
            f"{_fmt_bytes(r['temp_bytes_per_device']) if r['temp_bytes_per_device'] >= 0 else '?'} | {cell('all-reduce')} | {cell('all-gather')} | "
            f"{cell('reduce-scatter')} | {other or '-'} | {_fmt_bytes(sum(v['ring_bytes'] for v in c.values()))} | "
            f"{r['dot_flops']:.3g} | {r['compile_s']:.1f} |"
        )
    return "\n".join(lines)


def cross_check(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["algo"] == "lm_grpo" and "fsdp" in r["mesh"] and r["scaling"] == "strong":
            c = r["collectives"]
            out.append(
                f"FINDING, lm_grpo {r['mesh']} (N={r['num_devices']}): all-reduce {c['all-reduce']['result_bytes'] / r['param_bytes']:.2f} x, "
                f"all-gather {c['all-gather']['result_bytes'] / r['param_bytes']:.2f} x, reduce-scatter "
                f"{c['reduce-scatter']['result_bytes'] / r['param_bytes']:.2f} x the parameter bytes, and these grow with the "
                "batch (see the weak rows): XLA all-reduces activations of the global batch (e.g. the MLP's "
                "[rows, seq, intermediate] partial sums over the fsdp-split embed contraction) instead of all-gathering "
                "the weights (ZeRO-3). The memory saving is real; the communication is not FSDP's."
            )
    for r in rows:
        if r["num_devices"] > 1 and r["mesh"] == f"data={r['num_devices']}" and r["scaling"] == "strong":
            ar = r["collectives"]["all-reduce"]["result_bytes"]
            expected = r["param_bytes"] * r["grad_steps"]
            out.append(
                f"{r['algo']} data={r['num_devices']}: all-reduce result bytes {ar:,.0f} per step = "
                f"{ar / expected:.4f} x (param bytes {r['param_bytes']:,} x {r['grad_steps']} gradient steps = {expected:,}); "
                f"the excess {ar - expected:,.0f} B are scalar statistics (losses, advantage mean/var, grad norm)"
            )
    return out


def machine_info() -> str:
    import jax

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, jax {jax.__version__}, load average {load}"


def append_results(text: str) -> None:
    append_to_section(HEADER, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--meshes", default="data=N;fsdp=N;data=2,fsdp=4", help="';'-separated; N = device count; a mesh is used where it fits N")
    parser.add_argument("--algos", nargs="+", default=["ppo", "lm_grpo"], choices=["ppo", "lm_grpo"])
    parser.add_argument("--reps", type=int, default=3, help="timed steps per case (after one untimed), alternating the cases")
    parser.add_argument("--ppo-envs", type=int, default=16, help="environments at N=1 (strong: fixed; weak: x N)")
    parser.add_argument("--ppo-steps", type=int, default=32)
    parser.add_argument("--lm-rows", type=int, default=8, help="LM-GRPO sequences at N=1 (strong: fixed; weak: x N)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--completion-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="devices 1 2, 1 rep (smoke test)")
    parser.add_argument("--tpu-chips", type=int, default=16)
    parser.add_argument("--tpu-rows", type=int, default=256, help="paper model: sequences per step")
    parser.add_argument("--tpu-seq", type=int, default=512, help="paper model: tokens per sequence")
    parser.add_argument("--mfu", type=float, default=0.4, help="paper model: assumed model FLOPs utilisation")
    parser.add_argument("--timeout", type=float, default=900.0, help="per device-count subprocess, seconds")
    parser.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.devices, args.reps = [1, 2], 1

    if args.worker:
        Path(args.worker_out).write_text(json.dumps(worker(args)))
        return

    args.passthrough = [
        "--meshes", args.meshes, "--algos", *args.algos, "--reps", str(args.reps),
        "--ppo-envs", str(args.ppo_envs), "--ppo-steps", str(args.ppo_steps), "--lm-rows", str(args.lm_rows),
        "--prompt-tokens", str(args.prompt_tokens), "--completion-tokens", str(args.completion_tokens),
    ]  # fmt: skip
    started = time.perf_counter()
    load_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = []
    for n in args.devices:
        result = run_worker(n, args)
        if result:
            rows.extend(result["results"])
    if not rows:
        raise SystemExit("every worker failed")
    table = scaling_table(rows)
    checks = cross_check(rows)
    ratios = measured_ratios(rows)
    paper, assumptions = paper_model(ratios, args)
    unknown = sum(r["unknown_trip_counts"] for r in rows)
    command = "python benchmarks/scaling.py " + " ".join(a for a in sys.argv[1:])
    setting = (
        f"PPO CartPole-v1 (MLP 64x64 actor + critic, 2 epochs x 2 minibatches = 4 gradient steps per learn step) and the "
        f"LM-GRPO learn step (`tiny` model, clipped Adam, remat, 1 update, synthetic batch) under `--parallel sharded`, "
        f"{args.reps} timed steps per case after one untimed, cases alternated; strong: the N=1 global batch; weak: x N. "
        f"Per-device columns are per device; bytes are decimal (kB = 1000 B)."
    )
    notes = [
        "Collectives are counted in the compiled per-device HLO with while-loop trip counts (result bytes: each "
        "collective's result array per device; ring bytes: what each device sends with ring algorithms on its "
        "replica group: all-reduce 2(n-1)/n, all-gather (n-1)/n, reduce-scatter (n-1) x result). Matmul FLOPs: "
        "2 x result x contracted size of every HLO `dot`, trip-weighted"
        + (f" ({unknown} while loops had no known trip count and were counted once)." if unknown else "."),
        *checks,
    ]
    wall = time.perf_counter() - started
    print("\n" + setting + "\n\n" + table + "\n\n" + "\n".join(f"- {x}" for x in notes), flush=True)
    print("\nPaper model, LM-GRPO step on TPU v5e:\n\n" + paper + "\n\n" + "\n".join(f"- {a}" for a in assumptions), flush=True)
    print(f"\nwall {wall:.0f} s", flush=True)
    if not args.no_write:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        text = (
            f"\n### {stamp} — {machine_info()} (load average at start {load_start})\n\n"
            f"Command: `{command.strip()}` (wall {wall:.0f} s).\n\n{setting}\n\n{table}\n\n"
            + "\n".join(f"- {x}" for x in notes)
            + f"\n\nPaper model, one LM-GRPO learn step on a TPU v5e slice:\n\n{paper}\n\nAssumptions:\n\n"
            + "\n".join(f"- {a}" for a in assumptions)
            + "\n"
        )
        append_results(text)


if __name__ == "__main__":
    main()
