"""The real-model tier (`make test-real`; marked `real`, left out of `make test`): llama-server and the Qwen models
from `make setup-real`. Without them every test here is skipped, saying what to run."""

from __future__ import annotations

import sys

import pytest

from selfimprove.demo.local_task import OPTIMIZER_MODEL, TASK_MODEL


def _missing() -> str | None:
    from selfimprove.llm.local import find_server_binary, model_path

    if find_server_binary() is None:
        return "llama-server is not built on this machine: run `make setup-real`"
    absent = [m for m in (TASK_MODEL, OPTIMIZER_MODEL) if not model_path(m).is_file()]
    return f"local model(s) {', '.join(absent)} not assembled: run `make setup-real`" if absent else None


@pytest.fixture(scope="session")
def local_models(tmp_path_factory):
    """(task server on Qwen 0.5B, optimizer/judge server on Qwen 1.5B) for the session."""
    from selfimprove.demo.local_task import local_servers

    reason = _missing()
    if reason:
        pytest.skip(reason)
    with local_servers(log_dir=tmp_path_factory.mktemp("llama")) as (task, optimizer):
        print(f"\n[local models] {task!r} {optimizer!r}", file=sys.stderr)
        yield task, optimizer
    assert not task.is_running() and not optimizer.is_running()
