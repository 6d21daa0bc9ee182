"""API models and the CRD rendered from them."""
