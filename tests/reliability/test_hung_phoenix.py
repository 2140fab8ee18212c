"""A hung Phoenix (a real socket server on loopback that accepts connections and never answers): `pull` says what
it is waiting for, gives up after the configured time with a message a user can act on, and leaves no run."""

import json
import socket
import threading
import time

import pytest
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.stages.pull import Puller


class HungServer:
    """Accepts every connection, reads what it is sent, never writes a byte."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)  # kept open: the client waits for an answer that never comes

    def close(self):
        self._listener.close()
        for c in self._conns:
            c.close()


@pytest.fixture
def hung():
    server = HungServer()
    yield server
    server.close()


def workspace(root, url):
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "support.toml").write_text(
        f'target = "support"\n[telemetry.phoenix]\nendpoint = "{url}"\nproject = "p"\ntimeout_s = 0.6\n')
    return root


def test_pull_from_a_hung_phoenix_gives_up_in_bounded_time_and_leaves_nothing(tmp_path, hung):
    root = workspace(tmp_path / "ws", hung.url)
    t0 = time.monotonic()
    res = CliRunner().invoke(app, ["pull", "--root", str(root), "--give-up-after", "2", "--json"])
    took = time.monotonic() - t0
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "selfimprove.error/1"
    assert f"Phoenix at {hung.url} did not answer: gave up after" in doc["error"]
    assert "--give-up-after" in doc["hint"] and "timeout_s" in doc["hint"]
    assert 1.5 < took < 6, took  # not 300 s x 4 attempts
    assert hung.accepted >= 2  # it retried within the bound
    assert [p for p in (root / "runs" / "support").iterdir() if p.is_dir()] == []  # no run left behind


def test_pull_reports_what_it_waits_for_and_each_retry(tmp_path, hung):
    root = workspace(tmp_path / "ws", hung.url)
    seen = []
    puller = Puller(root, overrides=["telemetry.phoenix.give_up_after_s=1.5"], on_progress=seen.append)
    with pytest.raises(Exception, match="did not answer"):
        puller.pull(since="2024-01-01T00:00Z")
    notes = [p.note for p in seen if p.kind == "waiting"]
    assert notes[0] == f"waiting for spans from Phoenix at {hung.url}"
    assert any("no answer after" in n and "retrying (gives up after 1.5 s)" in n for n in notes), notes
    assert any("(attempt 2 of" in n for n in notes), notes
