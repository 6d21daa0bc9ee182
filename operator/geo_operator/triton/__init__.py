"""Triton: model configuration, artifact fetching, the python-backend runner, a local server."""
