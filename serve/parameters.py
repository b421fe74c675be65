"""The ``tritonlens.*`` config parameters: what every exported model records about itself.

Exporters write them into ``config.pbtxt`` (``parameters { key: ... }``); the stubs, the
clients, ``tritonlens status`` and the benchmarks read them back from a served config.
A family's own parameters are in its names module (``serve/clip/names.py``,
``serve/sam2/names.py``).
"""

FAMILY_PARAMETER = "tritonlens.family"  # the plugin that exported it: clip, sam2, timm ...
MODEL_NAME_PARAMETER = "tritonlens.model_name"  # the architecture (e.g. ViT-B-32)
WEIGHTS_PARAMETER = "tritonlens.weights"  # "random" (seeded random init), or the checkpoint / tag
FORMAT_PARAMETER = "tritonlens.format"  # onnx or torchscript
FORMAT_REASON_PARAMETER = "tritonlens.format_reason"  # why --format auto chose it
PRECISION_PARAMETER = "tritonlens.precision"  # fp32, fp16, int8 (+ the int8 format)
PROFILE_PARAMETER = "tritonlens.profile"  # default or low-memory
DEVICE_PARAMETER = "tritonlens.device"  # cpu or gpu
IMAGE_SIZE_PARAMETER = "tritonlens.image_size"  # the input side in pixels
INSTANCES_REASON_PARAMETER = "tritonlens.instances_reason"  # why this many instances
DISABLE_PREPACKING_PARAMETER = "tritonlens.disable_prepacking"
TOKENIZER_SOURCE_PARAMETER = "tritonlens.tokenizer_source"  # a Hugging Face tokenizer: which, from where
TOKENIZER_READ_BY_PARAMETER = "tritonlens.tokenizer_read_by"  # ... and what read it at export  # "1": onnxruntime without weight pre-packing
# Stateful models (Triton's sequence batcher; the SAM 2 tracker): streams with state one instance
# holds; a START beyond it is refused. The replica set reports it per replica.
MAX_STREAMS_PARAMETER = "max_streams"
# Written by the launcher's stub monitor when it reloads a model whose stub died.
STUB_RESTARTS_PARAMETER = "tritonlens.stub_restarts"  # how many times
STUB_RESTART_PARAMETER = "tritonlens.stub_restart"  # which instance died, when, what was lost
