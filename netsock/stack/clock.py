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

    __slots__ = ("_queue", "_fn", "_args", "deadline", "_token")

    def __init__(self, queue: TimerQueue, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._queue = queue
        self._fn = fn
        self._args = args
        self.deadline: float | None = None
        self._token = 0  # bumps on every re-arm/cancel so stale heap entries are recognised

    def reset(self, delay: float) -> None:
        """(Re)arm to fire ``delay`` seconds from now."""
        self._queue._arm(self, self._queue.clock.now() + delay)

    def reset_at(self, deadline: float) -> None:
        self._queue._arm(self, deadline)

    def cancel(self) -> None:
        if self.deadline is not None:
            self.deadline = None
            self._token += 1
            self._queue._cancelled()

    @property
    def armed(self) -> bool:
        return self.deadline is not None

    def _fire(self) -> None:
        self.deadline = None
        self._fn(*self._args)


class TimerQueue:
    """One heap of timers for one stack; the clock wakes it once, at the earliest deadline.

    Cancelled or re-armed timers leave stale heap entries behind (lazy deletion); they are skipped
    when popped, and the heap is rebuilt when stale entries outnumber live ones, so memory stays
    proportional to armed timers even under constant re-arming.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, int, Timer]] = []
        self._seq = itertools.count()
        self._live = 0
        self._wakeup: float | None = None

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
        if timer.deadline is None:
            self._live += 1
        timer._token += 1
        timer.deadline = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), timer._token, timer))
        if self._wakeup is None or deadline < self._wakeup:
            self._wakeup = deadline
            self.clock.set_wakeup(deadline, self.run_due)

    def _cancelled(self) -> None:
        self._live -= 1
        if len(self._heap) > 64 and len(self._heap) > 2 * self._live:
            self._heap = [e for e in self._heap if e[3].deadline is not None and e[2] == e[3]._token]
            heapq.heapify(self._heap)

    def run_due(self) -> None:
        """Fire every timer whose deadline has passed, then ask for the next wake-up."""
        self._wakeup = None
        heap = self._heap
        now = self.clock.now()
        while heap:
            deadline, _, token, timer = heap[0]
            if token != timer._token or timer.deadline is None:
                heapq.heappop(heap)
                continue
            if deadline > now:
                break
            heapq.heappop(heap)
            self._live -= 1
            timer._fire()
        # Skip stale entries at the top so the wake-up is for a live timer.
        while heap and (heap[0][2] != heap[0][3]._token or heap[0][3].deadline is None):
            heapq.heappop(heap)
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

