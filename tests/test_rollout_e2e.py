"""Production closed in a loop, on the real Phoenix (session fixture), the simulator over HTTP, the real openai SDK and
phoenix-evals judges: an app serves each user through `selfimprove.serve(target, key=user)`; `rollout status`
pulls the judged spans and moves the bandit's shares to the better build; `run` promotes it online; then the
simulated provider regresses (it starts ignoring system prompts) and `run`'s monitor reports it with exit 5.

Small on purpose (3 batches of 40 calls)."""

import contextlib
import json

import pytest
from fixtures.sim_checkpoint import BETTER_PROMPT
from sim_helpers import judge_rows, run_policy
from typer.testing import CliRunner

import selfimprove
from selfimprove.cli.app import app
from selfimprove.core.records import Build, Policy
from selfimprove.demo.run import KEY_ENV, demo_config
from selfimprove.sim import default_policy, start_server
from selfimprove.sim.traffic import make_traffic
from selfimprove.store.builds import move_ref, production, write_build
from selfimprove.store.rollouts import read_current

pytestmark = pytest.mark.phoenix
runner = CliRunner()
PRIMARY = "policy_compliance"
USERS = 20


def cli(*args):
    return runner.invoke(app, list(args))


def _builds(root, sim) -> None:
    """v0001: the world's weak default policy (production); v0002: a better prompt, with the held-out score it
    was measured at (40 fresh inputs, the real judges) as its evidence."""
    base = Policy(**default_policy("support"))
    better = base.model_copy(update={"system_prompt": BETTER_PROMPT})
    rows = run_policy(sim.base_url, "support", BETTER_PROMPT, n=40, seed=99, temperature=better.temperature)
    held = [d["score"] for d in judge_rows(sim.base_url, "support", rows)[PRIMARY]]
    mean = sum(held) / len(held)
    v1 = Build(target="support", version=1, policy=base, policy_digest=base.digest, evidence={"kind": "baseline"})
    v2 = Build(target="support", version=2, policy=better, policy_digest=better.digest, parent="v0001",
               parent_digest=v1.digest, evidence={"evals": {PRIMARY: {"scale": "normalized", "candidate_mean": mean,
                                                                      "baseline_mean": None}}})
    write_build(root / "prompts", v1)
    write_build(root / "prompts", v2)
    move_ref(root / "prompts", v1)


def _batch(root, phoenix, sim, project, seed: int) -> list[str]:
    """40 calls of 20 users through the app side; returns the build each call was served."""
    served: list[str] = []

    @contextlib.contextmanager
    def serve(i: int):
        with selfimprove.serve("support", root=root, key=f"user-{(i + seed) % USERS}", ttl=0) as args:
            served.append(args.build)
            yield args

    made = make_traffic("support", 40, phoenix_url=phoenix.url, project=project, sim_base_url=sim.base_url,
                        seed=seed, served=serve)
    assert made["spans"] == 40 and made["annotations"] >= 100
    return served


def test_rollout_bandit_promotion_and_regression_monitor(tmp_path, phoenix, project_name, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "dummy")
    sim = start_server("support", seed=0)
    try:
        (tmp_path / "configs").mkdir()
        (tmp_path / "configs" / "support.toml").write_text(demo_config(
            phoenix_url=phoenix.url, project=project_name, sim_base_url=sim.base_url, primary=PRIMARY,
                                     target="support") + "\n[rollout]\nmin_samples = 15\n\n[monitor]\nmin_samples = 15\n")
        _builds(tmp_path, sim)
        root = str(tmp_path)
        out = cli("rollout", "start", "--challenger", "v0002", "--bandit", "thompson", "--key-field", "user_id",
                  "--root", root, "--json")
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["arms"][1]["share"] == pytest.approx(0.5, abs=0.05)

        first = _batch(tmp_path, phoenix, sim, project_name, seed=1)
        assert set(first) == {"v0001", "v0002"}
        # observe the shares move without deciding yet
        out = cli("rollout", "status", "--root", root, "--json", "--set", "rollout.min_samples=1000")
        assert out.exit_code == 0, out.output
        status = json.loads(out.stdout)
        arms = {a["arm"]: a for a in status["arms"]}
        assert arms["champion"]["n"] + arms["challenger"]["n"] == 40, status
        assert arms["challenger"]["mean"] > arms["champion"]["mean"]
        assert read_current(tmp_path / "prompts", "support").shares["challenger"] > 0.8

        second = _batch(tmp_path, phoenix, sim, project_name, seed=2)
        assert second.count("v0002") / len(second) > 0.7  # the app now serves mostly the better build
        out = cli("run", "--root", root, "--json")
        assert out.exit_code == 0, out.output
        doc = json.loads(out.stdout)
        assert doc["outcome"] == "rollout promoted" and doc["production"] == "v0002", doc
        assert [s["stage"] for s in doc["steps"]] == ["pull", "snapshot", "rollout"]
        assert production(tmp_path / "prompts", "support").name == "v0002"

        sim.configure(task_degradation=0.8)  # the provider's model starts ignoring system prompts
        third = _batch(tmp_path, phoenix, sim, project_name, seed=3)
        assert set(third) == {"v0002"}
        out = cli("run", "--root", root, "--json")
        assert out.exit_code == 5, out.output
        doc = json.loads(out.stdout)
        assert doc["outcome"] == "regressed" and doc["monitor"]["regressed"] and doc["monitor"]["n"] >= 15, doc
        assert doc["monitor"]["drop"] > 0.05 and doc["production"] == "v0002"
        assert cli("verify", "--root", root).exit_code == 0
    finally:
        sim.stop()
