"""Clients of stateful models: Triton sequences (correlation ID, START/END) and what goes
wrong with them, diagnosed for the user.

Any family whose model keeps state per stream on Triton's sequence batcher (SAM 2's video
tracker today) builds its client on :class:`SequenceClient`: correlation IDs over their full
uint64 range on both protocols, the stream's replica remembered behind tritonlens' proxy
(``tritonlens serve --replicas N``), and a frame the server refuses for a stream it does not
hold turned into an error that says why: the stream's replica stopped
(:class:`StreamReplicaLostError`), the frame carried no correlation-ID header through the
proxy (:class:`StreamMisroutedError`), or the stream was evicted when idle or the server
restarted (:class:`StreamEvictedError`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tritonlens.client.base import REPLICA_HEADER, InferenceError, TritonClient, TritonLensError
from tritonlens.serve.parameters import STUB_RESTART_PARAMETER

# Triton's correlation IDs are uint64 (0 means "no sequence") or strings.
MAX_SEQUENCE_ID = 2 ** 64 - 1
# Triton's answer to a non-START frame of a sequence it does not hold (never started, or
# evicted after max_sequence_idle_microseconds, or the server restarted).
_TRITON_NO_SEQUENCE = "must specify the START flag"


class StreamEvictedError(InferenceError):
    """A frame for a stream the server no longer holds; start the stream again."""


class StreamReplicaLostError(StreamEvictedError):
    """Behind a proxy in front of several replicas: the replica that held the stream's state
    stopped (or failed during the frame), so the state is lost; start the stream again."""


class StreamMisroutedError(StreamEvictedError):
    """Behind a proxy in front of several replicas: the frame carried no correlation-ID
    header, so the proxy sent it to a replica that does not hold the stream."""


def wire_sequence_id(sequence_id: int | str, protocol: str) -> int | str:
    """A correlation ID as tritonclient sends it on ``protocol``.

    Numeric IDs are uint64 (1 .. 2**64 - 1). HTTP carries them as JSON numbers, exact at any
    size (Python's json and Triton's parser). tritonclient's gRPC request has only an int64
    field for them (``int64_param``), which refuses IDs >= 2**63; Triton reads that field
    back as uint64, so such IDs are sent as their two's-complement int64 (``id - 2**64``):
    the server sees the same ID over both protocols.

    Raises:
        ValueError: a number outside 1 .. 2**64 - 1, an empty string, or another type.
    """
    if isinstance(sequence_id, str):
        if not sequence_id:
            raise ValueError("a string sequence ID must not be empty")
        return sequence_id
    if isinstance(sequence_id, bool) or not isinstance(sequence_id, (int, np.integer)):
        raise ValueError(f"a sequence ID is an integer or a string, not {sequence_id!r}")
    value = int(sequence_id)
    if not 0 < value <= MAX_SEQUENCE_ID:
        raise ValueError(f"a numeric sequence ID is a uint64 in 1 .. 2**64-1 (0 means no "
                         f"sequence), not {value}")
    return value - 2 ** 64 if protocol == "grpc" and value >= 2 ** 63 else value


def new_sequence_id() -> int:
    """A fresh random 53-bit numeric correlation ID (never 0; exact in JSON numbers)."""
    return (int.from_bytes(os.urandom(8), "big") >> 11) or 1


class SequenceClient(TritonClient):
    """A :class:`TritonClient` for models on Triton's sequence batcher (see the module doc).

    Every request of a sequence carries its correlation ID in the ``x-correlation-id`` header
    (:attr:`TritonClient.sequence_header`), so a proxy in front of several replicas sends all
    requests of a stream to one replica. Behind tritonlens' proxy the client notes which
    replica took a stream's START (the proxy names it in the ``x-tritonlens-replica``
    response header), so a request refused because that replica stopped gets
    :class:`StreamReplicaLostError` naming it.

    Class attributes:
        idle_parameter: the config parameter (of the model or one of its ensemble steps)
            holding the seconds after which the server evicts an idle stream, for messages.
    """

    idle_parameter: str = ""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._behind_proxy: bool | None = None  # learnt from the first probe
        self._stream_replicas: dict[str, str] = {}  # correlation ID -> replica of its START
        self._probe_channel = None

    def replica_for(self, sequence_id: int | str | None) -> str | None:
        """The replica (``host:port``) that tritonlens' proxy sends requests of
        ``sequence_id`` to now (None: no sequence header, round robin), found with a health
        request carrying the sequence header; None when the server is not behind
        tritonlens' proxy or does not answer."""
        if self._behind_proxy is False:
            return None
        headers = {self.sequence_header: str(sequence_id)} \
            if self.sequence_header and sequence_id not in (None, 0, "") else {}
        try:
            if self.protocol == "grpc":
                import grpc
                from tritonclient.grpc import service_pb2, service_pb2_grpc

                if self._probe_channel is None:
                    self._probe_channel = grpc.insecure_channel(self.url)
                stub = service_pb2_grpc.GRPCInferenceServiceStub(self._probe_channel)
                _, call = stub.ServerReady.with_call(service_pb2.ServerReadyRequest(),
                                                     metadata=list(headers.items()), timeout=10)
                replica = dict(call.initial_metadata()).get(REPLICA_HEADER)
            else:
                from tritonlens.launcher.admin import TritonAdmin

                _, answer = TritonAdmin(self.url, headers).request("/v2/health/ready")
                replica = answer.get(REPLICA_HEADER)
        except Exception:  # noqa: BLE001 - only improves a message
            return None
        if self._behind_proxy is None:
            self._behind_proxy = replica is not None
        # "a, b": nginx tried a first and it failed; b answered.
        return replica.split(",")[-1].strip() if replica else None

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str] = (),
              class_count: int = 0, **kwargs):
        """:meth:`TritonClient.infer` with sequence IDs over their full uint64 range
        (:func:`wire_sequence_id`) and a clear error for a frame of a stream the server
        does not hold.

        Raises:
            ValueError: a bad sequence ID.
            StreamReplicaLostError: behind tritonlens' proxy, the replica that took the
                stream's START stopped, before or during this frame.
            StreamMisroutedError: behind a proxy, the frame reached a replica that does not
                hold the stream because this client sends no sequence header.
            StreamEvictedError: Triton does not know the stream (evicted when idle, or the
                server restarted).
            InferenceError, ServerUnreachableError: as :meth:`TritonClient.infer`.
        """
        sequence_id = kwargs.get("sequence_id")
        if sequence_id not in (None, 0, ""):
            kwargs["sequence_id"] = wire_sequence_id(sequence_id, self.protocol)
        key = str(kwargs.get("sequence_id"))
        try:
            result = super().infer(model, inputs, outputs, class_count, **kwargs)
        except TritonLensError as err:
            if sequence_id in (None, 0, ""):
                raise
            refused = isinstance(err, InferenceError) and _TRITON_NO_SEQUENCE in str(err)
            held = self._stream_replicas.get(key)
            if held and (refused or not isinstance(err, InferenceError) or _proxy_failed(str(err))):
                now = self.replica_for(kwargs["sequence_id"])
                if now and now != held:
                    self._stream_replicas.pop(key, None)
                    during = "" if refused else f"; this frame failed: {_failure(str(err))}"
                    raise StreamReplicaLostError(
                        f"{model}: stream {sequence_id}: stream state lost on replica {held} (it "
                        f"stopped; the proxy at {self.url} now sends the stream to replica {now}, "
                        f"which does not hold it{during}); start the stream again (send a frame "
                        f"with the START flag)", getattr(err, "status", None)) from None
            if not refused or kwargs.get("sequence_start"):
                raise
            self._stream_replicas.pop(key, None)
            self._refused_stream(model, sequence_id, err)
        if sequence_id not in (None, 0, ""):
            if kwargs.get("sequence_end"):
                self._stream_replicas.pop(key, None)
            elif kwargs.get("sequence_start") and self.sequence_header:
                replica = self.replica_for(kwargs["sequence_id"])  # None unless behind the proxy
                if replica:
                    self._stream_replicas[key] = replica
        return result

    def _refused_stream(self, model: str, sequence_id, err: InferenceError):
        """Raise the error for a non-START frame Triton refused ("must specify the START
        flag") that is not a lost replica's: the frame was sent without the sequence header
        through a proxy, or the stream was evicted / the server restarted."""
        now = self.replica_for(sequence_id if self.sequence_header else None)
        if self._behind_proxy and not self.sequence_header:
            raise StreamMisroutedError(
                f"{model}: stream {sequence_id} is not known to the replica this frame reached "
                f"behind the proxy at {self.url}: this client sends no correlation-ID header "
                f"(sequence_header=None), so the proxy spreads a stream's frames over its "
                f"replicas; every request of a stream must carry its correlation ID in the "
                f"x-correlation-id header (tritonclient: headers={{'x-correlation-id': ID}}), "
                f"then start the stream again", err.status) from None
        idle, restart = self._tracker_facts(model)
        reloaded = (f", or its state was lost when the tracker's {restart}" if restart
                    else "")
        where = f"replica {now} behind the proxy at {self.url}" if now else "the server"
        raise StreamEvictedError(
            f"{model}: stream {sequence_id} is not known to {where}: it was evicted "
            f"after {idle} idle{reloaded}, or the server restarted; start the stream again "
            f"(send a frame with the START flag)", err.status) from None

    def _tracker_facts(self, model: str) -> tuple[str, str]:
        """(idle limit, last stub restart) of the stateful model behind ``model``, for
        messages: its :attr:`idle_parameter`, and :data:`STUB_RESTART_PARAMETER` that
        ``launcher/health.py`` writes when it reloads a model whose stub died ("" if never)."""
        return self._idle_seconds(model), self._tracker_parameter(model, STUB_RESTART_PARAMETER)

    def _tracker_parameter(self, model: str, key: str) -> str:
        """A parameter of ``model`` or of one of its ensemble steps ("" when none has it)."""
        try:
            config = self.connection.get_model_config(model)
            if self.protocol == "grpc":
                steps = [s.model_name for s in config.config.ensemble_scheduling.step]
            else:
                steps = [s["model_name"] for s in
                         config.get("ensemble_scheduling", {}).get("step", [])]
            for name in [model, *steps]:
                value = self.model_parameter(name, key, "")
                if value:
                    return value
        except Exception:  # noqa: BLE001 - only improves a message
            pass
        return ""

    def _idle_seconds(self, model: str) -> str:
        """The idle limit of the stateful model behind ``model`` (its :attr:`idle_parameter`,
        found through the ensemble's steps), for messages."""
        value = self._tracker_parameter(model, self.idle_parameter) if self.idle_parameter else ""
        return f"{value} s" if value else "its idle limit"


def _proxy_failed(message: str) -> bool:
    """Whether ``message`` is a proxy's answer that the replica behind it failed (nginx's
    502 Bad Gateway / 504 Gateway Timeout; gRPC reports them as "Received http2 header with
    status: 502")."""
    return any(code in message for code in ("502", "504", "Bad Gateway", "Gateway Time"))


def _failure(message: str) -> str:
    """A frame's failure for the lost-stream message: the proxy's status when it answered
    502/504 (its HTML body left out), else the client's message."""
    for code, text in (("502", "502 Bad Gateway"), ("504", "504 Gateway Timeout")):
        if code in message:
            return f"the proxy answered {text}"
    return message
