"""runner: declarative, resumable, gated runs of staged GPU work on language models."""

__version__ = "0.1.0"
