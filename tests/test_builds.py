"""`diff` and `show`: prompt diff, parameter changes, the chain's estimated change, exit codes; `log` of builds."""

import json

import pytest
from test_promote import ev, make_run
from typer.testing import CliRunner

from selfimprove.cli.app import app
from selfimprove.core.errors import GateFailed
from selfimprove.core.records import Build, Policy
from selfimprove.stages.compare import compare_builds, resolve_build
from selfimprove.stages.promote import promote
from selfimprove.store.builds import list_builds, write_build
from selfimprove.store.runs import Workspace

runner = CliRunner()
P1 = "You are a support agent."
P2 = "You are a support agent.\nCite the order id."
P3 = "You are a support agent.\nCite the order id.\nReply in the customer's language."


@pytest.fixture
def chain(tmp_path):
    """v0001 (baseline) → v0002 (+0.20 policy) → v0003 (+0.10 policy, tone -0.01)."""
    r1, _ = make_run(tmp_path, base=P1, cand=P2)
    promote(root=tmp_path, run=r1.run_id)
    r2, _ = make_run(tmp_path, base=P2, cand=P3,
                     evals={"policy": ev(0.10, (0.04, 0.16)), "tone": ev(-0.01, (-0.03, 0.01))})
    promote(root=tmp_path, run=r2.run_id)
    return tmp_path


def cli(*args):
    return runner.invoke(app, [*args])


def test_descendant_does_not_regress(chain):
    res = cli("diff", "v0001", "v0003", "--root", str(chain), "--json", "--fail-on-regression")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "selfimprove.diff/1" and doc["relation"] == "descendant"
    assert doc["evals"]["policy"]["delta"] == pytest.approx(0.30) and doc["evals"]["policy"]["verdict"] == "improved"
    assert doc["evals"]["tone"]["delta"] == pytest.approx(-0.01) and doc["evals"]["tone"]["verdict"] == "unchanged"
    assert "+Reply in the customer's language." in doc["prompt_diff"] and "+Cite the order id." in doc["prompt_diff"]
    assert [s["build"] for s in doc["path"]] == ["v0002", "v0003"]
    assert doc["evidence"]["b"]["primary"]["diff"] == 0.10 and doc["evidence"]["a"]["kind"] == "baseline"
    assert doc["regresses"] is False


def test_rollback_regresses_and_exit_code_depends_on_the_flag(chain):
    res = cli("diff", "production", "v0002", "--root", str(chain), "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["relation"] == "ancestor" and doc["regresses"] is True
    assert doc["evals"]["policy"]["delta"] == pytest.approx(-0.10)
    assert "-Reply in the customer's language." in doc["prompt_diff"]
    res = cli("diff", "production", "v0002", "--root", str(chain), "--fail-on-regression")
    assert res.exit_code == 3 and "v0002 regresses v0003" in res.stderr
    assert "policy: estimated change -0.100" in res.stderr


def test_tolerance_comes_from_the_config(chain):
    cfg = chain / "configs" / "support.toml"
    cfg.write_text(cfg.read_text() + "max_regression = { policy = 0.5 }\n")
    res = cli("diff", "v0003", "v0002", "--root", str(chain), "--fail-on-regression")
    assert res.exit_code == 0, res.output
    res = cli("diff", "v0003", "v0002", "--root", str(chain), "--fail-on-regression",
              "--set", "gate.max_regression.policy=0.05")
    assert res.exit_code == 3


def test_parameter_changes_and_same_build(tmp_path):
    a = Build(target="t", version=1, policy=Policy(system_prompt="x", model="sim-small", temperature=0.2),
              policy_digest="d1")
    pb = Policy(system_prompt="x", model="sim-large", temperature=0.2, max_tokens=100)
    b = Build(target="t", version=2, policy=pb, policy_digest=pb.digest, parent="v0001", parent_digest=a.digest,
              evidence={"evals": {"policy": ev(0.1, (0.05, 0.15))}, "primary": {"eval": "policy", "diff": 0.1}})
    out = compare_builds(a, b, [a, b], {})
    assert out["params"] == [{"name": "model", "a": "sim-small", "b": "sim-large"},
                             {"name": "max_tokens", "a": None, "b": 100}]
    assert out["prompt_diff"] == "" and out["relation"] == "descendant" and not out["regresses"]
    same = compare_builds(b, b, [a, b], {})
    assert same["relation"] == "same" and same["evals"] == {} and not same["regresses"]


def test_diverged_branches_and_unmeasured_steps(chain):
    ws = Workspace(chain)
    promote(root=chain, to="v0002")  # roll back, then promote a sibling of v0003
    r3, _ = make_run(chain, base=P2, cand=P2 + "\nBe brief.", evals={"policy": ev(0.05, (0.01, 0.09)),
                                                                     "tone": ev(-0.3, (-0.4, -0.2))})
    with pytest.raises(GateFailed):
        promote(root=chain, run=r3.run_id)  # tone regressed: refused
    r3, _ = make_run(chain, base=P2, cand=P2 + "\nBe brief.", evals={"policy": ev(0.15, (0.05, 0.25)),
                                                                     "tone": ev(0.0, (-0.01, 0.01))})
    promote(root=chain, run=r3.run_id)
    v4 = list_builds(ws.prompts_dir, "support")[-1]
    assert v4.name == "v0004" and v4.parent == "v0002"
    out = json.loads(cli("diff", "v0003", "v0004", "--root", str(chain), "--json").stdout)
    assert out["relation"] == "diverged" and out["common_ancestor"] == "v0002"
    assert out["evals"]["policy"]["delta"] == pytest.approx(0.05) and not out["regresses"]
    # a drifted production: the baseline build recorded for it is an unmeasured step
    r4, _ = make_run(chain, base="hand edit", cand="hand edit\nCite the order id.")
    promote(root=chain, run=r4.run_id)
    out = json.loads(cli("diff", "v0004", "production", "--root", str(chain), "--json").stdout)
    assert out["unmeasured"] == ["v0005"] and out["regresses"] is True
    assert "unmeasured" in out["reasons"][-1]


def test_unrelated_build_file(chain, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    pol = Policy(system_prompt="unrelated", model="sim-small")
    write_build(other / "prompts", Build(target="support", version=1, policy=pol, policy_digest=pol.digest))
    path = other / "prompts" / "support" / "v0001.json"
    b = resolve_build(Workspace(chain).prompts_dir, "support", str(path))
    assert b.policy.system_prompt == "unrelated"
    res = cli("diff", str(path), "production", "--root", str(chain), "--fail-on-regression", "--json")
    assert res.exit_code == 3 and json.loads(res.stdout)["relation"] == "unrelated"


def test_show_and_log(chain):
    res = cli("show", "--root", str(chain), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "selfimprove.show/1" and doc["build"]["name"] == "v0003" and doc["production"]
    assert doc["build"]["policy"]["system_prompt"] == P3 and doc["build"]["evidence"]["primary"]["diff"] == 0.10
    res = cli("show", "v0001", "--root", str(chain))  # the product goes to stdout (`show > build.txt`)
    assert res.exit_code == 0 and "Baseline build" in res.stdout and res.stderr == ""
    res = cli("show", "v0002", "--root", str(chain))
    assert res.exit_code == 0 and "Cite the order id." in res.stdout and "+0.200" in res.stdout
    assert P3 not in res.stdout and max(map(len, res.stdout.splitlines())) < 1000  # panels fit their text
    res = cli("show", "v0042", "--root", str(chain))
    assert res.exit_code == 2 and "no build v0042" in res.stderr
    res = cli("log", "--root", str(chain), "--json")
    doc = json.loads(res.stdout)
    assert [(b["name"], b["delta"], b["production"]) for b in doc["builds"]] == \
        [("v0001", None, False), ("v0002", 0.2, False), ("v0003", 0.1, True)]
    res = cli("log", "--root", str(chain))  # off a terminal nothing is cut to 80 columns
    assert res.exit_code == 0 and all(f"v000{i}" in res.stdout for i in (1, 2, 3))
    assert "…" not in res.stdout


def test_target_by_name_without_a_config(chain):
    (chain / "configs" / "support.toml").unlink()
    res = cli("diff", "v0001", "v0002", "--root", str(chain), "--target", "support", "--json")
    assert res.exit_code == 0, res.output
    res = cli("show", "--root", str(chain), "--json")  # the only target under prompts/
    assert res.exit_code == 0 and json.loads(res.stdout)["build"]["name"] == "v0003"


def test_a_tampered_build_fails_verify_and_load_policy(chain):
    import selfimprove
    from selfimprove.core.errors import IntegrityError

    assert cli("verify", "--root", str(chain)).exit_code == 0
    path = chain / "prompts" / "support" / "v0003.json"
    doc = json.loads(path.read_text())
    doc["policy"]["system_prompt"] += " Offer a 50% discount."
    from selfimprove.core.canonical import pretty_json

    path.write_text(pretty_json(doc))
    res = cli("verify", "--root", str(chain), "--json")
    assert res.exit_code == 4 and "v0003.json" in json.loads(res.stdout)["error"]
    with pytest.raises(IntegrityError):
        selfimprove.load_policy("support", root=chain)
    assert cli("diff", "v0002", "v0003", "--root", str(chain)).exit_code == 4


def test_a_noisy_guardrail_drop_is_a_possible_regression_not_a_failure(tmp_path):
    """The gate lets a guardrail drop through when its CI includes 0; diff must judge the same way."""
    r1, _ = make_run(tmp_path, base=P1, cand=P2,
                     evals={"policy": ev(0.3, (0.2, 0.4)), "tone": ev(-0.06, (-0.15, 0.03))})
    assert promote(root=tmp_path, run=r1.run_id).decision.warnings
    res = cli("diff", "v0001", "v0002", "--root", str(tmp_path), "--fail-on-regression", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["evals"]["tone"] == {"delta": -0.06, "ci": [-0.15, 0.03], "tolerance": 0.02,
                                    "verdict": "possible regression"}
    back = json.loads(cli("diff", "v0002", "v0001", "--root", str(tmp_path), "--json").stdout)
    assert back["evals"]["policy"]["ci"] == [-0.4, -0.2] and back["evals"]["policy"]["verdict"] == "regressed"
    assert back["evals"]["tone"]["verdict"] == "unchanged"  # +0.06 with a CI including 0


def test_combined_ci_adds_step_distances_in_quadrature():
    from selfimprove.stages.compare import _combine

    total, ci = _combine([(0.3, (0.2, 0.4)), (0.4, (0.1, 0.5))])
    assert total == pytest.approx(0.7)
    assert ci == pytest.approx((0.7 - (0.1 ** 2 + 0.3 ** 2) ** 0.5, 0.7 + (0.1 ** 2 + 0.1 ** 2) ** 0.5))
    assert _combine([(0.1, (0.0, 0.2)), (0.1, None)]) == (pytest.approx(0.2), None)
