"""Units of the bench package that need no server: input-data JSON, CSV parsing, planning."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from tritonlens.bench.perf_analyzer import PerfPoint, parse_csv, point_from_row, write_input_data
from tritonlens.bench.run import BenchOptions, plan_points
from tritonlens.bench.scenarios import all_scenarios, scenarios_for
from tritonlens.bench.tuning import Change, apply, config_json

CSV = ("Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
       "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,"
       "p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait\n"
       "4,12.0165,45,84903,3,324,240239,1345,3,324765,387494,438403,568667,326864,48,326778\n")


def test_bytes_tensors_are_length_prefixed_and_numeric_tensors_raw(tmp_path):
    pixels = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    path = write_input_data(tmp_path / "in.json", [[{"image": [b"abc"], "pixels": pixels}]])
    step = json.loads(path.read_text())["data"][0]
    assert base64.b64decode(step["image"]["b64"]) == struct.pack("<I", 3) + b"abc"
    assert step["image"]["shape"] == [1]
    assert base64.b64decode(step["pixels"]["b64"]) == pixels.tobytes()
    assert step["pixels"]["shape"] == [2, 2, 3]


def test_sequence_streams_become_a_list_of_lists(tmp_path):
    frame = {"x": np.zeros(2, np.float32)}
    data = json.loads(write_input_data(tmp_path / "s.json", [[frame, frame], [frame]]).read_text())["data"]
    assert [len(s) for s in data] == [2, 1]
    with pytest.raises(ValueError):
        write_input_data(tmp_path / "e.json", [[]])


def test_csv_row_is_converted_to_milliseconds(tmp_path):
    (tmp_path / "r.csv").write_text(CSV)
    point = point_from_row(PerfPoint("m", "grpc", "none", 4), parse_csv(tmp_path / "r.csv")[0])
    assert point.throughput == pytest.approx(12.0165)
    assert point.p50_ms == pytest.approx(324.765) and point.p99_ms == pytest.approx(568.667)
    assert point.server_compute_ms == pytest.approx((324 + 240239 + 1345) / 1000)


def test_scenarios_cover_served_models_and_report_the_rest():
    chosen, uncovered = scenarios_for(["clip_classify", "clip_tokenize", "sam2_new_model"])
    assert [s.model for s in chosen] == ["clip_classify", "clip_tokenize"]
    assert uncovered == ["sam2_new_model"]
    with pytest.raises(ValueError):
        scenarios_for(["clip_classify"], ["no_such_model"])
    assert len({s.model for s in all_scenarios()}) == len(all_scenarios())


def test_plan_sweeps_end_to_end_and_samples_components():
    options = BenchOptions(concurrency=[1, 2, 4, 8]).resolved()
    e2e = next(s for s in all_scenarios() if s.end_to_end)
    component = next(s for s in all_scenarios() if s.model == "clip_tokenize")
    points = plan_points(e2e, options)
    assert {(p.protocol, p.concurrency) for p in points if p.shared_memory == "none"} == {
        (proto, c) for proto in ("grpc", "http") for c in (1, 2, 4, 8)}
    assert {p.concurrency for p in points if p.shared_memory == "system"} == {1, 2, 4, 8}
    assert {p.concurrency for p in plan_points(component, options)} == {1, 8}


def test_tuning_change_is_applied_to_a_copy():
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name="enc", max_batch_size=8)
    config.dynamic_batching.max_queue_delay_microseconds = 2000
    config.instance_group.add(count=1)
    new = apply(config, Change("enc", max_queue_delay_us=0, preferred_batch_sizes=(4, 8),
                               instance_count=2, intra_op_threads=1))
    assert config.instance_group[0].count == 1
    assert new.instance_group[0].count == 2
    assert list(new.dynamic_batching.preferred_batch_size) == [4, 8]
    assert json.loads(config_json(new))["parameters"]["intra_op_thread_count"]["string_value"] == "1"
