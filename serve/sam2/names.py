"""SAM 2's names that every layer shares: the stream limits of the video tracker (config
parameters of ``sam2_tracker``). The exporter writes them, the tracker's ``model.py`` reads
them, the replica set and the client read them back from a served config.
"""

# Streams with state a tracker instance holds at once; a START beyond it is refused.
MAX_STREAMS = "max_streams"
# Seconds without a frame after which the tracker evicts a stream's state.
STREAM_IDLE_SECONDS = "stream_idle_seconds"
