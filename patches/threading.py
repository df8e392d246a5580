"""The ``threading`` module under netsock: a thread that is started lets its creator go on first.

gevent's monkey patching makes threads greenlets of the one OS thread. ``Thread.start()`` waits until
the new thread has started, and under gevent that wait hands the CPU to the new greenlet, which then
keeps it until it blocks. An accept loop that starts a thread per connection (socketserver's
ThreadingMixIn, http.server's ThreadingHTTPServer) therefore accepts again only after the handler has
written its whole response, while the connections arriving meanwhile overflow its listen backlog (5
for http.server: SYN cookies, dropped handshakes, retransmissions hundreds of milliseconds later). The
creator of an OS thread does not wait for the thread to run: here the new thread, once started, yields
once before running its target, so its creator carries on as it would with OS threads.

Installed only over gevent's threads (``patch_all(gevent=True)``, the default).
"""

from __future__ import annotations

import threading as _stdlib

import gevent
from gevent import monkey

from ._patcher import Patcher

__all__ = ["patch", "unpatch"]

_patcher = Patcher()
_NOT_SET = object()


def _start(self: _stdlib.Thread) -> None:
    """Thread.start: as the stdlib's, but the thread's first step is to let the creator run."""
    own_run = vars(self).get("run", _NOT_SET)      # an instance attribute the program set, if any
    run = self.run

    def restore() -> None:
        if own_run is _NOT_SET:
            vars(self).pop("run", None)
        else:
            self.run = own_run  # type: ignore[method-assign]

    def run_after_the_creator() -> None:
        restore()
        gevent.sleep(0)     # the creator, woken by the thread having started, goes first
        run()

    self.run = run_after_the_creator  # type: ignore[method-assign]
    try:
        _patcher.original(_stdlib.Thread, "start")(self)
    except BaseException:
        restore()
        raise


def patch() -> None:
    """Install the start that lets the creator go on (once), if gevent made threads greenlets."""
    if monkey.is_module_patched("threading"):
        _patcher.install([(_stdlib.Thread, "start", _start)])


def unpatch() -> None:
    _patcher.undo()
