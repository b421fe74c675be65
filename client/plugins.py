"""The plugin contract: one model family (clip, sam2, ...) as one small object.

A model family registers a :class:`Plugin` under the Python entry-point group
``tritonlens.plugins``; the built-in families register exactly as a third-party package
would, in its ``pyproject.toml``::

    [project.entry-points."tritonlens.plugins"]
    clip = "tritonlens.client.clip.plugin:plugin"

The command line discovers every plugin there: ``export`` becomes ``tritonlens export
<name>`` and each entry of ``commands`` a top-level command (``tritonlens classify``).
Commands are plain functions with typer-annotated parameters.

Example (a minimal third-party family)::

    def export_mine(model: str, repo: Path = Path("model_repository")):
        "Export MyNet into a model repository."
        ...

    plugin = Plugin(name="mynet", summary="MyNet encoders", export=export_mine)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable

ENTRY_POINT_GROUP = "tritonlens.plugins"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plugin:
    """A model family.

    Attributes:
        name: the family's name, used as ``tritonlens export <name>``.
        summary: one line shown in ``--help``.
        export: the export command (a typer-annotated function).
        commands: extra top-level commands, name -> typer-annotated function.
        models: the Triton model names the family's export writes (for ``status``/bench).
    """

    name: str
    summary: str
    export: Callable[..., None]
    commands: dict[str, Callable[..., None]] = field(default_factory=dict)
    models: tuple[str, ...] = ()


def load_plugins() -> dict[str, Plugin]:
    """Every plugin registered under ``tritonlens.plugins``, by name.

    A plugin that fails to import is skipped with a warning naming it and the error, so
    one broken third-party package does not take the whole command line down.
    """
    plugins: dict[str, Plugin] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = ep.load()
        except Exception as err:  # noqa: BLE001 - any import error of a third-party plugin
            log.warning("tritonlens plugin %r (%s) failed to load: %s", ep.name, ep.value, err)
            continue
        if not isinstance(plugin, Plugin):
            log.warning("tritonlens plugin %r (%s) is not a tritonlens Plugin", ep.name, ep.value)
            continue
        plugins[plugin.name] = plugin
    return plugins
