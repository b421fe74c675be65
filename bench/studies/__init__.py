"""Studies across families, each one command that prints its figures side by side: the
performance targets, the precision/memory profiles, the int8 formats, and the GPU checks."""
