"""GEO: a Kubernetes operator that serves models with NVIDIA Triton."""
