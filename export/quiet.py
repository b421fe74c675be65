"""The warnings torch's tracer and ONNX exporter print for tritonlens' graphs, hidden.

Every export printed screens of them between its steps. Those in :data:`KNOWN` (and the
log lines of onnxruntime's quantizer in :data:`KNOWN_LOGS`) are known and harmless for the
graphs tritonlens exports: the parity tests compare every exported graph's outputs with the
reference library in-process (open_clip, sam2, timm), so a trace that baked in a wrong
constant, or a negative index the ONNX graph gets wrong, fails them.
:func:`exporter_warnings` hides them while a graph is exported and says so once per process
(one log line); any other warning still shows. With the ``tritonlens.export`` logger
enabled for DEBUG (``--verbose`` on the command line) nothing is hidden.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch

log = logging.getLogger(__name__)

# (category, start of the message as a regular expression) of each known warning, as
# torch 2.14 words it.
KNOWN: tuple[tuple[type[Warning], str], ...] = (
    # torch.jit.trace (TorchScript export, and the TorchScript-based ONNX exporter) is
    # deprecated in favour of torch.export; tritonlens exports with it on purpose
    # (export/core.save_graph, dynamo=False: the exporter its graphs were checked with).
    (FutureWarning, r"`torch\.jit\.trace(_method)?` is deprecated"),
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export"),
    # Shape checks in sam2 / open_clip / timm code (`if pad_h > 0`, `assert a.shape[0] == ...`)
    # on sizes the exported graph fixes (the image size) or that hold for every input it takes.
    (torch.jit.TracerWarning,
     r"Converting a tensor to a Python (boolean|index|integer|number|float)"),
    # aten::index with tensor indices (CLIP's end-of-text token pick, SAM 2's mask tokens):
    # wrong only for negative indices, which these graphs never produce.
    (UserWarning, r"Exporting aten::index operator of advanced indexing"),
)
# Start of each known message of onnxruntime's quantizer (int8 variants), which logs through
# the root logger: its advice to run shape pre-processing first, and the tensors it leaves
# in fp32 (shape arithmetic such as Slice outputs; the int8 tests check the agreement).
KNOWN_LOGS: tuple[str, ...] = (
    "Please consider to run pre-processing before quantization",
    "Inference failed or unsupported type to quantize for tensor",
)

_told = False


def _not_known(record: logging.LogRecord) -> bool:
    """A root-logger filter: False for the :data:`KNOWN_LOGS` messages."""
    return not str(record.msg).startswith(KNOWN_LOGS)


@contextmanager
def exporter_warnings() -> Iterator[None]:
    """Hide the :data:`KNOWN` warnings and :data:`KNOWN_LOGS` messages raised inside the
    block, unless the ``tritonlens.export`` logger is enabled for DEBUG; the first time in
    this process, log one line saying so and how to see them. Other warnings pass."""
    global _told
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    if not _told:
        _told = True
        log.warning("hiding the known, harmless warnings of torch's tracer and ONNX exporter "
                    "(--verbose shows them)")
    root = logging.getLogger()
    root.addFilter(_not_known)
    try:
        with warnings.catch_warnings():
            for category, pattern in KNOWN:
                warnings.filterwarnings("ignore", message=pattern, category=category)
            yield
    finally:
        root.removeFilter(_not_known)
