"""The two replacements of library functions this service still needs, both in the HTTP server
underneath BentoML (uvicorn, circus), none in BentoML itself: each fixes something the service's own
code cannot reach, because it happens before a request exists as an ASGI call. One module per fix,
each with a test (tests/service/test_patches.py) showing that the stock behaviour it corrects is still
there. Applied in one place: `apply()`, called by the service's start-up (service/app.py); importing a
patch module changes nothing.

Every function a patch replaces or wraps is kept by its module as `stock_<name>` and fingerprinted
(sha256 of its source) in FINGERPRINTS: `apply()` first checks them all and stops start-up with one
line naming the patch when the installed library has a different function than the one the patch was
verified on (pyproject.toml pins uvicorn for that reason).

- header_limit: request heads are bounded in size (431), heads and bodies in time (408): uvicorn's
              httptools protocol sets neither limit, and an ASGI app only sees a request once its
              whole head has been read. Upstream: uvicorn issue #157 and PR #1684 ("httptools does
              have a mechanism [...] but we can't change the value"), httptools issue #87.
- reuseport:  with 2+ workers, one SO_REUSEPORT listening socket per worker, so that the kernel
              spreads connections (stock: all workers accept from one socket and one takes most);
              with any number, a port in use stops start-up with one line. Upstream: BentoML issue
              #5426 (open), PR #5557 (closed unmerged).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging

import circus
import uvicorn

from service.patches import header_limit, reuseport

logger = logging.getLogger(__name__)

VERIFIED_ON = "uvicorn 0.54.0, circus 0.18.3"
# "<patch module>.stock_<name>": fingerprint of that function as verified (see `fingerprint`)
FINGERPRINTS = {
    "header_limit.stock_connection_made": "6efb565ff3d3",
    "header_limit.stock_data_received": "010a7ae59a5d",
    "header_limit.stock_on_message_begin": "96d377fdc7c2",
    "header_limit.stock_on_headers_complete": "1ea8589acfad",
    "header_limit.stock_on_message_complete": "1fbad42dc31f",
    "reuseport.stock_socket_init": "8d7034c2f3a9",
    "reuseport.stock_server_run": "239e0133d430",
}
_applied = False


class PatchMismatch(SystemExit):
    """A function a patch replaces is not the one it was verified on: start-up stops (one line)."""


def fingerprint(obj) -> str:
    """First 12 hex digits of the sha256 of a function's source (a property's getter, a classmethod's
    function)."""
    obj = getattr(obj, "fget", None) or getattr(obj, "__func__", None) or obj
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:12]


def verify(expected: dict[str, str] = FINGERPRINTS) -> None:
    """Raise PatchMismatch naming every patch whose target changed."""
    changed = []
    for key, want in expected.items():
        module, name = key.split(".", 1)
        got = fingerprint(getattr(importlib.import_module(f"{__name__}.{module}"), name))
        if got != want:
            changed.append(
                f"service/patches/{module}.py ({name.removeprefix('stock_')}: {got}, verified {want})"
            )
    if changed:
        raise PatchMismatch(
            f"error: uvicorn {uvicorn.__version__} / circus {circus.__version__} changed functions that "
            f"service/patches replace, verified on {VERIFIED_ON}: {'; '.join(changed)}. Install the "
            "pinned versions (pyproject.toml), or check those patches against "
            "tests/service/test_patches.py and update FINGERPRINTS."
        )


def apply(workers: int, settings) -> None:
    """Check the fingerprints, then install every patch (once per process)."""
    global _applied
    if _applied:
        return
    verify()
    reuseport.apply(workers)
    header_limit.apply(settings.max_header_bytes, settings.header_timeout_s, settings.body_timeout_s)
    _applied = True
