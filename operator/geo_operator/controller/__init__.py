"""The glue: gather what exists, call the pure decisions, apply through `k8s/`, write
status. `handlers.py` wires these to kopf; the unit tests call them with a fake `Kube`."""
