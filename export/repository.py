"""Where the hand-written parts of the model repository come from.

The Python-backend models' ``model.py`` files are source code, kept under version control
in ``model_repository/<model>/1/model.py`` and installed as package data of
``tritonlens.model_repository``. Exporting copies them (with their generated
``config.pbtxt``) into whatever repository the user exports to.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def python_model_source(model: str) -> bytes:
    """The ``model.py`` source of the Python-backend model ``model`` (e.g. clip_preprocess).

    Returned as bytes (not a path) so exporting into the source tree's own
    ``model_repository/`` rewrites the file with identical content instead of deleting it.

    Raises:
        FileNotFoundError: no such Python-backend model ships with tritonlens.
    """
    spec = importlib.util.find_spec("tritonlens.model_repository")
    # A namespace package (no __init__.py, which would be a stray file in a Triton
    # repository): take the first of its locations that is a real directory.
    roots = [Path(p) for p in (spec.submodule_search_locations if spec else []) if Path(p).is_dir()]
    source = roots[0] / model / "1" / "model.py" if roots else None
    if source is None or not source.is_file():
        raise FileNotFoundError(f"no Python-backend model named {model!r} in tritonlens")
    return source.read_bytes()
