"""Export of the SAM 2 family (image encoder, prompt decoder, pre-processing, ensembles)."""

from tritonlens.export.core import ExportError
from tritonlens.export.sam2.export import Sam2ExportOptions, export_sam2

__all__ = ["ExportError", "Sam2ExportOptions", "export_sam2"]
