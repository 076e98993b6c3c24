"""Gates and decisions: check evaluation, the review packet, pure refusals of a decision."""
