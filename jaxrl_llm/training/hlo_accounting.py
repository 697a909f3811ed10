"""Collectives and matmul FLOPs of one execution of a compiled (SPMD-partitioned, per-device)
HLO module, read from its text (`jax.jit(f).lower(...).compile().as_text()`).

Every all-reduce, all-gather, reduce-scatter, all-to-all and collective-permute (the `-done`
half of async pairs) is counted with the trip counts of the while loops around it
(`known_trip_count`: `lax.scan`s of epochs, minibatches, micro-batches), two ways:
**result bytes** (the sum of each collective's result shape, per device) and **ring bytes**,
what each device sends with ring algorithms on its replica group of size n: all-reduce
2(n-1)/n x result, all-gather (n-1)/n x result, reduce-scatter (n-1) x result, all-to-all
(n-1)/n x result, collective-permute 1 x result. Matmul FLOPs: 2 x |result| x |contracted
dims| of every `dot`. (`compiled.cost_analysis()` counts each loop body once.)

What a sharded step communicates is a property of the program, not of the machine: these
numbers are the same on 2 CPU cores as on a TPU pod slice with the same mesh.
"""

from __future__ import annotations

import math
import re

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {
    "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128|f8e\w+)\[([\d,]*)\]")
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = ")


def _arrays(shape: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(d, tuple(int(x) for x in dims.split(",") if x)) for d, dims in _ARRAY.findall(shape)]


def _nbytes(shape: str) -> float:
    return sum(_DTYPE_BYTES.get(d, 1 if d.startswith("f8") else 4) * math.prod(dims) for d, dims in _arrays(shape))


def _split_shape(rest: str) -> tuple[str, str]:
    """(result shape, the rest) of an instruction's right-hand side."""
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return rest[: i + 1], rest[i + 1 :].lstrip()
    shape, _, tail = rest.partition(" ")
    return shape, tail


def _group_size(attrs: str, num_devices: int) -> int:
    """The replica-group size of a collective, from any of XLA's printed forms."""
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attrs)
    if m:
        sizes = {k: int(v) for k, v in re.findall(r"'([^']+)'=(\d+)", m.group(1))}
        return math.prod(sizes[a] for a in re.findall(r"'([^']+)'", m.group(2)))
    m = re.search(r"replica_groups=\[([\d,]+)\]<=", attrs)
    if m:
        return int(m.group(1).split(",")[-1])
    m = re.search(r"replica_groups=\{\{([\d,]*)\}", attrs)
    if m:
        return len(m.group(1).split(","))
    return num_devices  # replica_groups={} : everyone


def _ring_factor(kind: str, n: int) -> float:
    if n <= 1:
        return 0.0
    return {
        "all-reduce": 2 * (n - 1) / n,
        "all-gather": (n - 1) / n,
        "reduce-scatter": float(n - 1),
        "all-to-all": (n - 1) / n,
        "collective-permute": 1.0,
    }[kind]


def hlo_accounting(text: str, num_devices: int) -> dict:
    """Collectives (count, result bytes, ring bytes per kind) and dot FLOPs of one execution of
    the compiled per-device HLO module `text`, loop bodies weighted by their trip counts."""
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            current = m.group(1)
            comps[current] = []
            if line.startswith("ENTRY"):
                entry = current
        elif current is not None and line.strip() and line.strip() != "}":
            comps[current].append(line)
    own: dict[str, dict] = {}
    children: dict[str, list[tuple[str, int]]] = {}
    unknown_trips = 0
    for name, lines in comps.items():
        shapes: dict[str, str] = {}
        starts: dict[str, str] = {}
        stats = {"flops": 0.0, **{k: [0, 0.0, 0.0] for k in COLLECTIVES}}
        kids: list[tuple[str, int]] = []
        for line in lines:
            m = _INSTR.match(line)
            if not m:
                continue
            shape, tail = _split_shape(line[m.end() :])
            shapes[m.group(1)] = shape
            op = re.match(r"([\w\-]+)\(", tail)
            if not op:
                continue
            opcode = op.group(1)
            if opcode == "dot":
                operands = re.findall(r"%([\w.\-]+)", tail.split(")", 1)[0])
                lhs = _arrays(shapes.get(operands[0], "")) if operands else []
                contract = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", tail)
                if lhs and contract:
                    dims = lhs[0][1]
                    k = math.prod(dims[int(i)] for i in contract.group(1).split(",") if i)
                    stats["flops"] += 2.0 * sum(math.prod(d) for _, d in _arrays(shape)) * k
            kind = opcode.removesuffix("-start").removesuffix("-done")
            if kind in COLLECTIVES:
                if opcode.endswith("-start"):
                    starts[m.group(1)] = tail
                    continue
                attrs = tail
                if opcode.endswith("-done"):
                    operand = re.findall(r"%([\w.\-]+)", tail.split(")", 1)[0])
                    attrs = starts.get(operand[0], "") if operand else ""
                n = _group_size(attrs, num_devices)
                result = _nbytes(shape)
                entry_stats = stats[kind]
                entry_stats[0] += 1
                entry_stats[1] += result
                entry_stats[2] += _ring_factor(kind, n) * result
            if opcode == "while":
                trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', tail)
                unknown_trips += trip is None
                body = re.search(r"body=%([\w.\-]+)", tail)
                if body:
                    kids.append((body.group(1), int(trip.group(1)) if trip else 1))
                continue
            if opcode in ("fusion", "call", "async-start", "custom-call"):
                for callee in re.findall(r"(?:calls|to_apply)=%([\w.\-]+)", tail):
                    kids.append((callee, 1))
            branches = re.search(r"branch_computations=\{([^}]*)\}", tail)
            if branches:
                # the most expensive branch (what a conditional can cost)
                kids.append(("|".join(re.findall(r"%([\w.\-]+)", branches.group(1))), 1))
            for key in ("true_computation", "false_computation"):
                callee = re.search(key + r"=%([\w.\-]+)", tail)
                if callee:
                    kids.append((callee.group(1), 1))
        own[name], children[name] = stats, kids

    memo: dict[str, dict] = {}

    def total(name: str, depth: int = 0) -> dict:
        if "|" in name:  # conditional: max over branches by ring bytes then flops
            options = [total(b, depth + 1) for b in name.split("|")]
            return max(options, key=lambda s: (sum(s[k][2] for k in COLLECTIVES), s["flops"]))
        if name in memo:
            return memo[name]
        base = own.get(name) or {"flops": 0.0, **{k: [0, 0.0, 0.0] for k in COLLECTIVES}}
        acc = {"flops": base["flops"], **{k: list(base[k]) for k in COLLECTIVES}}
        if depth < 64:
            for child, times in children.get(name, []):
                sub = total(child, depth + 1)
                acc["flops"] += times * sub["flops"]
                for k in COLLECTIVES:
                    acc[k] = [a + times * b for a, b in zip(acc[k], sub[k])]
        memo[name] = acc
        return acc

    result = total(entry) if entry else {"flops": 0.0, **{k: [0, 0.0, 0.0] for k in COLLECTIVES}}
    return {
        "dot_flops": result["flops"],
        "collectives": {k: {"count": v[0], "result_bytes": v[1], "ring_bytes": v[2]} for k, v in result.items() if k in COLLECTIVES},
        "unknown_trip_counts": unknown_trips,
    }
