"""Fixtures of the reliability suite (docs/reliability.md): one simulator per module."""

import pytest

from selfimprove.sim import start_server


@pytest.fixture(scope="module")
def sim():
    server = start_server("support", seed=0)
    yield server
    server.stop()
