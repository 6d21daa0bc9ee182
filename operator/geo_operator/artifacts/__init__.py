"""Artifact selection: which quantized variant to serve."""
