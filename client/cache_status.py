"""What ``tritonlens status`` shows of Triton's response cache: hits and misses per model.

A model whose config enables ``response_cache`` (the CLIP text encoder, so that ``clip_rank``
encodes a candidate text once) is answered from the server's cache (``tritonserver
--cache-config local,size=<bytes>``, set by ``tritonlens serve --response-cache-bytes``) when
a request equals an earlier one. Triton counts both outcomes in the model's statistics
(``inference_stats.cache_hit`` / ``cache_miss``; a hit is not counted in
``inference_count``) and in its metrics (``nv_cache_num_hits_per_model``,
``nv_cache_num_misses_per_model``; ``nv_cache_util`` and ``nv_cache_num_evictions`` for the
cache as a whole).
"""

from __future__ import annotations


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
