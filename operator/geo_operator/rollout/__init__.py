"""Progressive delivery, pure: the replica split, the canary analysis and the rollout
policy. No I/O; the controller gathers the figures and applies the decisions."""
