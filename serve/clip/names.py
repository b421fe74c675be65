"""CLIP's names that every layer shares: the config parameters of ``clip_preprocess`` and
``clip_tokenize``, their accepted values and defaults. The exporter writes them, the stub reads them, the client and
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

# clip_tokenize's config parameters for a Hugging Face tokenizer (serve/clip/hf_tokenizer.py).
TOKENIZER = "tokenizer"              # "huggingface"; absent: open_clip's own (serve/clip/tokenizer.py)
HUGGINGFACE = "huggingface"
CLEAN = "clean"                      # one of CLEAN_MODES
STRIP_TOKEN_ID = "strip_token_id"    # the id replaced by 0 (strip_sep_token), absent: none
# The file in clip_tokenize's version folder.
TOKENIZER_FILE = "tokenizer.json"

# open_clip.tokenizer.get_clean_fn's modes.
CLEAN_MODES = ("whitespace", "lower", "canonicalize")
