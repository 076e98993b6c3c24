"""Batched, seeded generation: the simple loop, the static-cache engine, sampling, Triton kernels."""
