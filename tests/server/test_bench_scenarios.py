"""The benchmark's scenarios through a real server: their input data is what the models accept."""

from __future__ import annotations

import numpy as np

from tritonlens.bench.scenarios import all_scenarios


def test_sam2_scenarios_build_inputs_the_served_models_accept(repo, photos, server):
    """Each SAM 2 scenario's real input data, sent once through the real server, is served."""
    from tritonlens.core.plugins import BenchInputs
    from tritonlens.client.base import TritonClient

    inputs = BenchInputs(photos=photos[:2], repo=repo)
    client = TritonClient(server.grpc_url, "grpc")
    for scenario in [s for s in all_scenarios() if s.family == "sam2"]:
        stream = scenario.build_inputs(inputs)[0]
        # stateless models: the first request; sequence models: the whole first sequence
        steps = stream if scenario.sequence_length else stream[:1]
        assert not scenario.sequence_length or len(stream) == scenario.sequence_length
        batched = scenario.model == "sam2_image_encoder"  # the only SAM 2 model that batches
        for index, step in enumerate(steps):
            arrays = {name: np.array(value, dtype=np.object_) if isinstance(value, list) else value
                      for name, value in step.items()}
            if batched:
                arrays = {name: value[None] for name, value in arrays.items()}
            sequence = dict(sequence_id=1000 + len(scenario.model), sequence_start=index == 0,
                            sequence_end=index == len(steps) - 1) if scenario.sequence_length else {}
            result = client.infer(scenario.model, arrays, **sequence)
            assert result.get_response() is not None, scenario.model
