"""The e2e harness: what the e2e tests and the demo share.

- `e2e.harness.kubelet`: the kubelet runner (real Triton per kwok pod).
"""
