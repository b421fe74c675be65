"""clip_preprocess: encoded image bytes -> the UINT8 HWC pixels CLIP's image encoder takes.

Input  ``image``  BYTES [1] per batch item: a JPEG, PNG or WebP file's bytes.
Output ``pixels`` UINT8 [S, S, 3] (S = the model's image size, e.g. 224), RGB.

This is open_clip's eval transform (``open_clip.transform.image_transform`` with
``is_train=False``) with Pillow only, no torch in this process:
``tritonlens.serve.clip.preprocess`` (its module docstring gives the steps; unit-tested
against open_clip). This file only reads the config and the tensors.

EXIF orientation is NOT applied, because open_clip does not apply it (``Image.open`` keeps
the stored orientation); set the config parameter ``apply_exif_orientation`` to "true" to
rotate photos as cameras meant them (then results differ from open_clip for such photos).

Bad input fails only its own request (gRPC INVALID_ARGUMENT / HTTP 400) with a message
naming the problem: empty bytes, bytes that are not a JPEG/PNG/WebP image, a corrupt or
truncated file, more than ``max_image_bytes`` bytes, more than ``max_image_pixels`` pixels
(a decompression bomb is refused before decoding), or a longer side more than
``max_image_aspect_ratio`` (default 100) times the shorter one, also refused from the
header: the shortest-side resize would otherwise build an S x (S * ratio) intermediate
(a 140-byte 20000x1 PNG cost 15.6 s and 4 GiB).
"""

import triton_python_backend_utils as pb_utils

from tritonlens.serve.clip.preprocess import ClipPreprocess
from tritonlens.serve.errors import input_array, respond_each
from tritonlens.serve.model_config import read_model_config


class TritonPythonModel:
    def initialize(self, args):
        self.preprocess = ClipPreprocess.from_config(read_model_config(args["model_config"]))

    def _handle(self, request):
        images = input_array(pb_utils, request, "image").reshape(-1)
        return {"pixels": self.preprocess(bytes(item) for item in images)}

    def execute(self, requests):
        return respond_each(pb_utils, requests, "clip_preprocess", self._handle)
