"""`selfimprove demo`: the whole loop on its own local Phoenix and the simulator; labelled SIMULATOR; stops every
process it started, also when interrupted. Each test starts its own Phoenix (~15 s), as the demo does."""

import json
import re
import time
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.demo.run import run_demo

pytestmark = pytest.mark.phoenix


def _reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (urllib.error.URLError, OSError):
        return False


def test_demo_runs_the_loop_and_stops_everything(tmp_path):
    t0 = time.monotonic()
    res = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path), "--traffic", "80", "--json"])
    seconds = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "selfimprove.demo/1" and doc["simulator"] is True and "SIMULATOR" in doc["notice"]
    assert "SIMULATOR" in res.stderr
    assert doc["outcome"] == "promoted", doc["loop"]
    assert doc["primary"]["ci"][0] > 0 and doc["primary"]["candidate_mean"] > doc["primary"]["baseline_mean"]
    assert [b["name"] for b in doc["chain"]] == ["v0001", "v0002"] and doc["production"] == "v0002"
    assert doc["prompt_diff"].startswith("--- v0001/prompt") and "\n+" in doc["prompt_diff"]
    assert doc["report_html"].endswith("report.html")
    ws = doc["workspace"]
    assert (tmp_path / ws.rsplit("/", 1)[-1] / "phoenix").is_dir()  # sqlite in a fresh folder of the workspace
    # every process is gone: Phoenix and the simulator no longer answer
    assert not _reachable(doc["phoenix_url"] + "/healthz") and doc["phoenix_running"] is False
    sim_url = re.search(r"Simulator \(OpenAI-compatible, simulated models\) at (\S+)", res.stderr).group(1)
    assert not _reachable(sim_url + "/models")
    # no key anywhere on disk: the config names the variable only
    config = (tmp_path / ws.rsplit("/", 1)[-1] / "configs" / "demo.toml").read_text()
    assert 'api_key_env = "SELFIMPROVE_DEMO_API_KEY"' in config and "simulator-needs-no-key" not in config
    assert seconds < 120


def test_an_interrupted_demo_stops_what_it_started(tmp_path):
    seen = {}

    def say(text):
        if m := re.search(r"Simulator \(OpenAI-compatible, simulated models\) at (\S+)", text):
            seen["sim"] = m.group(1)
        if m := re.search(r"Phoenix UI: (\S+)", text):
            seen["phoenix"] = m.group(1)
            assert _reachable(seen["phoenix"] + "/healthz")
            raise KeyboardInterrupt  # Ctrl-C while production traffic is about to start

    with pytest.raises(KeyboardInterrupt):
        run_demo(workdir=tmp_path, traffic=20, say=say)
    assert not _reachable(seen["phoenix"] + "/healthz")
    assert not _reachable(seen["sim"] + "/models")
