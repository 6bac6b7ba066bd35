"""The package's shape: stage folders, imports that flow one way, no cycles, rooms of readable size,
domain code that knows nothing of Dagster or the environment."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "acs_pipeline"
MAX_LINES = 400

# Which stage may import which: a stage imports only stages of its rank or below. `deploy` holds
# Dagster instance plugins (the run launcher), outside the code location.
RANK = {"io": 0, "ecg": 0, "cohort": 1, "ingest": 1, "synth": 1, "models": 2, "training": 2,
        "evaluation": 3, "defs": 4, "definitions": 5, "__main__": 5, "deploy": 5}
STAGES = ("io", "ecg", "cohort", "ingest", "models", "training", "evaluation", "synth", "defs")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@cache
def _imports(module: str) -> frozenset[str]:
    """acs_pipeline modules that ``module`` imports, at the top or inside functions."""
    tree = ast.parse(_modules()[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names if n in _modules() and n != module)
    return frozenset(found)


def test_every_stage_has_its_folder() -> None:
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").is_file(), stage
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "definitions.py"]


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_is_a_room_one_reads_in_one_sitting(module: str) -> None:
    lines = len(_modules()[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines"


def test_imports_flow_one_way() -> None:
    wrong = [f"{m} -> {i}" for m in _modules() for i in _imports(m)
             if _stage(m) in RANK and RANK[_stage(i)] > RANK[_stage(m)]]
    assert not wrong, wrong


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(_imports(module)):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [module, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(_modules()):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(m for m in _modules() if _stage(m) in STAGES
                                          and _stage(m) != "defs"))
def test_domain_code_knows_nothing_of_dagster_or_the_environment(module: str) -> None:
    text = _modules()[module].read_text()
    tree = ast.parse(text)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert "dagster" not in imported
    assert "os.environ" not in text and "getenv" not in text, module
