"""The import direction docs/architecture.md states, checked on every module's imports (top-level and inside
functions alike): a package imports only the packages below it, nothing but cli/ touches the terminal, and only
the simulator's own front ends import the simulator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "selfimprove"

# package -> the packages it may import (besides itself). docs/architecture.md draws the same table.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "version": set(),
    "config": {"core"},
    "store": {"core", "config", "version"},
    "launcher": {"core"},
    "llm": {"core", "config", "launcher"},
    "telemetry": {"core", "config", "store", "launcher"},
    "evals": {"core", "config", "llm"},
    "optimizers": {"core", "config", "llm", "evals"},
    "dataset": {"core", "config", "store", "llm", "telemetry", "evals"},
    "evaluation": {"core", "config", "store", "llm", "evals", "dataset", "optimizers"},
    "app": {"core", "config", "store", "telemetry"},
    "stages": {"core", "config", "store", "llm", "telemetry", "evals", "optimizers", "dataset", "evaluation",
               "version"},
    "sim": {"core", "llm", "evals", "app"},
    "demo": {"core", "config", "store", "llm", "telemetry", "evals", "stages", "sim"},
    "cli": {"core", "config", "store", "llm", "telemetry", "evals", "optimizers", "dataset", "evaluation", "app",
            "stages", "sim", "demo", "version"},
    "schemas": {"core"},
    "__init__": {"app", "config", "store", "core", "api"},
    "api": {"core", "config", "stages", "llm"},
}
TERMINAL = ("typer", "rich", "click")  # only cli/ draws or asks


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _package(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _is_module(name: str) -> bool:
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def _imports(source: str) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            if node.module == "selfimprove":  # `from selfimprove import x`: x may be a package
                out += [(node.lineno, f"selfimprove.{a.name}") for a in node.names if _is_module(a.name)]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return out


def violations(own: str, source: str) -> list[str]:
    """The imports of `source` (a module of package `own`) that go against ALLOWED or touch the terminal."""
    wrong = []
    for line, module in _imports(source):
        parts = module.split(".")
        if parts[0] == "selfimprove" and len(parts) > 1 and parts[1] != own and parts[1] not in ALLOWED[own]:
            wrong.append(f"line {line}: {module}")
        if parts[0] in TERMINAL and own != "cli":
            wrong.append(f"line {line}: {module} (terminal I/O belongs in cli/)")
    return wrong


def test_every_package_has_a_rule():
    assert {_package(p) for p in _modules()} <= set(ALLOWED), "add the new package to ALLOWED and the docs"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way(path):
    wrong = violations(_package(path), path.read_text("utf-8"))
    assert not wrong, f"{path.relative_to(PACKAGE)} imports against docs/architecture.md: {wrong}"


def test_no_print_outside_cli():
    """Stages and the engine return typed results and report through callbacks; printing is cli/'s job."""
    offenders = []
    for path in _modules():
        if _package(path) in ("cli", "schemas", "sim"):  # schemas: `python -m selfimprove.schemas` prints paths
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "input"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders


def test_the_checker_reports_wrong_imports():
    source = ("from selfimprove.core.errors import UsageError\n"
              "def f():\n    from selfimprove.cli.output import emit\n    import typer\n")
    assert violations("stages", source) == ["line 3: selfimprove.cli.output",
                                            "line 4: typer (terminal I/O belongs in cli/)"]
    assert violations("cli", source) == []
    assert violations("core", "from selfimprove import stages\n") == ["line 1: selfimprove.stages"]
