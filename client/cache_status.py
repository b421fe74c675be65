"""What ``tritonlens status`` shows of the caches: hits and misses per model.

* ``clip_rank``'s text-embedding cache (config parameter ``text_cache_bytes``): counted in
  Triton's metrics, ``tritonlens_text_cache_lookups_total{model, outcome="hit"|"miss"}`` and
  ``tritonlens_text_cache_bytes{model}`` (custom metrics of the Python backend).
* Triton's response cache, for a model whose config enables ``response_cache`` (none of
  tritonlens' exports; see ``launcher.server.DEFAULT_RESPONSE_CACHE_BYTES`` for why), answered
  from the server's cache (``tritonserver --cache-config local,size=<bytes>``, set by
  ``tritonlens serve --response-cache-bytes``) when a request equals an earlier one. Triton counts both outcomes in the model's statistics
(``inference_stats.cache_hit`` / ``cache_miss``; a hit is not counted in
``inference_count``) and in its metrics (``nv_cache_num_hits_per_model``,
``nv_cache_num_misses_per_model``; ``nv_cache_util`` and ``nv_cache_num_evictions`` for the
cache as a whole).
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request


def caches_responses(config: dict) -> bool:
    """Whether a model config (Triton's JSON form) enables the response cache."""
    return bool(config.get("response_cache", {}).get("enable"))


def cache_counts(connection, protocol: str, model: str) -> dict[str, int]:
    """``{"hits": n, "misses": m}``: the response-cache lookups of ``model`` (all its
    versions) since it loaded, from Triton's statistics API (open, like inference).

    Args:
        connection: a tritonclient gRPC or HTTP ``InferenceServerClient``.
        protocol: ``grpc`` or ``http``.
    """
    stats = connection.get_inference_statistics(model, **({"as_json": True} if protocol == "grpc" else {}))
    counts = {"hits": 0, "misses": 0}
    for entry in stats.get("model_stats", []):
        inference = entry.get("inference_stats", {})
        counts["hits"] += int(inference.get("cache_hit", {}).get("count", 0))
        counts["misses"] += int(inference.get("cache_miss", {}).get("count", 0))
    return counts


def describe(counts: dict[str, int]) -> str:
    """``"12 hits, 6 misses"``, the status table's cell."""
    return f"{counts['hits']} hits, {counts['misses']} misses"


TEXT_CACHE_PARAMETER = "text_cache_bytes"
_LOOKUPS = re.compile(r'^tritonlens_text_cache_lookups_total\{([^}]*)\} (\S+)$', re.MULTILINE)
OUTCOMES = {"hit": "hits", "miss": "misses"}  # the metric's outcome label -> the count's key
_BYTES = re.compile(r'^tritonlens_text_cache_bytes\{([^}]*)\} (\S+)$', re.MULTILINE)


def keeps_text_cache(config: dict) -> bool:
    """Whether a model config (Triton's JSON form) has a text-embedding cache (clip_rank)."""
    return TEXT_CACHE_PARAMETER in config.get("parameters", {})


def read_metrics(url: str) -> str:
    """The Prometheus text of Triton's metrics endpoint; "" when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError):
        return ""


def text_cache_counts(metrics: str, model: str) -> dict[str, float] | None:
    """``{"hits", "misses", "bytes"}`` of ``model``'s text cache from Triton's metrics text,
    or None when they are not there."""
    counts = {}
    for labels, value in _LOOKUPS.findall(metrics):
        if f'model="{model}"' in labels:
            outcome = re.search(r'outcome="(\w+)"', labels)
            if outcome and outcome.group(1) in OUTCOMES:
                counts[OUTCOMES[outcome.group(1)]] = float(value)
    for labels, value in _BYTES.findall(metrics):
        if f'model="{model}"' in labels:
            counts["bytes"] = float(value)
    return counts if "hits" in counts else None


def describe_text_cache(metrics: str, model: str) -> str:
    """``"text: 120 hits, 27 misses, 0.1 MiB"``, the status table's cell."""
    counts = text_cache_counts(metrics, model)
    if counts is None:
        return "text cache (metrics not readable)"
    return (f"text: {counts['hits']:.0f} hits, {counts.get('misses', 0):.0f} misses, "
            f"{counts.get('bytes', 0) / 2**20:.1f} MiB")
