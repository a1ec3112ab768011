"""Fixtures of the end-to-end service tests: a module defines `servers` (a `server_pool` of its own
settings); `server` is its ONNX server, for what does not depend on the backend, and `format_server`
one per format, for answers, which do."""

import pytest

from models.formats import FORMATS


@pytest.fixture(scope="module")
def server(servers):
    return servers("onnx")  # what `auto` picks without a GPU


# ONNX last: the module's tests that take `server` then run on the server already started (one server
# runs at a time: tests.conftest.server_pool), so each format starts once per module.
@pytest.fixture(scope="module", params=sorted(FORMATS, key=lambda name: name == "onnx"))
def format_server(request, servers):
    return servers(request.param)
