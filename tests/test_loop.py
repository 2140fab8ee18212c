"""`selfimprove run` pieces that need no server: the trigger, the lock held across stages, exit codes."""

import subprocess
import sys
import textwrap

import pytest

from selfimprove.config.models import Trigger
from selfimprove.core.errors import LockHeld
from selfimprove.stages.loop import trigger_decision
from selfimprove.store.runs import Workspace


def test_trigger_goes_with_enough_samples_and_a_low_score():
    d = trigger_decision(50, 0.4, Trigger(min_new_samples=20, skip_above_score=0.9))
    assert d["go"] and "50 new samples ≥ 20" in d["reason"] and "0.400" in d["reason"]


def test_trigger_skips_with_too_few_samples():
    d = trigger_decision(5, 0.1, Trigger(min_new_samples=20))
    assert not d["go"] and "fewer than trigger.min_new_samples=20" in d["reason"]


def test_trigger_skips_above_the_score():
    d = trigger_decision(100, 0.95, Trigger(skip_above_score=0.9))
    assert not d["go"] and "at least trigger.skip_above_score=0.9" in d["reason"]
    assert trigger_decision(100, 0.85, Trigger(skip_above_score=0.9))["go"]
    assert trigger_decision(100, None, Trigger(skip_above_score=0.9))["go"]  # no score: cannot say it is good


def test_the_lock_is_reentrant_in_one_thread_and_exclusive_across_processes(tmp_path):
    ws = Workspace(tmp_path)
    probe = textwrap.dedent(f"""
        from selfimprove.store.runs import Workspace
        from selfimprove.core.errors import LockHeld
        try:
            with Workspace({str(tmp_path)!r}).lock("support"):
                print("acquired")
        except LockHeld:
            print("held")
    """)
    with ws.lock("support"):
        with ws.lock("support"):  # a stage inside `run` takes it again
            pass
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "held"  # still held by the outer block after the inner one released
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "acquired"


def test_another_thread_does_not_get_the_lock(tmp_path):
    import threading

    ws = Workspace(tmp_path)
    seen = []

    def other():
        try:
            with ws.lock("support"):
                seen.append("acquired")
        except LockHeld:
            seen.append("held")

    with ws.lock("support"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen == ["held"]


def test_trigger_config_section_validates():
    from selfimprove.config.models import TargetConfig

    cfg = TargetConfig.model_validate({"target": "t", "trigger": {"min_new_samples": 5, "skip_above_score": 0.8}})
    assert cfg.trigger.min_new_samples == 5
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TargetConfig.model_validate({"target": "t", "trigger": {"min_new_samples": -1}})
