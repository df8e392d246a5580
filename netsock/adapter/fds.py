"""File descriptors for netsock sockets.

A netsock socket has no kernel socket behind it, but programs expect ``fileno()`` to be a real,
unique descriptor they can poll. Each socket descriptor is therefore an eventfd, kept readable
(counter 1) exactly while the socket is readable, so even an unpatched ``select``/``poll`` sees input
readiness; it is always writable, as eventfds are. The table here maps each descriptor to the socket
state it stands for (``readiness(mask)`` and ``waiter_queue``), which the patched ``select`` uses.

Mirroring costs a system call per change of readability, so it starts only once the number has been
handed out (``fileno()``, ``detach()``): until then nothing outside netsock can be polling it. A
server's accepted connections, read and written through the socket object, never pay for it.
"""

from __future__ import annotations

import errno
import os
from typing import Protocol

from ..waiter import WaiterQueue

__all__ = ["EventFds", "Pollable", "lookup"]


class Pollable(Protocol):
    waiter_queue: WaiterQueue

    def readiness(self, mask: int) -> int: ...


_table: dict[int, Pollable] = {}


def lookup(fd: int) -> Pollable | None:
    """The socket state behind descriptor ``fd``, if it is a netsock one."""
    return _table.get(fd)


class EventFds:
    """The descriptors of one socket state (one, or more after ``dup``), readable together."""

    __slots__ = ("fds", "readable", "mirrored")

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.readable = False
        self.mirrored = False   # the descriptors show ``readable`` (see the module docstring)

    def open(self, owner: Pollable) -> int:
        fd = os.eventfd(1 if self.readable and self.mirrored else 0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.fds.append(fd)
        _table[fd] = owner
        return fd

    def close(self, fd: int) -> None:
        """Close ``fd``; EBADF if it is not (or no longer) one of these, as closing a closed descriptor."""
        if fd not in self.fds:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        self.fds.remove(fd)
        del _table[fd]
        os.close(fd)

    def owns(self, fd: int, owner: Pollable) -> bool:
        """Is ``fd`` still open as ``owner``'s (not closed behind its back, by socket.close(fd) say)?"""
        return _table.get(fd) is owner

    def mirror(self) -> None:
        """From now on the descriptors show the socket's input readiness: their number is out."""
        if not self.mirrored:
            self.mirrored = True
            if self.readable:
                for fd in self.fds:
                    os.eventfd_write(fd, 1)

    def set_readable(self, readable: bool) -> None:
        """Mirror the socket's input readiness (one syscall per descriptor, only on a change)."""
        if readable == self.readable:
            return
        self.readable = readable
        if not self.mirrored:
            return
        for fd in self.fds:
            if readable:
                os.eventfd_write(fd, 1)
            else:
                os.eventfd_read(fd)     # resets the counter to 0
