"""The TimeoutMiddleware patch: stock BentoML leaves one live timer per finished request (so the
patch is still needed); the patched middleware leaves none and still answers 504 on timeout."""

import asyncio

from bentoml._internal.server.http import traffic

from service import patches


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _slow_app(scope, receive, send):
    await asyncio.sleep(1)


def _run(call, app, requests: int, timeout: float = 30.0):
    """Serve `requests` requests through `call` (a TimeoutMiddleware.__call__); return live timers
    and the statuses sent."""
    statuses = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def main():
        middleware = traffic.TimeoutMiddleware(app, timeout=timeout)
        for _ in range(requests):
            await call(middleware, {"type": "http", "path": "/"}, receive, send)
        loop = asyncio.get_running_loop()
        return sum(1 for h in loop._scheduled if not h.cancelled())

    return asyncio.run(main()), statuses


def test_stock_timeout_middleware_still_leaks_one_timer_per_request():
    live, statuses = _run(patches._stock_call, _ok_app, 100)
    assert statuses == [200] * 100
    assert live == 100  # if this fails, BentoML fixed it: drop the patch


def test_patched_timeout_middleware_leaves_no_timer_and_still_times_out():
    live, statuses = _run(patches._timeout_call, _ok_app, 100)
    assert statuses == [200] * 100 and live == 0
    _, statuses = _run(patches._timeout_call, _slow_app, 1, timeout=0.05)
    assert statuses == [504]


def test_patch_is_installed_on_bentoml_1_4():
    assert patches.apply() is True
    assert traffic.TimeoutMiddleware.__call__ is patches._timeout_call
