"""The command line: quick help without JAX, typed --env-kwargs, errors without tracebacks."""

import os
import subprocess
import sys

import pytest

from jaxrl_llm import cli


def run_python(code: str) -> subprocess.CompletedProcess:
    # without the variable that importing jaxrl_llm set in this test process
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_NO_ADVISORY_WARNINGS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_help_imports_neither_jax_nor_transformers():
    out = run_python(
        "import sys\n"
        "from jaxrl_llm.cli import main\n"
        "try:\n    main(['ppo', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('jax', 'flax', 'gymnax', 'transformers', 'torch') if m in sys.modules))"
    )
    assert out.returncode == 0, out.stderr
    assert "--env-kwargs" in out.stdout and out.stdout.strip().endswith("[]")


def test_no_pytorch_notice_without_torch():
    hide_torch = "import sys; sys.modules['torch'] = None\n"
    silenced = run_python(hide_torch + "import jaxrl_llm.cli, transformers")
    assert silenced.returncode == 0, silenced.stderr
    assert "PyTorch was not found" not in silenced.stderr
    shown = run_python(hide_torch + "import transformers")  # the notice this guards against
    assert "PyTorch was not found" in shown.stderr


def test_env_kwargs_accept_floats_and_booleans():
    from jaxrl_llm.algorithms.configs.group_rl import GroupRLConfig

    config = cli.tyro.cli(GroupRLConfig, args=["--env-kwargs", "is_slippery", "false", "success_rate", "0.5"])
    assert config.env_kwargs == {"is_slippery": "false", "success_rate": 0.5}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ppo", "--env-kwargs", "size", "4"], "CartPole-v1 does not take --env-kwargs size"),
        (["ppo", "--env", "CartPole"], "Unknown environment 'CartPole'"),
        (["ppo", "--mesh", "data=2"], "--mesh data=2 needs --parallel sharded"),
        (["ppo", "--parallel", "sharded", "--mesh", "data=2,model=4"], "axis=size pairs with axes from"),
    ],
)
def test_mistakes_exit_2_with_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--out", str(tmp_path / "run"), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unwritable_out_fails_before_building_anything(tmp_path, capsys, monkeypatch):
    from jaxrl_llm.algorithms import ppo

    monkeypatch.setattr(ppo, "make_ppo", lambda config: pytest.fail("built before checking --out"))
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ppo", "--out", str(tmp_path / "file" / "run")])
    assert exit_info.value.code == 2
    assert "cannot write to the output directory" in capsys.readouterr().err


def test_a_stall_restarts_the_same_command_with_resume_then_gives_up(monkeypatch, capsys):
    from jaxrl_llm.training import watchdog

    execs, exits = [], []
    monkeypatch.setattr(cli.os, "execv", lambda path, args: execs.append(args))
    monkeypatch.setattr(watchdog, "exit_stalled", exits.append)
    monkeypatch.delenv(cli.STALL_RESTARTS_ENV, raising=False)
    on_stall = cli.restart_after_stall(["ppo", "--out", "runs/x"], max_restarts=2)
    on_stall("stalled at update 7")
    on_stall("stalled at update 9")
    assert [a[-4:] for a in execs] == [["ppo", "--out", "runs/x", "--resume"]] * 2
    assert execs[0][:3] == [sys.executable, "-m", "jaxrl_llm.cli"] and exits == []
    assert "Restarting with --resume (2 of 2)" in capsys.readouterr().err
    on_stall("stalled at update 11")  # the third stall in a row: exit with the message
    assert exits == ["stalled at update 11"] and len(execs) == 2

