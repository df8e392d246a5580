"""The scheduler: the gevent hub drives link I/O and the stack's timers.

Everything the stack does happens on the hub's thread, in callbacks from I/O watchers (links) and
from one timer per stack (``GeventClock.set_wakeup``), so protocol code needs no locks. Blocking
calls of users (the adapter, the samples) wait on a ``WaiterQueue`` through ``wait_for``, which
parks the calling greenlet until the endpoint becomes ready.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from gevent import get_hub, getcurrent

from .tcpip import ErrWouldBlock
from .waiter import EventMask, WaiterQueue

try:  # pragma: no cover - which branch runs depends on the build
    from . import _native  # type: ignore[attr-defined]
except ImportError:  # no compiler where this was installed
    _native = None

if _native is not None:
    # A greenlet per connection (a server's handler, a patched thread): each would map and unmap a
    # frame stack of its own; the cache hands a finished one's to the next (see native/arena.c).
    _native.lib.ns_arena_cache_install()


class GeventClock:
    """Real time, with wake-ups and deferred calls on the gevent hub's loop."""

    def __init__(self) -> None:
        self._loop = get_hub().loop
        self._timers: dict[Callable[[], None], Any] = {}

    # The builtins themselves, not methods that call them: the stack asks the time several times a
    # segment, and a Python-level frame would cost more than the clock read.
    now = staticmethod(time.monotonic)
    now_ns = staticmethod(time.time_ns)

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


class _Parked:
    """A greenlet parked in ``wait_for``: the callback its queue calls, and the hub's way back to it.

    gevent's Event would do, but costs more per wake-up (a timeout object, a list of links, a
    notifier callback), and a blocking socket call pays it on every wait. Many notifications before
    the greenlet runs again make one switch; one that comes after the wait ended switches nothing.
    """

    __slots__ = ("greenlet", "pending", "_loop")

    def __init__(self, loop: Any) -> None:
        self.greenlet: Any = getcurrent()
        self.pending = False
        self._loop = loop

    def __call__(self, _mask: EventMask) -> None:
        if not self.pending:
            self.pending = True
            self._loop.run_callback(self.wake)   # from the hub's loop, whoever notified

    def wake(self) -> None:
        greenlet = self.greenlet
        if greenlet is not None:
            greenlet.switch()


def wait_for(queue: WaiterQueue, mask: EventMask, ready: Callable[[], bool], timeout: float | None = None) -> bool:
    """Park this greenlet until ``ready()`` is true, re-checking whenever ``queue`` signals ``mask``.

    Returns False on timeout. ``ready`` is checked first, so a condition that already holds costs
    no switch.
    """
    return ready() or _park(queue, mask, ready, timeout)


def _park(queue: WaiterQueue, mask: EventMask, ready: Callable[[], bool], timeout: float | None) -> bool:
    """``wait_for`` once ``ready()`` has been found false: ``ready`` is asked once per wake-up.

    Nothing can make it true between that check and the registration here (greenlets switch only
    when they wait), and ``pending`` is reset before each re-check, so a notification that comes
    while ``ready`` runs still ends the next wait: no wake-up is lost.
    """
    if timeout is not None and timeout <= 0:
        return False
    deadline = 0.0 if timeout is None else time.monotonic() + timeout
    hub = get_hub()
    parked = _Parked(hub.loop)
    entry = queue.register(parked, mask)
    timer = None
    try:
        while True:
            if timeout is not None:
                timer = hub.loop.timer(timeout)
                timer.start(parked.wake)
            hub.switch()
            parked.pending = False
            if ready():
                return True
            if timer is not None:
                _close(timer)
                timer = None
                # Not necessarily over: the loop times timers from its cached clock, maybe early.
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return False
    finally:
        parked.greenlet = None
        queue.unregister(entry)
        if timer is not None:
            _close(timer)


def _close(timer: Any) -> None:
    timer.stop()
    timer.close()


def blocking(endpoint: Any, queue: WaiterQueue, mask: EventMask, operation: Callable[[], Any]) -> Any:
    """Run ``operation`` (an endpoint call that raises ErrWouldBlock), parking this greenlet until
    ``endpoint`` is ready for ``mask`` whenever it would block: a blocking socket call."""
    readiness = endpoint.readiness
    while True:
        if not readiness(mask):
            _park(queue, mask, lambda: bool(readiness(mask)), None)
        try:
            return operation()
        except ErrWouldBlock:
            continue
