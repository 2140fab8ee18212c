"""The library face (selfimprove.api): options that cannot drift from the commands, and docs/library.md's notebook
session executed as IPython executes a cell — inside a running event loop, with top-level await — against a real
Phoenix, the simulator over HTTP and the real SDKs."""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path

import pytest

import selfimprove as si
from selfimprove import api
from selfimprove.stages import evaluate, loop, promote, pull, snapshot, update

DOC = Path(__file__).resolve().parents[1] / "docs" / "library.md"
NOT_OPTIONS = {"root", "target", "overrides", "config", "scorer", "confirm", "log", "progress", "on_progress",
               "on_step"}  # where, and how the stage talks back: arguments of the api functions, not options

PAIRS = [(api.PullOptions, pull.pull), (api.SnapshotOptions, snapshot.snapshot), (api.UpdateOptions, update.update),
         (api.EvaluateOptions, evaluate.evaluate), (api.PromoteOptions, promote.promote),
         (api.RunOptions, loop.run_loop)]


@pytest.mark.parametrize("options,stage", PAIRS, ids=lambda x: getattr(x, "__name__", ""))
def test_options_are_the_commands_flags_with_the_same_defaults(options, stage):
    params = {n: p.default for n, p in inspect.signature(stage).parameters.items() if n not in NOT_OPTIONS}
    fields = {n: f.default for n, f in options.model_fields.items()}
    assert set(fields) == set(params), f"{options.__name__} and {stage.__name__} disagree on their flags"
    for name, default in params.items():
        assert fields[name] == (tuple(default) if isinstance(default, list) else default), name


def test_options_are_typed_and_refuse_unknown_flags():
    with pytest.raises(ValueError, match="trails"):
        si.UpdateOptions(trails=3)
    with pytest.raises(ValueError):
        si.EvaluateOptions(n="many")
    assert si.EvaluateOptions(n="40").n == 40


def test_the_package_exports_the_api_lazily():
    assert si.evaluate is api.evaluate and si.GateFailed.exit_code == 3
    assert inspect.iscoroutinefunction(si.aevaluate) and "evaluate" in si.__all__


def notebook_cell() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text("utf-8"), re.DOTALL)
    assert len(blocks) == 1, "docs/library.md has one notebook session"
    return blocks[0]


def run_like_ipython(source: str, namespace: dict) -> None:
    """Compile with top-level await allowed and run the cell inside a running event loop, as IPython does."""
    code = compile(source, str(DOC), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

    async def cell() -> None:
        asyncio.get_running_loop()  # the premise: a loop is running, so asyncio.run inside would fail
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            await result

    asyncio.run(cell())


@pytest.mark.phoenix
def test_the_notebook_session_runs_inside_a_running_event_loop(tmp_path, phoenix, project_name, monkeypatch,
                                                               capsys):
    from selfimprove.demo.run import KEY_ENV, demo_config
    from selfimprove.sim import start_server
    from selfimprove.sim.traffic import make_traffic

    monkeypatch.setenv(KEY_ENV, "dummy")
    monkeypatch.chdir(tmp_path)
    sim = start_server("support", seed=0)
    try:
        assert make_traffic("support", 60, phoenix_url=phoenix.url, project=project_name,
                            sim_base_url=sim.base_url, seed=1)["spans"] == 60
        (tmp_path / "configs").mkdir()
        (tmp_path / "configs" / "support.toml").write_text(demo_config(
            phoenix_url=phoenix.url, project=project_name, sim_base_url=sim.base_url, primary="policy_compliance",
            target="support"))
        namespace: dict = {}
        run_like_ipython(notebook_cell(), namespace)
    finally:
        sim.stop()
    out, err = capsys.readouterr()
    assert "60 spans and" in out and "update's pick:" in out and "policy_compliance:" in out
    assert ("production is now v0002" in out) or ("not promoted:" in out)
    report = namespace["report"]
    assert report.held_out and namespace["result"].run == namespace["upd"].run and report.best == namespace["upd"].best
    assert (tmp_path / "runs").is_dir() and list((tmp_path / "runs").rglob("report.json"))
    assert "estimate:" not in err  # the library asks and prints nothing by itself
