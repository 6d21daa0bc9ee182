"""Trace replay: a model of Triton replicas and the autoscalers that size them."""
