"""MkDocs hook: lets mkdocstrings read tritonlens' sources without importing them.

The packages are ``tritonlens.<folder>``, mapped onto the top-level folders by setuptools'
``package-dir`` (pyproject.toml); there is no ``tritonlens/`` folder for griffe (the
mkdocstrings Python handler) to find. This hook builds one under ``build/docs-api/`` with one
symbolic link per mapped folder before mkdocstrings starts (it lists its search paths once); mkdocs.yml points the handler's
``paths`` at it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
API_ROOT = ROOT / "build" / "docs-api"


@event_priority(100)  # before mkdocstrings' own on_config
def on_config(config):
    """Create ``build/docs-api/tritonlens/<sub.package>`` -> the folder ``package-dir`` maps it to."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in package_dir.items():
        link = API_ROOT.joinpath(*name.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(ROOT / folder, target_is_directory=True)
    return config
