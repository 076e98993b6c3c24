"""Loading a base model cleanly: memoised from_pretrained, device and dtype, contamination checks."""
