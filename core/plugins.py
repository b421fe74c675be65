"""The plugin contract: one model family (clip, sam2, timm, ...) as one small class.

A family subclasses :class:`Plugin` and registers an instance under the Python entry-point
group ``tritonlens.plugins``. The built-in families register exactly as a third-party
package does, in its ``pyproject.toml``::

    [project.entry-points."tritonlens.plugins"]
    timm = "tritonlens_timm.plugin:plugin"

The core loops over the plugins and never names a family: ``tritonlens export <name>``
runs :meth:`Plugin.export`, every entry of ``Plugin.commands`` becomes a top-level
command, ``tritonlens bench`` runs each family's benchmark steps (:meth:`Plugin.bench_export`,
:meth:`Plugin.bench_baselines` before the server starts, :meth:`Plugin.bench_tuning` and
:meth:`Plugin.bench_summary`) and measures every :meth:`Plugin.scenarios` entry whose model
is served, and ``tritonlens demo`` runs every plugin's :meth:`Plugin.demo_export` before the
server starts and :meth:`Plugin.demo` once it serves; ``demo_options`` / ``bench_options``
become options of those commands. Only ``name`` and ``export`` are required. Worked
example: ``examples/tritonlens-timm``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, ClassVar

ENTRY_POINT_GROUP = "tritonlens.plugins"
# Top-level commands that are not a model family's (``tritonlens bench``): name -> a
# typer-annotated function, registered like the plugins, so the command line imports none.
COMMANDS_GROUP = "tritonlens.commands"
log = logging.getLogger(__name__)
# One benchmark input stream: a list of requests, each {input name: array without the batch
# axis, or a list of bytes for a BYTES tensor}; a stateful model gets one stream per sequence.
Streams = list[list[dict]]


class Plugin(ABC):
    """A model family served by tritonlens.

    Class attributes (what the family's default export writes):
        name: ``tritonlens export <name>``; also the ``family`` of its bench scenarios.
        models: its model directories, ensembles included (e.g. ``timm_classify``).
        python_models: the Python-backend ``model.py`` files it ships, model name -> file;
            its export copies each into ``<repo>/<model>/1/model.py``.
        client: its typed client class (a ``tritonlens.client.base.TritonClient``),
            ``client(url, protocol)``.
        commands: its top-level commands, name -> typer-annotated function.
        demo_options: a dataclass whose fields become options of ``tritonlens demo``
            (``--name``; each field's default, and its ``metadata["help"]``); the demo hands
            the family an instance (:meth:`Demo.options_for`). None: no options.
        bench_options: the same for ``tritonlens bench`` (:meth:`BenchSettings.options_for`).
        bench_quick: the family is benchmarked by ``tritonlens bench --quick`` (CI's smoke
            run) and with ``--repo`` too, not only in full runs.

    Example (``examples/tritonlens-timm``, abridged)::

        class TimmPlugin(Plugin):
            name = "timm"
            models = ("timm_preprocess", "timm_backbone", "timm_head", "timm_classify", "timm_embed")
            python_models = {"timm_preprocess": HERE / "model_repository/timm_preprocess/1/model.py"}
            client = TimmClient
            commands = {"timm-classify": classify, "timm-embed": embed}

            def export(self, model: str = "resnet18", repo: Path = Path("model_repository")):
                "Export a timm model."   # typer reads the parameters and this docstring
                export_timm(TimmExportOptions(model=model), repo)
    """

    name: ClassVar[str]
    models: ClassVar[tuple[str, ...]] = ()
    python_models: ClassVar[dict[str, Path]] = {}
    client: ClassVar[type | None] = None
    commands: ClassVar[dict[str, Callable[..., None]]] = {}
    demo_options: ClassVar[type | None] = None
    bench_options: ClassVar[type | None] = None
    bench_quick: ClassVar[bool] = False

    @abstractmethod
    def export(self, *args: Any, **kwargs: Any) -> None:
        """``tritonlens export <name>``: parameters annotated for typer, the docstring is
        its ``--help``; it fails with ``client.options.fail`` on a bad option."""

    def scenarios(self) -> list[Scenario]:
        """perf_analyzer scenarios, one per served model worth measuring (default: none)."""
        return []

    def bench_export(self, settings: BenchSettings, report: Callable[[str], None]) -> dict:
        """``tritonlens bench``: export the family's benchmark models into ``settings.repo``
        unless it holds them, ``report``-ing each step; returns what the repository holds
        (model, weights ...; ``results.json``'s ``export``). Default: nothing, ``{}`` (the
        family is then measured only when the repository given holds it)."""
        return {}

    def bench_baselines(self, inputs: BenchInputs, settings: BenchSettings, exported: dict,
                        report: Callable[[str], None]) -> dict:
        """The family's in-process reference engines on the same inputs (``exported``: what
        :meth:`bench_export` returned), measured before the server starts (no CPU
        contention); ``results.json``'s ``baselines``. Default: ``{}``."""
        return {}

    def bench_tuning(self, server: Any, measure: Callable[[str], dict], settings: BenchSettings,
                     report: Callable[[str], None]) -> list[dict]:
        """Config candidates loaded into the running ``server`` and measured with
        ``measure(model)`` (one perf_analyzer point, as a dict); ``results.json``'s
        ``tuning``. Called only when tuning is asked for. Default: ``[]``."""
        return []

    def bench_summary(self, results: dict) -> tuple[dict, list[str]]:
        """The family's headline ratios (``results.json``'s ``ratios``) and the markdown
        sections of ``report.md`` (its targets, baselines, tuning), from the whole
        ``results`` (``results[key][self.name]`` holds the family's own parts).
        Default: nothing."""
        return {}, []

    def demo_export(self, demo: Demo) -> None:
        """Before the demo's server starts: export into ``demo.repo`` (default: nothing)."""

    def demo(self, demo: Demo) -> None:
        """Once ``demo.server`` serves (and every one of ``models`` is ready): real
        requests, printed (default: nothing)."""


@dataclass(frozen=True)
class Scenario:
    """One served model under load (``tritonlens bench``).

    Attributes:
        model: the Triton model (or ensemble) name.
        family: the plugin it belongs to (``clip``, ``sam2`` ...).
        build_inputs: real input data as perf_analyzer streams (:data:`Streams`).
        end_to_end: the family's user-facing path (encoded bytes in, result out); swept
            over every concurrency.
        sequence_length: > 0 for stateful models (sequence batcher): requests per sequence.
        shared_memory: also measure with system shared memory (large tensors, end to end).
        min_window_ms: perf_analyzer's measurement window is at least this long (ms), for a
            model whose requests take about a second (the quick mode's windows are 800 ms).
    """

    model: str
    family: str
    build_inputs: Callable[[BenchInputs], Streams]
    end_to_end: bool = False
    sequence_length: int = 0
    shared_memory: bool = False
    min_window_ms: int = 0


@dataclass
class BenchInputs:
    """The real data every scenario's input builder draws from.

    Attributes:
        photos: real photographs (JPEG, PNG, WebP files of different sizes and modes).
        repo: the model repository being served (configs, label files, graph files).
        cache: scratch space for builders that share work (e.g. preprocessed pixels).
    """

    photos: list[Path]
    repo: Path
    cache: dict = field(default_factory=dict)


@dataclass
class BenchSettings:
    """What ``tritonlens bench`` hands every family's benchmark steps.

    Attributes:
        quick: CI's smoke mode: small models, short windows, few points.
        repo: the model repository being benchmarked (families export into it).
        given_repo: the user gave ``repo`` (``--repo``): export only what it lacks.
        work: scratch folder for exports and checkpoints (kept between runs).
        out: the results folder.
        batch_sizes: the in-process baselines' batch sizes.
        baseline_seconds: measuring time per baseline batch size (s).
        naive_images: images the naive paths run (one process each).
        concurrency: the perf_analyzer sweep (requests in flight).
        protocols: ``grpc`` and/or ``http``.
        options: the values of every family's ``bench_options`` fields, by field name.
    """

    quick: bool
    repo: Path
    given_repo: bool
    work: Path
    out: Path
    batch_sizes: list[int]
    baseline_seconds: float
    naive_images: int
    concurrency: list[int]
    protocols: list[str]
    options: dict[str, Any] = field(default_factory=dict)

    def options_for(self, plugin: "Plugin") -> Any:
        """``plugin``'s bench options: an instance of its ``bench_options`` dataclass."""
        return options_of(plugin.bench_options, self.options)


def options_of(cls: type, values: dict[str, Any]) -> Any:
    """An instance of the options dataclass ``cls`` from ``values`` (fields not there keep
    their defaults; keys that are not its fields are ignored)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names and v is not None})


@dataclass
class Demo:
    """What ``tritonlens demo`` hands every plugin.

    Attributes:
        repo: the model repository the demo exports into and serves.
        photos: real photographs (scikit-image's samples as JPEG, PNG and WebP files).
        out: the folder of the demo's inputs (photos; a plugin may add e.g. a video).
        results: the folder for what the demo writes (masks, overlays).
        options: the values of every plugin's demo options (``Plugin.demo_options``
            fields), by field name; a family reads its own with :meth:`options_for`.
        console: the rich console the demo prints to.
        server: the running ``TritonServer`` (set before :meth:`Plugin.demo` runs).
    """

    repo: Path
    photos: list[Path]
    out: Path
    results: Path
    options: dict[str, Any] = field(default_factory=dict)
    console: Any = None
    server: Any = None
    step: int = 0

    def options_for(self, plugin: "Plugin") -> Any:
        """``plugin``'s demo options: an instance of its ``demo_options`` dataclass, from the
        command line's values (defaults for fields not given)."""
        return options_of(plugin.demo_options, self.options)

    def rule(self, title: str) -> None:
        """Print the next numbered step's heading."""
        self.step += 1
        self.console.rule(f"{self.step}. {title}")


def load_plugins() -> dict[str, Plugin]:
    """Every plugin registered under ``tritonlens.plugins``, by name, the built-in ones
    (``tritonlens``' own distribution) first, then the others by name.

    A plugin that fails to import is skipped with a warning naming it and the error, so
    one broken third-party package does not take the whole command line down.
    """
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = ep.load()
        except Exception as err:  # noqa: BLE001 - any import error of a third-party plugin
            log.warning("tritonlens plugin %r (%s) failed to load: %s", ep.name, ep.value, err)
            continue
        if not isinstance(plugin, Plugin):
            log.warning("tritonlens plugin %r (%s) is not a tritonlens Plugin instance",
                        ep.name, ep.value)
            continue
        found.append((not ep.value.startswith("tritonlens."), plugin.name, plugin))
    return {name: plugin for _, name, plugin in sorted(found, key=lambda f: f[:2])}


def load_commands() -> dict[str, Callable[..., None]]:
    """Every command registered under ``tritonlens.commands``, by name (one that fails to
    import is skipped with a warning, as plugins are)."""
    commands = {}
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name):
        try:
            commands[ep.name] = ep.load()
        except Exception as err:  # noqa: BLE001 - as load_plugins
            log.warning("tritonlens command %r (%s) failed to load: %s", ep.name, ep.value, err)
    return commands


def builtin_python_models(*models: str) -> dict[str, Path]:
    """``Plugin.python_models`` of tritonlens' own families: their ``model.py`` files ship
    in ``model_repository/<model>/1/`` (package data of ``tritonlens.model_repository``)."""
    import tritonlens.model_repository

    root = Path(next(iter(tritonlens.model_repository.__path__)))
    return {model: root / model / "1" / "model.py" for model in models}
