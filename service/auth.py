"""Optional bearer-token authentication (off unless API_TOKEN or API_TOKEN_FILE is set).

With a token, every request needs `Authorization: Bearer <token>` except the open paths (health,
readiness and metrics by default, for probes and scrapers: AUTH_OPEN_PATHS); others get a 401 with a
JSON error and `WWW-Authenticate: Bearer`. The comparison is constant-time (hmac.compare_digest on
sha256 digests, so neither the content nor the length of the token leaks through timing). Any bind
other than loopback (a container, a cluster) should set a token."""

from __future__ import annotations

import hashlib
import hmac

from starlette.responses import JSONResponse


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class Token:
    """The bearer token, as HTTP's `Authorization` header and gRPC's `authorization` metadata carry
    it."""

    def __init__(self, token: str) -> None:
        self.expected = _digest(token.encode())

    def problem(self, header: bytes) -> str | None:
        """None when `header` ("Bearer <token>") carries the token, else what is wrong with it."""
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(_digest(given.strip()), self.expected):
            return None
        return "wrong bearer token" if header else "missing `Authorization: Bearer <token>` header"


class BearerAuth:
    """ASGI middleware: 401 unless the request carries the token (or its path is open)."""

    def __init__(self, app, token: str, open_paths: list[str]) -> None:
        self.app = app
        self.token = Token(token)
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        problem = self.token.problem(dict(scope["headers"]).get(b"authorization", b""))
        if problem is None:
            return await self.app(scope, receive, send)
        response = JSONResponse(
            {"error": f"unauthorized: {problem}"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="model_serving"'},
        )
        return await response(scope, receive, send)
