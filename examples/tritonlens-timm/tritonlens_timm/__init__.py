"""tritonlens-timm: timm image models served by tritonlens, as an out-of-tree plugin.

``tritonlens export timm --model resnet18`` writes ``timm_preprocess`` (Python backend:
timm's eval transform), ``timm_model`` (the network: UINT8 pixels in, pooled features and
class probabilities out) and the ensembles ``timm_classify`` and ``timm_embed``;
``tritonlens timm-classify`` / ``timm-embed`` and ``tritonlens_timm.client.TimmClient``
call them. (Nothing is imported here: the Python-backend stub imports only ``transform``.)
"""

from pathlib import Path

# The Python-backend models this package ships (package data), copied by the export.
MODEL_REPOSITORY = Path(__file__).parent / "model_repository"
