"""Readiness notification (netstack's waiter package).

Endpoints own a ``WaiterQueue`` and call ``notify(mask)`` when they become readable, writable, hit
an error or hang up; whoever waits (a greenlet in the adapter, select/poll emulation, the samples)
registers a callback with the events it cares about. The mask values are Linux's poll(2) bits so
the adapter can hand them to ``select.poll`` users unchanged.
"""

from __future__ import annotations

import enum
from typing import Callable


class EventMask(enum.IntFlag):
    IN = 0x01       # readable (POLLIN)
    PRI = 0x02      # urgent data (POLLPRI)
    OUT = 0x04      # writable (POLLOUT)
    ERR = 0x08      # error pending (POLLERR)
    HUP = 0x10      # hung up (POLLHUP)
    RDHUP = 0x2000  # peer closed its writing side (POLLRDHUP)

    ALL = IN | PRI | OUT | ERR | HUP | RDHUP


Callback = Callable[[EventMask], None]


class WaiterEntry:
    __slots__ = ("callback", "mask", "bits")

    def __init__(self, callback: Callback, mask: EventMask) -> None:
        self.callback = callback
        self.mask = mask
        self.bits = int(mask)   # what notify() tests: int arithmetic, not IntFlag's (microseconds a call)


class WaiterQueue:
    """Callbacks interested in an endpoint's readiness; notified in registration order."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[WaiterEntry] = []

    def register(self, callback: Callback, mask: EventMask) -> WaiterEntry:
        entry = WaiterEntry(callback, mask)
        self._entries.append(entry)
        return entry

    def unregister(self, entry: WaiterEntry) -> None:
        try:
            self._entries.remove(entry)
        except ValueError:
            pass

    def notify(self, mask: EventMask) -> None:
        """Tell every waiter whose interest overlaps ``mask``; callbacks may (un)register freely."""
        if not self._entries:
            return
        bits = int(mask)
        for entry in tuple(self._entries):
            wanted = entry.bits
            if wanted & bits:
                # The common case (everything notified is wanted) hands on ``mask`` itself.
                entry.callback(mask if bits & wanted == bits else EventMask(bits & wanted))

    def events(self) -> EventMask:
        """Union of what the registered waiters care about."""
        out = EventMask(0)
        for entry in self._entries:
            out |= entry.mask
        return out

    def __len__(self) -> int:
        return len(self._entries)
