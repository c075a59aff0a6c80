"""Credit grants and adjustments with four-eyes approval (SPEC §5)."""
