"""peerdiff: difference-aware LLM personalization (DEP, DPL, DRP and baselines)."""

__version__ = "0.1.0"
