"""Connection tracking for the filter table's ``state`` condition (Linux's nf_conntrack, netstack's
conntrack): which connection a packet belongs to, and so whether it is NEW, ESTABLISHED (of a
connection that has seen traffic both ways, or in the replying direction), RELATED (an ICMP error
about a tracked connection) or INVALID (an ICMP error too short to say what it is about).

A connection is its first packet's addresses and ports (an ICMP echo's identifier stands for both
ports); a reply is a packet with them swapped. An entry is made for a packet the table accepted,
and lasts as Linux's timeouts say (``TIMEOUTS``): a TCP connection 5 days once established, 2
minutes from a FIN, 10 seconds from a RST; a UDP flow 30 seconds, 2 minutes once replied; ICMP
30 seconds. Expired entries are dropped as they are met and by a sweep at most once a second, so
the table holds only connections alive within their timeout.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable

from ..tcpip import ICMPV4_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER, TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER

_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
_ECHO = {ICMPV4_PROTOCOL_NUMBER: (8, 0), ICMPV6_PROTOCOL_NUMBER: (128, 129)}       # request, reply
_ERRORS = {ICMPV4_PROTOCOL_NUMBER: frozenset((3, 4, 5, 11, 12)), ICMPV6_PROTOCOL_NUMBER: frozenset((1, 2, 3, 4))}
PORTED = frozenset((TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, 136))     # TCP, UDP, UDP-Lite: ports first

# Seconds (Linux's nf_conntrack_*_timeout defaults).
TIMEOUTS = {"tcp_syn": 120.0, "tcp_established": 432000.0, "tcp_closing": 120.0, "tcp_reset": 10.0,
            "udp": 30.0, "udp_replied": 120.0, "icmp": 30.0, "other": 600.0}
SWEEP_INTERVAL = 1.0
MAX_CONNECTIONS = 65536     # Linux's nf_conntrack_max on a small machine
_EARLY_DROP_SCAN = 64       # entries looked at, oldest first, for one never replied to make room


class State(enum.Enum):
    NEW = "NEW"
    ESTABLISHED = "ESTABLISHED"
    RELATED = "RELATED"
    INVALID = "INVALID"


Tuple = tuple[int, bytes, int, bytes, int]      # protocol, source, source port, destination, destination port


class Entry:
    """One connection: its first packet's tuple and the tuple its replies carry — that one reversed,
    unless the nat table translated it (``destination``, ``source``: what the original direction's
    become)."""

    __slots__ = ("original", "reply", "aliases", "replied", "expires", "closing", "destination", "source", "decided")

    def __init__(self, original: Tuple) -> None:
        self.original = original
        self.reply = reverse(original)
        self.aliases: tuple[Tuple, ...] = ()    # other tuples it is known by (the nat table's)
        self.replied = False
        self.expires = 0.0
        self.closing = False
        self.destination: tuple[bytes, int] | None = None
        self.source: tuple[bytes, int] | None = None
        self.decided = 0        # the nat table's: which translations (NAT_DESTINATION, NAT_SOURCE) are chosen


class ConnTrack:
    """The connections of one IP version, for ``now`` (seconds, monotonic)."""

    def __init__(self, now: Callable[[], float], max_connections: int = MAX_CONNECTIONS) -> None:
        self._now = now
        self._entries: dict[Tuple, Entry] = {}     # by original and by reply tuple (and aliases)
        self._count = 0
        self._next_sweep = 0.0
        self.max_connections = max_connections
        self.refused = 0        # connections not tracked for want of room (Linux's "table full")

    def __len__(self) -> int:
        """Connections tracked (expired ones included until they are swept)."""
        return self._count

    def state(self, protocol: int, source: bytes, destination: bytes, head: bytes) -> State:
        """What the packet is to the connections known (``head``: its transport header on)."""
        key = packet_tuple(protocol, source, destination, head)
        if key is not None:
            entry = self._live(key)
            if entry is None:
                return State.NEW
            return State.ESTABLISHED if entry.replied or key != entry.original else State.NEW
        if is_error(protocol, head):
            quoted = quoted_tuple(protocol, head)
            if quoted is None:
                return State.INVALID
            return State.RELATED if self._live(quoted) is not None else State.INVALID
        return State.NEW

    def accepted(self, protocol: int, source: bytes, destination: bytes, head: bytes) -> None:
        """The table let the packet through: track its connection (made, replied, closing)."""
        key = packet_tuple(protocol, source, destination, head)
        if key is not None:
            entry = self.lookup(key) or self.track(key)
            if entry is not None:
                self.refresh(entry, key, head)

    def lookup(self, key: Tuple) -> Entry | None:
        """The live connection whose original or reply tuple ``key`` is."""
        return self._live(key)

    def track(self, key: Tuple) -> Entry | None:
        """A new connection, ``key`` its original tuple; None if the table is full of connections that have
        been replied to (as Linux's early drop, one never replied to makes room: a flood of SYNs cannot
        push out the connections in use)."""
        now = self._now()
        if now >= self._next_sweep:
            self._sweep(now)
        if self._count >= self.max_connections and not self._early_drop():
            self.refused += 1
            return None
        entry = Entry(key)
        self._entries[key] = self._entries[entry.reply] = entry
        self._count += 1
        return entry

    def _early_drop(self) -> bool:
        for entry in itertools.islice(self._entries.values(), _EARLY_DROP_SCAN):
            if not entry.replied:
                self._forget(entry)
                return True
        return False

    def retuple(self, entry: Entry, reply: Tuple, aliases: tuple[Tuple, ...] = ()) -> None:
        """The connection's replies will carry ``reply`` (the nat table translated it), and it is known by
        ``aliases`` too (where no other connection is)."""
        self._unindex(entry)
        entry.reply, entry.aliases = reply, aliases
        entries = self._entries
        for key in (entry.original, reply, *aliases):
            entries.setdefault(key, entry)

    def refresh(self, entry: Entry, key: Tuple, head: bytes) -> None:
        """A packet of the connection (its tuple ``key``) went by: replied, closing, its timeout anew."""
        if key != entry.original:
            entry.replied = True
        entry.expires = self._now() + self._timeout(entry, key[0], head)

    def _timeout(self, entry: Entry, protocol: int, head: bytes) -> float:
        if protocol == TCP_PROTOCOL_NUMBER:
            flags = head[13] if len(head) > 13 else 0
            if flags & _RST:
                return TIMEOUTS["tcp_reset"]
            if flags & _FIN or entry.closing:
                entry.closing = True
                return TIMEOUTS["tcp_closing"]
            return TIMEOUTS["tcp_established"] if entry.replied else TIMEOUTS["tcp_syn"]
        if protocol in PORTED:
            return TIMEOUTS["udp_replied"] if entry.replied else TIMEOUTS["udp"]
        return TIMEOUTS["icmp"] if protocol in _ECHO else TIMEOUTS["other"]

    def _live(self, key: Tuple) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= self._now():
            self._forget(entry)
            return None
        return entry

    def _forget(self, entry: Entry) -> None:
        if self._entries.get(entry.original) is entry:
            self._count -= 1
        self._unindex(entry)

    def _unindex(self, entry: Entry) -> None:
        entries = self._entries
        for key in (entry.original, entry.reply, *entry.aliases):
            if entries.get(key) is entry:
                del entries[key]

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_INTERVAL
        for entry in [e for key, e in self._entries.items() if key == e.original and e.expires <= now]:
            self._forget(entry)


def packet_tuple(protocol: int, source: bytes, destination: bytes, head: bytes) -> Tuple | None:
    """The connection tuple of a packet that belongs to one (ports, or an echo's identifier)."""
    if protocol in PORTED:
        if len(head) < 4:
            return None
        return (protocol, source, head[0] << 8 | head[1], destination, head[2] << 8 | head[3])
    echo = _ECHO.get(protocol)
    if echo is not None and len(head) >= 6 and head[0] in echo:
        ident = head[4] << 8 | head[5]
        return (protocol, source, ident, destination, ident)
    return None


def reverse(key: Tuple) -> Tuple:
    protocol, source, source_port, destination, destination_port = key
    return (protocol, destination, destination_port, source, source_port)


def is_error(protocol: int, head: bytes) -> bool:
    """Is this an ICMP(v6) error, which quotes a packet of some connection?"""
    return protocol in _ERRORS and bool(head) and head[0] in _ERRORS[protocol]


def quoted_tuple(protocol: int, head: bytes) -> Tuple | None:
    """The tuple of the packet an ICMP error quotes (after its 8-byte header), as it was sent."""
    quote = head[8:]
    if protocol == ICMPV4_PROTOCOL_NUMBER:
        if len(quote) < 20 or quote[0] >> 4 != 4:
            return None
        length = (quote[0] & 0x0F) * 4
        inner, source, destination = quote[9], bytes(quote[12:16]), bytes(quote[16:20])
    else:
        if len(quote) < 40 or quote[0] >> 4 != 6:
            return None
        length = 40
        inner, source, destination = quote[6], bytes(quote[8:24]), bytes(quote[24:40])
    return packet_tuple(inner, source, destination, bytes(quote[length:length + 8]))
