"""Base vs tuned evaluation: verifiable items, their checkers, McNemar's exact test."""
