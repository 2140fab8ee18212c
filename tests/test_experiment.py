"""`selfimprove experiment`: a hand-written change replayed against production on held-out data (the real openai
SDK against the simulator, real phoenix-evals judges), decided by evaluate's statistics and gate, recorded as a
hypothesis and a result in the run's manifest chain, listed by `experiments`, promotable through `promote`."""

import json
import shutil

import pytest
from fixtures.sim_checkpoint import BETTER_PROMPT, build_run
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.records import Policy
from selfimprove.sim import default_policy, start_server
from selfimprove.store.builds import list_builds, production
from selfimprove.store.runs import Workspace
from selfimprove.store.verify import verify_run

# the support world's hidden order-number rule, fixed by hand (the test may know it; the optimizer may not), on
# top of a production prompt that covers every other rule (so the one fixed rule is what the statistics see)
FIX = "- Always quote the customer's order number (for example #12345) so they see their order was looked up."
BASE = Policy(**default_policy("support")).model_copy(update={"system_prompt": BETTER_PROMPT.replace(FIX + "\n", "")})
assert FIX not in BASE.system_prompt
NOOP = "- Thank the customer for contacting Acme."


@pytest.fixture(scope="module")
def sim():
    server = start_server("support", seed=0, mode="subprocess")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def built(sim, tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment-template")
    build_run(root, sim.base_url, n=60, max_calls=5000, policy=BASE)
    shutil.rmtree(root / "production-cache")
    return root


@pytest.fixture
def root(built, tmp_path, monkeypatch):
    monkeypatch.delenv("SIM_API_KEY", raising=False)
    monkeypatch.setenv("SELFIMPROVE_NO_PROGRESS", "1")
    dest = tmp_path / "ws"
    shutil.copytree(built, dest)
    return dest


def policy_file(root, name, extra):
    path = root / name
    path.write_text(f'system_prompt = """{BASE.system_prompt}\n{extra}"""\nmodel = "{BASE.model}"\n'
                    f"temperature = {BASE.temperature}\n")
    return path


def cli(*args):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_prompt_that_fixes_a_hidden_rule_is_accepted_recorded_listed_and_promotable(root):
    fix = policy_file(root, "fix.toml", FIX)
    res = cli("experiment", "--root", str(root), "--json", "--no-phoenix", "--test", str(fix), "--hypothesis",
              "quoting the order number fixes the order-number complaints", "--expected-effect", "0.2")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["schema"] == "selfimprove.experiment/1"
    hyp, result = out["hypothesis"], out["result"]
    assert hyp["id"].startswith("h-") and hyp["control"]["kind"] == "production" and hyp["test"]["kind"] == "file"
    assert hyp["control"]["policy_digest"] == BASE.digest and hyp["metric"] == "policy_compliance"
    assert [g["text"] for g in hyp["change"]["guidelines"]["added"]] == [FIX[2:]]
    assert hyp["expected_effect"] == 0.2 and hyp["parent"] == BASE.digest and "SPRT" in hyp["method"]
    assert result["outcome"] == "accepted" and result["diff"] > 0.1 and result["ci"][0] > 0
    assert result["p_value"] < 0.05 and 0 < result["n_samples"] <= 60
    # recorded in the run as a stage of the chain, and verify covers the record and the result
    run = Workspace(root).open_run("support")
    folder = run.path / "experiments" / hyp["id"]
    assert json.loads((folder / "result.json").read_text())["outcome"] == "accepted"
    report = json.loads((folder / "report.json").read_text())
    assert report["baseline"]["policy_digest"] == BASE.digest and report["best"] == hyp["id"]
    record = run.record(f"experiment.{hyp['id']}")
    assert {o["path"] for o in record["outputs"]} >= {f"experiments/{hyp['id']}/{f}" for f in
                                                        ("hypothesis.json", "result.json", "report.json")}
    verify_run(run)
    # asked again: the same record, reused
    again = json.loads(cli("experiment", "--root", str(root), "--json", "--no-phoenix", "--test", str(fix),
                           "--expected-effect", "0.2", "--hypothesis",
                           "quoting the order number fixes the order-number complaints").stdout)
    assert again["reused"] and again["result"] == result
    # listed with its outcome
    listed = json.loads(cli("experiments", "--root", str(root), "--json").stdout)["experiments"]
    assert [(e["hypothesis"]["id"], e["result"]["outcome"]) for e in listed] == [(hyp["id"], "accepted")]
    check_exports(root, hyp["id"])
    # promoted through the same gate: the first promotion records production's policy, then the test arm
    res = cli("promote", "--root", str(root), "--json", "--candidate", hyp["id"])
    assert res.exit_code == 0, res.output
    promoted = json.loads(res.stdout)
    assert promoted["action"] == "promoted" and promoted["builds_written"] == ["v0001", "v0002"]
    ws = Workspace(root)
    v2 = list_builds(ws.prompts_dir, "support")[1]
    assert production(ws.prompts_dir, "support").name == "v0002" and FIX in v2.policy.system_prompt
    assert v2.evidence["report"]["path"] == f"experiments/{hyp['id']}/report.json"
    verify_run(run)
    # a flipped byte in the result is an integrity failure
    path = folder / "result.json"
    path.write_text(path.read_text().replace("accepted", "acceptee"))
    assert cli("verify", "--root", str(root)).exit_code == 4


def test_a_change_that_changes_nothing_is_refused_and_a_file_control_cannot_promote(root):
    noop = policy_file(root, "noop.json.toml", NOOP)
    res = cli("experiment", "--root", str(root), "--json", "--no-phoenix", "--test", str(noop))
    assert res.exit_code == 3, res.output
    out = json.loads(res.stdout)
    assert out["result"]["outcome"] == "refused" and out["result"]["reasons"]
    assert not (out["result"]["ci"][0] > 0 and out["result"]["p_value"] < 0.05)
    hid = out["hypothesis"]["id"]
    res = cli("promote", "--root", str(root), "--json", "--candidate", hid)
    assert res.exit_code == 3 and not (root / "prompts" / "support").exists()
    # identical arms are a usage error before anything is spent
    res = cli("experiment", "--root", str(root), "--json", "--no-phoenix", "--test", str(noop), "--control",
              str(noop))
    assert res.exit_code == 2 and "nothing to test" in json.loads(res.stdout)["error"]
    # a one-parameter experiment against a policy file control is recorded, but cannot promote
    res = cli("experiment", "--root", str(root), "--json", "--no-phoenix", "--control", str(noop), "--test",
              str(noop), "--test-set", "temperature=0.0", "--n", "12")
    assert res.exit_code in (0, 3), res.output
    one = json.loads(res.stdout)["hypothesis"]
    assert one["change"]["params"] == {"temperature": [0.7, 0.0]} and one["test"]["overrides"] == ["temperature=0.0"]
    if res.exit_code == 0:
        assert cli("promote", "--root", str(root), "--candidate", one["id"]).exit_code == 3
    # the library twin: a refusal is a result, not an exception
    import selfimprove as si

    rep = si.experiment("support", si.ExperimentOptions(test=str(noop), expected_effect=0.3, phoenix=False),
                        root=root)
    assert rep.result.outcome == "refused" and rep.hypothesis.id not in (hid, one["id"])
    listed = json.loads(cli("experiments", "--root", str(root), "--json").stdout)["experiments"]
    assert {e["hypothesis"]["id"] for e in listed} == {hid, one["id"], rep.hypothesis.id}


@pytest.mark.phoenix
def test_both_arms_are_phoenix_experiments_once_and_a_refusing_phoenix_is_a_warning(root, phoenix):
    from phoenix.client import Client

    noop = policy_file(root, "noop.toml", NOOP)
    args = ["experiment", "--root", str(root), "--json", "--test", str(noop), "--expected-effect", "0.3",
            "--set", f"telemetry.phoenix.endpoint={phoenix.url}"]
    res = cli(*args)  # on by default: the target's telemetry source is Phoenix
    assert res.exit_code == 3, res.output
    out = json.loads(res.stdout)
    links = out["phoenix"]
    assert links and not out["warnings"]
    client = Client(base_url=phoenix.url)
    dataset = client.datasets.get_dataset(dataset=links["dataset"]["id"])
    ids = {ex["metadata"]["sample_id"] for ex in dataset.examples}
    assert len(ids) == len(dataset.examples) == links["dataset"]["examples"] and ids <= {f"s{i:03d}" for i in range(60)}
    exps = {e["id"]: e for e in client.experiments.list(dataset_id=dataset.id)}
    control, test = links["experiments"]["control"], links["experiments"]["test"]
    assert set(exps) == {control["id"], test["id"]}
    assert exps[test["id"]]["successful_run_count"] == out["result"]["n_samples"] == test["runs_logged"]
    ran = client.experiments.get_experiment(experiment_id=test["id"])
    assert {e.name for e in ran["evaluation_runs"]} == {"policy_compliance", "tone", "style"}
    tags = client._client.get(f"v1/experiments/{control['id']}/tags").json()["data"]
    assert [t["name"] for t in tags] == ["baseline"] and test["url"].startswith(phoenix.url)
    # again (the stage is reused): the same dataset and experiments, nothing logged twice
    again = json.loads(cli(*args).stdout)["phoenix"]
    assert again["dataset"]["id"] == dataset.id and again["experiments"]["test"]["id"] == test["id"]
    assert again["experiments"]["test"]["runs_logged"] == again["experiments"]["control"]["runs_logged"] == 0
    assert len(client.experiments.list(dataset_id=dataset.id)) == 2
    # a Phoenix that is not there: a warning, the result stands
    res = cli("experiment", "--root", str(root), "--json", "--test", str(noop), "--expected-effect", "0.3",
              "--set", "telemetry.phoenix.endpoint=http://127.0.0.1:9")
    gone = json.loads(res.stdout)
    assert res.exit_code == 3 and gone["reused"] and gone["phoenix"] is None
    assert any("did not record the experiment" in w for w in gone["warnings"])


NOOP2 = "- Use plain words."


def test_ablation_names_the_one_added_guideline_that_did_the_work_within_its_printed_budget(root):
    three = policy_file(root, "three.toml", f"{FIX}\n{NOOP}\n{NOOP2}")
    res = cli("experiment", "--root", str(root), "--json", "--no-phoenix", "--test", str(three))
    assert res.exit_code == 0, res.output
    assert cli("promote", "--root", str(root), "--candidate", json.loads(res.stdout)["hypothesis"]["id"]).exit_code == 0
    before = json.loads(cli("guidelines", "--root", str(root), "--json").stdout)
    rows = {g["text"]: g for g in before["guidelines"]}
    assert before["production"] == "v0002" and rows[FIX[2:]]["first_build"] == "v0002"
    assert rows[BASE.system_prompt.splitlines()[0]]["builds"] == ["v0001", "v0002"]
    assert all(g["impact"] is None for g in before["guidelines"])
    res = CliRunner().invoke(app, ["guidelines", "--root", str(root), "--json", "--ablate", "--yes", "--max-calls",
                                   "1500"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.stderr.index("ablation of 3 guideline(s) of v0002") < res.stderr.index("at most")  # printed first
    out = json.loads(res.stdout)
    ab = out["ablation"]
    assert ab["build"] == "v0002" and ab["parent"] == "v0001" and len(ab["measured"]) == 3 and not ab["not_measured"]
    assert ab["alpha_per_line"] == pytest.approx(0.05 / 3) and 0 < ab["spent"]["calls"] <= 1500
    impact = {g["text"]: g["impact"] for g in out["guidelines"]}
    assert impact[FIX[2:]]["outcome"] == "accepted" and impact[FIX[2:]]["diff"] > 0
    assert impact[NOOP[2:]]["outcome"] == impact[NOOP2[2:]]["outcome"] == "refused"
    assert impact[BASE.system_prompt.splitlines()[0]] is None  # v0002 did not add it: not ablated


def check_exports(root, hid):
    """Exports round-trip: tables through pandas, fine-tuning files valid in the OpenAI formats."""
    import pandas as pd

    from selfimprove.core.finetune import chat_format_errors

    def export(*args):
        res = cli("export", "--root", str(root), "--json", *args)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    parquet = pd.read_parquet(Workspace(root).open_run("support").path / "dataset.parquet")
    for fmt in ("csv", "jsonl", "parquet"):
        out = export("dataset", "--out", str(root / f"d.{fmt}"))
        back = {"csv": pd.read_csv, "parquet": pd.read_parquet,
                "jsonl": lambda p: pd.read_json(p, lines=True)}[fmt](root / f"d.{fmt}")
        assert out["rows"] == len(back) == len(parquet) == 60
        assert list(back["sample_id"]) == list(parquet["sample_id"])
        assert list(back["eval.policy_compliance.score"]) == list(parquet["eval.policy_compliance.score"])
    results = export("results", "--experiment", hid, "--out", str(root / "r.csv"))
    assert results["rows"] == len(pd.read_csv(root / "r.csv")) > 0
    sft = export("sft", "--source", "both", "--experiment", hid, "--out", str(root / "sft.jsonl"))
    lines = [json.loads(line) for line in (root / "sft.jsonl").read_text().splitlines()]
    assert len(lines) == sft["rows"] > 0 and sft["skipped"]  # the non-compliant ones are left out
    assert all(not chat_format_errors(e) for e in lines)
    assert {e["messages"][0]["content"] for e in lines} >= {BASE.system_prompt}
    pairs = export("preferences", "--experiment", hid, "--out", str(root / "pref.jsonl"))
    prefs = [json.loads(line) for line in (root / "pref.jsonl").read_text().splitlines()]
    assert len(prefs) == pairs["rows"] > 0
    for p in prefs:
        assert set(p) == {"input", "preferred_output", "non_preferred_output"}
        assert p["input"]["messages"][0] == {"role": "system", "content": BASE.system_prompt}
        assert p["preferred_output"][0]["role"] == "assistant" != p["preferred_output"][0]["content"]
    assert cli("export", "--root", str(root), "sft", "--out", str(root / "sft.csv")).exit_code == 2
