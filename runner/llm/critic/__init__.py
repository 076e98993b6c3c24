"""Single-token A/B logprob critics: prompts scored in length buckets, one forward each."""
