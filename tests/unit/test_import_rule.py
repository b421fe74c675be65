"""The components import each other in one direction only (docs/concepts.md, Layout):

    core (the plugin contract) -> nothing of tritonlens but model_repository's package data
    bench -> client, core, export, launcher, serve     client -> core, export, launcher, serve
    export -> serve     launcher -> serve (host side; what it needs of the stub side)
    serve and model_repository/*/model.py -> serve only (the code Triton's stubs load)

(``tritonlens.model_repository`` holds no code to import: it is the package data of the
hand-written Python-backend models, which export and plugins locate through it.)

Every ``import`` / ``from ... import`` of ``tritonlens.<component>`` in each folder's Python
files is read with ``ast`` (imports inside functions included) and checked against that rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    "serve": {"serve"},
    "model_repository": {"serve"},
    "core": {"core", "model_repository"},
    "launcher": {"launcher", "serve"},
    "export": {"export", "serve", "model_repository"},
    "client": {"client", "core", "export", "launcher", "serve", "model_repository"},
    "bench": {"bench", "client", "core", "export", "launcher", "serve", "model_repository"},
}


def imported_components(path: Path) -> set[tuple[str, int]]:
    """(component, line) of every ``tritonlens.<component>`` import in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tritonlens" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


@pytest.mark.parametrize("component", sorted(ALLOWED))
def test_imports_follow_the_rule(component):
    wrong = [f"{path.relative_to(ROOT)}:{line} imports tritonlens.{other}"
             for path in sorted((ROOT / component).rglob("*.py"))
             for other, line in sorted(imported_components(path))
             if other not in ALLOWED[component]]
    assert not wrong, (f"{component} may import only {sorted(ALLOWED[component])}:\n"
                       + "\n".join(wrong))
