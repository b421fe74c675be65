"""Command-line options and output helpers shared by every tritonlens command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

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
