"""The Stage-1 data phases: generate instructions and responses, critic filter, QC, review, merge."""
