"""Built-in LLM phases and the model code under them (see docs/ARCHITECTURE.md)."""
