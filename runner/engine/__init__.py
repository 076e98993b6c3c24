"""The driver of a run: planning, fingerprints and reuse, the run view, the manifest."""
