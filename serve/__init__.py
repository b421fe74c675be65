"""tritonlens.serve: the code Triton's Python-backend stubs load (stub side).

The hand-written ``model.py`` files of the model repository and tritonlens' Python-based
``onnxruntime`` / ``pytorch`` backends (``serve/backends/``) import only this component:
request errors (``errors``), image decoding and bounds (``images``), dynamic batching of
plain tensors (``batching``), config reading (``model_config``), texts (``texts``), thread
and memory settings (``resources``), and each family's stub-side code (``clip/``, ``sam2/``).
Starting and supervising servers on the host is ``tritonlens.launcher``.
"""
