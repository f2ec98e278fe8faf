"""In-process request limiter: bounded in-flight requests and a paced start rate.

One :class:`RateLimiter` guards every HTTP attempt a process makes to one vendor account::

    limiter = RateLimiter(max_in_flight=10, max_per_second=50)
    async with limiter:          # waits for its turn (FIFO), then holds an in-flight slot
        await client.post(...)   # the slot is released when the block exits

    async with limiter.slot(before_start=tokens.get):  # prerequisite awaited at the head of the line
        ...

Guarantees
----------
* At any moment, ``in_flight <= max_in_flight`` (Bloomreach's "throughput limit 10" is in-flight).
* In **any** sliding 1-second window the number of request *starts* is ``<= max_per_second``
  (for fractional limits ``>= 1`` that means ``<= floor(max_per_second)``, since a count is whole).
  With a transport that reports sends (see "Lateness"), the same holds for the moments requests
  actually go out, which is what the vendor counts.
* Waiters are served strictly first come, first served.
* :meth:`RateLimiter.pause_for` / :meth:`RateLimiter.pause_until` stop *all* new starts until the
  deadline: a vendor's ``Retry-After`` applies to the shared limit, not only to the refused request.

Algorithm (why the sliding-window bound holds)
----------------------------------------------
A classic token bucket with a burst of ``b > 1`` breaks the sliding-window rule: it can spend a full
bucket at the end of one second and the refill at the start of the next. Instead, with
``N = floor(max_per_second)`` and ``W = 1 s + safety_margin_s``, each start must satisfy two rules:

1. **Sliding log (the hard guarantee).** The last ``N`` actual start times are kept; a new start is
   allowed only when the oldest of them is at least ``W`` ago. So any ``N + 1`` consecutive starts
   span ``>= W >= 1 s``, hence no window ``[t, t + 1 s)`` can contain more than ``N`` starts. This
   holds whatever the event loop's scheduling jitter, because it is checked against the clock right
   before the start is recorded (after any sleep), with no ``await`` in between.
2. **Even spacing (smoothness).** Starts are paced on a grid of ``interval = W / N`` (GCRA with no
   burst: the next start is due at the "theoretical arrival time" ``tat``). This avoids bursts of
   ``N`` requests followed by a silent second. ``tat`` advances from the *scheduled* time, not the
   actual start time, when the start is only a little late (up to ``interval / 2``), so event
   loop lateness does not accumulate into a lower rate; after an idle period it restarts from "now".

Right before recording a start, the head of the line yields to the event loop once, so callbacks
already queued (say, hundreds of tasks woken together) run *before* the start is recorded rather
than between the start and the request going out. Measured against the sandbox in a separate
process, the gap between a start and the request body being written is then typically < 10 ms.

Lateness: a start is recorded when it is granted, but the vendor counts the request when it
arrives. Between the two, the event loop may run other tasks first (httpcore's pool yields before
writing), and on a busy machine that delay varies by tens of ms: if the first of ``N + 1`` starts goes
out late and the last on time, the vendor sees ``N + 1`` in one second. So the transport tells the
limiter when the request's headers are actually written (:func:`mark_sent`, wired in by
:class:`~passflow.providers.http.pool_shards.ShardedPoolTransport` through httpcore's ``trace`` hook), and
the log keeps that *send* time instead of the grant time. Rule 1 then reads "a start is granted only
``W`` after the send ``N`` starts back", so any ``N + 1`` consecutive sends span ``>= W`` whatever
order they went out in. Only a start whose request has not gone out yet falls back on its grant time
plus the worst grant-to-send delay seen in the last two windows. Without a reporting transport the
grant time is all there is, as before. The margin only has to absorb the network's and the vendor's
jitter.

Saturated, starts come every ``W / N`` seconds, i.e. ``N / (1 + safety_margin_s)`` per second: 0.98
of the limit with the default 20 ms margin, a little less when sends are late (each late send delays
the start ``N`` later by its own lateness; it could not go faster anyway). The margin covers the
vendor's side: its clock is read when its handler runs, which a busy core or a garbage collection
on its side delays by some ms (the sandbox once stalled 120 ms, then stamped its backlog at once;
fixed there, see ``passflow/sandbox/runner.py``). Where the vendor's jitter is larger still, its
429 is the evidence: :meth:`RateLimiter.refused` widens the margin by 10 ms (up to +100 ms, at most
once a window) and it narrows back after 30 s without a refusal. Set the margin to 0 for an exact
client-side bound on grants.

For ``max_per_second < 1`` (e.g. 0.5/s) the rule is one start per ``1 / max_per_second`` seconds
(plus the margin). ``max_per_second=None`` disables pacing; only the in-flight cap applies.

The limiter is an asyncio object: it is not thread-safe, and should be used from one event loop at a
time (it re-binds to a new loop when idle, so sequential ``asyncio.run`` calls may share it).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType

__all__ = ["RateLimiter", "mark_sent", "trace_sends"]

_CATCH_UP_S = 0.05
# A vendor's 429 widens the margin by this much (at most once a window, up to _MAX_EXTRA_MARGIN_S),
# and it narrows back after _NARROW_AFTER_S without one.
_WIDEN_STEP_S = 0.01
_MAX_EXTRA_MARGIN_S = 0.1
_NARROW_AFTER_S = 30.0

# The grant the current task holds and has not sent yet: (limiter, its log entry). Set by acquire() and
# read by mark_sent(), which the transport calls from the same task when the request goes out.
_unsent_grant: ContextVar[tuple[RateLimiter, _Start] | None] = ContextVar("passflow_unsent_grant", default=None)


class _Start:
    """One entry of the sliding log: the grant time, replaced by the send time once reported."""

    __slots__ = ("at", "sent")

    def __init__(self, at: float) -> None:
        self.at = at
        self.sent = False


def mark_sent() -> None:
    """The request of the current task's grant is being written now: log the real send time."""
    grant = _unsent_grant.get()
    if grant is not None:
        _unsent_grant.set(None)
        limiter, start = grant
        limiter._sent(start)


async def trace_sends(event_name: str, info: dict[str, object]) -> None:
    """An httpcore ``trace`` extension that calls :func:`mark_sent` once the request headers have been
    handed to the socket. *After* the write, not before: another thread holding the GIL (the run
    records and exports on its main thread) can stall us between any two steps, and a stall before
    the write must count as lateness. A stall after it only makes us more careful."""
    if event_name.endswith("send_request_headers.complete"):
        mark_sent()


class RateLimiter:
    """Bounded in-flight + evenly spaced starts + shared pause. See the module docstring."""

    def __init__(
        self,
        max_in_flight: int,
        max_per_second: float | None = None,
        *,
        safety_margin_s: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
        if max_per_second is not None and not (max_per_second > 0 and math.isfinite(max_per_second)):
            raise ValueError(f"max_per_second must be a positive number or None, got {max_per_second!r}")
        if not (safety_margin_s >= 0 and math.isfinite(safety_margin_s)):
            raise ValueError(f"safety_margin_s must be >= 0, got {safety_margin_s!r}")
        self.max_in_flight = max_in_flight
        self.max_per_second = max_per_second
        self.safety_margin_s = safety_margin_s
        self._clock = clock

        if max_per_second is None:
            self._n = 0  # pacing disabled
            self._base_window = 0.0
        elif max_per_second >= 1:
            self._n = math.floor(max_per_second)
            self._base_window = 1.0
        else:
            self._n = 1
            self._base_window = 1.0 / max_per_second
        self._extra_margin = 0.0  # widened by refused()
        self._last_refusal = -math.inf
        self.refusals = 0
        self._set_window()
        self._log: deque[_Start] = deque(maxlen=max(self._n, 1))  # the last N starts
        # Sliding maximum of grant-to-send delays (time observed, delay), delays decreasing.
        self._lateness: deque[tuple[float, float]] = deque()
        self._tat = -math.inf  # GCRA theoretical arrival time of the next start
        self._paused_until = -math.inf

        self._in_flight = 0
        self._waiting = 0
        self.started = 0
        self.max_in_flight_seen = 0
        self.pauses = 0

        # asyncio primitives are bound to the loop they first wait on; (re)created per loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gate = asyncio.Lock()  # FIFO: only the head of the line waits for time/slot
        self._slot_freed = asyncio.Event()

    # -- public API ---------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Callers queued in :meth:`acquire` right now."""
        return self._waiting

    @property
    def paused_until(self) -> float | None:
        """Clock time until which starts are paused, or None when not paused."""
        return self._paused_until if self._paused_until > self._clock() else None

    @property
    def interval(self) -> float:
        """Seconds between starts when saturated (0 when pacing is disabled)."""
        return self._interval

    def lateness(self) -> float:
        """The worst grant-to-send delay reported by :func:`mark_sent` in the last two windows."""
        horizon = self._clock() - 2 * self._window
        while self._lateness and self._lateness[0][0] < horizon:
            self._lateness.popleft()
        return self._lateness[0][1] if self._lateness else 0.0

    def refused(self) -> None:
        """The vendor refused a request for exceeding its rate (HTTP 429): its clock saw more starts
        in some second than ours did, so the margin did not cover the jitter between them. Widen it
        (once a window at most, since one burst of 429s is one finding); it narrows back later."""
        now = self._clock()
        self.refusals += 1
        if self._n and now - self._last_refusal >= self._window:
            self._extra_margin = min(self._extra_margin + _WIDEN_STEP_S, _MAX_EXTRA_MARGIN_S)
            self._last_refusal = now
            self._set_window()

    @property
    def margin_s(self) -> float:
        """The safety margin in force: the configured one plus any widening after refusals."""
        return self.safety_margin_s + self._extra_margin

    def pause_until(self, deadline: float) -> None:
        """Allow no new start before ``deadline`` (on this limiter's clock). Pauses only extend."""
        if deadline > self._paused_until:
            self._paused_until = deadline
            self.pauses += 1

    def pause_for(self, seconds: float) -> None:
        """Allow no new start for ``seconds`` from now (e.g. a vendor's ``Retry-After``)."""
        if seconds > 0:
            self.pause_until(self._clock() + seconds)

    async def acquire(self, before_start: Callable[[], Awaitable[object]] | None = None) -> None:
        """Wait (FIFO) until a start is allowed, then take an in-flight slot.

        ``before_start`` (optional) is awaited at the head of the line, before the start is timed, for
        a prerequisite the request cannot go out without (e.g. a valid bearer token). It is called
        again after every wait, so it must be cheap when already satisfied; if it raises, the caller
        leaves the line without taking a start. This way no start is spent on a request that is not
        ready, and a start is never recorded long before its request is actually sent.
        """
        self._bind_loop()
        self._waiting += 1
        try:
            async with self._gate:
                yielded = False
                while True:
                    if before_start is not None:
                        await before_start()
                    now = self._clock()
                    due = self._earliest_start()
                    if now < due:
                        # The head re-checks after waking: the pause may have been extended meanwhile,
                        # and a sleep may return marginally early.
                        await asyncio.sleep(due - now)
                        continue
                    if self._in_flight >= self.max_in_flight:
                        self._slot_freed.clear()
                        await self._slot_freed.wait()
                        continue
                    if not yielded:
                        # Let the callbacks already queued on the loop run first (e.g. hundreds of tasks
                        # woken together), so the request goes out right after its start is recorded: a
                        # start recorded early but sent late shrinks the spacing the vendor observes.
                        yielded = True
                        await asyncio.sleep(0)
                        continue
                    break
                # No await between the final check and recording the start: the bound is exact.
                self._record_start(now, due)
        finally:
            self._waiting -= 1

    @contextlib.asynccontextmanager
    async def slot(self, before_start: Callable[[], Awaitable[object]] | None = None) -> AsyncIterator[None]:
        """``async with limiter.slot(before_start=...)``: :meth:`acquire` with a prerequisite."""
        await self.acquire(before_start)
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Give back the in-flight slot taken by :meth:`acquire`."""
        if self._in_flight <= 0:
            raise RuntimeError("RateLimiter.release() called more times than acquire()")
        self._in_flight -= 1
        self._slot_freed.set()
        grant = _unsent_grant.get()
        if grant is not None and grant[0] is self:
            # Nothing reported a send (a plain transport, or an error before the request went out):
            # the grant time is all we know, and it is final.
            _unsent_grant.set(None)
            grant[1].sent = True

    async def __aenter__(self) -> RateLimiter:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def stats(self) -> dict[str, float | int | None]:
        return {
            "started": self.started,
            "in_flight": self._in_flight,
            "max_in_flight_seen": self.max_in_flight_seen,
            "waiting": self._waiting,
            "pauses": self.pauses,
            "max_in_flight": self.max_in_flight,
            "max_per_second": self.max_per_second,
            "lateness_s": round(self.lateness(), 4),
            "refusals": self.refusals,
            "margin_s": round(self.margin_s, 4),
        }

    def __repr__(self) -> str:
        return (
            f"RateLimiter(max_in_flight={self.max_in_flight}, max_per_second={self.max_per_second}, "
            f"in_flight={self._in_flight}, waiting={self._waiting}, started={self.started})"
        )

    # -- internals ----------------------------------------------------------------------------

    def _set_window(self) -> None:
        self._window = self._base_window + self.safety_margin_s + self._extra_margin if self._n else 0.0
        self._interval = self._window / self._n if self._n else 0.0

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        if self._in_flight or self._waiting:
            raise RuntimeError("RateLimiter is in use on another event loop")
        self._loop = loop
        self._gate = asyncio.Lock()
        self._slot_freed = asyncio.Event()

    def _earliest_start(self) -> float:
        due = self._paused_until
        if self._n:
            due = max(due, self._tat)
            if len(self._log) == self._n:
                oldest = self._log[0]
                # Not sent yet (or no reporting transport): its send time is unknown; assume it goes
                # out as late as the worst recent request did.
                due = max(due, oldest.at + self._window + (0.0 if oldest.sent else self.lateness()))
        return due

    def _sent(self, start: _Start) -> None:
        now = self._clock()
        delay = max(0.0, now - start.at)
        start.at = max(start.at, now)
        start.sent = True
        while self._lateness and self._lateness[-1][1] <= delay:  # a sliding maximum
            self._lateness.pop()
        self._lateness.append((now, delay))

    def _record_start(self, now: float, due: float) -> None:
        if self._extra_margin and now - self._last_refusal > _NARROW_AFTER_S:
            self._extra_margin = 0.0
            self._set_window()
        if self._n:
            start = _Start(now)
            self._log.append(start)
            _unsent_grant.set((self, start))
            # Keep the grid when we started a little late (event loop lateness must not accumulate
            # into a lower rate); restart the grid from "now" after an idle spell or a long stall.
            # At high rates an interval is a few ms, less than ordinary loop lateness: allow catching
            # up to 50 ms of it (the sliding log still caps every window).
            base = due if now - due <= max(self._interval / 2, _CATCH_UP_S) else now
            self._tat = base + self._interval
        self._in_flight += 1
        self.started += 1
        if self._in_flight > self.max_in_flight_seen:
            self.max_in_flight_seen = self._in_flight
