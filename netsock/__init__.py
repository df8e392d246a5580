"""netsock: a userspace TCP/IP stack for Python, after gVisor's netstack.

``import netsock; netsock.patch_all()`` as a program's first line makes its socket, select,
selectors and ssl modules (and name resolution) netsock's; ``netsock run`` does it for a program
without changing it. The stack itself starts at ``netsock.stack.Stack``; link endpoints live in
``netsock.link``, protocols in ``netsock.network`` and ``netsock.transport``.
"""

from __future__ import annotations

from collections.abc import Iterable

__version__ = "0.1.0"
__all__ = ["Network", "patch_all", "unpatch_all"]


def __getattr__(name: str) -> object:
    # ``netsock.Network`` without importing the private-network machinery on ``import netsock``.
    if name == "Network":
        from .privnet import Network
        return Network
    raise AttributeError(f"module 'netsock' has no attribute {name!r}")


def patch_all(*, device: str | None = None, tap: bool = False, addresses: Iterable[str] = (),
              gateways: Iterable[str] = (), dns: Iterable[str] = (), mtu: int | None = None,
              pcap: str | None = None, gevent: bool = True) -> None:
    """Replace the standard ``socket``, ``select``, ``selectors`` and ``ssl`` modules' networking
    (and name resolution) with netsock's, so unmodified code runs over netsock's stack.

    Call it first, before other imports: a module that did ``from socket import socket`` earlier
    keeps the kernel's (a RuntimeWarning names each one). Idempotent. The process's stack always
    has a loopback NIC (127.0.0.1/8, ::1); ``device`` adds a TUN (or ``tap``) device with
    ``addresses`` (CIDRs), default ``gateways``, ``mtu``, and a ``pcap`` capture; ``dns`` names the
    resolver's servers. Without arguments the NETSOCK_* environment variables configure it (see
    ``netsock.adapter.StackConfig.from_environ``). With ``gevent`` (the default) gevent's monkey
    patches for threads, time, os, queue, signal and subprocess are applied too, so that blocking
    calls let the stack run; Python signal handlers then run in the main greenlet, as CPython runs
    them in the main thread, and a thread that is started lets its creator go on first, as an OS
    thread does (``netsock.patches.signal``, ``.threading``).
    """
    from .patches import patch_all as _patch_all

    _patch_all(device=device, tap=tap, addresses=addresses, gateways=gateways, dns=dns, mtu=mtu, pcap=pcap,
               gevent=gevent)


def unpatch_all() -> None:
    """Restore the standard library's socket, select, selectors, ssl, signal and threading objects."""
    from .patches import unpatch_all as _unpatch_all

    _unpatch_all()
