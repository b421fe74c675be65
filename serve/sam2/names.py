"""SAM 2's names that every layer shares: the video tracker's idle limit (a config parameter
of ``sam2_tracker``; its stream limit is the generic
``tritonlens.serve.parameters.MAX_STREAMS_PARAMETER``). The exporter writes it, the tracker's
``model.py`` reads it, the client reads it back from a served config for its messages.
"""
# Seconds without a frame after which the tracker evicts a stream's state.
STREAM_IDLE_SECONDS = "stream_idle_seconds"
