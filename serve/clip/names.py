"""CLIP's names that every layer shares: the config parameters of ``clip_preprocess``, their
accepted values and defaults. The exporter writes them, the stub reads them, the client and
the benchmarks read them back from a served config; all of them import them from here.

The resize modes and interpolations are open_clip's (``open_clip.transform.image_transform``:
``resize_mode`` and ``interpolation`` of a model's preprocess config).
"""

# clip_preprocess's config parameters
IMAGE_SIZE = "image_size"  # S: the encoder's input side (pixels)
RESIZE_MODE = "resize_mode"
INTERPOLATION = "interpolation"
APPLY_EXIF_ORIENTATION = "apply_exif_orientation"
JPEG_DRAFT = "jpeg_draft"

RESIZE_MODES = ("shortest", "squash")
DEFAULT_RESIZE_MODE = "shortest"
INTERPOLATIONS = ("bicubic", "bilinear")
DEFAULT_INTERPOLATION = "bicubic"
