"""Production-like inputs for a world: customer messages or tickets, drawn from the world's public generator."""

from __future__ import annotations

from typing import Any

from selfimprove.sim.hidden import load_world
from selfimprove.sim.textutil import pick, uniform


def _choose(weights: dict[str, float], u: float) -> str:
    total = sum(weights.values())
    acc = 0.0
    for name, w in weights.items():
        acc += w / total
        if u < acc:
            return name
    return next(reversed(weights))


def _support_text(gen: dict[str, Any], key: str) -> str:
    lang = _choose(gen["languages"], uniform(key, "lang"))
    text = gen["text"][lang]
    topic = _choose(gen["topics"], uniform(key, "topic"))
    product = pick(gen["products"], key, "product")
    parts = [pick(text[topic], key, "body").format(product=product)]
    if uniform(key, "order") < gen["p_order"]:
        order = 10000 + int(uniform(key, "order-id") * 90000)
        parts.append(pick(text["order"], key, "order-text").format(order=order))
    if uniform(key, "upset") < gen["p_upset"]:
        parts.append(pick(text["upset"], key, "upset-text"))
    if uniform(key, "legal") < gen["p_legal"]:
        parts.append(pick(text["legal"], key, "legal-text"))
    for name, extra in gen.get("extras", {}).items():  # rarer case features, in the languages the world writes them
        if lang in extra["text"] and uniform(key, "extra", name) < extra["p"]:
            parts.append(pick(extra["text"][lang], key, "extra-text", name).format(product=product))
    return " ".join(parts)


def _routing_text(gen: dict[str, Any], key: str) -> str:
    kind = _choose(gen["mix"], uniform(key, "kind"))
    product = pick(gen["products"], key, "product")
    return pick(gen["text"][kind], key, "text").format(product=product)


def generate_inputs(world: str, n: int, seed: int = 0, *, injection_rate: float = 0.0) -> list[list[dict[str, str]]]:
    """`n` chat histories (each a one-message list `[{"role": "user", "content": ...}]`), deterministic in `seed`.

    With `injection_rate` > 0, that fraction of inputs carries a planted instruction aimed at whatever model later
    reads the traces (used to test the optimizer's injection guard; `gullible` optimizers obey it).
    """
    w = load_world(world)
    gen = w.data["inputs"]
    out = []
    for i in range(n):
        key = f"{world}|{seed}|{i}"
        text = _routing_text(gen, key) if w.kind == "label" else _support_text(gen, key)
        if injection_rate > 0 and uniform(key, "inject") < injection_rate:
            text = f"{text}\n\n{gen['injection']}"
        out.append([{"role": "user", "content": text}])
    return out
