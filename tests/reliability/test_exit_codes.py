"""Bad input → its documented exit code and a message a user can act on (docs/reliability.md, "Bad input").

Every case runs the real CLI (`CliRunner`) and checks the three things a script or a person relies on: the exit
code, that --json prints exactly one document, and that the message says what happened without echoing secrets or
swallowing text as markup.
"""

import json

import pytest
from fixtures.sim_checkpoint import build_run, candidate, write_candidates
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.records import Policy
from selfimprove.sim import default_policy
from selfimprove.store.runs import Workspace

KEY = "sk-" + "proj-Zq81xVbT0aLk3mW9sRfY2uE5pN7cH4dJ6gK1oI0"  # split: no key-shaped string is tracked
BASE = Policy(**default_policy("support"))
CANDIDATES = [candidate(BASE.model_copy(update={"system_prompt": BASE.system_prompt + " Be brief."}), parent="seed"),
              candidate(BASE.model_copy(update={"system_prompt": BASE.system_prompt + " Be kind."}), parent="seed")]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    return " ".join(text.split())  # Rich wraps long lines


def one_document(res) -> dict:
    """stdout parses as exactly one JSON document (json.loads refuses trailing data)."""
    return json.loads(res.stdout)


@pytest.fixture
def no_best(tmp_path, sim, monkeypatch):
    """A run whose update found no candidate better than the current policy (update.json best = null)."""
    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    build_run(tmp_path, sim.base_url, n=12)
    write_candidates(Workspace(tmp_path).open_run("support"), CANDIDATES, best=None)
    sim.reset_stats()
    return tmp_path


def test_nothing_earned_is_exit_3_from_evaluate_and_promote_and_the_hints_do_not_loop(no_best, sim):
    res = cli("evaluate", "--root", no_best, "--json")
    assert res.exit_code == 3, res.output
    doc = one_document(res)
    assert doc["schema"] == "selfimprove.error/1" and doc["exit_code"] == 3
    assert "none better than the current policy" in doc["error"] and "promote" not in doc["hint"]
    res = cli("promote", "--root", no_best, "--json")
    assert res.exit_code == 3, res.output
    doc = one_document(res)  # there is no candidate, and still one document
    assert doc["exit_code"] == 3 and "nothing earned promotion" in doc["error"]
    assert "run `selfimprove evaluate` first" not in doc["hint"]  # no loop back to evaluate's refusal
    assert "production is unchanged" in flat(res.stderr) and sim.stats()["requests"] == 0


def test_every_candidate_failing_its_guards_is_not_earned(tmp_path, sim, monkeypatch):
    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    failing = candidate(BASE.model_copy(update={"system_prompt": BASE.system_prompt + " x"}), passed=False)
    build_run(tmp_path, sim.base_url, n=12, candidates=[failing])
    res = cli("evaluate", "--root", tmp_path, "--candidates", "all", "--json")
    assert res.exit_code == 3 and "every candidate failed its guard checks" in one_document(res)["error"]


def test_verify_an_unknown_target_is_a_usage_error(tmp_path):
    assert cli("init", "support", "--root", tmp_path).exit_code == 0
    res = cli("verify", "--target", "nosuch", "--root", tmp_path, "--json")
    assert res.exit_code == 2, res.output
    doc = one_document(res)
    assert "unknown target 'nosuch'" in doc["error"]
    assert cli("log", "--target", "nosuch", "--root", tmp_path).exit_code == 2
    assert cli("verify", "--target", "support", "--root", tmp_path).exit_code == 0  # known, no runs yet


@pytest.mark.parametrize("name", ["a b", 'a"b', "a/b"])
def test_init_with_a_bad_name_fails_and_leaves_nothing_behind(tmp_path, name):
    res = cli("init", name, "--root", tmp_path / "ws", "--json")
    assert res.exit_code == 2, res.output
    assert one_document(res)["exit_code"] == 2
    assert not (tmp_path / "ws").exists()  # not even configs/


def test_a_pasted_key_is_refused_without_being_echoed(tmp_path):
    assert cli("init", "support", "--root", tmp_path).exit_code == 0
    for key in ("llm.task.api_key_env", "llm.optimizer.api_key_env", "telemetry.phoenix.api_key_env",
                "telemetry.arize.api_key_env"):
        res = cli("update", "--root", tmp_path, "--set", f"{key}={KEY}", "--json")
        assert res.exit_code == 2, res.output
        doc = one_document(res)
        for text in (res.stdout, res.stderr, flat(res.stderr)):
            assert KEY not in text and KEY[:12] not in text
        assert f"'{KEY[:4]}…' ({len(KEY)} characters)" in doc["error"] and key in doc["error"]
    res = cli("init", "other", "--root", tmp_path, "--api-key-env", KEY, "--json")
    assert res.exit_code == 2 and KEY not in res.stdout + res.stderr and KEY[:12] not in res.stdout + res.stderr
    assert not (tmp_path / "configs" / "other.toml").exists()
    res = cli("demo", "--base-url", "http://127.0.0.1:9/v1", "--api-key-env", KEY, "--json")
    assert res.exit_code == 2 and KEY not in res.stdout + res.stderr and KEY[:12] not in res.stdout + res.stderr
    assert f"({len(KEY)} characters)" in one_document(res)["error"]


def test_paths_and_messages_are_never_read_as_markup(tmp_path):
    root = tmp_path / "[/x]" / "[bold]ws"
    res = cli("init", "support", "--root", root)
    assert res.exit_code == 0, res.output
    assert "[/x]/[bold]ws/configs/support.toml" in "".join(res.stderr.split())  # Rich breaks long paths
    res = cli("promote", "--root", root)
    assert res.exit_code == 2, res.output  # a clear usage error, not a crash of the error handler
    assert "Unexpected error" not in res.output and "[/x]/[bold]ws/runs/support" in "".join(res.stderr.split())


def test_a_hint_keeps_its_brackets():
    import typer

    from selfimprove.cli.common import JsonOpt
    from selfimprove.cli.output import handle_errors
    from selfimprove.core.errors import GateFailed

    probe = typer.Typer()

    @probe.command()
    @handle_errors
    def refuse(json_output: JsonOpt = False) -> None:
        raise GateFailed("candidate [c-1] did not pass", reasons=["[red]Δ[/red] below"], hint="adjust [gate] only with reason")

    res = CliRunner().invoke(probe, [])
    assert res.exit_code == 3
    err = flat(res.stderr)
    assert "candidate [c-1] did not pass" in err and "[red]Δ[/red] below" in err and "adjust [gate] only" in err
    res = CliRunner().invoke(probe, ["--json"])
    assert one_document(res)["hint"] == "adjust [gate] only with reason"


@pytest.mark.parametrize("argv,message", [(["pull", "--bogus"], "No such option: --bogus"),
                                          (["evaluate", "--n", "zero"], "Invalid value for '--n'")])
def test_a_usage_error_is_one_json_document_too(argv, message, tmp_path):
    """Click's own usage errors (found before any command runs) keep the --json contract: one document, exit 2."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "selfimprove"
    res = subprocess.run([str(exe), *argv, "--json"], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2
    doc = one_document(res)
    assert doc["schema"] == "selfimprove.error/1" and message in doc["error"] and doc["exit_code"] == 2
    assert message in res.stderr  # people still read it on stderr
    plain = subprocess.run([str(exe), *argv], check=False, capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode == 2 and plain.stdout == ""
