"""The ``signal`` module under netsock: Python signal handlers run in the main thread, as CPython promises.

CPython runs a Python-level signal handler in the main thread, between two bytecodes of whatever that
thread was doing. Under gevent every thread is a greenlet of the one OS thread, so without this module
a handler runs in whichever greenlet happens to be on the CPU: the default SIGINT handler's
KeyboardInterrupt then ends a request handler's "thread" (printed as "Exception in thread ...") instead
of the server's main loop, which carries on forever, and it can land in the middle of netsock's own
protocol code. The handlers installed here keep CPython's contract: in the main greenlet a handler runs
at once, as before; anywhere else it runs as soon as the hub gets control, in a greenlet of its own,
and whatever it raises (KeyboardInterrupt, SystemExit, ...) is raised in the main greenlet.

``signal.signal`` and ``signal.getsignal`` keep their interface: callers see and get back their own
handlers, never the wrappers. SIGCHLD stays gevent's (it reaps child processes from its loop).
"""

from __future__ import annotations

import signal as _stdlib
from types import FrameType
from typing import Any, Callable

import gevent
import greenlet

from ._patcher import Patcher

__all__ = ["patch", "unpatch"]

_patcher = Patcher()
_LEFT_ALONE = {_stdlib.SIGCHLD}

Handler = Callable[[int, "FrameType | None"], Any]


class _MainThreadHandler:
    """A user's handler, run in the main greenlet's stead when the signal interrupts another greenlet."""

    __slots__ = ("handler",)

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        current = greenlet.getcurrent()
        main = _root(current)
        if current is main:
            return self.handler(signum, frame)
        gevent.spawn_raw(self._run, main, signum)
        return None

    def _run(self, main: greenlet.greenlet, signum: int) -> None:
        try:
            self.handler(signum, main.gr_frame)
        except BaseException as exc:  # noqa: BLE001 - the main thread's to handle, whatever it is
            if not main.dead:
                gevent.get_hub().loop.run_callback(main.throw, exc)


def _root(glet: greenlet.greenlet) -> greenlet.greenlet:
    """The thread's main greenlet (gevent's greenlets descend from it through the hub)."""
    while glet.parent is not None:
        glet = glet.parent
    return glet


def _wrapped(handler: Any) -> Any:
    return _MainThreadHandler(handler) if callable(handler) else handler


def _unwrapped(handler: Any) -> Any:
    return handler.handler if isinstance(handler, _MainThreadHandler) else handler


def _signal(signalnum: int, handler: Any) -> Any:
    """signal.signal: installs ``handler`` to run in the main thread; returns the previous handler."""
    install = _patcher.original(_stdlib, "signal")
    if signalnum in _LEFT_ALONE:
        return _unwrapped(install(signalnum, handler))
    return _unwrapped(install(signalnum, _wrapped(handler)))


def _getsignal(signalnum: int) -> Any:
    return _unwrapped(_patcher.original(_stdlib, "getsignal")(signalnum))


def _rewrap_installed(wrap: Callable[[Any], Any]) -> None:
    """Re-install every current Python-level handler through ``wrap`` (SIGINT's default among them)."""
    for signum in _stdlib.valid_signals():
        if signum in _LEFT_ALONE:
            continue
        try:
            current = _stdlib.getsignal(signum)
        except (OSError, ValueError):
            continue
        if callable(current):
            _stdlib.signal(signum, wrap(_unwrapped(current)))


def patch() -> None:
    """Route Python signal handlers to the main greenlet (once); the handlers already installed too."""
    if _patcher.active:
        return
    _rewrap_installed(_wrapped)
    _patcher.install([(_stdlib, "signal", _signal), (_stdlib, "getsignal", _getsignal)])


def unpatch() -> None:
    """Put back the stdlib's functions and the handlers as the program installed them."""
    if not _patcher.active:
        return
    _patcher.undo()
    _rewrap_installed(lambda handler: handler)
