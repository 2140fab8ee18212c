"""docs/quickstart.md, run as a newcomer would: its bash block, line by line in one shell, with only the two
ports swapped for free ones. It starts its own Phoenix (`selfimprove phoenix serve`) and simulator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from selfimprove.telemetry.phoenix_server import free_port

DOC = Path(__file__).resolve().parents[1] / "docs" / "quickstart.md"


def quickstart_script() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text("utf-8"), flags=re.DOTALL)
    assert len(blocks) == 1, "docs/quickstart.md must hold exactly one bash block (the one this test runs)"
    return blocks[0]


@pytest.mark.timeout(900)
def test_quickstart_runs_as_written(tmp_path):
    script = quickstart_script()
    assert "6006" in script and "8000" in script
    script = script.replace("6006", str(free_port())).replace("8000", str(free_port()))
    # stop whatever the script left running, whatever happens
    (tmp_path / "quickstart.sh").write_text("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
                                           + script, "utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SELFIMPROVE_NO_PROGRESS": "1"}
    proc = subprocess.run(["bash", "quickstart.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
                          timeout=840)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Promoted" in proc.stderr and "OK: 1 run(s)" in proc.stderr
    assert "no price for sim-" in " ".join(proc.stderr.split())  # the quick start sets no prices: it is told
    shown = (tmp_path / "build.txt").read_text("utf-8")
    assert "v0002 of support" in shown and "(production)" in shown and "system prompt" in shown
    build = json.loads((tmp_path / "prompts" / "support" / "v0002.json").read_text("utf-8"))
    assert build["policy"]["system_prompt"] in " ".join(shown.split()) or \
        build["policy"]["system_prompt"].splitlines()[0] in shown
    assert (tmp_path / ".phoenix" / "phoenix.log").is_file()  # Phoenix kept its data where the doc says
