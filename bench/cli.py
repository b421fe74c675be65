"""``tritonlens bench``: the typer-annotated command (registered by ``client/cli.py``)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated

import typer

from tritonlens.bench.perf_analyzer import PerfAnalyzerError
from tritonlens.client.base import TritonLensError


def _split(values: list[str] | None) -> list[str] | None:
    """Repeatable options that also accept comma-separated lists."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def bench_command(
    quick: Annotated[bool, typer.Option(
        help="CI smoke mode: small models, short windows, few points (< 3 min on 2 cores)")] = False,
    repo: Annotated[Path | None, typer.Option(
        help="Serve this model repository (each benchmarked family exports into it first if it "
             "lacks that family); default: a fresh export under --work")] = None,
    out: Annotated[Path | None, typer.Option(help="Results folder (default results/<timestamp>)")] = None,
    work: Annotated[Path, typer.Option(help="Scratch folder for exports and checkpoints")] = Path("build/bench"),
    model: Annotated[list[str] | None, typer.Option(
        help="Only these Triton models (repeatable or comma-separated; default: every served model)")] = None,
    protocol: Annotated[list[str] | None, typer.Option(
        help="grpc and/or http (repeatable or comma-separated; default both)")] = None,
    shared_memory: Annotated[bool, typer.Option(
        help="Also measure with system shared memory where it applies")] = True,
    concurrency: Annotated[str | None, typer.Option(
        help="Concurrency sweep for end-to-end models, e.g. 1,2,4,8 (default; 1,4 with --quick)")] = None,
    naive_images: Annotated[int | None, typer.Option(
        help="Images the naive path classifies, one process each (default 3; 1 with --quick)")] = None,
    measurement_interval: Annotated[int | None, typer.Option(
        help="perf_analyzer measurement window in ms (default 3000; 800 with --quick)")] = None,
    tune: Annotated[bool | None, typer.Option(
        help="Also measure the tuning candidates (default: on in full mode)")] = None,
    tools_dir: Annotated[Path, typer.Option(help="Where perf_analyzer's own venv is created")] = Path(".tools"),
    family: Annotated[list[str] | None, typer.Option(
        help="Also run this plugin's benchmark steps (sam2: SAM 2.1 hiera-tiny at 512 px) and "
             "measure its models (repeatable or comma-separated; 'none' for only the quick "
             "families; default: every installed plugin, none more with --quick or --repo)")] = None,
    **family_options,
) -> None:
    """Load-test every served model with perf_analyzer, beside the in-process baselines.

    Writes results.json, report.md and PNG plots into the results folder. perf_analyzer
    (from tritonclient[all]==2.51.0) is installed into its own venv under --tools-dir on the
    first run.
    """
    from tritonlens.bench.perf_analyzer import Measurement
    from tritonlens.bench.run import BenchOptions, run_bench

    protocols = _split(protocol) or ["grpc", "http"]
    bad = [p for p in protocols if p not in ("grpc", "http")]
    if bad:
        raise typer.BadParameter(f"protocol must be grpc or http, not {bad[0]!r}")
    try:
        sweep = [int(c) for c in concurrency.split(",")] if concurrency else None
    except ValueError:
        raise typer.BadParameter(f"--concurrency takes integers like 1,2,4,8, not {concurrency!r}")
    if sweep and min(sweep) < 1:
        raise typer.BadParameter("--concurrency values must be at least 1")
    measurement = None
    if measurement_interval:
        measurement = Measurement(measurement_interval, 200 if quick else 30, 6)
    options = BenchOptions(quick=quick, family_options=family_options, repo=repo, out=out, work=work,
                           protocols=protocols, shared_memory=shared_memory, concurrency=sweep,
                           models=_split(model), naive_images=naive_images,
                           measurement=measurement, tune=tune, tools_dir=tools_dir,
                           families=None if family is None else
                           [f for f in _split(family) or [] if f != "none"])
    try:
        folder = run_bench(options)
    except (PerfAnalyzerError, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"results: {folder}/report.md")


def _bench_with_family_options():
    """``bench_command`` with every plugin's ``bench_options`` fields as more options."""
    import inspect

    from tritonlens.client.options import dataclass_options, with_parameters
    from tritonlens.core.plugins import load_plugins

    fixed = [p for p in inspect.signature(bench_command).parameters.values()
             if p.kind is not inspect.Parameter.VAR_KEYWORD]
    fixed = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=ANNOTATIONS[p.name])
             for p in fixed]
    more = dataclass_options({name: p.bench_options for name, p in load_plugins().items()},
                             tuple(p.name for p in fixed))
    return with_parameters(lambda **kwargs: bench_command(**kwargs), fixed + more,
                           inspect.getdoc(bench_command))


def main() -> None:
    """Run ``bench`` as its own command (``python -m tritonlens.bench.cli``)."""
    typer.run(bench)


ANNOTATIONS = typing.get_type_hints(bench_command, include_extras=True)
bench = _bench_with_family_options()


if __name__ == "__main__":
    main()


def perf(
    ctx: typer.Context,
    tools_dir: Annotated[Path, typer.Option(help="Where perf_analyzer's own venv is (created on "
                                                 "first use)")] = Path(".tools"),
) -> None:
    """Run Triton's perf_analyzer 2.51 with every further flag passed through unchanged.

    Example: tritonlens perf -m clip_embed_text -u localhost:8001 -i grpc --concurrency-range 1:4

    perf_analyzer (from tritonclient[all]==2.51.0) lives in its own venv under --tools-dir
    and needs two libraries from the server wheel on LD_LIBRARY_PATH; this command sets that
    up and adds the API-key header for --shared-memory (a restricted API on `tritonlens
    serve`). `tritonlens perf --version` prints its version; `tritonlens perf -- -h` its help.
    """
    import subprocess

    from tritonlens.bench.perf_analyzer import ensure_perf_analyzer, passthrough_command

    try:
        tool = ensure_perf_analyzer(tools_dir, log=lambda line: typer.echo(line))
    except PerfAnalyzerError as err:
        raise TritonLensError(str(err)) from err
    args = [arg for arg in ctx.args if arg != "--"]
    raise typer.Exit(subprocess.call(passthrough_command(tool, args), env=tool.environment()))


# client/cli.py registers a command with the typer context settings it carries.
perf.context_settings = {"allow_extra_args": True, "ignore_unknown_options": True}
