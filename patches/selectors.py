"""The ``selectors`` module under netsock.

The stdlib's selector classes copy their ``select`` functions into class attributes when the module is
imported (in 3.11 to 3.13 alike): ``SelectSelector._select = select.select``, ``PollSelector._selector_cls
= select.poll`` and ``EpollSelector._selector_cls = select.epoll``, so patching ``select`` alone does not
reach them. Those three attributes are replaced here; everything else in the classes looks names up when
called (the ``select`` constants they also copy are unchanged). ``DefaultSelector`` is ``EpollSelector``
on Linux, and ``subprocess``' and ``socketserver``'s selector aliases are the same class objects, so they
follow. Selectors made before ``patch()`` keep the kernel objects they were made with.
"""

from __future__ import annotations

import selectors as _stdlib

from . import select as _select
from ._patcher import Patcher

__all__ = ["patch", "unpatch"]

_patcher = Patcher()


def patch() -> None:
    """Make the stdlib's select-, poll- and epoll-based selectors use netsock's select (once)."""
    # A Python function in a class is a method: staticmethod keeps ``self._select(r, w, x, t)`` a plain call.
    _patcher.install([(_stdlib.SelectSelector, "_select", staticmethod(_select.select)),
                      (_stdlib.PollSelector, "_selector_cls", _select.poll),
                      (_stdlib.EpollSelector, "_selector_cls", _select.epoll)])


def unpatch() -> None:
    _patcher.undo()
