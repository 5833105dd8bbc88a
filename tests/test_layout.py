"""The package's layers, read off its import statements: what may import what."""

import ast
from pathlib import Path

import pytest

NASS = Path(__file__).resolve().parents[1] / "nass"

# A subpackage may import only these parts of nass (besides itself).
ALLOWED = {
    "model": {"audio", "hparams", "logs", "files"},
    "losses": {"model", "metrics", "audio"},
    "inference": {"model", "losses", "metrics", "audio", "hparams", "logs", "files"},
    "export": {"model", "inference", "hparams", "files", "audio", "logs"},
    "data": {"files", "audio", "metrics"},
}


def nass_imports(path):
    """The ``nass.<part>`` names that one file imports (at any depth: lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found.update(name.split(".")[1] for name in names
                     if name.startswith("nass.") and name.count(".") >= 1)
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_a_subpackage_imports_only_the_layers_below_it(part):
    wrong = {f"{path.relative_to(NASS.parent)} imports nass.{name}"
             for path in (NASS / part).rglob("*.py")
             for name in nass_imports(path) - ALLOWED[part] - {part}}
    assert not wrong, sorted(wrong)
