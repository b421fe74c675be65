"""Every installed plugin keeps the contract (core/plugins.py). That the core imports no family is
tests/unit/test_import_rule.py's."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from tritonlens.client.base import TritonClient
from tritonlens.core.plugins import Plugin, load_commands, load_plugins

PLUGINS = load_plugins()
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_built_in_families_are_plugins():
    assert {"clip", "sam2"} <= set(PLUGINS)
    assert "bench" in load_commands()


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_declares_what_it_exports(name):
    plugin = PLUGINS[name]
    assert isinstance(plugin, Plugin) and plugin.name == name
    assert issubclass(plugin.client, TritonClient)
    assert inspect.getdoc(plugin.export), "the export command's docstring is its --help"
    assert plugin.models and len(set(plugin.models)) == len(plugin.models)
    for model, source in plugin.python_models.items():
        assert model in plugin.models
        tree = ast.parse(source.read_text(), str(source))
        assert any(isinstance(n, ast.ClassDef) and n.name == "TritonPythonModel" for n in tree.body), source
    for command in plugin.commands.values():
        assert callable(command) and inspect.getdoc(command)
    scenarios = plugin.scenarios()
    assert {s.family for s in scenarios} <= {name}
    assert {s.model for s in scenarios} <= set(plugin.models)


def test_plugin_without_export_is_refused():
    class NoExport(Plugin):
        name = "broken"

    with pytest.raises(TypeError, match="export"):
        NoExport()
