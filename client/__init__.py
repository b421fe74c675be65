"""tritonlens.client: typed Triton clients and the `tritonlens` command line."""
