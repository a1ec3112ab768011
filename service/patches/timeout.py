"""TimeoutMiddleware (bentoml 1.4.x): every request arms `loop.call_later(traffic.timeout, ...)` and
never cancels it, so each finished request's waiter stays referenced by the event loop for the
whole timeout (30 s here). Under load that is tens of thousands of live timers and objects; the
heap grows and full garbage collections stall the loop for hundreds of milliseconds (p99 ~0.5 s
and 503s from the batcher in BENCHMARKS.md). The patched __call__ is the stock one plus
`handle.cancel()` once the request is done.
"""

from __future__ import annotations

import asyncio

from bentoml._internal.server.http import traffic

stock_call = traffic.TimeoutMiddleware.__call__


async def patched_call(self, scope, receive, send) -> None:
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    handle = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:
        if fut.cancel():
            resp = traffic.JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504
            )
            await resp(scope, receive, send)
    else:
        await fut
    finally:
        handle.cancel()


def apply() -> None:
    traffic.TimeoutMiddleware.__call__ = patched_call
