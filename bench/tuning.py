"""Tuning from measurement: serve candidate configs, measure, keep the reasons.

Each :class:`Candidate` changes a few fields of the exported configs (dynamic batching
delay, preferred batch sizes, instance counts, intra-op threads). The benchmark loads it
into the running server through Triton's model-control API with a config override (the
repository files are never edited), measures the end-to-end model with perf_analyzer, and
finally reloads the repository's own configs.

Thread budget rule: instances x intra-op threads of the encoder must not exceed the host's
cores; candidates that would are not run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format

from tritonlens.client.base import api_key_headers, find_api_key


@dataclass(frozen=True)
class Change:
    """New settings for one model; None keeps the exported value.

    Attributes:
        max_queue_delay_us: dynamic batching delay (microseconds).
        preferred_batch_sizes: the dynamic batcher's preferred sizes (() for none).
        instance_count: instances of the model (each its own stub process).
        intra_op_threads: onnxruntime intra-op threads per instance.
    """

    model: str
    max_queue_delay_us: int | None = None
    preferred_batch_sizes: tuple[int, ...] | None = None
    instance_count: int | None = None
    intra_op_threads: int | None = None


@dataclass(frozen=True)
class Candidate:
    """A named set of changes; ``name`` shows in the report."""

    name: str
    changes: tuple[Change, ...] = field(default_factory=tuple)

    def threads_per_model(self, cores: int) -> dict[str, int]:
        """Busy threads each changed encoder may use: instances x intra-op threads."""
        return {c.model: (c.instance_count or 1) * (c.intra_op_threads or cores)
                for c in self.changes if c.intra_op_threads or c.instance_count}


def clip_candidates(cores: int) -> list[Candidate]:
    """The CLIP settings compared on this host (``cores`` = usable cores)."""
    enc = "clip_image_encoder"
    return [
        Candidate("exported defaults"),
        Candidate("encoder: no queue delay", (Change(enc, max_queue_delay_us=0),)),
        Candidate("encoder: 20 ms delay, preferred 4/8",
                  (Change(enc, max_queue_delay_us=20000, preferred_batch_sizes=(4, 8)),)),
        Candidate(f"encoder: 1 instance x {cores} threads",
                  (Change(enc, instance_count=1, intra_op_threads=cores),)),
        Candidate(f"encoder: {cores} instances x 1 thread",
                  (Change(enc, instance_count=cores, intra_op_threads=1),)),
        Candidate("preprocess: 1 instance", (Change("clip_preprocess", instance_count=1),)),
    ]


def apply(config, change: Change):
    """A copy of ``config`` (a ``model_config_pb2.ModelConfig``) with ``change`` applied."""
    new = type(config)()
    new.CopyFrom(config)
    if change.max_queue_delay_us is not None:
        new.dynamic_batching.max_queue_delay_microseconds = change.max_queue_delay_us
    if change.preferred_batch_sizes is not None:
        del new.dynamic_batching.preferred_batch_size[:]
        new.dynamic_batching.preferred_batch_size.extend(change.preferred_batch_sizes)
    if change.instance_count is not None:
        new.instance_group[0].count = change.instance_count
    if change.intra_op_threads is not None:
        new.parameters["intra_op_thread_count"].string_value = str(change.intra_op_threads)
    return new


def config_json(config) -> str:
    """Triton's JSON form of a model config (for a load request's config override)."""
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))


def load(http_url: str, repo: Path, candidate: Candidate) -> None:
    """Load ``candidate``'s configs into the server at ``http_url`` (model-control API)."""
    import tritonclient.http as httpclient

    from tritonlens.export.config import parse_config

    client = httpclient.InferenceServerClient(http_url, network_timeout=600.0)
    headers = api_key_headers(find_api_key(http_url), "http")  # model-repository is restricted
    for change in candidate.changes:
        config = apply(parse_config(repo / change.model / "config.pbtxt"), change)
        client.load_model(change.model, config=config_json(config), headers=headers)


def restore(http_url: str, candidate: Candidate) -> None:
    """Reload the repository's own configs of the models ``candidate`` changed."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url, network_timeout=600.0)
    headers = api_key_headers(find_api_key(http_url), "http")
    for change in candidate.changes:
        client.load_model(change.model, headers=headers)
