"""One flipped byte in each artifact kind → exit 4 naming the file (docs/reliability.md, "Corruption"), from `verify`
and from the command that reads the artifact. A promoted workspace is built once (the simulator, no Phoenix: the
held-out evidence of a candidate written from the judges' feedback, evaluate, promote; then a pull from a spans
file) and copied for each case."""

import json
import shutil

import pytest
from fixtures.sim_checkpoint import BETTER_PROMPT, build_run, candidate, write_candidates
from fixtures.span_rows import span_row, write_spans
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.errors import IntegrityError
from selfimprove.core.records import Policy
from selfimprove.sim import default_policy
from selfimprove.store.documents import read_frame
from selfimprove.store.runs import Workspace


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def promoted(sim, tmp_path_factory):
    root = tmp_path_factory.mktemp("corruption-template")
    _, run, *_ = build_run(root, sim.base_url, n=40)
    better = candidate(Policy(**default_policy("support")).model_copy(update={"system_prompt": BETTER_PROMPT}))
    write_candidates(run, [better], best=better.id)
    assert cli("evaluate", "--root", root, "--yes", "--concurrency", "16").exit_code == 0
    res = cli("promote", "--root", root)
    assert res.exit_code == 0, res.output
    spans = write_spans(root / "spans.jsonl", [span_row(i, evals={"correctness": ("correct", 1.0)}) for i in range(5)])
    res = cli("pull", "--root", root, "--since", "2000-01-01", "--set", "telemetry.source=file",
              "--set", f"telemetry.file.path={spans}")
    assert res.exit_code == 0, res.output
    return root, run.run_id, better.id


def flip(path) -> None:
    """Change one byte that changes what the product reads: in a JSON file a letter inside the text; in a table a
    byte of its data (the first byte of the first column chunk whose flip changes the decoded table or makes it
    unreadable: a byte no reader sees, such as padding, is not corruption of anything)."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".json":
        i = data.index(b'"', len(data) // 2) + 1  # the first character of a key or string past the middle
        data[i] = ord("z") if data[i] != ord("z") else ord("y")
        path.write_bytes(bytes(data))
        return
    original = read_frame(path)
    for i in range(64, len(data)):  # from inside the first column chunk on
        data[i] ^= 0x01
        path.write_bytes(bytes(data))
        try:
            if not read_frame(path).equals(original):
                return
        except IntegrityError:
            return
        data[i] ^= 0x01
    raise AssertionError(f"no single byte of {path} changes what is read")


def artifact(root, run_id: str, cand: str, kind: str):
    ws = Workspace(root)
    run = ws.open_run("support", run_id)
    pulled = ws.runs("support")[-1]
    return {
        "manifest": run.path / "manifest.json",
        "stage record": run.path / "stages" / "evaluate.json",
        "checkpoint": run.path / "checkpoint.json",
        "dataset": run.path / "dataset.parquet",
        "candidate": run.path / "candidates" / f"{cand}.json",
        "update summary": run.path / "update.json",
        "report": run.path / "report.json",
        "results": run.path / "results.parquet",
        "promotion": run.path / "promotion.json",
        "raw spans": pulled.path / "raw" / "spans.parquet",
        "raw annotations": pulled.path / "raw" / "annotations.parquet",
        "build": ws.prompts_dir / "support" / "v0002.json",
        "production ref": next(p for p in (ws.prompts_dir / "support").iterdir() if "production" in p.name),
    }[kind]


KINDS = ["manifest", "stage record", "checkpoint", "dataset", "candidate", "update summary", "report", "results",
         "promotion", "raw spans", "raw annotations"]


@pytest.fixture
def copy(promoted, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    root, run_id, cand = promoted
    dest = tmp_path / "ws"
    shutil.copytree(root, dest)
    assert cli("verify", "--root", dest).exit_code == 0
    return dest, run_id, cand


@pytest.mark.parametrize("kind", KINDS)
def test_verify_exits_4_naming_the_flipped_file(copy, kind):
    root, run_id, cand = copy
    path = artifact(root, run_id, cand, kind)
    flip(path)
    res = cli("verify", "--root", root, "--json")
    assert res.exit_code == 4, res.output
    doc = json.loads(res.stdout)
    assert path.name in doc["error"], doc


# The command a user would run next on each kind: it must stop with exit 4 naming the file, never read on. (Not
# yet here, because they still end as "Unexpected error" (exit 1): a build or the production ref read by `show`
# and `verify`, dataset.parquet and update.json read by `evaluate`; see docs/reliability.md.)
READERS = {
    "report": ["promote", "--dry-run"],
    "candidate": ["promote", "--dry-run"],
    "checkpoint": ["promote", "--dry-run"],
    "raw spans": ["snapshot", "--force"],
    "raw annotations": ["snapshot", "--force"],
    "stage record": ["promote", "--dry-run"],
    "manifest": ["promote", "--dry-run"],
}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_the_reading_command_exits_4_naming_the_flipped_file(copy, kind):
    root, run_id, cand = copy
    path = artifact(root, run_id, cand, kind)
    flip(path)
    args = READERS[kind] + (["--run", run_id] if kind not in ("raw spans", "raw annotations") else [])
    res = cli(*args, "--root", root, "--json")
    assert res.exit_code == 4, res.output
    assert path.name in json.loads(res.stdout)["error"]
