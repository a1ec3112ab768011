"""Model architectures, in-graph preprocessing and model configs shared by training and export.

`models.specs` is torch-free: it holds the input/output contract the service and load tests use.
"""
