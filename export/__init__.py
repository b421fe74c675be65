"""tritonlens.export: torch -> ONNX / TorchScript, and the model repository's configs."""
