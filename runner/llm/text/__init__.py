"""The text formats every built-in phase speaks: templates, prompts, cleaning, the SFT format."""
