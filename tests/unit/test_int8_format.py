"""The int8 format (export/onnx_variants.py) agrees with fp32 on this host's CPU.

One MatMul with an fp32 weight, quantized by :func:`quantize_int8` and run by onnxruntime in
process, compared with numpy's fp32 product. The worst case for x86's u8 x s8 kernel without
VNNI (``vpmaddubsw``, whose 16-bit sums of two products saturate at 32767): activations near
their maximum (u8 255) times weights of one sign near theirs (s8 127) give pair sums of
2 x 255 x 127 = 64770. The old format (QInt8 weights) gave half the product there on AVX2;
the default format must be right on every ISA, so the test holds on any host. The ISA it ran
on is printed and named in the assertion messages.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tritonlens.export.onnx_variants import (INT8_FORMAT, INT8_FORMATS, INT8_REASON, host_isa,
                                             precision_parameters, quantize_int8)

ISA = host_isa()


def matmul_model(path, weight: np.ndarray) -> None:
    """An ONNX graph ``y = x @ weight``: x fp32 [N, K], weight fp32 [K, M] (an initializer)."""
    k, m = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", m])],
        [numpy_helper.from_array(weight.astype(np.float32), "weight")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


CASES = {
    # every activation at the top of its range, every weight of a column at the top of its
    "saturating": (np.full((4, 256), 1.0), np.ones((256, 8))),
    # a transformer-like layer: seeded random activations and weights of both signs
    "random": (np.random.default_rng(0).uniform(-1, 3, (16, 768)),
               np.random.default_rng(1).normal(0, 0.05, (768, 64))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_default_int8_matmul_agrees_with_fp32_on_this_cpu(tmp_path, case):
    x, weight = (a.astype(np.float32) for a in CASES[case])
    path = tmp_path / "model.onnx"
    matmul_model(path, weight)
    expected = x @ weight
    quantize_int8(path)
    got = run(path, x)
    error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    print(f"\nISA: {ISA}; {INT8_FORMAT} {case}: relative L2 error {error:.5f}")
    # Measured on AVX2 (relative L2 error): u8-per-channel 0.0000 and 0.0079; s8-per-channel
    # (the old format) 0.494 and 0.026, s8 with reduce_range 0.0000 and 0.0168. u8 x u8 is
    # computed exactly on every ISA, so the figure is the same on any host.
    assert error <= 0.0125, f"int8 {INT8_FORMAT} MatMul is {error:.4f} off fp32 on ISA {ISA}"


def test_default_format_stores_u8_weights(tmp_path):
    """u8 x u8 is the product every CPU kernel computes exactly (see INT8_REASON)."""
    path = tmp_path / "model.onnx"
    matmul_model(path, np.random.default_rng(2).normal(0, 0.05, (64, 32)))
    quantize_int8(path)
    model = onnx.load(str(path))
    (matmul,) = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    weights = {i.name: i for i in model.graph.initializer}
    assert weights[matmul.input[1]].data_type == TensorProto.UINT8


def test_int8_configs_record_format_and_reason():
    assert precision_parameters("int8") == {"tritonlens.int8_format": INT8_FORMAT,
                                            "tritonlens.int8_reason": INT8_REASON}
    assert precision_parameters("fp32") == precision_parameters("fp16") == {}
    assert INT8_FORMAT in INT8_FORMATS


def test_unknown_int8_format_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    matmul_model(path, np.ones((4, 4)))
    with pytest.raises(KeyError):
        quantize_int8(path, "s4-per-group")


def test_status_shows_the_int8_format():
    from tritonlens.client.cli import model_details

    def config(params):
        return {"backend": "onnxruntime",
                "parameters": {k: {"string_value": v} for k, v in params.items()}}

    assert model_details(config(dict(precision_parameters("int8"), **{
        "tritonlens.precision": "int8"})))["precision"] == f"int8 {INT8_FORMAT}"
    assert model_details(config({"tritonlens.precision": "fp32"}))["precision"] == "fp32"
