"""Tuning from measurement: serve candidate configs, measure, keep the reasons; or let
Triton Model Analyzer search the configurations (:func:`run_model_analyzer`).

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


# -- Triton Model Analyzer --------------------------------------------------------------
# Model Analyzer (PyPI triton-model-analyzer) searches instance counts, max batch sizes and
# dynamic batching itself, under QoS limits, and writes reports. It runs in its own venv
# (it pins tritonclient 2.7x, numpy 2), in ``local`` launch mode: it starts the pip wheel's
# tritonserver with tritonlens' backend directory and environment, and measures with the
# perf_analyzer 2.51 that bench/ installs (through a wrapper that sets LD_LIBRARY_PATH,
# which Model Analyzer does not pass on to perf_analyzer).
MODEL_ANALYZER_PACKAGES = ("triton-model-analyzer==1.58.0", "setuptools<81")


def ensure_model_analyzer(tools_dir: Path, log=lambda line: None) -> Path:
    """The ``model-analyzer`` executable in ``<tools_dir>/model_analyzer`` (installed on
    first use from the package registry).

    Raises:
        RuntimeError: the install failed (pip's output in the message).
    """
    import subprocess
    import sys

    venv = Path(tools_dir).resolve() / "model_analyzer"
    binary = venv / "bin" / "model-analyzer"
    if not binary.exists():
        log(f"installing {MODEL_ANALYZER_PACKAGES[0]} into {venv}")
        for cmd in ([sys.executable, "-m", "venv", "--clear", str(venv)],
                    [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                     "--disable-pip-version-check", *MODEL_ANALYZER_PACKAGES]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return binary


def model_analyzer_config(repo: Path, models: list[str], out: Path, perf_analyzer: Path,
                          max_concurrency: int = 8, max_instances: int = 2,
                          max_batch_size: int = 16) -> dict:
    """Model Analyzer's ``profile`` config (a dict for its YAML file) for ``models`` of
    ``repo``, launching the pip wheel's tritonserver locally as ``tritonlens serve`` does.

    ``perf_analyzer`` is an executable that runs perf_analyzer (see :func:`run_model_analyzer`).
    The brute-force search covers 1..``max_instances`` CPU instances, max batch sizes
    1..``max_batch_size`` (powers of 2) with dynamic batching, and concurrency
    1..``max_concurrency``.
    """
    from tritonlens.launcher.install import assemble_backend_directory, find_triton, server_environment
    from tritonlens.launcher.process import free_port

    install = find_triton()
    environment = server_environment(install)
    http, grpc, metrics = free_port(), free_port(), free_port()  # not 8000-8002: another server's
    return {
        "model_repository": str(Path(repo).resolve()),
        "output_model_repository_path": str(out / "output_repository"),
        "override_output_model_repository": True,
        "export_path": str(out),
        "checkpoint_directory": str(out / "checkpoints"),
        "triton_launch_mode": "local",
        "triton_http_endpoint": f"localhost:{http}", "triton_grpc_endpoint": f"localhost:{grpc}",
        "triton_metrics_url": f"http://localhost:{metrics}/metrics",
        "triton_server_path": str(install.binary),
        "perf_analyzer_path": str(perf_analyzer),
        "triton_server_flags": {
            "backend_directory": str(assemble_backend_directory(install)),
            "cache_directory": str(install.caches),
            "pinned_memory_pool_byte_size": 0, "allow_gpu_metrics": False},
        "triton_server_environment": {key: environment[key] for key in ("PATH", "LD_LIBRARY_PATH")},
        "collect_cpu_metrics": True,
        "run_config_search_max_concurrency": max_concurrency,
        "run_config_search_max_instance_count": max_instances,
        "run_config_search_max_model_batch_size": max_batch_size,
        "perf_analyzer_flags": {"stability-percentage": 50, "measurement-interval": 3000},
        "profile_models": {model: {"cpu_only": True} for model in models},
    }


def run_model_analyzer(repo: Path, models: list[str], out: Path, tools_dir: Path = Path(".tools"),
                       log=print, **search) -> Path:
    """Profile ``models`` of ``repo`` with Model Analyzer and write its reports into ``out``.

    Returns the folder of Model Analyzer's result tables (``out/results``:
    ``metrics-model-inference.csv`` etc., one row per configuration and concurrency); the
    configurations it tried are in ``out/output_repository``.

    Raises:
        RuntimeError: Model Analyzer could not be installed or its run failed (exit code and
            the end of its output in the message).
    """
    import os
    import subprocess

    import yaml

    from tritonlens.bench.perf_analyzer import ensure_perf_analyzer

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tool = ensure_perf_analyzer(tools_dir, log)
    wrapper = out / "perf_analyzer"
    wrapper.write_text("#!/bin/sh\n"
                       f"export LD_LIBRARY_PATH='{tool.lib_dir}'${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\n"
                       f"exec '{tool.binary}' \"$@\"\n")
    wrapper.chmod(0o755)
    config = out / "model_analyzer.yaml"
    config.write_text(yaml.safe_dump(model_analyzer_config(repo, models, out, wrapper, **search)))
    analyzer = ensure_model_analyzer(tools_dir, log)
    log(f"model-analyzer profile -f {config}")
    proc = subprocess.run([str(analyzer), "profile", "-f", str(config)], cwd=out,
                          env=dict(os.environ), capture_output=True, text=True)
    (out / "model_analyzer.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"model-analyzer profile failed (exit {proc.returncode}): "
                           f"{(proc.stdout + proc.stderr)[-1500:]}")
    return out / "results"


def main(argv: list[str] | None = None) -> None:
    """``python -m tritonlens.bench.tuning REPO MODEL... [--out DIR]``: Model Analyzer on
    models of an exported repository; prints where its tables and reports are."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tritonlens.bench.tuning", description=main.__doc__)
    parser.add_argument("repo", type=Path)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--out", type=Path, default=Path("results/model_analyzer"))
    parser.add_argument("--tools-dir", type=Path, default=Path(".tools"))
    parser.add_argument("--max-concurrency", type=int, default=8)
    parser.add_argument("--max-instances", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    results = run_model_analyzer(args.repo, args.models, args.out, args.tools_dir,
                                 max_concurrency=args.max_concurrency,
                                 max_instances=args.max_instances, max_batch_size=args.max_batch_size)
    print(f"tables: {results}\nreports: {args.out.resolve() / 'reports'}")


if __name__ == "__main__":
    main()
