"""tritonlens' Python-based ``pytorch`` backend (TorchScript).

Served for every model whose config says ``backend: "pytorch"`` when the backend directory
holds ``pytorch/model.py`` instead of the native ``libtriton_pytorch.so``. The model
directory is the one the NGC container serves natively: ``config.pbtxt`` plus
``<version>/model.pt`` (a TorchScript module). As with the native backend, inputs are
passed to ``forward`` in config order and the module's outputs (a tensor or a tuple) map
to the config's outputs in order; outputs follow the native ``<name>__<index>`` naming.

Config parameters honoured, named as the native pytorch backend names them:
``INTRA_OP_THREAD_COUNT``, ``INTER_OP_THREAD_COUNT``, ``INFERENCE_MODE`` ("true"/"false").
"""

import os

from tritonlens.serve.resources import passive_openmp, release_freed_memory

passive_openmp()  # before torch loads libgomp: see tritonlens.serve.resources

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils

from tritonlens.serve.batching import execute_requests, read_model_config  # noqa: E402
from tritonlens.serve.parameters import WEIGHTS_PARAMETER  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.spec = read_model_config(args["model_config"])
        params = self.spec.parameters
        intra = int(params.get("INTRA_OP_THREAD_COUNT", "0") or 0)
        inter = int(params.get("INTER_OP_THREAD_COUNT", "0") or 0)
        if intra > 0:
            torch.set_num_threads(intra)
        if inter > 0:
            try:
                torch.set_num_interop_threads(inter)
            except RuntimeError:  # can only be set once per process
                pass
        self.inference_mode = params.get("INFERENCE_MODE", "true").lower() != "false"
        self.device = torch.device("cpu")
        if args.get("model_instance_kind") == "GPU":
            # Never a silent CPU run for a GPU instance: fail loading with the reason.
            if not torch.cuda.is_available():
                raise RuntimeError(f"{self.spec.name}: instance kind GPU, but torch "
                                   f"{torch.__version__} sees no CUDA device: install a CUDA "
                                   "build of torch, or export with --device cpu")
            self.device = torch.device("cuda", int(args.get("model_instance_device_id", 0)))
        path = os.path.join(args["model_repository"], args["model_version"],
                            self.spec.default_model_filename or "model.pt")
        self.module = torch.jit.load(path, map_location=self.device).eval()
        release_freed_memory()  # what loading the file freed (see tritonlens.serve.resources)
        self.input_names = [i.name for i in self.spec.inputs]
        self.output_names = [o.name for o in self.spec.outputs]
        pb_utils.Logger.log_info(f"{self.spec.name}: torch {torch.__version__} TorchScript on "
                                 f"{self.device}, intra_op_threads={torch.get_num_threads()}")
        if params.get(WEIGHTS_PARAMETER) == "random":
            pb_utils.Logger.log_warn(f"{self.spec.name}: RANDOM-INITIALISED weights (exported "
                                     "without a checkpoint); its outputs are not real predictions")

    def _run(self, inputs):
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device)
                   for n in self.input_names]
        with torch.inference_mode(self.inference_mode):
            outputs = self.module(*tensors)
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        # .cpu().numpy() copies off any buffer the module may reuse on its next call.
        return {n: o.detach().cpu().numpy().copy() for n, o in zip(self.output_names, outputs)}

    def execute(self, requests):
        return execute_requests(pb_utils, self.spec, requests, self._run, "torch")
