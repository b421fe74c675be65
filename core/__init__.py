"""tritonlens.core: the plugin contract every model family implements and the registry that
finds the families (Python entry points). It names no family and imports no other
component of tritonlens: the command line, export, bench and demo loop over the plugins."""
