"""Command-line options and output helpers shared by every tritonlens command."""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from pathlib import Path
from typing import Annotated, Callable, NoReturn

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

# Piped output (scripts, logs, tests) is not wrapped at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

Url = Annotated[str | None, typer.Option(
    "--url", help="Triton endpoint host:port [default: 127.0.0.1:8001 for grpc, :8000 for http]")]
Protocol = Annotated[str, typer.Option(
    "--protocol", "-p", help="grpc or http", case_sensitive=False)]
Repo = Annotated[Path, typer.Option(
    "--repo", help="Model repository directory to write or serve")]
DEFAULT_REPO = Path("model_repository")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def run_at_boundary(app: Callable[[], None]) -> None:
    """Run the command line; an error that escapes a command becomes one line and exit 1.

    Commands report their own errors with :func:`fail`; this is the boundary for what they
    do not catch: a ``TritonLensError`` (bad ``--url``, unreachable server) or a Triton error
    answer (``InferenceServerException``) is printed as is;
    an ``OSError`` (e.g. an output folder that does not exist) names the file; anything else
    is a tritonlens bug, printed on one line with its type. Ctrl-C exits 130 quietly.
    """
    from tritonclient.utils import InferenceServerException

    from tritonlens.client.base import TritonLensError, one_line

    try:
        app()
    except TritonLensError as err:
        message = str(err)
    except InferenceServerException as err:  # a server answer no command translated
        message = f"the Triton server answered: {one_line(err)}"
    except OSError as err:
        message = f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as err:  # noqa: BLE001 - the boundary: no traceback for the user
        message = (f"unexpected {type(err).__name__}: {' '.join(str(err).split())} "
                   "(a tritonlens bug: please report it with the command line)")
    else:
        return
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise SystemExit(1)


def check_output_path(path: Path | None, option: str) -> None:
    """Fail before any work when ``path``'s folder does not exist or ``path`` is a folder."""
    if path is None:
        return
    if path.is_dir():
        fail(f"{option} {path} is a folder: give a file name")
    if not path.parent.is_dir():
        fail(f"{option} {path}: folder {path.parent} does not exist; create it first")


def check_protocol(protocol: str) -> str:
    """Lower-cased protocol, or a clear error."""
    protocol = protocol.lower()
    if protocol not in ("grpc", "http"):
        fail(f"--protocol must be grpc or http, not {protocol!r}")
    return protocol


def warn_random_weights(weights: str) -> None:
    """Say plainly that results from random weights are not real predictions."""
    if weights == "random":
        err_console.print("[bold yellow]warning:[/] the served model has RANDOM-INITIALISED "
                          "weights (exported without a checkpoint): these results show the "
                          "pipeline works, they are not real predictions", highlight=False)


def run_export(title: str, export: Callable[..., dict[str, str]], options, repo: Path) -> None:
    """Run a family's ``export(options, repo, report=...)`` with a progress display (one
    line per step when stderr is not a terminal), then print its summary table and the
    random-weights warning if it applies. Export errors are the caller's to catch."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=False) as progress:
        task = progress.add_task("starting", total=None)

        def report(step: str) -> None:
            progress.update(task, description=step)
            if not err_console.is_terminal:  # logs and CI: one line per step
                err_console.print(step, highlight=False)

        summary = export(options, repo, report=report)
        progress.update(task, description="done")
    table = Table(title=f"{title} exported to {repo}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, value)
    console.print(table)
    warn_random_weights(summary["weights"])


def classification_table(result, title: str) -> Table:
    """A rich table of one image's top-k labels (a ``client.common.Classification``):
    rank, label, probability."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for rank, label in enumerate(result.labels, 1):
        table.add_row(str(rank), label.label, f"{label.score:.4f}")
    return table


def classify_command(client, images: list[Path], top_k: int, concurrency: int, as_json: bool,
                     expand: Callable[[list[Path]], list[Path]] = list, model: str | None = None,
                     run: Callable[[list[Path], str], int] | None = None) -> None:
    """The body of every family's ``classify`` command: check ``--top-k`` and
    ``--concurrency``, ``expand`` the arguments into files (e.g. folders into their images),
    check that ``model`` (default ``client.classify_model``) is ready, warn about random
    weights, then ``run(files, weights)`` (default: :func:`print_classifications` with
    ``client.classify(image, top_k)``), which prints the results and returns how many failed.

    Raises:
        typer.Exit: 1 when an option, the server or any image failed (each named on stderr).
    """
    from tritonlens.client.base import TritonLensError

    if top_k < 1:
        fail(f"--top-k must be at least 1, not {top_k}")
    if concurrency < 1:
        fail(f"--concurrency must be at least 1, not {concurrency}")
    try:
        files = expand(images)
        client.check_ready(model or client.classify_model)
        weights = client.weights()
    except TritonLensError as err:
        fail(str(err))
    warn_random_weights(weights)
    if run is None:
        def run(files, weights):
            return print_classifications(files, lambda image: client.classify(image, top_k),
                                         concurrency, as_json, weights)
    if run(files, weights):
        raise typer.Exit(1)


def print_classifications(files: list[Path], classify: Callable, concurrency: int,
                          as_json: bool, weights: str) -> int:
    """Run ``classify(file)`` (a family client's top-k call) over ``files``, ``concurrency``
    requests in flight, and print each result in input order as it arrives: a table, or
    with ``as_json`` one JSON line (image, weights, labels); a file that failed is one
    error line on stderr and the others go on. Returns how many failed."""
    import json

    from tritonlens.client.base import TritonLensError
    from tritonlens.client.common import ProgressBar, imap_concurrent

    failed = 0
    with ProgressBar(len(files) > 1, len(files), "classifying") as bar:
        results = imap_concurrent(classify, files, concurrency, on_done=lambda: bar.advance(1))
        for image, result in zip(files, results):
            if isinstance(result, TritonLensError):
                failed += 1
                err_console.print(f"[bold red]error:[/] {image}: {result}", highlight=False)
            elif as_json:
                print(json.dumps({"image": str(image), "weights": weights, "labels": [
                    {"label": l.label, "index": l.index, "score": l.score} for l in result.labels]}),
                    flush=True)
            else:
                console.print(classification_table(result, str(image)))
    return failed


def dataclass_options(classes: dict[str, type | None], taken: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """Command-line options (keyword-only typer parameters, ``--field-name``) from the fields of
    the option dataclasses of several owners (plugin name -> dataclass or None): each field's
    default, its type, and its ``metadata["help"]``.

    Raises:
        ValueError: a field named like another owner's, or like one of ``taken``.
    """
    owner: dict[str, str] = {name: "the command" for name in taken}
    parameters = []
    for name, cls in classes.items():
        if cls is None:
            continue
        hints = typing.get_type_hints(cls)
        for option in dataclasses.fields(cls):
            if option.name in owner:
                raise ValueError(f"option --{option.name.replace('_', '-')} of {name!r} is also "
                                 f"{owner[option.name]}'s")
            owner[option.name] = name
            parameters.append(inspect.Parameter(
                option.name, inspect.Parameter.KEYWORD_ONLY, default=option.default,
                annotation=Annotated[hints[option.name], typer.Option(help=option.metadata.get("help", ""))]))
    return parameters


def with_parameters(function: Callable[..., None], parameters: list[inspect.Parameter], doc: str) -> Callable[..., None]:
    """``function`` (taking ``**options``) presented to typer with ``parameters`` and ``doc``
    as its signature and help."""
    function.__doc__ = doc
    function.__signature__ = inspect.Signature(parameters)
    function.__annotations__ = {p.name: p.annotation for p in parameters}
    return function
