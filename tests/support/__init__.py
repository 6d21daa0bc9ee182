"""Helpers the tests share: paths, the fake `k8s` seam, the examples' targets, the
series GEO's rules read. Import them from here (`from tests.support.kube import
FakeKube`); the fixtures stay in conftest.py, which imports from here too."""
