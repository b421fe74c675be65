"""Precision and memory variants of an exported ONNX graph (int8, low-memory layout).

* :func:`quantize_int8`: ONNX Runtime's dynamic quantization (``quantize_dynamic``):
  weights of MatMul/Gemm (and Conv) stored as 8-bit integers in one of
  :data:`INT8_FORMATS` (default :data:`INT8_FORMAT`: u8 weights, per-channel scales, for
  :data:`INT8_REASON`), activations quantized to u8 on the fly per batch. Inputs and
  outputs keep their documented dtypes. :func:`precision_parameters` records the format and
  its reason in the config; :func:`host_isa` names the CPU's SIMD level.
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

from tritonlens.serve.parameters import DISABLE_PREPACKING_PARAMETER

ALIGNMENT = 64 * 1024  # bytes; a multiple of every Linux page size and of Windows' granularity
EXTERNAL_THRESHOLD = 1024  # bytes; smaller tensors stay inside model.onnx


# The int8 weight formats :func:`quantize_int8` can write (name -> ``quantize_dynamic``
# arguments). Activations are always u8 (dynamic quantization supports only that).
# ``bench/studies/int8_formats.py`` measures all of them, side by side, on the host it runs on.
INT8_FORMATS = {
    "s8-per-channel": dict(weight_type="QInt8", per_channel=True, reduce_range=False),
    "s8-per-channel-reduce-range": dict(weight_type="QInt8", per_channel=True, reduce_range=True),
    "u8-per-tensor": dict(weight_type="QUInt8", per_channel=False, reduce_range=False),
    "u8-per-channel": dict(weight_type="QUInt8", per_channel=True, reduce_range=False),
}
INT8_FORMAT = "u8-per-channel"
INT8_REASON = (
    "u8 activations x u8 weights are computed exactly by every onnxruntime CPU kernel "
    "(x86 widens both to 16 bit and sums pairs in 32 bit, on AVX2, AVX-512, VNNI and AMX "
    "hosts alike since onnxruntime 1.25; ARM NEON widens or uses udot), so a graph exported "
    "on one host agrees with fp32 on any other. u8 x s8 (QInt8 weights) runs through "
    "vpmaddubsw on x86 hosts without VNNI, whose 16-bit sums of two products saturate: "
    "measured on AVX2, CLIP cosine 0.975-0.98 and SAM 2 mask IoU 0.35 against fp32 "
    "(README 'CPU hosts, low memory, and precision'; bench/studies/int8_formats.py)")


def quantize_int8(path: Path, fmt: str = INT8_FORMAT) -> Path:
    """Replace the fp32 ONNX model at ``path`` with its dynamically quantized int8 version.

    ``fmt`` is one of :data:`INT8_FORMATS` (default :data:`INT8_FORMAT`, chosen for
    :data:`INT8_REASON`): the MatMul/Gemm/Conv weights are stored in that 8-bit type with
    per-channel or per-tensor scales; activations are quantized to u8 per batch at run time.
    Returns ``path``. Raises KeyError for an unknown ``fmt``, and whatever onnxruntime's
    quantizer raises for a graph it cannot quantize (the export reports it with the model's
    name).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    args = dict(INT8_FORMATS[fmt])
    args["weight_type"] = QuantType[args["weight_type"]]
    tmp = path.with_suffix(".int8.onnx")
    quantize_dynamic(str(path), str(tmp), **args)
    os.replace(tmp, path)
    return path


def precision_parameters(precision: str) -> dict[str, str]:
    """Config parameters recording how a graph of ``precision`` was made: for ``int8``,
    ``tritonlens.int8_format`` (:data:`INT8_FORMAT`) and ``tritonlens.int8_reason``
    (:data:`INT8_REASON`); nothing for the other precisions."""
    if precision != "int8":
        return {}
    return {"tritonlens.int8_format": INT8_FORMAT, "tritonlens.int8_reason": INT8_REASON}


def host_isa() -> str:
    """The CPU's SIMD level as the int8 kernels see it, from /proc/cpuinfo's flags:
    the present ones of avx2, avx512f, avx512_vnni, avx_vnni, amx_int8 (x86-64) or asimd,
    asimddp, i8mm (ARM), space-separated; the machine name where /proc/cpuinfo is missing.
    Printed beside every measurement that depends on the CPU."""
    import platform

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    flags = set()
    for line in text.splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            flags.update(line.split(":", 1)[1].split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")
    found = [flag for flag in wanted if flag in flags]
    return " ".join(found) or platform.machine()


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
    host, ``bench/studies/profiles.py``): with one instance the server's RSS is the same either way
    (619 vs 613 MB) and pre-packing is 1.6x faster, so it stays on; with two or more
    instances each would hold its own packed copy (+375 MB PSS per instance), so it is
    turned off and the instances share the mapped pages instead.
    """
    params = {"intra_op_thread_count": str(threads)}
    if profile == "low-memory":
        params.update({"enable_mem_arena": "0", "enable_mem_pattern": "0"})
        if instances > 1:
            params[DISABLE_PREPACKING_PARAMETER] = "1"
    return params


def reference_run(path: Path, inputs: dict) -> list:
    """Run an ONNX file with onnx's pure-numpy reference evaluator (any dtype, any host).

    Used to check fp16 graphs on CPU hosts, where onnxruntime's CPU provider lacks fp16
    kernels for them. Slow (numpy, one op at a time): use small inputs.
    """
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(str(path)).run(None, inputs)
