"""What a run shows: structlog lines (log.jsonl and console) and progress on a terminal."""
