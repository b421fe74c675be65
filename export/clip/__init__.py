"""Export of the OpenCLIP family (image/text encoders, zero-shot head, ensembles)."""

from tritonlens.export.clip.export import ClipExportOptions, ExportError, export_clip

__all__ = ["ClipExportOptions", "ExportError", "export_clip"]
