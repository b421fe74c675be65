"""Precision and memory variants of an exported ONNX graph (int8, low-memory layout).

* :func:`quantize_int8`: ONNX Runtime's dynamic quantization (``quantize_dynamic``):
  weights of MatMul/Gemm (and Conv) stored as int8 with per-channel scales, activations
  quantized on the fly per batch. Inputs and outputs keep their documented dtypes.
* :func:`save_with_aligned_external_data`: moves every weight out of ``model.onnx`` into
  ``model.onnx.data`` at offsets aligned to 64 KiB. ONNX Runtime memory-maps external data
  whose offset is aligned to the allocation granularity instead of copying it into private
  memory, so with weight pre-packing off the weights stay file-backed pages: shared by every
  instance and every process that maps the same file, and reclaimable under memory pressure.
  (onnx 1.17's own ``save_model(save_as_external_data=True)`` packs tensors back to back,
  unaligned, which onnxruntime must copy.)
* :func:`variant_files`: both of the above as a precision and profile ask, for one graph;
* :func:`onnxruntime_parameters`: the config parameters of each profile (threads, arena,
  memory patterns, pre-packing), shared by the CLIP and SAM 2 exports.

fp16 is not produced here: the encoders are exported in fp16 from torch (see
``export/clip/modules.py``), because onnxruntime's graph-level fp16 converter produced
an invalid graph for open_clip's ViT (duplicate node names) on onnxruntime 1.31.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx.external_data_helper import set_external_data

ALIGNMENT = 64 * 1024  # bytes; a multiple of every Linux page size and of Windows' granularity
EXTERNAL_THRESHOLD = 1024  # bytes; smaller tensors stay inside model.onnx


def quantize_int8(path: Path, per_channel: bool = True) -> Path:
    """Replace the fp32 ONNX model at ``path`` with its dynamically quantized int8 version.

    Returns ``path``. Raises whatever onnxruntime's quantizer raises for a graph it cannot
    quantize (the export reports it with the model's name).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".int8.onnx")
    quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel)
    os.replace(tmp, path)
    return path


def save_with_aligned_external_data(path: Path, alignment: int = ALIGNMENT) -> Path:
    """Rewrite ``path`` (a self-contained ONNX file) as ``path`` + ``path.data``.

    Every initializer of at least ``EXTERNAL_THRESHOLD`` bytes is written to
    ``<name>.data`` at an offset that is a multiple of ``alignment`` bytes. Returns the
    data file's path.
    """
    model = onnx.load(str(path))
    data_path = path.with_name(path.name + ".data")
    with open(data_path, "wb") as data:
        for tensor in model.graph.initializer:
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < EXTERNAL_THRESHOLD:
                continue
            data.write(b"\0" * ((-data.tell()) % alignment))
            offset = data.tell()
            data.write(tensor.raw_data)
            set_external_data(tensor, data_path.name, offset=offset, length=len(tensor.raw_data))
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(model, str(path))
    return data_path


def variant_files(graph: Path, precision: str, profile: str) -> dict[str, Path]:
    """The model files of ``graph`` in ``precision`` and ``profile`` (name -> path).

    int8 quantizes an ONNX graph's weights in place; low-memory moves its weights to
    ``model.onnx.data`` (aligned, memory-mapped by onnxruntime). TorchScript files are
    returned as they are (the exports allow them only in fp32 default). fp16 graphs are
    exported in fp16 from torch and need nothing here.
    """
    files = {graph.name: graph}
    if graph.suffix != ".onnx":
        return files
    if precision == "int8":
        quantize_int8(graph)
    if profile == "low-memory":
        data = save_with_aligned_external_data(graph)
        files[data.name] = data
    return files


def onnxruntime_parameters(profile: str, instances: int, threads: int) -> dict[str, str]:
    """Config parameters of an onnxruntime model in ``profile`` (``default`` or ``low-memory``).

    Names are the native onnxruntime backend's (``intra_op_thread_count``,
    ``enable_mem_arena``, ``enable_mem_pattern``), so the NGC container honours them too;
    ``tritonlens.disable_prepacking`` has no native equivalent and is honoured by
    tritonlens' Python-based onnxruntime backend.

    Pre-packing copies each MatMul/Gemm weight into a private, kernel-friendly buffer and
    onnxruntime then drops the memory-mapped original. Measured on CLIP ViT-B-32 (2-core
    host, ``bench/profiles.py``): with one instance the server's RSS is the same either way
    (619 vs 613 MB) and pre-packing is 1.6x faster, so it stays on; with two or more
    instances each would hold its own packed copy (+375 MB PSS per instance), so it is
    turned off and the instances share the mapped pages instead.
    """
    params = {"intra_op_thread_count": str(threads)}
    if profile == "low-memory":
        params.update({"enable_mem_arena": "0", "enable_mem_pattern": "0"})
        if instances > 1:
            params["tritonlens.disable_prepacking"] = "1"
    return params


def reference_run(path: Path, inputs: dict) -> list:
    """Run an ONNX file with onnx's pure-numpy reference evaluator (any dtype, any host).

    Used to check fp16 graphs on CPU hosts, where onnxruntime's CPU provider lacks fp16
    kernels for them. Slow (numpy, one op at a time): use small inputs.
    """
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(str(path)).run(None, inputs)
