"""The public side of a world: what a team would know (its judges, its current policy), never the hidden rules."""

from __future__ import annotations

import copy
from typing import Any

from selfimprove.sim.hidden import load_world
from selfimprove.sim.hidden import world_names as _world_names


def world_names() -> list[str]:
    """The worlds shipped with the simulator."""
    return _world_names()


def world_evals(world: str) -> list[dict[str, Any]]:
    """The world's evals, as a team's judges would be defined: name, template, choices, direction, primary.

    Templates use `{input}` (the customer's message) and `{output}` (the model's reply).
    """
    return copy.deepcopy(load_world(world).public["evals"])


def default_policy(world: str) -> dict[str, Any]:
    """The weak policy the world starts from: {system_prompt, model, temperature}."""
    return dict(load_world(world).public["default_policy"])


def labels(world: str) -> list[str]:
    """The allowed labels of a classification world (empty for others)."""
    return list(load_world(world).public.get("labels", []))
