"""Shared fixtures. Keep this file to fixtures any test may use.

- `phoenix`: ONE real Phoenix server per test session (a subprocess from .venv-phoenix, see
  selfimprove/telemetry/phoenix_server.py; sqlite in memory), started lazily by the first test that requests it. Mark
  such tests `@pytest.mark.phoenix`. Its log is under pytest's basetemp (`phoenix0/phoenix.log`). Phoenix
  ingests ~130 spans/s: keep each test's data small and poll until it is visible
  (`fixtures.traffic.wait_for_spans`).
- `project_name`: a Phoenix project name unique to the test, so tests share the server without seeing each
  other's spans.
"""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from fixtures.traffic import ...` in tests


def pytest_configure(config):
    # arize-phoenix-client ships a pytest plugin (entry point "phoenix") that records every test marked
    # `phoenix` as a Phoenix experiment run and posts it to whatever server the environment names. Our
    # `phoenix` marker only means "needs the local server", so switch that plugin off (`-p no:phoenix` in
    # addopts would do the same, earlier).
    plugin = config.pluginmanager.get_plugin("phoenix")
    if plugin is not None:
        config.pluginmanager.unregister(plugin)


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory):
    """The session's Phoenix server (`.url`, `.traces_endpoint`, `.pid`, `.workdir`, `.startup_seconds`)."""
    from selfimprove.telemetry.phoenix_server import start_phoenix

    server = start_phoenix(workdir=tmp_path_factory.mktemp("phoenix"), memory_db=True, timeout=120)
    print(f"\n[phoenix] {server.url} pid {server.pid} ready in {server.startup_seconds:.1f}s", file=sys.stderr)
    try:
        yield server
    finally:
        server.stop()
        assert not server.is_running(), f"Phoenix pid {server.pid} survived stop()"


@pytest.fixture
def project_name(request) -> str:
    """`t-<test name>-<8 hex>`: unique per test, and a valid Phoenix project name."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:40].strip("-")
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"
