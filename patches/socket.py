"""The ``socket`` module under netsock.

``socket.socket(AF_INET or AF_INET6, ...)`` makes a ``NetsockSocket`` of the current stack; every other
family (AF_UNIX, AF_NETLINK, AF_PACKET ...) and ``socketpair`` stay the kernel's, as gevent's
cooperative sockets so that waiting on them lets the stack run. Name resolution (getaddrinfo and the
gethostby* family) goes to the current stack's resolver. The rest of the module is untouched, and the
stdlib's own helpers (create_connection, create_server, getfqdn, has_dualstack_ipv6) follow because
they look these names up in the module when called.

The replacement ``socket`` class is a factory: instances are ``NetsockSocket`` or gevent sockets, and
``isinstance(x, socket.socket)`` holds for both, as for sockets made before patching.
"""

from __future__ import annotations

import socket as _stdlib
from typing import Any

from gevent import socket as _gevent

from netsock.adapter import NetsockSocket, fds
from netsock.adapter.runtime import resolver

from ._patcher import Patcher

__all__ = ["close", "fromfd", "getaddrinfo", "gethostbyaddr", "gethostbyname", "gethostbyname_ex", "getnameinfo", "patch",
           "socket", "socketpair", "unpatch"]

_patcher = Patcher()
_KERNEL_SOCKET = _stdlib.socket         # the class before patching
_kernel_close = _stdlib.close
_NETSOCK_FAMILIES = (_stdlib.AF_INET, _stdlib.AF_INET6)


class _SocketFactory(type):
    """Makes ``isinstance``/``issubclass`` against the patched ``socket.socket`` accept every socket
    class it may hand out, and the kernel's own; and gives the class the socket methods as attributes
    (``hasattr(socket.socket, "sendmsg")`` is how code probes for features), on the metaclass, so they
    never shadow an instance's own."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(NetsockSocket, name)

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, (NetsockSocket, _gevent.socket, _KERNEL_SOCKET))

    def __subclasscheck__(cls, subclass: type) -> bool:
        return cls is subclass or issubclass(subclass, (NetsockSocket, _gevent.socket, _KERNEL_SOCKET))


class socket(metaclass=_SocketFactory):  # noqa: N801 - the stdlib's name
    """``socket.socket`` under netsock: a ``NetsockSocket`` for IPv4 and IPv6, a kernel socket otherwise.

    A descriptor passed as ``fileno`` is looked up: a netsock socket's comes back as a ``NetsockSocket``
    for the same connection, any other is the kernel's. A class derived from this one gets instances
    of itself combined with the implementation the family calls for, so its methods still apply.
    """

    def __new__(cls, family: int = -1, type: int = -1, proto: int = -1,  # noqa: A002 - the stdlib's names
                fileno: int | None = None) -> Any:
        if fileno is not None:
            netsock = fds.lookup(fileno) is not None
        else:
            netsock = (_stdlib.AF_INET if family == -1 else family) in _NETSOCK_FAMILIES
        implementation = NetsockSocket if netsock else _gevent.socket
        if cls is socket:
            return implementation(family, type, proto, fileno)
        return object.__new__(_combined(cls, implementation))    # Python then calls its __init__


_combinations: dict[tuple[type, type], type] = {}


def _combined(subclass: type, implementation: type) -> type:
    """``subclass`` of the patched socket on top of ``implementation``: its methods first, then the
    implementation's, as if it had derived from that class."""
    key = (subclass, implementation)
    combined = _combinations.get(key)
    if combined is None:
        combined = type(subclass.__name__, (subclass, implementation),
                        {"__module__": subclass.__module__, "__qualname__": subclass.__qualname__})
        _combinations[key] = combined
    return combined


def fromfd(fd: int, family: int, type: int, proto: int = 0) -> Any:  # noqa: A002
    """A socket on a duplicate of ``fd``, which may be a netsock socket's descriptor."""
    state = fds.lookup(fd)
    if state is not None and hasattr(state, "open_fd"):
        return NetsockSocket(family, type, proto, state.open_fd())
    return _gevent.fromfd(fd, family, type, proto)


def socketpair(family: int = _stdlib.AF_UNIX, type: int = _stdlib.SOCK_STREAM, proto: int = 0) -> tuple[Any, Any]:  # noqa: A002
    """The kernel's socket pair (AF_UNIX), cooperative under gevent."""
    return _gevent.socketpair(family, type, proto)


def close(fd: int) -> None:
    """Close a descriptor: a netsock socket's closes its connection when it was the last one."""
    state = fds.lookup(fd)
    if state is not None and hasattr(state, "close_fd"):
        state.close_fd(fd)
    else:
        _kernel_close(fd)


def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,  # noqa: A002
                flags: int = 0) -> list[tuple[Any, ...]]:
    return resolver().getaddrinfo(host, port, family, type, proto, flags)


def gethostbyname(hostname: Any) -> str:
    return resolver().gethostbyname(hostname)


def gethostbyname_ex(hostname: Any) -> tuple[str, list[str], list[str]]:
    return resolver().gethostbyname_ex(hostname)


def gethostbyaddr(ip_address: Any) -> tuple[str, list[str], list[str]]:
    return resolver().gethostbyaddr(ip_address)


def getnameinfo(sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
    return resolver().getnameinfo(sockaddr, flags)


for _function in (getaddrinfo, gethostbyname, gethostbyname_ex, gethostbyaddr, getnameinfo):
    _function.__doc__ = getattr(_stdlib, _function.__name__).__doc__

_REPLACEMENTS = [(_stdlib, function.__name__, function)
                 for function in (socket, fromfd, socketpair, close, getaddrinfo, gethostbyname, gethostbyname_ex,
                                  gethostbyaddr, getnameinfo)]


def patch() -> None:
    """Install the replacements in the ``socket`` module (once)."""
    _patcher.install(_REPLACEMENTS)


def unpatch() -> None:
    _patcher.undo()
