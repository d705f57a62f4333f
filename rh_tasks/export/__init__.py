"""``rh-eval export``: a masking condition written into a checkpoint that any serving engine can evaluate."""
