"""The loop end to end on REAL models (make test-real): production replies by Qwen2.5-Coder 0.5B traced into the
real Phoenix, the deterministic code evals deciding (selfimprove.demo.local_task), an LLM judge on Qwen 1.5B through
phoenix-evals alongside, the optimizer on Qwen 1.5B, then `selfimprove run` through the CLI.

Nothing here asserts an improvement: a small real model may write no usable candidate. What must hold whatever the
models write: every judge row is parsed or counted as failed, the code evals' annotations are exactly what the
checks say about the replies, every candidate that passed the guards is free of meta-prompt scaffolding and new
template variables (and every rejected one says why), the gate promotes only what it proved (a CI above zero) and
otherwise says why not, failed calls are counted, the run verifies, and a re-run is paid from the call cache.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.demo.local_task import CHECKS, CODE_EVALS, PRIMARY, local_config, register_code_evals
from selfimprove.demo.local_traffic import make_local_traffic
from selfimprove.optimizers.guards import META_TAGS

pytestmark = [pytest.mark.real, pytest.mark.phoenix]
runner = CliRunner()
N = 20
JUDGED = 2


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_the_loop_on_real_models(local_models, tmp_path, phoenix, project_name):
    from phoenix.client import Client

    task, optimizer = local_models
    register_code_evals()
    made = make_local_traffic(N, phoenix_url=phoenix.url, project=project_name, task_url=task.base_url,
                              judge_url=optimizer.base_url, judge_rows=JUDGED, seed=0)
    print("\n[production]", {k: made[k] for k in ("calls", "errors", "spans", "annotations", "scores")},
          "\n[llm judge]", made["llm_judge"])
    assert made["spans"] + made["errors"] == N and made["spans"] >= N - 2
    probe = made["llm_judge"]
    assert probe["rows"] == JUDGED and probe["judgments"] == 2 * JUDGED  # each reply, with both schemas
    assert probe["parsed"] + probe["failed"] == probe["judgments"]  # parsed or counted, never lost
    assert all(c["parsed"] + c["failed"] == JUDGED for c in probe["by_schema"].values())
    assert sum(probe["reasons"].values()) == probe["failed"] and sum(probe["labels"].values()) == probe["parsed"]

    # the code evals' annotations in Phoenix are exactly what the checks say about each reply
    assert made["annotations"] == len(CODE_EVALS) * made["spans"]
    frame = Client(base_url=phoenix.url).spans.get_span_annotations_dataframe(
        span_ids=[r["span_id"] for r in made["replies"]], project_identifier=project_name)
    logged = _scores(frame)
    for reply in made["replies"]:
        for name in CODE_EVALS:
            assert logged[(reply["span_id"], name)] == CHECKS[name](reply["output"])["score"]

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "local.toml").write_text(local_config(
        target="local", phoenix_url=phoenix.url, project=project_name, task_url=task.base_url,
        optimizer_url=optimizer.base_url, min_new_samples=N - 4))
    res = cli("run", "--root", tmp_path, "--json")
    doc = json.loads(res.stdout)
    print("[run]", {k: doc.get(k) for k in ("outcome", "candidates", "evaluated", "calls", "primary", "refusal")})
    assert res.exit_code in (0, 3), res.output
    assert doc["schema"] == "selfimprove.run/1" and doc["outcome"] in ("promoted", "refused"), doc
    run_path = Path(doc["run_path"])

    # guards: a candidate that passed is free of scaffolding and new variables; a rejected one says why
    update = json.loads((run_path / "update.json").read_text())
    seed_prompt = json.loads((run_path / "checkpoint.json").read_text())["policy"]["system_prompt"]
    for row in update["candidates"]:
        if row["role"] == "seed":
            continue
        prompt = json.loads((run_path / "candidates" / f"{row['id']}.json").read_text())["policy"]["system_prompt"]
        if row["passed_guards"]:
            assert not re.search(r"</?(" + "|".join(META_TAGS) + r")\b", prompt, re.IGNORECASE), prompt
            assert not re.search(r"(?<!\{)\{[A-Za-z_]\w*\}(?!\})", prompt) or "{" in seed_prompt, prompt
        else:
            assert row["rejected_by"], row

    # the gate promotes only what it proved; otherwise it says why
    if doc["outcome"] == "promoted":
        assert res.exit_code == 0 and doc["primary"]["eval"] == PRIMARY and doc["primary"]["ci"][0] > 0
    else:
        assert res.exit_code == 3 and (doc["refusal"] or update["best"] is None), doc

    # failed calls are counted per policy, and the run verifies
    if doc["evaluated"]:
        report = json.loads((run_path / "report.json").read_text())
        for entry in [report["baseline"], *report["candidates"]]:
            errors = entry["errors"]
            assert errors["generation"] >= 0 and errors["judgement"] >= 0
    assert cli("verify", "--root", tmp_path).exit_code == 0

    # a re-run is paid from the call cache: not one new call to the models, the same result
    if doc["evaluated"]:
        again = cli("evaluate", "--root", tmp_path, "--run", run_path.name, "--force", "--yes", "--json")
        redo = json.loads(again.stdout)
        print("[re-run evaluate]", redo["spent"])
        assert again.exit_code in (0, 3), again.output
        assert redo["spent"]["calls"] == 0 and redo["spent"]["cache_hits"] > 0, redo["spent"]
        assert redo["report"]["candidates"][0]["evals"][PRIMARY] == report["candidates"][0]["evals"][PRIMARY]
    else:
        again = cli("update", "--root", tmp_path, "--run", run_path.name, "--force", "--yes", "--json")
        redo = json.loads(again.stdout)
        print("[re-run update]", {k: redo[k] for k in ("calls", "best")})
        assert again.exit_code == 0, again.output
        assert redo["calls"] == 0 and redo["best"] == update["best"]
        assert [c["id"] for c in redo["candidates"]] == [c["id"] for c in update["candidates"]]


def _scores(frame) -> dict[tuple[str, str], float]:
    span = frame.get("span_id", frame.index)
    return {(s, name): float(score) for s, name, score in zip(span, frame["annotation_name"],
                                                              frame["result.score"], strict=True)}
