"""The CLI's shell: --help of every command, --json of init/log/verify, exit codes, and start-up cost."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.store.runs import Workspace

runner = CliRunner()


def all_commands():
    import typer.main

    group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += [[name, sub] for sub in cmd.commands]
        out.append([name])
    return out


@pytest.mark.parametrize("argv", all_commands(), ids=lambda a: " ".join(a))
def test_every_command_has_complete_help(argv):
    result = runner.invoke(app, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    import typer.main

    cmd = typer.main.get_command(app)
    for part in argv:
        cmd = cmd.commands[part]
    assert cmd.help, f"{argv} has no description"
    for param in cmd.params:
        if param.name != "help" and getattr(param, "help", None) is None and param.param_type_name == "option":
            pytest.fail(f"{argv}: option {param.name} has no help text")


def test_top_level_help_lists_the_loop():
    result = runner.invoke(app, ["--help"])
    for name in ("pull", "snapshot", "update", "evaluate", "promote", "init", "log", "verify"):
        assert name in result.output


def test_init_log_verify_json(tmp_path):
    res = runner.invoke(app, ["init", "support", "--root", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "selfimprove.init/1" and doc["config"].endswith("configs/support.toml")
    assert runner.invoke(app, ["init", "support", "--root", str(tmp_path)]).exit_code == 2  # exists

    ws = Workspace(tmp_path)
    run = ws.new_run("support")
    with run.stage("pull", params={}) as st:
        st.write_table("raw/spans.parquet", pd.DataFrame({"span_id": ["a"]}))

    res = runner.invoke(app, ["log", "--root", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "selfimprove.log/1" and doc["runs"][0]["stages"] == ["pull"]

    res = runner.invoke(app, ["verify", "--root", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["runs"][0]["files"] == 1

    pd.DataFrame({"span_id": ["b"]}).to_parquet(run.path / "raw/spans.parquet")
    res = runner.invoke(app, ["verify", str(run.path), "--root", str(tmp_path), "--json"])
    assert res.exit_code == 4
    doc = json.loads(res.stdout)
    assert doc["schema"] == "selfimprove.error/1" and "raw/spans.parquet" in doc["error"]


def test_usage_errors_exit_2_with_a_hint(tmp_path):
    res = runner.invoke(app, ["log", "--root", str(tmp_path)])
    assert res.exit_code == 2
    assert "Hint:" in res.output and "selfimprove init" in res.output
    res = runner.invoke(app, ["init", "x", "--source", "kafka", "--root", str(tmp_path)])
    assert res.exit_code == 2 and "--source" in res.output


def test_help_starts_without_heavy_imports():
    code = ("import sys; from selfimprove.cli.app import app; "
            "heavy = [m for m in ('pandas', 'pyarrow', 'openai', 'phoenix', 'numpy', 'scipy', 'pydantic') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
