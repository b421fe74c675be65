"""What every family's export shares: the options base, ``ExportError``, the option checks
and :func:`save_graph` (torch module -> ONNX or TorchScript file, then its precision and
memory variant).

A family's options (``ClipExportOptions``, ``Sam2ExportOptions``) subclass
:class:`ExportOptions`, set the values it accepts (``FORMATS``, ``PRECISIONS``,
``PROFILES``) and its own defaults, and add its own fields; its ``check_options`` calls
:meth:`ExportOptions.check` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from tritonlens.export.config import DEVICES
from tritonlens.export.onnx_variants import variant_files
from tritonlens.export.quiet import exporter_warnings


class ExportError(ValueError):
    """The export cannot be done as asked (bad option, labels, templates, model, config or
    weights); the message names the option or file and what to do instead."""


@dataclass(kw_only=True)
class ExportOptions:
    """The options every ``tritonlens export <family>`` takes.

    Attributes:
        fmt: the graph format, one of ``FORMATS`` (``onnx``: served by the onnxruntime
            backend; ``torchscript``: the pytorch backend).
        max_batch_size: largest batch Triton forms for the family's batched models.
        instance_count: instances per model (Triton instance group).
        threads: intra-op threads per instance (0: the host's cores / instances).
        max_queue_delay_us: dynamic batching delay in microseconds.
        seed: seed of the random initialisation when no weights are given.
        opset: ONNX opset of the exported graphs.
        precision: one of ``PRECISIONS`` (``int8``: onnxruntime dynamic quantization of
            the weights, for CPU hosts).
        profile: one of ``PROFILES`` (``low-memory``: weights as 64 KiB-aligned external
            data that onnxruntime memory-maps, memory arena and patterns off).
        device: ``cpu`` or ``gpu`` (``config.DEVICES``): the instance groups of the exported
            graphs are ``KIND_CPU`` or ``KIND_GPU``.
    """

    FORMATS: ClassVar[tuple[str, ...]] = ("onnx", "torchscript")
    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32",)
    PROFILES: ClassVar[tuple[str, ...]] = ("default", "low-memory")
    # Appended to the --precision error ("... for SAM 2").
    FAMILY_NOTE: ClassVar[str] = ""

    fmt: str = "onnx"
    max_batch_size: int = 32
    instance_count: int = 1
    threads: int = 0
    max_queue_delay_us: int = 2000
    seed: int = 0
    opset: int = 17
    precision: str = "fp32"
    profile: str = "default"
    device: str = "cpu"

    def check(self) -> None:
        """Refuse a value outside ``FORMATS``, ``PRECISIONS``, ``PROFILES`` or ``DEVICES``,
        and a max batch size below 1.

        Raises:
            ExportError: naming the option and the values it takes.
        """
        if self.fmt not in self.FORMATS:
            allowed = (" or ".join(self.FORMATS) if len(self.FORMATS) == 2
                       else "one of " + ", ".join(self.FORMATS))
            raise ExportError(f"--format must be {allowed}, not {self.fmt!r}")
        if self.precision not in self.PRECISIONS:
            raise ExportError(f"--precision must be one of {', '.join(self.PRECISIONS)}"
                              f"{self.FAMILY_NOTE}, not {self.precision!r}")
        if self.profile not in self.PROFILES:
            raise ExportError(f"--profile must be one of {', '.join(self.PROFILES)}, "
                              f"not {self.profile!r}")
        if self.device not in DEVICES:
            raise ExportError(f"--device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.max_batch_size < 1:
            raise ExportError("max batch size must be at least 1")


def save_graph(module: torch.nn.Module, example: tuple, inputs: tuple[str, ...],
               outputs: tuple[str, ...], dynamic_axes: dict[str, dict[int, str]], fmt: str,
               opset: int, out_dir: Path, *, precision: str = "fp32",
               profile: str = "default") -> dict[str, Path]:
    """Export ``module`` into ``out_dir`` and return its model files (file name -> path).

    ``fmt="onnx"`` traces to ``model.onnx`` with torch's TorchScript-based exporter
    (``dynamo=False``, opset ``opset``, ``dynamic_axes`` as ``torch.onnx.export`` takes them);
    ``fmt="torchscript"`` saves ``torch.jit.trace`` as ``model.pt``. The ONNX file then gets
    its variant (:func:`~tritonlens.export.onnx_variants.variant_files`): ``precision="int8"``
    quantizes its weights in place, ``profile="low-memory"`` moves them into
    ``model.onnx.data`` (aligned, memory-mapped). fp16 modules are traced in fp16 and need
    nothing more. ``inputs`` / ``outputs`` name the graph's tensors in order.

    nn.MultiheadAttention's inference fast path (``aten::_native_multi_head_attention``) has
    no ONNX symbolic: it is switched off while tracing (the plain path computes the same
    attention) and restored afterwards.
    """
    module.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), exporter_warnings():  # the known, harmless ones hidden
            if fmt == "onnx":
                path = out_dir / "model.onnx"
                torch.onnx.export(module, example, str(path), input_names=list(inputs),
                                  output_names=list(outputs), opset_version=opset, dynamo=False,
                                  dynamic_axes=dynamic_axes)
            else:
                path = out_dir / "model.pt"
                torch.jit.trace(module, example, check_trace=False).save(str(path))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    with exporter_warnings():  # onnxruntime's quantizer logs too
        return variant_files(path, precision, profile)
