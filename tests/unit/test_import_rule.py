"""The components import each other in one direction only, and the core names no family
(docs/concepts.md, Layout).

Components (one top-level folder each, imported as ``tritonlens.<folder>``)::

    core (the plugin contract) -> nothing of tritonlens but model_repository's package data
    bench -> client, core, export, launcher, serve     client -> core, export, launcher, serve
    export -> serve     launcher -> serve (host side; what it needs of the stub side)
    serve and model_repository/*/model.py -> serve only (the code Triton's stubs load)

One exception, the family's hub: ``client/<family>/plugin.py`` registers the family and
may also import that family's own benchmark code (``tritonlens.bench.<family>``).

Families: a family has one home per layer under its name (``serve/clip``, ``export/clip``,
``client/clip``, ``bench/clip``). Every other module (``core/``, ``launcher/``, the
top-level modules of each component, ``model_repository`` aside, and the cross-family
studies ``bench/studies``, which name the families they study on purpose, aside) is the
family-neutral core: it imports no family's module.

Every ``import`` / ``from ... import`` of ``tritonlens.<component>`` in each folder's Python
files is read with ``ast`` (imports inside functions included) and checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tritonlens.core.plugins import load_plugins

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
# Layers that hold a folder per family.
LAYERS = ("serve", "export", "client", "bench")
FAMILIES = sorted({name for name in load_plugins() if any((ROOT / layer / name).is_dir() for layer in LAYERS)})


def imported_modules(path: Path) -> set[tuple[str, int]]:
    """(module, line) of every ``tritonlens.*`` import in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {(name, node.lineno) for name in names if name.startswith("tritonlens.")}
    return found


def allowed(path: Path, component: str, module: str) -> bool:
    parts = module.split(".")
    if parts[1] in ALLOWED[component]:
        return True
    rel = path.relative_to(ROOT).parts
    hub = component == "client" and len(rel) == 3 and rel[2] == "plugin.py"
    return hub and parts[1] == "bench" and len(parts) > 2 and parts[2] == rel[1]


@pytest.mark.parametrize("component", sorted(ALLOWED))
def test_imports_follow_the_rule(component):
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in sorted((ROOT / component).rglob("*.py"))
             for module, line in sorted(imported_modules(path))
             if len(module.split(".")) > 1 and not allowed(path, component, module)]
    assert not wrong, (f"{component} may import only {sorted(ALLOWED[component])}:\n"
                       + "\n".join(wrong))


def core_modules() -> list[Path]:
    """The family-neutral modules (see the module docstring)."""
    paths = [*(ROOT / "core").rglob("*.py"), *(ROOT / "launcher").rglob("*.py")]
    for layer in LAYERS:
        paths += [p for p in (ROOT / layer).glob("*.py")]
        paths += [p for p in (ROOT / layer / "backends").rglob("*.py")]
    return sorted(paths)


def test_there_are_families_and_a_core():
    assert {"clip", "sam2"} <= set(FAMILIES)
    assert len(core_modules()) > 30


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_family(path):
    named = [f"line {line}: {module}" for module, line in sorted(imported_modules(path))
             for family in FAMILIES
             if len(module.split(".")) > 2 and module.split(".")[2] == family]
    assert not named, f"{path.relative_to(ROOT)} imports a family's module: {named}"
