"""The perf_analyzer scenarios: every plugin's, one record per served model.

A scenario (:class:`~tritonlens.core.plugins.Scenario`) names a Triton model and says how
to build its perf_analyzer ``--input-data`` from real data (``BenchInputs``: real photos,
the exported repository). Each model family contributes its own through
``Plugin.scenarios()`` (``client/clip/scenarios.py``, ``client/sam2/scenarios.py``, a
third-party package's); ``tritonlens bench`` runs every scenario whose model the server has
loaded, over each protocol and concurrency asked for, and lists served models that have
no scenario.
"""

from __future__ import annotations

from tritonlens.core.plugins import BenchInputs, Scenario, Streams, load_plugins

__all__ = ["BenchInputs", "Scenario", "Streams", "all_scenarios", "scenarios_for"]


def all_scenarios() -> list[Scenario]:
    """Every installed plugin's scenarios, in plugin order.

    Raises:
        ValueError: two scenarios name the same model.
    """
    found = [s for plugin in load_plugins().values() for s in plugin.scenarios()]
    models = [s.model for s in found]
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise ValueError(f"more than one scenario for {', '.join(twice)}")
    return found


def scenarios_for(served: list[str], selected: list[str] | None = None,
                  scenarios: list[Scenario] | None = None) -> tuple[list[Scenario], list[str]]:
    """The scenarios to run for the ``served`` models, and served models without one.

    Args:
        served: names of the models the server has loaded.
        selected: if given, only these model names (an unknown name raises ValueError).
        scenarios: the candidates (default: :func:`all_scenarios`).
    """
    scenarios = all_scenarios() if scenarios is None else scenarios
    known = {s.model for s in scenarios}
    if selected:
        unknown = sorted(set(selected) - known)
        if unknown:
            raise ValueError(f"no scenario for {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = [s for s in scenarios if s.model in served and (not selected or s.model in selected)]
    uncovered = sorted(set(served) - known)
    return chosen, uncovered
