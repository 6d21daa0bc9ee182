"""Batching tuning: measure configurations on a live Triton and search the grid (`geo tune`)."""
