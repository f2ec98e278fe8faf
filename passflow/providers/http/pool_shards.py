"""An httpx transport that spreads requests over several small connection pools.

httpcore's pool walks *every* connection on each request and each release (``has_expired`` /
``is_idle``, each asking the socket whether it is readable): O(connections) work per request, so
with the 30–80 connections a few hundred requests/s need it dominated the client's CPU (measured
with py-spy at 200/s: ~40 % of the event loop thread). Several pools of a few connections each do the
same job with O(pool size) work per request. Requests go to the shard with the fewest open
responses, so connections are reused as much as with one pool.

It also tells the rate limiter when each request's headers are actually written (httpcore's
``trace`` hook → :func:`passflow.providers.http.limiter.mark_sent`), so the limiter can allow for the delay between
granting a start and the request going out (see the limiter's "Lateness").
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import httpx

from passflow.providers.http.limiter import trace_sends

__all__ = ["ShardedPoolTransport"]

PER_SHARD = 4


class ShardedPoolTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_connections: int, *, per_shard: int = PER_SHARD) -> None:
        if max_connections < 1 or per_shard < 1:
            raise ValueError("max_connections and per_shard must be >= 1")
        n = math.ceil(max_connections / per_shard)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        # One TLS context for all shards: building one (loading the CA bundle) costs ~20 ms, and a
        # 500/s client has 26 shards — half a second before the first request went out.
        ssl_context = httpx.create_ssl_context()
        self._shards = [httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits) for _ in range(n)]
        self._open = [0] * n  # responses not yet closed, per shard

    @property
    def shards(self) -> int:
        return len(self._shards)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "trace" not in request.extensions:  # a caller's own trace hook wins
            request.extensions["trace"] = trace_sends
        i = self._open.index(min(self._open))
        self._open[i] += 1
        try:
            response = await self._shards[i].handle_async_request(request)
        except BaseException:
            self._open[i] -= 1
            raise
        response.stream = _Counted(response.stream, self._open, i)  # type: ignore[arg-type]
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


class _Counted(httpx.AsyncByteStream):
    """A response body that gives its shard's slot back when it is closed (once)."""

    def __init__(self, stream: httpx.AsyncByteStream, counts: list[int], index: int) -> None:
        self._stream = stream
        self._counts = counts
        self._index = index
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._counts[self._index] -= 1
        await self._stream.aclose()
