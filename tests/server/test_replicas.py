"""Two tritonserver replicas of the session repository behind nginx (launcher/replicas.py):
every frame of a tracked stream reaches one replica, a dead replica's streams get a clear
error while the others go on, and a client without the correlation-ID header is told so.

Real processes on loopback: the replicas load only ``sam2_track`` and ``clip_classify``
(explicit model control). The tests run in file order; the last one kills a replica.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.helpers import clip_jpegs
from tritonlens.client.clip import ClipClient
from tritonlens.client.sam2 import mask_iou
from tritonlens.client.sam2.track import Box, Point, Sam2VideoClient
from tritonlens.client.sequences import StreamMisroutedError, StreamReplicaLostError
from tritonlens.launcher import ServerStartError
from tritonlens.launcher.process import check_port_free, free_port
from tritonlens.launcher.nginx import ProxySettings, find_nginx, read_access_log
from tritonlens.launcher.replicas import ReplicaSet

FRAMES = 6
STREAMS = 8
KILL_AFTER = 3  # frames every stream has sent when a replica is killed
PROMPTS = {0: [Point(170.0, 120.0, object_id=1)], 5: [Box(40.0, 60.0, 150.0, 200.0, object_id=2)]}
MAX_BODY = "1m"
LOGIT_TOL = 1e-3


@pytest.fixture(scope="module")
def metrics_base():
    """A port P with P + 1 free too: replica i's metrics port is P + i."""
    for _ in range(100):
        base = free_port()
        if base < 65535:
            try:
                check_port_free("127.0.0.1", base + 1, "metrics")
            except ServerStartError:
                continue
            return base
    pytest.fail("no two consecutive free ports")


@pytest.fixture(scope="module")
def replica_set(repo, tmp_path_factory, metrics_base):
    try:
        find_nginx()
    except RuntimeError as err:
        pytest.fail(f"{err} (the replica tests need it)")
    logs = tmp_path_factory.mktemp("replica_logs")
    with ReplicaSet(repo, 2, ProxySettings(grpc_port=0, http_port=0, max_body_size=MAX_BODY,
                                           fail_timeout_s=30),
                    log_dir=logs, model_control_mode="explicit", metrics_port=metrics_base,
                    load_models=["sam2_track", "clip_classify"]) as rs:
        yield rs


@pytest.fixture(scope="module")
def videos():
    """8 different clips: 4 photos, each panned forwards and backwards."""
    clips = {}
    for photo in ("chelsea", "coffee", "astronaut", "rocket"):
        jpegs = clip_jpegs(FRAMES, photo)
        clips[f"{photo}"] = jpegs
        clips[f"{photo}-reversed"] = jpegs[::-1]
    return clips


def stream_ids(client: Sam2VideoClient, replica_set: ReplicaSet) -> dict[str, list[int]]:
    """Correlation IDs 1, 2, ... grouped by the replica the proxy sends them to (asked of
    the proxy itself), until each replica has STREAMS // 2."""
    by_replica = {r.server.url(client.protocol): [] for r in replica_set.replicas}
    candidate = 0
    while min(len(ids) for ids in by_replica.values()) < STREAMS // 2:
        candidate += 1
        assert candidate < 1000, f"the proxy sends every ID to one replica: {by_replica}"
        replica = client.replica_for(candidate)
        if len(by_replica[replica]) < STREAMS // 2:
            by_replica[replica].append(candidate)
    return by_replica


def frames_of(results):
    return [(r.frame_index, r.object_ids, r.mask_logits, r.masks) for r in results]


def assert_same(got, expected):
    assert len(got) == len(expected)
    for (index, ids, logits, masks), (ref_index, ref_ids, ref_logits, ref_masks) in zip(got, expected):
        assert index == ref_index
        assert list(ids) == list(ref_ids), index
        assert np.abs(logits - ref_logits).max(initial=0.0) <= LOGIT_TOL, index
        for k in range(len(ids)):
            assert mask_iou(masks[k], ref_masks[k]) >= 0.99, (index, k)


@pytest.fixture(scope="module")
def direct(replica_set, videos):
    """The same 8 streams, interleaved, on one server (replica 0, without the proxy)."""
    client = Sam2VideoClient(replica_set.replicas[0].server.grpc_url)
    results = client.track_many({name: (jpegs, PROMPTS) for name, jpegs in videos.items()})
    return {name: frames_of(frames) for name, frames in results.items()}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_streams_stay_on_one_replica(replica_set, videos, direct, protocol):
    """8 interleaved streams through the proxy give the masks they get on one server; the
    proxy's access log shows every frame of a stream on one replica, and both replicas."""
    client = Sam2VideoClient(replica_set.url(protocol), protocol)
    ids = [i for group in stream_ids(client, replica_set).values() for i in group]
    names = list(videos)
    seen_before = len(read_access_log(replica_set.access_log))

    def run(item):
        name, sequence_id = item
        return name, list(client.track(videos[name], PROMPTS, sequence_id=sequence_id))

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(STREAMS) as pool:
        results = dict(pool.map(run, zip(names, ids)))
    for name in names:
        assert_same(frames_of(results[name]), direct[name])

    def logged():  # nginx writes a request's line just after sending its response
        entries = read_access_log(replica_set.access_log)[seen_before:]
        return [e for e in entries if e["request"].split()[1].endswith(("/ModelInfer", "/infer"))]

    deadline = time.monotonic() + 10
    while len(infer := logged()) < STREAMS * FRAMES and time.monotonic() < deadline:
        time.sleep(0.1)
    front = replica_set.proxy.grpc_port if protocol == "grpc" else replica_set.proxy.http_port
    assert all(e["front"] == str(front) and e["status"] == "200" for e in infer)
    upstreams = {}
    for entry in infer:
        upstreams.setdefault(entry["correlation_id"], set()).add(entry["upstream"])
    assert sorted(upstreams) == sorted(str(i) for i in ids)
    assert all(len(replicas) == 1 for replicas in upstreams.values()), upstreams
    assert len(infer) == STREAMS * FRAMES
    ports = {r.server.url(protocol) for r in replica_set.replicas}
    assert set.union(*upstreams.values()) == ports


def test_request_size_bound(replica_set):
    """A request over the proxy's client_max_body_size is refused by nginx (413) before it
    reaches a replica; the next request is served."""
    body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    request = urllib.request.Request(f"http://{replica_set.http_url}/v2/models/clip_classify/infer",
                                     data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert ClipClient(replica_set.http_url, "http").classify(clip_jpegs(1)[0]).labels


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_without_header_the_failure_is_named(replica_set, videos, protocol):
    """A client that sends no correlation-ID header: its frames are spread round robin and
    the refusal says why, not Triton's bare "must specify the START flag"."""
    client = Sam2VideoClient(replica_set.url(protocol), protocol, sequence_header=None)
    with pytest.raises(StreamMisroutedError) as err:
        list(client.track(videos["chelsea"], PROMPTS))
    message = str(err.value)
    assert "x-correlation-id" in message and "no correlation-ID header" in message
    # With the header, the same client class tracks the same clip fine.
    assert len(list(Sam2VideoClient(replica_set.url(protocol), protocol).track(
        videos["chelsea"], PROMPTS))) == FRAMES


def test_replicas_start_together_metrics_on_p_plus_i(replica_set, metrics_base):
    """Every replica's process was launched before the first one finished starting (they
    load at the same time), and replica i serves Prometheus metrics on P + i."""
    servers = [r.server for r in replica_set.replicas]
    assert max(s.launched_at for s in servers) < min(s.started_at for s in servers)
    for index, server in enumerate(servers):
        assert server.metrics_url == f"http://127.0.0.1:{metrics_base + index}/metrics"
        with urllib.request.urlopen(server.metrics_url, timeout=10) as resp:
            assert b'model="clip_classify"' in resp.read()


def test_replica_dies_mid_stream(replica_set, videos, direct):
    """Kill replica 1 after every stream sent KILL_AFTER frames: its streams get "stream state
    lost on replica ...", replica 0's streams finish with the masks they get alone, CLIP
    requests and new streams keep being served."""
    client = Sam2VideoClient(replica_set.grpc_url)
    by_replica = stream_ids(client, replica_set)
    victim, survivor = replica_set.replicas[1].server, replica_set.replicas[0].server
    names = iter(videos)
    streams = {sequence_id: (name, client.track(videos[name], PROMPTS, sequence_id=sequence_id))
               for sequence_id, name in zip([i for g in by_replica.values() for i in g], names)}
    results = {sequence_id: [] for sequence_id in streams}
    for _ in range(KILL_AFTER):
        for sequence_id, (_, frames) in streams.items():
            results[sequence_id].append(next(frames))

    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait()
    assert [r.index for r in replica_set.exited()] == [1]

    lost = {}
    for sequence_id, (name, frames) in streams.items():
        try:
            results[sequence_id] += list(frames)
        except StreamReplicaLostError as err:
            lost[sequence_id] = str(err)
    assert sorted(lost) == sorted(by_replica[victim.grpc_url])
    for message in lost.values():
        assert f"stream state lost on replica {victim.grpc_url}" in message
        assert "start the stream again" in message
    for sequence_id in by_replica[survivor.grpc_url]:
        assert_same(frames_of(results[sequence_id]), direct[streams[sequence_id][0]])

    clip = ClipClient(replica_set.grpc_url, "grpc")
    image = clip_jpegs(1)[0]
    assert all(clip.classify(image).labels for _ in range(6))
    clip_http = ClipClient(replica_set.http_url, "http")
    assert all(clip_http.classify(image).labels for _ in range(6))
    # New streams, also those whose hash pointed at the dead replica, go to the live one.
    fresh = Sam2VideoClient(replica_set.grpc_url)
    for sequence_id in by_replica[victim.grpc_url][:2] + by_replica[survivor.grpc_url][:1]:
        got = frames_of(fresh.track(videos["coffee"], PROMPTS, sequence_id=sequence_id + 10_000))
        assert_same(got, direct["coffee"])
