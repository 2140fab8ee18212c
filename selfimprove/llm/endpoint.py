"""What an OpenAI-compatible endpoint says it is: the built-in simulator names itself in `GET /models`.

Used to label results honestly (report.html's SIMULATOR banner): the answer comes from the server that produced
the outputs, not from a model name anyone could choose.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

SIMULATOR_OWNER = "selfimprove-sim"  # `owned_by` of every model the simulator lists


def is_simulator(base_url: str | None, timeout: float = 2.0) -> bool:
    """True when `base_url` answers `GET /models` with the simulator's models; False for anything else (OpenAI,
    a gateway that wants a key, an unreachable host). Sends no key."""
    if not base_url:
        return False
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=timeout) as resp:
            data = json.loads(resp.read(1_000_000))
    except (urllib.error.URLError, OSError, ValueError):
        return False
    models = data.get("data") if isinstance(data, dict) else None
    return bool(models) and all(isinstance(m, dict) and m.get("owned_by") == SIMULATOR_OWNER for m in models)
