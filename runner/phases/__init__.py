"""Phase execution: the `ctx` a Python phase receives, shell phases, retries, the registry."""
