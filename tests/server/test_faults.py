"""Faults inside a real tritonserver: a Python-backend stub killed with SIGKILL, and SAM 2
prompts refused in the middle of an ensemble.

* A killed stub (Triton 2.51 never restarts it; every request routed to it fails with
  "Stub process ... is not healthy" while the server still says ready) is noticed by the
  launcher's :class:`~tritonlens.launcher.health.StubMonitor`, which reloads its model: requests
  succeed again within seconds and the other models serve throughout.
* A video stream whose tracker stub died has lost its state: the reloaded tracker's config
  says so (``tritonlens.stub_restart``), the stream's next frame is refused, a new stream works.
* A refused prompt in ``sam2_segment`` must not leak the ensemble's in-flight count
  (Triton 2.51 leaks it when a step fails while a sibling step still runs): shutdown takes
  seconds after any mix of good and refused requests.

The module starts its own server (it kills stubs and stops the server); the session server
is left alone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import clip_jpegs
from tritonlens.client.base import InferenceError
from tritonlens.client.clip import ClipClient
from tritonlens.client.sam2 import Sam2Client
from tritonlens.client.sam2.track import Point, Sam2VideoClient
from tritonlens.client.sequences import StreamEvictedError
from tritonlens.launcher import TritonServer
from tritonlens.serve.parameters import STUB_RESTART_PARAMETER, STUB_RESTARTS_PARAMETER

# Measured on the 2-core test host: detection within 2 polls (1 s), then the reload itself
# (CLIP encoder ~7 s, SAM 2 tracker ~26 s while other tests load the host).
RECOVERY_LIMIT_S = 120
EXIT_TIMEOUT_S = 30  # Triton's own default: a leaked in-flight count shows as a 30 s wait


@pytest.fixture(scope="module")
def fault_server(repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("faults") / "tritonserver.log"
    srv = TritonServer(repo, http_port=0, grpc_port=0, metrics_port=0,
                       model_control_mode="explicit",
                       load_models=["clip_classify", "clip_embed_text", "sam2_segment", "sam2_track"],
                       exit_timeout=EXIT_TIMEOUT_S, log_file=log)
    srv.start()
    yield srv
    srv.stop()


def kill_stub(server: TritonServer, instance: str) -> int:
    """SIGKILL the stub of ``instance``; returns its PID."""
    server.stub_monitor.poll()
    (stub,) = [s for s in server.stub_monitor.stubs() if s.instance == instance]
    os.kill(stub.pid, signal.SIGKILL)
    return stub.pid


def wait_reloaded(server: TritonServer, pid: int, limit: float) -> float:
    """Seconds until the monitor reloaded the model of the stub ``pid``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        for event in server.stub_monitor.events:
            if event.stub.pid == pid and (event.reloaded_at or event.error):
                assert not event.error, event.error
                return time.monotonic() - start
        time.sleep(0.1)
    pytest.fail(f"the model of stub {pid} was not reloaded within {limit} s")


def test_killed_encoder_stub_is_replaced_and_others_keep_serving(fault_server, photos):
    clip = ClipClient(fault_server.grpc_url, "grpc")
    expected = clip.classify(photos[0])
    texts_before = clip.embed_texts(["a cat"])
    pid = kill_stub(fault_server, "clip_image_encoder_0_0")

    text_failures, stop = [], threading.Event()

    def texts_throughout():  # another model, used all along the recovery
        while not stop.is_set():
            try:
                np.testing.assert_allclose(clip.embed_texts(["a cat"]), texts_before, atol=1e-5)
            except Exception as err:  # noqa: BLE001 - collected and asserted below
                text_failures.append(err)

    worker = threading.Thread(target=texts_throughout)
    worker.start()
    try:
        recovery = wait_reloaded(fault_server, pid, RECOVERY_LIMIT_S)
        # Every instance answers again: more requests than instances, all good.
        for _ in range(6):
            result = clip.classify(photos[0])
            assert [x.label for x in result.labels] == [x.label for x in expected.labels]
    finally:
        stop.set()
        worker.join()
    print(f"clip_image_encoder recovered {recovery:.1f} s after its stub was killed")
    assert not text_failures, text_failures[:3]
    params = clip.connection.get_model_config("clip_image_encoder").config.parameters
    assert params[STUB_RESTARTS_PARAMETER].string_value == "1"
    assert "clip_image_encoder_0_0 died" in params[STUB_RESTART_PARAMETER].string_value
    assert fault_server.is_ready()
    status = subprocess.run([str(Path(sys.executable).parent / "tritonlens"), "status", "--url",
                             fault_server.http_url], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "400"})
    assert status.returncode == 0, status.stderr
    assert "recovered: stub of" in " ".join(status.stdout.split()), status.stdout


def test_killed_tracker_stub_loses_streams_clearly(fault_server, photos):
    video = Sam2VideoClient(fault_server.grpc_url, "grpc")
    segment = Sam2Client(fault_server.grpc_url, "grpc")
    jpegs = clip_jpegs(6)
    killed = []

    def frames():  # track() reads one frame ahead: pulling frame 3 precedes sending frame 2
        for t, jpeg in enumerate(jpegs):
            if t == 3:
                killed.append(kill_stub(fault_server, "sam2_tracker_0_0"))
                wait_reloaded(fault_server, killed[0], RECOVERY_LIMIT_S)
            yield jpeg

    results = []
    with pytest.raises(InferenceError) as lost:
        for result in video.track(frames(), {0: [Point(170, 120)]}):
            results.append(result)
    assert len(results) == 2
    # Triton's sequence batcher of the reloaded tracker no longer holds the stream; the
    # client says the state was lost and why (the restart record of launcher/health.py).
    assert isinstance(lost.value, StreamEvictedError), lost.value
    message = " ".join(str(lost.value).split())
    assert "state was lost when the tracker's stub of sam2_tracker_0_0 died" in message, message
    assert "start the stream again" in message
    params = video.connection.get_model_config("sam2_tracker").config.parameters
    assert "sam2_tracker_0_0 died" in params[STUB_RESTART_PARAMETER].string_value
    assert "state" in params[STUB_RESTART_PARAMETER].string_value
    # A new stream works, and so does the rest of SAM 2.
    again = list(video.track(jpegs[:3], {0: [Point(170, 120)]}))
    assert [r.object_ids.tolist() for r in again] == [[1]] * 3
    assert segment.segment(photos[0], points=[(100, 100)]).masks.shape[0] >= 1


def test_shutdown_is_quick_after_refused_prompts(fault_server, photos):
    """Runs last: it stops the module's server."""
    segment = Sam2Client(fault_server.grpc_url, "grpc")
    for bad in (True, False, True, True, False):
        if bad:
            with pytest.raises(InferenceError, match="outside"):
                segment.segment(photos[0], points=[(9999, 10)])
        else:
            segment.segment(photos[0], points=[(100, 100)])
    start = time.monotonic()
    code = fault_server.stop()
    took = time.monotonic() - start
    print(f"shutdown after refused prompts: {took:.1f} s, exit code {code}")
    log = fault_server.log_file.read_text(errors="replace")
    # Triton counts down from its exit timeout, once a second, while any model has requests
    # in flight. The last answer's ensemble request may be released a moment after the
    # answer, so one tick may still count it; a leaked one is counted until the timeout.
    drained = re.search(r"Timeout (\d+): Found 0 model versions that have in-flight", log)
    waited = EXIT_TIMEOUT_S - int(drained.group(1)) if drained else None
    leaked = sorted(set(re.findall(r"Model '(\w+)' \(version \d+\) has \d+ in-flight", log)))
    assert waited is not None and waited <= 3, f"in-flight inferences never drained: {leaked}"
    assert code == 0


def test_no_ensemble_runs_two_steps_at_once(repo):
    """The leak's precondition, on every exported ensemble: a step that can fail while a
    sibling step of the same request still runs (no data path between them)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    checked = 0
    for path in sorted(repo.glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
        if config.platform != "ensemble":
            continue
        steps = config.ensemble_scheduling.step
        producer = {t: i for i, s in enumerate(steps) for t in s.output_map.values()}
        before = {i: {producer[t] for t in s.input_map.values() if t in producer}
                  for i, s in enumerate(steps)}

        def ancestors(i, seen):
            for j in before[i] - seen:
                seen.add(j)
                ancestors(j, seen)
            return seen

        order = {i: ancestors(i, set()) for i in before}
        parallel = [(steps[a].model_name, steps[b].model_name)
                    for a in order for b in order
                    if a < b and a not in order[b] and b not in order[a]]
        assert not parallel, f"{config.name}: steps that run at the same time: {parallel}"
        checked += 1
    assert checked >= 4
