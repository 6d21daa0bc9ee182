"""Autoscaling: the pure decision policy and the loop that observes, decides, acts."""
