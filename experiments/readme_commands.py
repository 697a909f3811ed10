"""The README's shell commands as argv lists, and rewriting their flags: what the tests of the
README's commands and the experiments that re-run them share."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(text: str, subcommand: str) -> list[list[str]]:
    """argv of every `jaxrl-llm <subcommand>` command in `text` (backslash continuations
    joined, trailing `# comments` dropped)."""
    joined = text.replace("\\\n", " ")
    prefix = f"jaxrl-llm {subcommand} "
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.startswith(prefix)]


def with_flags(argv: list[str], **flags: str) -> list[str]:
    """`argv` with each `--flag value` in `flags` (underscores as dashes) replaced or appended."""
    argv = list(argv)
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if flag in argv:
            index = argv.index(flag)
            del argv[index : index + 2]
        argv += [flag, value]
    return argv


def run_measuring_peak_rss(argv: list[str], log: Path, timeout: float | None = None) -> tuple[int, int]:
    """(exit code, peak resident set size in bytes) of `argv`, its output written to `log`;
    killed after `timeout` seconds (None: no limit).

    `os.wait4` reports the kernel's high-water mark of this child alone (a polled RSS
    misses short peaks; RUSAGE_CHILDREN mixes in every child the caller reaped). Linux only
    (`ru_maxrss` is in KiB there).
    """
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    timer = threading.Timer(timeout, os.kill, (process.pid, signal.SIGKILL)) if timeout else None
    if timer:
        timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        if timer:
            timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting
    return process.returncode, usage.ru_maxrss * 1024
