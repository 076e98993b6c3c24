"""Stage-1 built-in phases on base models: loader, prompts, cleaning, generation, critic, QC."""
