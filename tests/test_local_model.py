"""`selfimprove local-model`: assembling a model from chunk packages through the real pip (a local find-links
folder of wheels built here stands in for the registry), the checksum refusal, the missing-toolchain error, and the
background server's lifecycle with a stand-in llama-server (a script that takes llama-server's flags and serves
/health as the real one does). The real llama-server and models run in the `real` tier (make test-real)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.errors import IntegrityError, SelfimproveError
from selfimprove.llm.local import catalog
from selfimprove.llm.local.assemble import ensure_model, model_path
from selfimprove.llm.local.catalog import LocalModel

PARTS = [b"GGUF" + bytes(range(256)) * 40, b"middle-slice" * 500, b"tail" * 77]


def _wheel(folder: Path, name: str, payload: bytes) -> None:
    pkg = name.replace("-", "_")
    with zipfile.ZipFile(folder / f"{pkg}-1.0.0-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{pkg}/__init__.py", "")
        zf.writestr(f"{pkg}/data/part01.bin", payload)
        zf.writestr(f"{pkg}-1.0.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0.0\n")
        zf.writestr(f"{pkg}-1.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{pkg}-1.0.0.dist-info/RECORD", "")


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """Three chunk wheels in a find-links folder that pip (the real client) downloads from, and a cache dir."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, payload in enumerate(PARTS, 1):
        _wheel(wheels, f"si-test-chunk-part{i}", payload)
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv(catalog.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("SELFIMPROVE_LLAMA_SERVER", raising=False)
    return wheels


def _model(sha256: str) -> LocalModel:
    return LocalModel("tiny", "a test model", tuple(f"si-test-chunk-part{i}==1.0.0" for i in (1, 2, 3)), ".bin",
                      sha256)


def test_assembles_the_parts_in_order_verifies_and_then_reuses_the_file(registry):
    whole = b"".join(PARTS)
    model = _model(hashlib.sha256(whole).hexdigest())
    said: list[str] = []
    path = ensure_model(model, said.append)
    assert path == model_path(model) and path.read_bytes() == whole
    assert any("sha256 verified" in s for s in said) and any("part 3/3" in s for s in said)
    assert [p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")] == ["tiny.gguf"]  # no scraps
    for wheel in registry.iterdir():
        wheel.unlink()  # a second setup needs no package: the verified file is reused
    assert ensure_model(model, said.append) == path and said[-1].endswith("(cached)")
    path.write_bytes(whole[:-1] + b"!")
    with pytest.raises(IntegrityError, match="hashes to"):
        ensure_model(model, verify=True)


def test_a_wrong_checksum_is_refused_and_leaves_nothing_in_the_cache(registry):
    model = _model("0" * 64)
    with pytest.raises(IntegrityError, match="expected sha256:0000") as info:
        ensure_model(model)
    assert info.value.exit_code == 4 and "run setup again" in info.value.hint
    assert not model_path(model).exists() and not list(model_path(model).parent.glob("*.partial"))


def test_a_package_the_index_does_not_have_is_named(registry):
    model = LocalModel("gone", "missing", ("si-test-absent-part1==1.0.0",), ".bin", "0" * 64)
    with pytest.raises(SelfimproveError, match="could not download si-test-absent-part1==1.0.0"):
        ensure_model(model)


def test_building_without_cmake_or_a_compiler_says_what_is_missing(registry, tmp_path, monkeypatch):
    from selfimprove.llm.local.build import ensure_server_binary

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(SelfimproveError, match="missing cmake and a C\\+\\+ compiler") as info:
        ensure_server_binary()
    assert "SELFIMPROVE_LLAMA_SERVER" in info.value.hint


def test_serve_before_setup_is_a_usage_error_with_the_next_step(registry):
    result = CliRunner().invoke(app, ["local-model", "serve", "qwen0.5b", "--json"])
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "selfimprove.error/1" and "not built" in doc["error"] and "setup-real" in doc["hint"]
    result = CliRunner().invoke(app, ["local-model", "serve", "gpt-5"])
    assert result.exit_code == 2 and "unknown local model 'gpt-5'" in result.stderr


STAND_IN = textwrap.dedent('''\
    #!{python}
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    args = sys.argv[1:]
    port, alias = int(args[args.index("--port") + 1]), args[args.index("--alias") + 1]
    assert args[args.index("--host") + 1] == "127.0.0.1" and "--jinja" in args and "-n" in args
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/health"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b'{{"status": "ok"}}' if ok else b"")
        def log_message(self, *a):
            pass
    print("stand-in llama-server serving", alias, flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()
''')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_serve_runs_in_the_background_until_stop(registry, tmp_path, monkeypatch):
    """serve returns with the server up (healthy), a second serve finds it, stop ends it, status follows."""
    binary = tmp_path / "llama-server"
    binary.write_text(STAND_IN.format(python=sys.executable))
    binary.chmod(0o755)
    monkeypatch.setenv("SELFIMPROVE_LLAMA_SERVER", str(binary))
    path = model_path("smollm2-135m")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF")  # the stand-in does not read it
    runner = CliRunner()
    first = runner.invoke(app, ["local-model", "serve", "smollm2-135m", "--json", "--timeout", "30"])
    assert first.exit_code == 0, first.output
    served = json.loads(first.stdout)
    try:
        assert served["base_url"].startswith("http://127.0.0.1:") and served["base_url"].endswith("/v1")
        with urllib.request.urlopen(served["base_url"][:-3] + "/health", timeout=5) as resp:
            assert resp.status == 200
        again = json.loads(runner.invoke(app, ["local-model", "serve", "smollm2-135m", "--json"]).stdout)
        assert again["pid"] == served["pid"]  # found, not started twice
        status = json.loads(runner.invoke(app, ["local-model", "status", "--json"]).stdout)
        row = next(r for r in status["models"] if r["model"] == "smollm2-135m")
        assert row["assembled"] and row["base_url"] == served["base_url"]
    finally:
        stopped = runner.invoke(app, ["local-model", "stop", "smollm2-135m", "--json"])
    assert stopped.exit_code == 0 and json.loads(stopped.stdout)["stopped"] is True
    deadline = time.monotonic() + 10
    while _alive(served["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(served["pid"])
    nothing = runner.invoke(app, ["local-model", "stop", "smollm2-135m", "--json"])
    assert nothing.exit_code == 0 and json.loads(nothing.stdout)["stopped"] is False


def test_demo_on_the_local_model_before_setup_says_what_to_run_and_starts_nothing(registry, tmp_path):
    result = CliRunner().invoke(app, ["demo", "--local-model", "--workdir", str(tmp_path / "demo"), "--json"])
    assert result.exit_code == 2, result.output
    assert "make setup-real" in json.loads(result.stdout)["hint"] and not (tmp_path / "demo").exists()
    mixed = CliRunner().invoke(app, ["demo", "--local-model", "--real"])
    assert mixed.exit_code == 2 and "--local-model runs its own task" in mixed.stderr


def test_the_local_model_demo_refuses_batch_mode_before_starting_anything(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--local-model", "--batch", "--workdir", str(tmp_path), "--json"])
    assert result.exit_code == 2 and "has no Batch API" in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []
