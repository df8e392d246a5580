"""Source filters of multicast group memberships (RFC 3376 §3, RFC 3810 §4; the RFC 3678 socket API).

A member of a group listens to the sources it names (INCLUDE mode) or to all but the ones it names
(EXCLUDE mode; a plain join is EXCLUDE with none). A NIC merges its members' filters into the
interface state it reports to routers and receives by: EXCLUDE if any member excludes, of the sources
every excluding member excludes and no including member includes; else INCLUDE of every included source.
IGMPv3 and MLDv2 report that state, and each change of it, with the same six record types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..header.igmp import (ALLOW_NEW_SOURCES, BLOCK_OLD_SOURCES, CHANGE_TO_EXCLUDE, CHANGE_TO_INCLUDE,
                           MODE_IS_EXCLUDE, MODE_IS_INCLUDE)

if TYPE_CHECKING:
    from .clock import Timer

MCAST_EXCLUDE, MCAST_INCLUDE = 0, 1     # filter modes, as Linux's <linux/in.h> numbers them
MAX_SOURCES = 10                        # sources per socket membership (Linux's igmp_max_msf, mld_max_msf)

FilterState = tuple[int, frozenset[bytes]]
NO_STATE: FilterState = (MCAST_INCLUDE, frozenset())   # INCLUDE of nothing: not a member
Record = tuple[int, tuple[bytes, ...]]


class GroupFilter:
    """One group on one NIC: its members (sockets, and the stack's own joins) and their filters merged
    (Linux's ip_mc_list: members per mode, members per source and mode)."""

    __slots__ = ("members", "excluding", "included", "excluded")

    def __init__(self) -> None:
        self.members = 0
        self.excluding = 0                      # members in EXCLUDE mode
        self.included: Counter[bytes] = Counter()   # source -> INCLUDE-mode members naming it
        self.excluded: Counter[bytes] = Counter()   # source -> EXCLUDE-mode members naming it

    def add(self, mode: int, sources: Iterable[bytes]) -> None:
        self.members += 1
        if mode == MCAST_EXCLUDE:
            self.excluding += 1
            self.excluded.update(sources)
        else:
            self.included.update(sources)

    def remove(self, mode: int, sources: Iterable[bytes]) -> None:
        self.members -= 1
        if mode == MCAST_EXCLUDE:
            self.excluding -= 1
            self.excluded.subtract(sources)
            self.excluded = +self.excluded
        else:
            self.included.subtract(sources)
            self.included = +self.included

    def state(self) -> FilterState:
        """The interface state (RFC 3376 §3.2)."""
        if self.excluding:
            return MCAST_EXCLUDE, frozenset(s for s, n in self.excluded.items()
                                            if n == self.excluding and s not in self.included)
        return MCAST_INCLUDE, frozenset(self.included)

    def allows(self, source: bytes) -> bool:
        """Whether the NIC receives the group's packets from ``source`` (Linux's ip_check_mc_rcu)."""
        return source in self.included or self.excluding != self.excluded.get(source, 0)


class PendingChange:
    """A state change still to be (re)transmitted for one group, ``left`` more times: from ``base``, the state
    before it, to ``reported``, the state its transmissions tell. A newer change replaces it, reported from
    there (RFC 3376 §5.1, RFC 3810 §6.1: the router may have heard the first transmission already)."""

    __slots__ = ("base", "left", "reported", "timer")

    def __init__(self, base: FilterState, left: int, timer: Timer | None = None) -> None:
        self.base = self.reported = base
        self.left = left
        self.timer = timer


def socket_allows(mode: int, sources: frozenset[bytes] | set[bytes], source: bytes) -> bool:
    """A member socket's own filter (Linux's ip_mc_sf_allow)."""
    return (source in sources) == (mode == MCAST_INCLUDE)


def state_change_records(old: FilterState, new: FilterState) -> list[Record]:
    """RFC 3376 §5.1 / RFC 3810 §6.1: what tells a router the interface state went from ``old`` to ``new``."""
    (old_mode, old_sources), (new_mode, new_sources) = old, new
    if old_mode != new_mode:
        return [(CHANGE_TO_EXCLUDE if new_mode == MCAST_EXCLUDE else CHANGE_TO_INCLUDE, tuple(sorted(new_sources)))]
    allowed, blocked = new_sources - old_sources, old_sources - new_sources
    if new_mode == MCAST_EXCLUDE:
        allowed, blocked = blocked, allowed
    return [(kind, tuple(sorted(sources))) for kind, sources in ((ALLOW_NEW_SOURCES, allowed),
                                                                 (BLOCK_OLD_SOURCES, blocked)) if sources]


def current_state_record(state: FilterState, queried: set[bytes] | None = None) -> Record | None:
    """RFC 3376 §5.2 / RFC 3810 §6.3: the answer to a query about the group (``queried``: its sources, for a
    group-and-source-specific one), or None when there is nothing to report."""
    mode, sources = state
    if queried is None:
        return (MODE_IS_EXCLUDE if mode == MCAST_EXCLUDE else MODE_IS_INCLUDE), tuple(sorted(sources))
    asked = queried - sources if mode == MCAST_EXCLUDE else queried & sources
    return (MODE_IS_INCLUDE, tuple(sorted(asked))) if asked else None
