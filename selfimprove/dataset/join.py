"""The span trees of a pulled run (`raw/spans.parquet`, plus `raw/tree.parquet`: the other spans of the pulled
traces, when the source fetched them) and the target's `[join]` settings -> `core.join.join_annotations`.

The pulled LLM spans are the targets; every other span (a chain or agent parent, the root, an LLM span outside
the window) is context an annotation may sit on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfimprove.core.join import Joined, Node, Selector, join_annotations

TREE = "raw/tree.parquet"
TREE_COLUMNS = ("span_id", "trace_id", "parent_id", "name", "span_kind", "start_time")


def is_llm_kind(kind: Any) -> bool:
    """The kinds `parse_span` reads as an LLM call (a missing kind too)."""
    return kind is None or str(kind).upper() in ("LLM", "UNKNOWN", "")


def _metadata(text: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _node(row: dict[str, Any], target: bool) -> Node:
    start = row.get("start_time")
    parent = row.get("parent_id")
    return Node(span_id=str(row["span_id"]), parent_id=str(parent) if parent else None,
                trace_id=str(row.get("trace_id") or row["span_id"]), name=str(row.get("name") or ""),
                llm=is_llm_kind(row.get("span_kind")), target=target,
                order=(start.isoformat() if hasattr(start, "isoformat") else "",),
                metadata=_metadata(row.get("metadata")) if target else {})


def read_tree(run_path: Path) -> list[dict[str, Any]]:
    """The rows of `raw/tree.parquet`, or none for a run pulled before trees were (or by a source that sends
    every span anyway)."""
    path = run_path / TREE
    if not path.exists():
        return []
    from selfimprove.store.documents import read_rows

    return read_rows(path)


def join_run(span_batches: Iterable[list[dict[str, Any]]], tree_rows: list[dict[str, Any]],
             results: dict[str, Any], join_cfg: Any) -> Joined:
    """Join annotation results onto the pulled LLM spans (batches of span rows: the structure columns suffice)
    as the `[join]` config says."""
    nodes = {}
    for row in tree_rows:
        nodes[str(row["span_id"])] = _node(row, target=False)
    for rows in span_batches:
        for row in rows:
            nodes[str(row["span_id"])] = _node(row, target=is_llm_kind(row.get("span_kind")))
    selector = Selector(span_name=join_cfg.span_name, metadata=dict(join_cfg.metadata), pick=join_cfg.pick)
    return join_annotations(nodes, results, dict(join_cfg.evals), join_cfg.default, selector)


def join_params(join_cfg: Any) -> dict[str, Any]:
    """What of `[join]` changes a snapshot (its stage key)."""
    return join_cfg.model_dump(mode="json")
