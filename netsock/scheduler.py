"""The scheduler: the gevent hub drives link I/O and the stack's timers.

Everything the stack does happens on the hub's thread, in callbacks from I/O watchers (links) and
from one timer per stack (``GeventClock.set_wakeup``), so protocol code needs no locks. Blocking
calls of users (the adapter, the samples) wait on a ``WaiterQueue`` through ``wait_for``, which
parks the calling greenlet until the endpoint becomes ready.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import gevent
from gevent.event import Event

from .tcpip import ErrWouldBlock
from .waiter import EventMask, WaiterQueue


class GeventClock:
    """Real time, with wake-ups and deferred calls on the gevent hub's loop."""

    def __init__(self) -> None:
        self._loop = gevent.get_hub().loop
        self._timers: dict[Callable[[], None], Any] = {}

    def now(self) -> float:
        return time.monotonic()

    def now_ns(self) -> int:
        return time.time_ns()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self._loop.run_callback(fn, *args)

    def set_wakeup(self, deadline: float | None, fn: Callable[[], None]) -> None:
        watcher = self._timers.pop(fn, None)
        if watcher is not None:
            watcher.stop()
            watcher.close()
        if deadline is None:
            return
        watcher = self._loop.timer(max(0.0, deadline - time.monotonic()))
        self._timers[fn] = watcher
        watcher.start(self._fire, fn)

    def _fire(self, fn: Callable[[], None]) -> None:
        watcher = self._timers.pop(fn, None)
        if watcher is not None:
            watcher.close()
        fn()


def wait_for(queue: WaiterQueue, mask: EventMask, ready: Callable[[], bool], timeout: float | None = None) -> bool:
    """Park this greenlet until ``ready()`` is true, re-checking whenever ``queue`` signals ``mask``.

    Returns False on timeout. ``ready`` is checked first, so a condition that already holds costs
    no switch.
    """
    if ready():
        return True
    event = Event()
    entry = queue.register(lambda _mask: event.set(), mask)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ready():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            event.clear()
            if not ready():
                event.wait(remaining)
        return True
    finally:
        queue.unregister(entry)


def blocking(endpoint: Any, queue: WaiterQueue, mask: EventMask, operation: Callable[[], Any]) -> Any:
    """Run ``operation`` (an endpoint call that raises ErrWouldBlock), parking this greenlet until
    ``endpoint`` is ready for ``mask`` whenever it would block: a blocking socket call."""
    ready = lambda: bool(endpoint.readiness(mask))  # noqa: E731
    while True:
        wait_for(queue, mask, ready)
        try:
            return operation()
        except ErrWouldBlock:
            continue
