"""Time for the stack: a clock interface, a manual clock for tests, and one timer heap per stack.

Protocols never create scheduler timers of their own. They ask the stack's ``TimerQueue`` for a
``Timer`` and re-arm it as their state changes; the queue keeps one heap and asks the clock for a
single wake-up at the earliest deadline. So the scheduler holds one timer per stack however many
connections exist, and a test can replace real time with ``ManualClock`` and step through hours of
protocol time in microseconds.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable, Protocol


class Clock(Protocol):
    """Where the stack gets time and deferred execution from (netstack's tcpip.Clock, plus wake-ups)."""

    def now(self) -> float:
        """Monotonic seconds: for all protocol timekeeping."""

    def now_ns(self) -> int:
        """Wall-clock nanoseconds since the epoch: for timestamps users see."""

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` after the current event, before waiting for I/O."""

    def set_wakeup(self, deadline: float | None, fn: Callable[[], None]) -> None:
        """Call ``fn`` at monotonic time ``deadline`` (replacing any earlier request); None cancels."""


class Timer:
    """A re-armable timer owned by one protocol object (netstack's tcpip.Timer)."""

    __slots__ = ("_queue", "_fn", "_args", "deadline", "_token", "_queued")

    def __init__(self, queue: TimerQueue, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._queue = queue
        self._fn: Callable[..., Any] | None = fn
        self._args = args
        self.deadline: float | None = None
        # The timer's heap entry is the one carrying this token (older ones are stale); _queued is its
        # time, None when there is none. It may come before the deadline (see TimerQueue).
        self._token = 0
        self._queued: float | None = None

    def reset(self, delay: float) -> None:
        """(Re)arm to fire ``delay`` seconds from now."""
        self._queue._arm(self, self._queue.clock.now() + delay)

    def reset_at(self, deadline: float) -> None:
        self._queue._arm(self, deadline)

    def cancel(self) -> None:
        if self.deadline is not None:
            self.deadline = None
            self._queue._cancelled()

    def close(self) -> None:
        """Cancel for good and drop the callback. The callback usually refers to the timer's owner,
        which refers to the timer: once closed, the two are freed by reference counting (a heap entry
        left behind keeps only this empty timer until it is popped). A closed timer cannot be armed
        again."""
        self.cancel()
        self._fn = None
        self._args = ()

    @property
    def armed(self) -> bool:
        return self.deadline is not None

    def _fire(self) -> None:
        self.deadline = None
        self._fn(*self._args)  # type: ignore[misc]


class TimerQueue:
    """One heap of timers for one stack; the clock wakes it once, at the earliest deadline.

    Most timers are re-armed far more often than they fire (a retransmission timer moves on with
    every ACK), so a timer keeps its heap entry when it is cancelled or pushed later: when that entry
    comes up, the timer fires if its deadline has come, is queued again at its deadline if that
    moved on, or is dropped if it was cancelled. Only an earlier deadline pushes a new entry (the
    old one is then stale: skipped when popped). The heap is rebuilt without the entries of
    cancelled timers when they outnumber the armed ones, so memory stays proportional to armed
    timers however they are re-armed.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, int, Timer]] = []
        self._seq = itertools.count()
        self._live = 0
        self._wakeup: float | None = None
        self._closed = False

    def close(self) -> None:
        """The owner (a stack) is closing: no timer fires from now on, and arming one does nothing.
        The heap and the clock's wake-up go, so that nothing armed, not even the cancelled timers'
        entries left in the heap, keeps the owner alive from the scheduler's side."""
        self._closed = True
        for _, _, _, timer in self._heap:
            timer._queued = None
            timer.deadline = None
        self._heap = []
        self._live = 0
        self._wakeup = None
        self.clock.set_wakeup(None, self.run_due)

    def timer(self, fn: Callable[..., Any], *args: Any) -> Timer:
        """A new, unarmed timer calling ``fn(*args)``."""
        return Timer(self, fn, args)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        t = Timer(self, fn, args)
        t.reset(delay)
        return t

    def __len__(self) -> int:
        """Armed timers."""
        return self._live

    def _arm(self, timer: Timer, deadline: float) -> None:
        if timer._fn is None:
            raise RuntimeError("a closed timer cannot be armed")
        if self._closed:
            return
        if timer.deadline is None:
            self._live += 1
        timer.deadline = deadline
        queued = timer._queued
        if queued is not None and queued <= deadline:
            return      # its entry comes up first, and then moves on to the deadline
        self._push(timer, deadline)
        if self._wakeup is None or deadline < self._wakeup:
            self._wakeup = deadline
            self.clock.set_wakeup(deadline, self.run_due)

    def _push(self, timer: Timer, when: float) -> None:
        timer._token += 1
        timer._queued = when
        heapq.heappush(self._heap, (when, next(self._seq), timer._token, timer))

    def _cancelled(self) -> None:
        self._live -= 1
        heap = self._heap
        if len(heap) > 64 and len(heap) > 2 * self._live:
            kept = []
            for entry in heap:
                timer = entry[3]
                if entry[2] == timer._token:
                    if timer.deadline is not None:
                        kept.append(entry)
                    else:
                        timer._queued = None
            heapq.heapify(kept)
            self._heap = kept

    def run_due(self) -> None:
        """Fire every timer whose deadline has passed, then ask for the next wake-up."""
        self._wakeup = None
        heap = self._heap
        now = self.clock.now()
        while heap:
            when, _, token, timer = heap[0]
            if token != timer._token:
                heapq.heappop(heap)     # stale: the timer was moved earlier since
                continue
            if timer.deadline is None:
                heapq.heappop(heap)     # cancelled
                timer._queued = None
                continue
            if when > now:
                break
            heapq.heappop(heap)
            timer._queued = None
            if timer.deadline > now:
                self._push(timer, timer.deadline)     # moved on since it was queued
                continue
            self._live -= 1
            timer._fire()
        if heap:
            self._wakeup = heap[0][0]
            self.clock.set_wakeup(self._wakeup, self.run_due)
        else:
            self.clock.set_wakeup(None, self.run_due)


class ManualClock:
    """A clock that moves only when told to: deterministic protocol tests without sleeping."""

    def __init__(self, start: float = 1000.0, epoch_ns: int = 1_700_000_000 * 10**9) -> None:
        self._now = start
        self._start = start
        self._epoch_ns = epoch_ns
        self._soon: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._wakeups: dict[Callable[[], None], float] = {}

    def now(self) -> float:
        return self._now

    def now_ns(self) -> int:
        return self._epoch_ns + int((self._now - self._start) * 1e9)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self._soon.append((fn, args))

    def set_wakeup(self, deadline: float | None, fn: Callable[[], None]) -> None:
        if deadline is None:
            self._wakeups.pop(fn, None)
        else:
            self._wakeups[fn] = deadline

    def run_pending(self) -> None:
        """Run deferred calls (and those they defer) until none are left."""
        while self._soon:
            batch, self._soon = self._soon, []
            for fn, args in batch:
                fn(*args)

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every wake-up that falls due, in deadline order."""
        end = self._now + seconds
        self.run_pending()
        while True:
            due = [(d, fn) for fn, d in self._wakeups.items() if d <= end]
            if not due:
                break
            deadline, fn = min(due, key=lambda e: e[0])
            self._now = max(self._now, deadline)
            del self._wakeups[fn]
            fn()
            self.run_pending()
        self._now = end

