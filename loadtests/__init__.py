"""Clients of the HTTP service: accuracy over HTTP, single-client latency, Locust load tests.
They only speak HTTP to the service; payloads come from the real test splits (training.data)."""
