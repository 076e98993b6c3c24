"""A model's Triton kernels built ahead, in a helper process, while the model loads."""
