"""The ``tritonlens`` command line.

    tritonlens export clip ...     write a model family into a Triton model repository
    tritonlens serve               run tritonserver on it (Ctrl-C stops it cleanly)
    tritonlens status              is the server up, which models are loaded, with what
    tritonlens classify / embed    the clip plugin's commands (more come from plugins)
    tritonlens demo                the whole path on real photos, start to finish
    tritonlens bench               perf_analyzer load tests beside in-process baselines
    tritonlens perf                perf_analyzer itself, every flag passed through

Model families are plugins (entry-point group ``tritonlens.plugins``): each adds
``tritonlens export <family>`` and its own commands.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Annotated, Callable

import psutil
import typer
from rich.table import Table

from tritonlens.client.base import TritonClient, TritonLensError
from tritonlens.client.cache_status import (cache_counts, caches_responses, describe_text_cache,
                                            keeps_text_cache, read_metrics)
from tritonlens.client.cache_status import describe as describe_cache
from tritonlens.client.help_text import reflow_help
from tritonlens.client.options import (DEFAULT_REPO, Protocol, Repo, Url, check_protocol, console,
                                       dataclass_options, fail, run_at_boundary, with_parameters)
from tritonlens.client.verbose import with_verbose_option
from tritonlens.core.plugins import load_commands, load_plugins
from tritonlens.launcher.server import DEFAULT_RESPONSE_CACHE_BYTES
from tritonlens.serve.parameters import (PRECISION_PARAMETER, PROFILE_PARAMETER,
                                         STUB_RESTART_PARAMETER, WEIGHTS_PARAMETER)

app = typer.Typer(
    help="Serve OpenCLIP and SAM 2 encoders on NVIDIA Triton Inference Server.\n\n"
         "Typical flow: `tritonlens export clip --labels labels.txt`, then `tritonlens serve`, "
         "then `tritonlens classify photo.jpg` in another terminal.",
    no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False)
export_app = typer.Typer(help="Export a model family into a Triton model repository.",
                         no_args_is_help=True)
app.add_typer(export_app, name="export")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    repo: Repo = DEFAULT_REPO,
    host: Annotated[str, typer.Option(help="Address every endpoint binds to")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP/REST port (0 = any free port)")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0 = any free port)")] = 8001,
    metrics_port: Annotated[int, typer.Option(
        help="Prometheus metrics port (0 = any free port); with --replicas N: replica i uses "
             "this port + i (not given or 0: a free port each)")] = 8002,
    model_control_mode: Annotated[str, typer.Option(help="none (load all), poll or explicit")] = "none",
    load_model: Annotated[list[str] | None, typer.Option(
        help="With explicit model control: a model to load at start (repeatable)")] = None,
    log_verbose: Annotated[int, typer.Option(help="Triton's log verbosity (0 = info only)")] = 0,
    log_file: Annotated[Path | None, typer.Option(help="Write the server log here instead of the terminal")] = None,
    api_key: Annotated[str | None, typer.Option(
        envvar="TRITONLENS_API_KEY", show_default=False,
        help="Key that the shared-memory, model-repository, logging and trace APIs require in "
             "the 'tritonlens-api-key' header (default: random per start, kept for tritonlens' "
             "clients in a 0600 file per port)")] = None,
    replicas: Annotated[int, typer.Option(
        min=1, help="Run N tritonserver replicas behind nginx, which sends every request of a "
                    "sequence to one replica (hash on the x-correlation-id header); --http-port "
                    "and --grpc-port are then nginx's")] = 1,
    max_body_size: Annotated[str, typer.Option(
        help="With --replicas: nginx's client_max_body_size, the largest request (nginx size "
             "syntax, 0 = no bound)")] = "64m",
    replica_logs: Annotated[Path | None, typer.Option(
        help="With --replicas: folder for each replica's log and nginx's access/error logs "
             "(default: a temporary folder removed at stop)")] = None,
    openai_port: Annotated[int | None, typer.Option(
        help="Also serve OpenAI's embeddings API (POST /v1/embeddings, GET /v1/models) on this "
             "port of --host, in front of the server or the replicas' nginx (0 = any free "
             "port; not given = no gateway)")] = None,
    openai_model: Annotated[list[str] | None, typer.Option(
        help="With --openai-port: a model name the gateway serves, a CLIP export's --prefix "
             "(repeatable; default clip)")] = None,
    openai_require_key: Annotated[bool, typer.Option(
        "--openai-require-key", help="With --openai-port: require 'Authorization: Bearer <API key>' (the --api-key "
             "key; its file is printed at start) instead of an open gateway")] = False,
    response_cache_bytes: Annotated[int, typer.Option(
        min=0, help="Size of Triton's response cache in bytes (--cache-config local,size=...) for "
                    "models whose config enables it (your own: no tritonlens export does, "
                    "clip_rank keeps its own text cache); 0 = no cache "
                    "[default: 0]", show_default=False)] = DEFAULT_RESPONSE_CACHE_BYTES,
) -> None:
    """Run a real tritonserver on a model repository until Ctrl-C, SIGTERM or SIGHUP.

    Uses the Triton 2.51 server binary shipped in the nvidia-pytriton wheel, with the
    Python backend and tritonlens' Python-based onnxruntime and pytorch backends, so the
    repository is the same one the NGC container serves with its native backends.
    The server dies with this command (even on SIGKILL); busy ports are named and refused.
    Further tritonserver flags pass through after `--`, e.g. `tritonlens serve --
    --metrics-config summary_latencies=true --response-cache-byte-size 1000000`.
    With --replicas N: N servers on free loopback ports (metrics on --metrics-port + i when
    given) and nginx on the given ports. With --openai-port P: an OpenAI-compatible
    embeddings gateway on P (docs/openai.md), started once Triton is ready.
    """
    from tritonlens.client.base import api_key_file
    from tritonlens.launcher import ServerStartError, TritonServer
    from tritonlens.launcher.run import run_until_signal

    def openai_gateway(triton_url: str, api_key: str):
        """The --openai-port gateway in front of ``triton_url`` (None without the option);
        a port that Triton takes or that is busy is refused before any server starts."""
        if openai_port is None:
            return None
        from tritonlens.launcher.openai_process import OpenAIGateway
        from tritonlens.launcher.process import check_port_free

        if openai_port and openai_port in (http_port, grpc_port, metrics_port):
            fail(f"--openai-port {openai_port} is also one of Triton's ports (--http-port, "
                 "--grpc-port, --metrics-port): choose another")
        if openai_port:
            try:
                check_port_free(host, openai_port, "OpenAI gateway (--openai-port)")
            except ServerStartError as err:
                fail(str(err))
        return OpenAIGateway(triton_url, host=host, port=openai_port, models=openai_model or ["clip"],
                             api_key=api_key if openai_require_key else None)

    if replicas > 1:
        from click.core import ParameterSource

        from tritonlens.launcher import ModelLoadError, ProxyNotFoundError
        from tritonlens.launcher.nginx import ProxySettings
        from tritonlens.launcher.replicas import ReplicaSet
        from tritonlens.launcher.run import serve_replicas

        try:
            replica_set = ReplicaSet(
                repo, replicas, ProxySettings(host=host, grpc_port=grpc_port, http_port=http_port,
                                              max_body_size=max_body_size),
                log_dir=replica_logs, api_key=api_key, model_control_mode=model_control_mode,
                metrics_port=(0 if ctx.get_parameter_source("metrics_port") is ParameterSource.DEFAULT
                              else metrics_port),
                load_models=load_model or [], log_verbose=log_verbose,
                response_cache_bytes=response_cache_bytes,
                extra_args=[arg for arg in ctx.args if arg != "--"])
            gateway = openai_gateway(replica_set.grpc_url, replica_set.api_key)
            serve_replicas(replica_set, console.print, gateway)
        except (FileNotFoundError, ValueError, ServerStartError, ModelLoadError, ProxyNotFoundError,
                RuntimeError) as err:
            fail(str(err))
        return

    try:
        server = TritonServer(repo, host=host, http_port=http_port, grpc_port=grpc_port,
                              metrics_port=metrics_port, model_control_mode=model_control_mode,
                              load_models=load_model or [], log_verbose=log_verbose,
                              log_file=log_file, require_all_models=False, api_key=api_key,
                              response_cache_bytes=response_cache_bytes, extra_args=[arg for arg in ctx.args if arg != "--"])
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    gateway = openai_gateway(server.grpc_url, server.api_key)

    def start() -> None:
        console.print(f"starting tritonserver on {repo} ...")
        server.start()
        if gateway is not None:
            gateway.start()
        print_models(server.repository_index())
        endpoints = (f"gRPC {server.grpc_url}   HTTP {server.http_url}   "
                     f"metrics {server.metrics_url}")
        failed = server.model_failures()
        if server.is_ready():
            console.print(f"[bold green]ready[/]  {endpoints}", highlight=False)
        else:  # /v2/health/ready answers 400 while a model failed
            console.print(f"[bold yellow]serving, NOT ready[/] (/v2/health/ready fails; "
                          f"failed to load: {', '.join(sorted(failed)) or 'see the log'})  "
                          f"{endpoints}", highlight=False)
        if gateway is not None:
            console.print(gateway.describe(), highlight=False)
        console.print(f"API key for the restricted APIs: {api_key_file(server.http_port)}"
                      "\nCtrl-C to stop", highlight=False)

    def poll() -> None:
        if server.process.poll() is not None:
            fail(f"tritonserver exited with code {server.process.returncode}")
        if gateway is not None and gateway.poll() is not None:
            fail(f"the OpenAI gateway exited with code {gateway.poll()}")

    def stop() -> None:
        if gateway is not None:
            gateway.stop()
        code = server.stop()
        if code is not None:
            console.print(f"tritonserver stopped (exit code {code})")

    try:
        run_until_signal(start, poll, stop)
    except ServerStartError as err:
        fail(str(err))


def print_models(index: list[dict], details: dict[str, dict[str, str]] | None = None) -> None:
    """A table of the repository index: model, version, state, the reason if it failed, and
    (when ``details`` has them) backend, precision, profile, weights, instances x threads,
    and the cache hits and misses of the models that keep one (Triton's response cache, or
    clip_rank's text-embedding cache)."""
    details = details or {}
    columns = ["model", "version", "state"]
    caching = any("cache" in info for info in details.values())
    if details:
        columns += ["backend", "precision", "profile", "instances x threads", "weights"]
        columns += ["cache"] if caching else []
    table = Table(title="models")
    for column in columns + ["reason"]:
        table.add_column(column, overflow="fold")
    for entry in sorted(index, key=lambda m: m["name"]):
        state = entry.get("state", "")
        style = "green" if state == "READY" else "red"
        row = [entry["name"], entry.get("version", ""), f"[{style}]{state}[/]"]
        if details:
            info = details.get(entry["name"], {})
            row += [info.get(k, "") for k in ("backend", "precision", "profile", "instances", "weights")]
            row += [info.get("cache", "")] if caching else []
        table.add_row(*row, entry.get("reason", ""))
    console.print(table)


def model_details(config: dict) -> dict[str, str]:
    """What ``status`` shows of one model config (Triton's JSON form); an int8 model's
    precision names its weight format (``int8 u8-per-channel``, ``tritonlens.int8_format``)."""
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    groups = config.get("instance_group", [])
    count = sum(int(g.get("count", 1)) for g in groups) if groups else 0
    threads = params.get("intra_op_thread_count") or params.get("INTRA_OP_THREAD_COUNT") or "-"
    return {
        "backend": config.get("backend") or config.get("platform", ""),
        "precision": " ".join(filter(None, (params.get(PRECISION_PARAMETER, ""),
                                             params.get("tritonlens.int8_format", "")))),
        "profile": params.get(PROFILE_PARAMETER, ""),
        "instances": f"{count} x {threads}" if count else "",
        "weights": params.get(WEIGHTS_PARAMETER, ""),
    }


@app.command()
def status(url: Url = None, protocol: Protocol = "http",
           metrics_url: Annotated[str | None, typer.Option(
               help="Triton's Prometheus metrics (default: the --url host, port 8002), where "
                    "clip_rank's text cache is counted")] = None,
           as_json: Annotated[bool, typer.Option(
               "--json", help="Print one JSON document: server, live, ready, models (Triton's "
                              "repository index, each READY model with its details), host")] = False,
           ) -> None:
    """Health of a running Triton server and every model in its repository: state (with
    Triton's reason when a model failed to load), backend, precision, profile, instances x
    intra-op threads and where its weights came from; and this host's cores and memory."""
    client = TritonClient(url, check_protocol(protocol))
    try:
        client.check_ready()
    except TritonLensError as err:
        fail(str(err))
    conn = client.connection
    index = conn.get_model_repository_index(**({"as_json": True} if client.protocol == "grpc" else {}))
    models = index.get("models", []) if isinstance(index, dict) else index
    details = {}
    metrics = None  # read once, when a model keeps counts there
    for model in models:
        if model.get("state") == "READY":
            config = conn.get_model_config(model["name"], **({"as_json": True} if client.protocol == "grpc" else {}))
            details[model["name"]] = model_details(config.get("config", config))
            if caches_responses(config.get("config", config)):
                details[model["name"]]["cache"] = describe_cache(
                    cache_counts(conn, client.protocol, model["name"]))
            if keeps_text_cache(config.get("config", config)):
                if metrics is None:
                    metrics = read_metrics(metrics_url or f"http://{client.url.rsplit(':', 1)[0]}:8002/metrics")
                details[model["name"]]["cache"] = describe_text_cache(metrics, model["name"])
            restart = config.get("config", config).get("parameters", {}).get(STUB_RESTART_PARAMETER)
            if restart:  # launcher/health.py reloaded this model after one of its stubs died
                model["reason"] = f"recovered: {restart.get('string_value', '')}"
    ready = conn.is_server_ready()
    memory = psutil.virtual_memory()
    if as_json:
        print(json.dumps({
            "server": client.url, "live": True, "ready": ready,
            "models": [dict(m, details=details.get(m["name"], {}))
                       for m in sorted(models, key=lambda m: m["name"])],
            "host": {"cores": os.cpu_count(), "memory_bytes": memory.total,
                     "available_bytes": memory.available}}, indent=2))
        return
    console.print(f"server {client.url}: live, {'ready' if ready else 'NOT ready'}")
    print_models(models, details)
    console.print(f"this host: {os.cpu_count()} cores, {memory.total / 2**30:.1f} GiB memory "
                  f"({memory.available / 2**30:.1f} GiB available)")


def demo_command(plugins: dict) -> Callable[..., None]:
    """``tritonlens demo`` with the core's options (``--repo``, ``--out``) and every plugin's
    ``demo_options`` fields as options (``--<field-name>``).

    Raises:
        ValueError: two plugins declare a demo option of the same name.
    """
    parameters = [
        inspect.Parameter("repo", inspect.Parameter.KEYWORD_ONLY, annotation=Repo,
                          default=Path("build/demo_repository")),
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=Path("build/samples"),
                          annotation=Annotated[Path, typer.Option(
                              help="Where the sample photos and the clip are written")]),
        *dataclass_options({name: p.demo_options for name, p in plugins.items()}, ("repo", "out")),
    ]

    def demo(repo: Path, out: Path, **options) -> None:
        from tritonlens.client.demo import run_demo

        try:
            run_demo(repo, options, out)
        except TritonLensError as err:
            fail(str(err))

    return with_parameters(demo, parameters, DEMO_HELP)


DEMO_HELP = """The main job, start to finish on real input: export, serve, and every family's requests.

Writes scikit-image's sample photos as JPEG/PNG/WebP files, then every installed model family
(plugin) exports (unless the repository already holds its export), a real tritonserver starts,
and every family sends its requests: CLIP classifies every photo over gRPC and embeds photos
and texts over HTTP, SAM 2 segments a photo from a click and tracks an object through a real
H.264 clip frame by frame (mask PNGs, overlay picture and overlay video in
build/demo_results); then the server stops. The options after --out are the families' own.
"""


def main() -> None:
    """Entry point of the ``tritonlens`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name, command in load_commands().items():  # tritonlens bench, perf, ...
        app.command(name, context_settings=getattr(command, "context_settings", None))(command)
    plugins = load_plugins()
    app.command("demo")(with_verbose_option(demo_command(plugins)))
    for plugin in plugins.values():
        export_app.command(plugin.name)(with_verbose_option(plugin.export))
        for name, command in plugin.commands.items():
            app.command(name)(command)
    reflow_help(app)
    run_at_boundary(app)


if __name__ == "__main__":
    main()
