"""Rollouts: the bandit and assignment core, the versioned rollout document, `rollout start|status|stop`, the
online decision on pulled judged spans (file source), and what `load_policy` serves (sticky, weighted, last
known good)."""

from __future__ import annotations

import json
import logging
import random
from datetime import timedelta

import pytest
from fixtures.span_rows import T0, span_row, write_spans
from test_builds import chain  # noqa: F401 - the fixture: v0001 → v0002 → v0003 (production)
from typer.testing import CliRunner

from selfimprove.app.runtime import load_policy
from selfimprove.cli.app import app
from selfimprove.core.bandit import ArmTotals, arm_at, key_point, normalized, thompson_shares, ucb_shares
from selfimprove.core.errors import IntegrityError, UsageError
from selfimprove.core.online import arm_evidence, monitor_check, online_decision
from selfimprove.stages.rollout import rollout_status, start_rollout, stop_rollout
from selfimprove.store.builds import production
from selfimprove.store.rollouts import read_current, read_log

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [*args])


# -- core --------------------------------------------------------------------------------------------------------
def test_key_points_are_stable_uniform_and_shares_move_keys_one_way():
    points = [key_point("r1", f"user-{i}") for i in range(4000)]
    assert points[:3] == [key_point("r1", f"user-{i}") for i in range(3)]
    assert abs(sum(p < 0.1 for p in points) / 4000 - 0.1) < 0.02
    assert key_point("r2", "user-1") != key_point("r1", "user-1")  # each rollout reshuffles
    low = {i for i, p in enumerate(points) if arm_at(p, [("challenger", 0.1), ("champion", 0.9)]) == "challenger"}
    high = {i for i, p in enumerate(points) if arm_at(p, [("challenger", 0.3), ("champion", 0.7)]) == "challenger"}
    assert low < high  # raising the challenger's share only moves keys to it


def test_bandit_shares_favour_the_better_arm_and_keep_a_floor():
    good, bad = ArmTotals(n=200, total=160), ArmTotals(n=200, total=110)
    t = thompson_shares({"challenger": good, "champion": bad}, floor=0.05)
    assert t["challenger"] == pytest.approx(0.95) and sum(t.values()) == pytest.approx(1)
    even = thompson_shares({"challenger": ArmTotals(), "champion": ArmTotals()}, floor=0.05)
    assert even["challenger"] == pytest.approx(0.5, abs=0.03)
    assert ucb_shares({"challenger": bad, "champion": good}) == {"challenger": pytest.approx(0.05),
                                                                 "champion": pytest.approx(0.95)}
    assert ucb_shares({"challenger": ArmTotals(), "champion": good})["challenger"] == pytest.approx(0.95)
    with pytest.raises(ValueError):
        normalized({"a": 1.0, "b": 0.0}, floor=0.6)


def _scores(mean: float, users: int, per_user: int, seed: int) -> tuple[list[float], list[str]]:
    rng = random.Random(seed)
    scores, keys = [], []
    for u in range(users):
        for _ in range(per_user):
            scores.append(1.0 if rng.random() < mean else 0.0)
            keys.append(f"u{u}")
    return scores, keys


def test_online_decision_promotes_rolls_back_or_waits():
    champ = arm_evidence("v0002", *_scores(0.5, 60, 3, 1))
    better = arm_evidence("v0003", *_scores(0.8, 60, 3, 2))
    worse = arm_evidence("v0003", *_scores(0.2, 60, 3, 3))
    same = arm_evidence("v0003", *_scores(0.5, 60, 3, 4))
    kw = {"min_improvement": 0.05, "alpha": 0.05, "min_samples": 30}
    assert online_decision(champ, better, **kw).action == "promote"
    d = online_decision(champ, worse, **kw)
    assert d.action == "rollback" and d.diff < 0 and d.ci[1] < 0 and "below v0002" in d.reasons[0]
    assert online_decision(champ, same, **kw).action == "continue"
    few = online_decision(champ, arm_evidence("v0003", [1.0] * 10, [f"u{i}" for i in range(10)]), **kw)
    assert few.action == "continue" and "fewer than 30" in few.reasons[0]


def test_clustering_by_key_widens_the_interval():
    scores, keys = _scores(0.5, 40, 1, 5)
    one = arm_evidence("a", scores * 5, [f"{k}-{i}" for i in range(5) for k in keys])  # 200 independent calls
    five = arm_evidence("a", scores * 5, keys * 5)  # 40 users, each seen 5 times with the same outcome
    assert five.clusters == 40 and one.clusters == 200
    assert (five.ci[1] - five.ci[0]) > 1.8 * (one.ci[1] - one.ci[0])


def test_monitor_flags_a_significant_drop_beyond_the_margin_only():
    scores, keys = _scores(0.55, 80, 2, 6)
    assert monitor_check(scores, keys, 0.8, margin=0.05, alpha=0.05, min_samples=20).regressed
    assert not monitor_check(scores, keys, 0.57, margin=0.05, alpha=0.05, min_samples=20).regressed
    assert not monitor_check(scores[:10], keys[:10], 0.8, margin=0.05, alpha=0.05, min_samples=20).regressed
    assert "no held-out score" in monitor_check(scores, keys, None, margin=0.05, alpha=0.05, min_samples=20).reason


# -- start, stop, the document and verify ------------------------------------------------------------------------
def test_start_against_production_moves_the_ref_to_the_parent_and_is_logged(chain):  # noqa: F811
    res = start_rollout(root=chain, challenger="v0003", share=0.2, key_field="user_id")
    assert (res.action, res.production, res.rollout) == ("started", "v0002", "r0001-v0003")
    assert production(chain / "prompts", "support").name == "v0002"
    doc = read_current(chain / "prompts", "support")
    assert doc.shares == {"challenger": 0.2, "champion": 0.8} and doc.key_field == "user_id"
    refs = (chain / "prompts/support/refs.jsonl").read_text().splitlines()
    assert "rollout r0001-v0003" in json.loads(refs[-1])["reason"]
    with pytest.raises(UsageError, match="still active"):
        start_rollout(root=chain, challenger="v0003")
    out = cli("verify", "--root", str(chain), "--json")
    assert out.exit_code == 0 and json.loads(out.stdout)["rollout"]["revisions"] == 1
    stopped = stop_rollout(root=chain, reason="enough")
    assert stopped.status == "stopped" and stopped.production == "v0002"
    assert [r.event for r in read_log(chain / "prompts", "support")] == ["start", "stop"]
    assert cli("verify", "--root", str(chain)).exit_code == 0


def test_bad_starts_are_usage_errors(chain):  # noqa: F811
    assert cli("rollout", "start", "--challenger", "v0009", "--root", str(chain)).exit_code == 2
    out = cli("rollout", "start", "--challenger", "v0002", "--share", "0.1", "--bandit", "ucb", "--root", str(chain))
    assert out.exit_code == 2 and "not both" in out.stderr
    assert cli("rollout", "start", "--challenger", "v0002", "--bandit", "greedy", "--root", str(chain)).exit_code == 2
    assert cli("rollout", "stop", "--root", str(chain)).exit_code == 2


def test_a_damaged_rollout_file_fails_verify_and_status_but_not_the_app(chain, caplog):  # noqa: F811
    start_rollout(root=chain, challenger="v0002", share=0.5)  # champion v0003 (production)
    served = {load_policy("support", root=chain, key=f"user-{i}", ttl=0).build for i in range(40)}
    assert served == {"v0002", "v0003"}
    path = chain / "prompts/support/rollout.json"
    path.write_text(path.read_text().replace('"share"', '"ucb"'))  # edited by hand: the digest no longer matches
    out = cli("verify", "--root", str(chain), "--json")
    assert out.exit_code == 4 and "rollout.json" in json.loads(out.stdout)["error"]
    assert cli("rollout", "status", "--no-pull", "--root", str(chain)).exit_code == 4
    with caplog.at_level(logging.WARNING, logger="selfimprove.serving"):
        again = [load_policy("support", root=chain, key=f"user-{i}", ttl=0).build for i in range(40)]
    assert set(again) == {"v0002", "v0003"}  # the last known good rollout keeps being served
    assert len([r for r in caplog.records if "last known good" in r.getMessage()]) == 1  # logged once
    path.unlink()
    assert load_policy("support", root=chain, key="user-1", ttl=0).build == "v0003"  # no rollout: production


def test_the_first_load_of_a_corrupt_rollout_raises(chain):  # noqa: F811
    start_rollout(root=chain, challenger="v0002")
    (chain / "prompts/support/rollout.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="rollout.json"):
        load_policy("support", root=chain, key="u", ttl=0)


# -- what the app is served --------------------------------------------------------------------------------------
def test_load_policy_serves_sticky_arms_by_key_and_weighted_arms_without(chain):  # noqa: F811
    start_rollout(root=chain, challenger="v0002", share=0.3)
    first = {f"user-{i}": load_policy("support", root=chain, key=f"user-{i}").build for i in range(500)}
    assert all(load_policy("support", root=chain, key=k).build == b for k, b in list(first.items())[:100])
    share = sum(b == "v0002" for b in first.values()) / 500
    assert abs(share - 0.3) < 0.06
    args = load_policy("support", root=chain, key="user-7")
    assert args.metadata == {"selfimprove.build": args.build, "selfimprove.rollout": "r0001-v0002",
                             "selfimprove.arm": args.arm, "selfimprove.key": "user-7"}
    assert args["messages"][0]["content"] == args.policy.system_prompt
    args["messages"].append({"role": "user", "content": "x"})  # a caller's change never leaks into the cache
    assert len(load_policy("support", root=chain, key="user-7")["messages"]) == 1
    random.seed(3)
    unkeyed = [load_policy("support", root=chain).build for _ in range(600)]
    assert abs(unkeyed.count("v0002") / 600 - 0.3) < 0.06
    stop_rollout(root=chain)
    assert {load_policy("support", root=chain, key=f"user-{i}", ttl=0).build for i in range(30)} == {"v0003"}


# -- online evidence from pulled judged spans --------------------------------------------------------------------
def _production_traffic(root, rollout, means: dict[str, float], users: int = 60, per_user: int = 3, seed: int = 0,
                        offset: int = 0):
    """Judged calls as an app serving the rollout would leave them (file source: spans with metadata and evals)."""
    rng = random.Random(seed)
    rows, i = [], offset
    for u in range(users):
        key = f"user-{u}"
        arm = rollout.arm_for(key)
        for _ in range(per_user):
            good = rng.random() < means[arm]
            rows.append(span_row(i, start=T0 + timedelta(seconds=i), trace_id=f"{i:032x}",
                                 metadata={"selfimprove.build": rollout.arm(arm).build, "selfimprove.rollout":
                                           rollout.id, "selfimprove.arm": arm, "selfimprove.key": key},
                                 evals={"policy": ("pass", 1.0) if good else ("fail", 0.0)}))
            i += 1
    path = write_spans(root / "traffic" / f"spans-{offset}.jsonl", rows)
    cfg = root / "configs" / "support.toml"
    text = cfg.read_text().split("[telemetry]")[0]
    cfg.write_text(text + f'[telemetry]\nsource = "file"\n[telemetry.file]\npath = "{path}"\n')
    return rows


def test_a_better_challenger_is_promoted_online(chain):  # noqa: F811
    start_rollout(root=chain, challenger="v0003", share=0.5, key_field="user_id")
    doc = read_current(chain / "prompts", "support")
    _production_traffic(chain, doc, {"challenger": 0.85, "champion": 0.45})
    out = cli("rollout", "status", "--root", str(chain), "--json")
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["action"] == "promoted" and res["production"] == "v0003" and res["status"] == "promoted"
    arms = {a["arm"]: a for a in res["arms"]}
    assert arms["challenger"]["n"] + arms["champion"]["n"] == 180 and arms["challenger"]["clusters"] > 10
    assert arms["challenger"]["mean"] > arms["champion"]["mean"] and res["decision"]["ci"][0] > 0
    assert production(chain / "prompts", "support").name == "v0003"
    assert "promoted online" in json.loads((chain / "prompts/support/refs.jsonl").read_text().splitlines()[-1])["reason"]
    assert cli("verify", "--root", str(chain)).exit_code == 0


def test_a_worse_challenger_is_rolled_back_with_exit_3(chain):  # noqa: F811
    start_rollout(root=chain, challenger="v0002", share=0.5)  # champion: v0003, production
    doc = read_current(chain / "prompts", "support")
    _production_traffic(chain, doc, {"challenger": 0.3, "champion": 0.8})
    out = cli("rollout", "status", "--root", str(chain), "--json")
    assert out.exit_code == 3, out.output
    res = json.loads(out.stdout)
    assert res["action"] == "rolled back" and res["production"] == "v0003"
    assert read_current(chain / "prompts", "support").status == "rolled back"
    assert load_policy("support", root=chain, key="user-1", ttl=0).build == "v0003"


def test_a_bandit_moves_traffic_to_the_better_arm_between_batches(chain):  # noqa: F811
    start_rollout(root=chain, challenger="v0002", bandit="thompson", key_field="user_id",
                  overrides=["rollout.min_samples=100000"])  # never decide: watch the shares move
    doc = read_current(chain / "prompts", "support")
    assert doc.shares["challenger"] == pytest.approx(0.5, abs=0.05)
    _production_traffic(chain, doc, {"challenger": 0.85, "champion": 0.5}, users=40)
    res = rollout_status(root=chain, overrides=["rollout.min_samples=100000"])
    assert res.action == "continue" and res.status == "active"
    after = read_current(chain / "prompts", "support")
    assert after.event == "shares" and after.shares["challenger"] > 0.9 and after.revision == 2
    assert res.pulled and "spans" in res.pulled
    again = rollout_status(root=chain, pull=False, overrides=["rollout.min_samples=100000"])
    assert read_current(chain / "prompts", "support").revision == 2 and again.action == "continue"  # no new data


def test_status_of_a_target_without_rollout_is_a_usage_error(chain):  # noqa: F811
    out = cli("rollout", "status", "--root", str(chain), "--no-pull")
    assert out.exit_code == 2 and "never had a rollout" in out.stderr


def test_phoenix_unreachable_during_status_is_a_clear_error_and_the_app_is_still_served(chain):  # noqa: F811
    import socket

    start_rollout(root=chain, challenger="v0002", share=0.5)
    assert load_policy("support", root=chain, key="user-1", ttl=0).build in ("v0002", "v0003")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = chain / "configs" / "support.toml"
    cfg.write_text(cfg.read_text() + f'[telemetry.phoenix]\nendpoint = "http://127.0.0.1:{port}"\n'
                   "timeout_s = 1\ngive_up_after_s = 2\n")
    out = cli("rollout", "status", "--root", str(chain), "--json")
    assert out.exit_code == 1, out.output
    err = json.loads(out.stdout)
    assert f"127.0.0.1:{port}" in err["error"] and err["hint"]
    assert read_current(chain / "prompts", "support").revision == 1  # nothing decided on no evidence
    assert load_policy("support", root=chain, key="user-1", ttl=0).build in ("v0002", "v0003")
