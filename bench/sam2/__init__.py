"""SAM 2's benchmarks: the video tracker against SAM2VideoPredictor, concurrent streams, and
the graph formats --format auto chooses between."""
