"""Fragment reassembly with bounded memory, and fragmentation, shared by IPv4 and IPv6.

This is netstack's ``fragmentation`` package with Linux's ``ipfrag_*`` limits. The reassembler
never trusts the sender: every datagram in progress costs the real size of the buffers it keeps
alive, all of them together are held under ``high_threshold`` by evicting the oldest, and each
expires ``timeout`` seconds after its first fragment. Fragments are kept by reference (the link's
receive buffers) in a list sorted by offset, so a datagram costs O(fragments) work plus the one
copy that joins the payload at the end.

Policy on a fragment that contradicts what a datagram already holds:

- An exact duplicate (same offset, same length) of a fragment held is ignored and the first copy
  kept, as netstack does (RFC 5722 errata 3089: "duplicates ... should be ignored"). Linux also
  ignores a fragment lying inside one held; here that is an overlap.
- Any other overlap abandons the datagram (RFC 5722, RFC 8200 §4.5; Linux does the same for
  IPv4), and so does a fragment that disagrees on where the datagram ends or one too many
  fragments. An abandoned datagram keeps only a small tombstone until its timeout, so its later
  fragments are discarded rather than starting a new reassembly that can only be wrong, and its
  expiry sends no ICMP error (RFC 8200 §4.5).
- A fragment that is invalid on its own (empty, a non-last one not a multiple of 8 bytes long,
  ending beyond ``max_payload``) is dropped without touching the datagram, as Linux's IPv6 does:
  it may be forged, and the caller may owe the sender an ICMP parameter problem for it.
"""

from __future__ import annotations

import enum
import sys
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Hashable
from operator import itemgetter
from typing import Any, Generic, TypeVar

from ..header.checksum import complete_checksum
from ..stack.clock import TimerQueue
from ..stack.packet_buffer import PacketBuffer
from ..tcpip.stats import ReassemblyStats, StatCounter

# Bytes of bookkeeping per datagram (its entry in the table, its object and fragment list, the
# caller's key) and per fragment besides its buffers (a tuple, a list slot), measured with
# tracemalloc on CPython 3.11 to 3.13 with IPv6 keys. Charging them makes tombstones and floods of
# tiny fragments count against the memory bound too.
DATAGRAM_OVERHEAD = 440
FRAGMENT_OVERHEAD = 64

Key = TypeVar("Key", bound=Hashable)   # what identifies a datagram: (src, dst, ident, protocol) for IPv4


class ReassemblyResult(enum.Enum):
    """What ``Reassembler.process`` did with a fragment."""

    COMPLETE = "complete"                        # the datagram is whole: its payload is returned
    PENDING = "pending"                          # held, waiting for the rest
    DUPLICATE = "duplicate"                      # an exact copy of a fragment held: ignored
    DROPPED_BAD_LENGTH = "bad length"            # invalid on its own; the datagram is untouched
    DROPPED_INCONSISTENT = "inconsistent end"    # disagrees on the datagram's end: abandoned
    DROPPED_OVERLAP = "overlap"                  # overlaps a fragment held: datagram abandoned
    DROPPED_TOO_MANY_FRAGMENTS = "too many fragments"  # datagram abandoned
    DROPPED_MEMORY = "memory pressure"           # the datagram was evicted to stay under the limit
    DROPPED_ABANDONED = "abandoned"              # its datagram was abandoned earlier

    @property
    def dropped(self) -> bool:
        """A drop for the caller to count (not DUPLICATE: that fragment's data is held already)."""
        return self not in _KEPT

    def count(self, ip_stats: Any) -> None:
        """Count a fragment that did not complete its datagram as the IP counters say: a malformed one, or
        a datagram given up (held and duplicate ones are not counted)."""
        if self is ReassemblyResult.DROPPED_BAD_LENGTH:
            ip_stats.malformed_fragments_received.increment()
        elif self.dropped:
            ip_stats.reassembly_failures.increment()


_KEPT = frozenset((ReassemblyResult.COMPLETE, ReassemblyResult.PENDING, ReassemblyResult.DUPLICATE))
_START = itemgetter(0)


def _footprint(buf: memoryview | bytes) -> int:
    """Bytes a held buffer keeps alive: a view pins the whole object it points into (Linux's truesize)."""
    if type(buf) is memoryview:
        return sys.getsizeof(buf) + sys.getsizeof(buf.obj)
    return sys.getsizeof(buf)


class _Datagram:
    """One datagram being reassembled; ``fragments`` is None once it is abandoned (a tombstone)."""

    __slots__ = ("fragments", "received", "end", "first_header", "deadline", "cost", "largest")

    def __init__(self, deadline: float) -> None:
        # (offset, end, payload), sorted by offset, never overlapping: ends are sorted too.
        self.fragments: list[tuple[int, int, memoryview | bytes]] | None = []
        self.received = 0                      # payload bytes held
        self.end: int | None = None            # payload length, once the last fragment has come
        self.first_header: bytes | None = None
        self.deadline = deadline
        self.cost = DATAGRAM_OVERHEAD          # what this datagram adds to memory_used
        self.largest = 0                       # the largest fragment's size as it came (Linux's frag_max_size)


class Reassembler(Generic[Key]):
    """Reassembles fragmented datagrams with bounded memory (netstack's fragmentation, Linux's limits).

    Datagrams are kept in arrival order of their first fragment. As all expire ``timeout`` after
    that, arrival order is expiry order, so one timer at the oldest deadline serves them all (as
    netstack's release job): the timer queue holds one entry however many datagrams a hostile
    sender opens, and completing a datagram costs no timer work. The same order gives the oldest
    datagrams to evict when memory runs over ``high_threshold``.
    """

    def __init__(self, timers: TimerQueue, *, timeout: float = 30.0, high_threshold: int = 4 << 20,
                 low_threshold: int = 3 << 20, max_fragments_per_datagram: int = 64, max_payload: int = 65535,
                 on_timeout: Callable[[Key, bytes | None], None] | None = None,
                 stats: ReassemblyStats | None = None) -> None:
        """``max_payload``: the largest reassembled payload; IPv4 passes 65535 - 20 (netstack's
        IPv4MaximumPayloadSize). ``stats``: a group in the stack's tree to count into, if it has one.
        ``on_timeout(key, first_fragment)`` is called for every datagram
        that expires incomplete (not for abandoned ones), with the offset-0 fragment as received
        (its ``first_header`` then payload) or None if it never came: what an ICMP time exceeded
        (fragment reassembly time exceeded) quotes, and the RFC 792/RFC 8200 §4.5 condition for
        sending one.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if not 0 <= low_threshold <= high_threshold:
            raise ValueError("need 0 <= low_threshold <= high_threshold")
        if max_fragments_per_datagram < 2:
            raise ValueError("a fragmented datagram has at least 2 fragments")
        self.timeout = timeout
        self.completed_largest = 0      # the largest fragment of the datagram process() last completed
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.max_fragments_per_datagram = max_fragments_per_datagram
        self.max_payload = max_payload
        self.on_timeout = on_timeout
        self.memory_used = 0
        self.stats = stats if stats is not None else ReassemblyStats()
        self._clock = timers.clock
        self._datagrams: OrderedDict[Key, _Datagram] = OrderedDict()
        self._timer = timers.timer(self._expire)

    def __len__(self) -> int:
        """Datagrams in progress (abandoned ones included until they expire)."""
        return len(self._datagrams)

    def process(self, key: Key, offset: int, more: bool, payload: memoryview | bytes,
                first_header: bytes | memoryview | None = None, size: int = 0
                ) -> tuple[ReassemblyResult, bytes | memoryview | None]:
        """Add one fragment: ``payload`` at byte ``offset`` (a multiple of 8) of the datagram ``key``.

        ``payload`` is kept by reference until the datagram completes, so it must not change.
        ``first_header`` is the network header of an offset-0 fragment, kept for ``on_timeout``. ``size``:
        the fragment's packet as it came; the largest of a completed datagram's is ``completed_largest``
        then (IP_RECVFRAGSIZE's). Returns the status and, for COMPLETE, the datagram's payload. A fragment
        with offset 0 and no more fragments is a whole datagram by itself and is returned as it is, apart
        from any reassembly in progress for the same key (RFC 6946 atomic fragments).
        """
        if not offset and not more:
            return ReassemblyResult.COMPLETE, payload
        length = len(payload)
        end = offset + length
        if not length or (more and length & 7) or end > self.max_payload:
            self.stats.malformed.value += 1
            return ReassemblyResult.DROPPED_BAD_LENGTH, None

        datagrams = self._datagrams
        dg = datagrams.get(key)
        if dg is None:
            dg = datagrams[key] = _Datagram(self._clock.now() + self.timeout)
            self.memory_used += DATAGRAM_OVERHEAD
            if not self._timer.armed:
                self._timer.reset_at(dg.deadline)
        frags = dg.fragments
        if frags is None:
            self.stats.discarded.value += 1
            return ReassemblyResult.DROPPED_ABANDONED, None

        # Where the datagram ends: the last fragment says so, and nothing may lie beyond it.
        if more:
            if dg.end is not None and end > dg.end:
                return self._abandon(dg, self.stats.inconsistent, ReassemblyResult.DROPPED_INCONSISTENT)
        elif dg.end is None:
            if frags and frags[-1][1] > end:
                return self._abandon(dg, self.stats.inconsistent, ReassemblyResult.DROPPED_INCONSISTENT)
        elif dg.end != end:
            return self._abandon(dg, self.stats.inconsistent, ReassemblyResult.DROPPED_INCONSISTENT)

        # Where the fragment goes: appended in the common in-order case, else found by bisection.
        if not frags or offset >= frags[-1][1]:
            index = len(frags)
        else:
            index = bisect_left(frags, offset, key=_START)    # the first one starting at or after offset
            if index < len(frags) and frags[index][0] == offset and frags[index][1] == end:
                self.stats.duplicates.value += 1
                return ReassemblyResult.DUPLICATE, None
            if (index and frags[index - 1][1] > offset) or (index < len(frags) and frags[index][0] < end):
                return self._abandon(dg, self.stats.overlaps, ReassemblyResult.DROPPED_OVERLAP)
        if len(frags) >= self.max_fragments_per_datagram:
            return self._abandon(dg, self.stats.too_many_fragments, ReassemblyResult.DROPPED_TOO_MANY_FRAGMENTS)

        frags.insert(index, (offset, end, payload))
        if size > dg.largest:
            dg.largest = size
        if not more:
            dg.end = end
        received = dg.received = dg.received + length
        cost = FRAGMENT_OVERHEAD + _footprint(payload)
        if not offset and first_header is not None:
            dg.first_header = bytes(first_header)
            cost += sys.getsizeof(dg.first_header)
        dg.cost += cost
        self.memory_used += cost

        if received == dg.end:
            self._remove(key, dg)
            self.stats.completed.value += 1
            self.completed_largest = dg.largest
            return ReassemblyResult.COMPLETE, b"".join([f[2] for f in frags])
        if self.memory_used > self.high_threshold:
            self._evict()
            if key not in datagrams:
                return ReassemblyResult.DROPPED_MEMORY, None
        return ReassemblyResult.PENDING, None

    def _abandon(self, dg: _Datagram, counter: StatCounter,
                 status: ReassemblyResult) -> tuple[ReassemblyResult, None]:
        """Free the datagram's fragments and keep it as a tombstone until it expires."""
        counter.value += 1
        self.memory_used -= dg.cost - DATAGRAM_OVERHEAD
        dg.cost = DATAGRAM_OVERHEAD
        dg.fragments = None
        dg.first_header = None
        return status, None

    def _remove(self, key: Key, dg: _Datagram) -> None:
        del self._datagrams[key]
        self.memory_used -= dg.cost
        if not self._datagrams:
            self._timer.cancel()

    def _evict(self) -> None:
        """Drop the oldest datagrams until memory is back under the low threshold (Linux's ipfrag_low_thresh)."""
        datagrams = self._datagrams
        evicted = 0
        while datagrams and self.memory_used > self.low_threshold:
            _, dg = datagrams.popitem(last=False)
            self.memory_used -= dg.cost
            evicted += 1
        self.stats.evicted.value += evicted
        if not datagrams:
            self._timer.cancel()

    def _expire(self) -> None:
        """The timer: drop every datagram past its deadline, then tell the caller about the incomplete ones.

        The table and the timer are settled before ``on_timeout`` runs, so it may send packets that
        come straight back into ``process``.
        """
        datagrams = self._datagrams
        now = self._clock.now()
        expired: list[tuple[Key, bytes | None]] = []
        while datagrams:
            key, dg = next(iter(datagrams.items()))
            if dg.deadline > now:
                self._timer.reset_at(dg.deadline)
                break
            del datagrams[key]
            self.memory_used -= dg.cost
            frags = dg.fragments
            if frags is not None:
                self.stats.timeouts.value += 1
                first = None
                if frags and frags[0][0] == 0:
                    first = b"".join((dg.first_header or b"", frags[0][2]))
                expired.append((key, first))
        if self.on_timeout is not None:
            for key, first in expired:
                self.on_timeout(key, first)


def fragment(payload_length: int, header_room: int, mtu: int) -> list[tuple[int, int, bool]]:
    """How to cut a payload into fragments that fit ``mtu``: a list of (offset, length, more).

    ``header_room`` is what each fragment carries in front of its share of the payload (IPv4: its
    header; IPv6: 40 + the unfragmentable part + 8 for the fragment header). Every fragment but the
    last is as large as fits with a length that is a multiple of 8, so offsets are too (RFC 791,
    RFC 8200 §4.5). Raises ValueError if ``mtu`` leaves no room for 8 bytes of payload.
    """
    step = (mtu - header_room) & ~7
    if step <= 0:
        raise ValueError(f"MTU {mtu} leaves no room for 8 bytes of payload after {header_room} bytes of header")
    if payload_length < 0:
        raise ValueError("negative payload length")
    last = (payload_length - 1) // step * step if payload_length else 0
    cuts = [(offset, step, True) for offset in range(0, last, step)]
    cuts.append((last, payload_length - last, False))
    return cuts


def split_packet(pkt: PacketBuffer, header_room: int, mtu: int, max_payload: int,
                 reserve: int) -> list[tuple[PacketBuffer, int, bool]]:
    """The datagram in ``pkt`` (transport header and payload) cut to fit ``mtu``: a PacketBuffer per
    fragment, each a view of one copy of the datagram with ``reserve`` bytes of header room, and its
    offset and more-fragments flag. ValueError if the datagram is too long or the MTU too small. A
    checksum left partial for the device is completed first: no device completes one across fragments."""
    datagram: bytes | bytearray = pkt.to_bytes()
    if pkt.csum_offset:
        datagram = bytearray(datagram)
        complete_checksum(memoryview(datagram), 0, pkt.csum_offset)
    body = memoryview(datagram)
    if len(body) > max_payload:
        raise ValueError(f"datagram payload longer than {max_payload} bytes")
    pieces = []
    for offset, length, more in fragment(len(body), header_room, mtu):
        piece = PacketBuffer(reserve, body[offset:offset + length])
        piece.transport_protocol = pkt.transport_protocol
        pieces.append((piece, offset, more))
    return pieces
