"""`run`'s monitor on pulled judged calls (file source): production's online score against the held-out score its
build was promoted on; a significant drop beyond the margin exits 5 and, configured so, rolls back."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest
from fixtures.span_rows import T0, span_row, write_spans
from test_builds import P3, chain  # noqa: F401 - the fixture: v0001 → v0002 → v0003 (production)
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.store.builds import production

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [*args])


def _production_calls(root, system: str, rate: float, n: int = 60, seed: int = 0):
    """Judged calls of the build whose prompt is `system` (file source), each its own trace."""
    rng = random.Random(seed)
    rows = [span_row(i, system=system, start=T0 + timedelta(seconds=i),
                     evals={"policy": ("pass", 1.0) if rng.random() < rate else ("fail", 0.0)}) for i in range(n)]
    path = write_spans(root / "traffic" / "production.jsonl", rows)
    cfg = root / "configs" / "support.toml"
    cfg.write_text(cfg.read_text().split("[telemetry]")[0]
                   + f'[telemetry]\nsource = "file"\n[telemetry.file]\npath = "{path}"\n')


@pytest.mark.parametrize(("action", "production_after"), [("report", "v0003"), ("rollback", "v0002")])
def test_run_reports_production_regressing_online_with_exit_5(chain, action, production_after):  # noqa: F811
    _production_calls(chain, P3, rate=0.25)  # v0003 was promoted on a held-out mean of 0.60
    out = cli("run", "--root", str(chain), "--json", "--set", f"monitor.on_regression={action}")
    assert out.exit_code == 5, out.output
    doc = json.loads(out.stdout)
    assert doc["outcome"] == "regressed" and doc["monitor"]["regressed"] and doc["monitor"]["build"] == "v0003"
    assert doc["monitor"]["reference"] == pytest.approx(0.6) and doc["monitor"]["n"] == 60
    assert [s["stage"] for s in doc["steps"]] == ["pull", "snapshot", "monitor"]
    assert doc["production"] == production_after == production(chain / "prompts", "support").name
    assert cli("verify", "--root", str(chain)).exit_code == 0


def test_run_sees_no_regression_when_production_holds_its_score(chain):  # noqa: F811
    _production_calls(chain, P3, rate=0.62, seed=1)
    out = cli("run", "--root", str(chain), "--json", "--set", "trigger.min_new_samples=1000")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["outcome"] == "skipped" and doc["monitor"]["regressed"] is False and doc["regressed"] is False
