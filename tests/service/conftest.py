"""Fixtures of the end-to-end service tests: a module defines `servers` (a `server_pool` of its own
settings); `server` is its ONNX server, for what does not depend on the backend, and `format_server`
one per format, for answers, which do."""

import pytest

from models.formats import FORMATS


@pytest.fixture(scope="module")
def server(servers):
    return servers("onnx")  # what `auto` picks without a GPU


@pytest.fixture(params=list(FORMATS))
def format_server(request, servers):
    return servers(request.param)
