"""Export of the OpenCLIP family (image/text encoders, zero-shot head, ensembles)."""

from tritonlens.export.clip.export import ClipExportOptions, export_clip
from tritonlens.export.core import ExportError

__all__ = ["ClipExportOptions", "ExportError", "export_clip"]
