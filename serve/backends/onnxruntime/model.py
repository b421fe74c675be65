"""tritonlens' Python-based ``onnxruntime`` backend.

Triton runs this file for every model whose config says ``backend: "onnxruntime"`` when the
backend directory holds ``onnxruntime/model.py`` instead of the native
``libtriton_onnxruntime.so`` (which no registry ships for pip-only hosts). The model
directory is the one the NGC container serves natively: ``config.pbtxt`` plus
``<version>/model.onnx`` (or ``default_model_filename``).

Config parameters honoured, named as the native onnxruntime backend names them:
``intra_op_thread_count``, ``inter_op_thread_count`` (0 = onnxruntime's default),
``enable_mem_arena`` and ``enable_mem_pattern`` ("0"/"1"); and
``tritonlens.disable_prepacking`` ("1": onnxruntime's ``session.disable_prepacking``, so
memory-mapped external weights are used in place instead of being copied into pre-packed
private buffers). Weights stored as external data (``model.onnx.data``) are found next to
the model. Instances of kind GPU use the CUDA execution provider on their device; without
onnxruntime-gpu such an instance fails to load with that fix named (never a silent CPU run).
"""

import os

import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
import triton_python_backend_utils as pb_utils

from tritonlens.serve.batching import execute_requests, read_model_config
from tritonlens.serve.parameters import DISABLE_PREPACKING_PARAMETER, WEIGHTS_PARAMETER
from tritonlens.serve.resources import release_freed_memory


class TritonPythonModel:
    def initialize(self, args):
        self.spec = read_model_config(args["model_config"])
        params = self.spec.parameters
        path = os.path.join(args["model_repository"], args["model_version"],
                            self.spec.default_model_filename or "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_thread_count", "0") or 0)
        options.inter_op_num_threads = int(params.get("inter_op_thread_count", "0") or 0)
        options.enable_cpu_mem_arena = params.get("enable_mem_arena", "1") != "0"
        options.enable_mem_pattern = params.get("enable_mem_pattern", "1") != "0"
        if params.get(DISABLE_PREPACKING_PARAMETER, "0") == "1":
            options.add_session_config_entry("session.disable_prepacking", "1")
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU":
            # A GPU instance never falls back to the CPU silently (an fp16 graph would not even
            # run there): without CUDA in this onnxruntime, loading fails with the fix named.
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(
                    f"{self.spec.name}: instance kind GPU, but onnxruntime {ort.__version__} has "
                    f"no CUDAExecutionProvider ({', '.join(ort.get_available_providers())}): "
                    "install onnxruntime-gpu (pip install 'tritonlens[gpu]'), serve a TorchScript "
                    "export, or export with --device cpu")
            device = int(args.get("model_instance_device_id", 0))
            providers = [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"]
        self.session = ort.InferenceSession(path, options, providers=providers)
        # The parsed graph and pre-packed weights' originals are freed by now, but glibc
        # keeps the pages: about 200 MB per ViT-B-32 image-encoder instance.
        release_freed_memory()
        self.output_names = [o.name for o in self.spec.outputs]
        logger = pb_utils.Logger
        logger.log_info(f"{self.spec.name}: onnxruntime {ort.__version__} on "
                        f"{self.session.get_providers()[0]}, {os.path.basename(path)}, "
                        f"intra_op_threads={options.intra_op_num_threads}, precision="
                        f"{params.get('tritonlens.precision', 'fp32')}, profile="
                        f"{params.get('tritonlens.profile', 'default')}, memory arena "
                        f"{'on' if options.enable_cpu_mem_arena else 'off'}")
        if params.get(WEIGHTS_PARAMETER) == "random":
            logger.log_warn(f"{self.spec.name}: RANDOM-INITIALISED weights (exported without a "
                            "checkpoint); its outputs are not real predictions")

    def _run(self, inputs):
        outputs = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, outputs))

    def execute(self, requests):
        # onnxruntime's INVALID_ARGUMENT (e.g. an index outside an embedding table) is the
        # caller's input: INVALID_ARG, not INTERNAL.
        return execute_requests(pb_utils, self.spec, requests, self._run, "onnxruntime",
                                caller_errors=(ValueError, InvalidArgument))
