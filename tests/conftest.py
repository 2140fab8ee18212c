"""Shared fixtures. Keep this file to fixtures any test may use.

- `phoenix`: ONE real Phoenix server per test session (a subprocess from .venv-phoenix, see
  selfimprove/telemetry/phoenix_server.py; sqlite in memory), started lazily by the first test that requests it. Mark
  such tests `@pytest.mark.phoenix`. Its log is under pytest's basetemp (`phoenix0/phoenix.log`). Phoenix
  ingests ~130 spans/s: keep each test's data small and poll until it is visible
  (`fixtures.traffic.wait_for_spans`).
  With `--phoenix-db postgres` (`make test-postgres`) the server keeps its data in a real PostgreSQL instead: the
  system's package, a throwaway cluster on loopback (fixtures/postgres.py); where it cannot start, every test
  that needs Phoenix is skipped with the reason.
- `project_name`: a Phoenix project name unique to the test, so tests share the server without seeing each
  other's spans.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from fixtures.traffic import ...` in tests


def pytest_addoption(parser):
    parser.addoption("--phoenix-db", choices=("sqlite", "postgres"), default="sqlite",
                     help="the session Phoenix server's database: sqlite in memory (default) or a throwaway "
                          "PostgreSQL cluster on loopback (make test-postgres)")


def pytest_configure(config):
    # arize-phoenix-client ships a pytest plugin (entry point "phoenix") that records every test marked
    # `phoenix` as a Phoenix experiment run and posts it to whatever server the environment names. Our
    # `phoenix` marker only means "needs the local server", so switch that plugin off (`-p no:phoenix` in
    # addopts would do the same, earlier).
    plugin = config.pluginmanager.get_plugin("phoenix")
    if plugin is not None:
        config.pluginmanager.unregister(plugin)


@pytest.fixture(scope="session")
def phoenix(request, tmp_path_factory):
    """The session's Phoenix server (`.url`, `.traces_endpoint`, `.pid`, `.workdir`, `.startup_seconds`)."""
    from selfimprove.telemetry.phoenix_server import start_phoenix

    database = None
    if request.config.getoption("--phoenix-db") == "postgres":
        database = request.getfixturevalue("postgres")
    env = {"PHOENIX_SQL_DATABASE_URL": database.url} if database else None
    server = start_phoenix(workdir=tmp_path_factory.mktemp("phoenix"), memory_db=database is None, timeout=120,
                           extra_env=env)
    where = f"PostgreSQL on port {database.port}" if database else "sqlite in memory"
    print(f"\n[phoenix] {server.url} pid {server.pid} ({where}) ready in {server.startup_seconds:.1f}s",
          file=sys.stderr)
    try:
        yield server
    finally:
        server.stop()
        assert not server.is_running(), f"Phoenix pid {server.pid} survived stop()"


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on loopback (`.url`, `.port`), or a skip saying why it cannot start here."""
    from fixtures.postgres import PostgresUnavailable, start_postgres

    from selfimprove.telemetry.phoenix_server import phoenix_command

    python = phoenix_command()[0]
    probe = subprocess.run([python, "-c", "import asyncpg"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"the Phoenix venv ({python}) has no asyncpg, Phoenix's PostgreSQL driver: "
                    "`make test-postgres` installs it (arize-phoenix[pg])")
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL cannot start here: {exc}")
    print(f"\n[postgres] 127.0.0.1:{server.port} pid {server.process.pid}", file=sys.stderr)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def project_name(request) -> str:
    """`t-<test name>-<8 hex>`: unique per test, and a valid Phoenix project name."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:40].strip("-")
    return f"t-{stem}-{uuid.uuid4().hex[:8]}"
