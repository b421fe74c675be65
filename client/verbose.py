"""``--verbose`` for the commands that export models (``tritonlens export <family>``,
``tritonlens demo``): show the warnings torch's tracer and ONNX exporter print.

By default :func:`tritonlens.export.quiet.exporter_warnings` hides the known-harmless ones
and says so in one line; it hides nothing while the ``tritonlens.export`` logger is
enabled for DEBUG, which is what ``--verbose`` turns on.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Annotated, Callable

import typer

VERBOSE = Annotated[bool, typer.Option(
    "--verbose", help="Show the warnings of torch's tracer and ONNX exporter (hidden by "
    "default: known and harmless for these graphs) and tritonlens' debug log")]


def with_verbose_option(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` (a typer-annotated function) with a ``--verbose`` option added: when given,
    the ``tritonlens`` loggers log DEBUG, so exporter warnings are shown, then ``command``
    runs with its own arguments."""
    signature = inspect.signature(command, eval_str=True)
    verbose = inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False,
                                annotation=VERBOSE)

    @functools.wraps(command)
    def run(*args, verbose: bool = False, **kwargs):
        if verbose:
            logging.getLogger("tritonlens").setLevel(logging.DEBUG)
        return command(*args, **kwargs)

    run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), verbose])
    run.__annotations__ = {**{p.name: p.annotation for p in signature.parameters.values()},
                           "verbose": VERBOSE}
    return run
