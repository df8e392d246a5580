"""Neighbour cache with Neighbour Unreachability Detection (RFC 4861 §7.3), shared by ARP and NDP.

ARP (RFC 826) has no NUD of its own; Linux runs the same state machine for both protocols and so
does netsock. The protocol-specific part is the ``LinkAddressResolver``: how to ask for an address
(ARP request or Neighbour Solicitation) and which addresses map to link addresses without asking
(broadcast, multicast).

States: INCOMPLETE (asked, packets queued) -> REACHABLE (confirmed) -> STALE (confirmation aged
out; still used) -> DELAY (used while stale: give upper layers a moment to confirm) -> PROBE
(unicast re-asks) -> gone. An entry that never answers is dropped with its queued packets counted.
"""

from __future__ import annotations

import enum
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..tcpip import Error, address_str
from .packet_buffer import PacketBuffer

if TYPE_CHECKING:
    from ..tcpip.stats import ARPStats
    from .clock import Timer, TimerQueue


class LinkAddressResolver(Protocol):
    def link_address_request(self, target: bytes, local: bytes, remote_link_address: bytes) -> None:
        """Send a request for ``target``; ``remote_link_address`` is b'' to broadcast/multicast it."""

    def resolve_static_address(self, addr: bytes) -> bytes | None:
        """The link address for addresses that need no request (broadcast, multicast), else None."""


class NeighborState(enum.Enum):
    INCOMPLETE = "incomplete"
    REACHABLE = "reachable"
    STALE = "stale"
    DELAY = "delay"
    PROBE = "probe"
    STATIC = "static"


@dataclass
class NUDConfig:
    """Linux's defaults (net.ipv4.neigh.default.*)."""

    base_reachable_time: float = 30.0
    retransmit_timer: float = 1.0
    delay_first_probe_time: float = 5.0
    max_multicast_probes: int = 3
    max_unicast_probes: int = 3
    max_pending_packets: int = 64     # per unresolved neighbour
    max_entries: int = 1024


class NeighborEntry:
    __slots__ = ("addr", "link_address", "state", "pending", "probes", "timer", "local")

    def __init__(self, addr: bytes, state: NeighborState, timer: Timer) -> None:
        self.addr = addr
        self.link_address = b""
        self.state = state
        self.pending: list[tuple[int, PacketBuffer]] = []
        self.probes = 0
        self.timer = timer
        self.local = b""    # source address to ask from

    def __repr__(self) -> str:
        return f"<Neighbor {address_str(self.addr)} {self.link_address.hex(':')} {self.state.value}>"


class NeighborCache:
    """The neighbours of one NIC for one network protocol."""

    def __init__(self, nic: object, resolver: LinkAddressResolver, timers: TimerQueue, stats: ARPStats,
                 config: NUDConfig | None = None) -> None:
        self._nic = nic
        self._resolver = resolver
        self._timers = timers
        self._stats = stats
        self.config = config or NUDConfig()
        self._entries: OrderedDict[bytes, NeighborEntry] = OrderedDict()

    # --- sending ----------------------------------------------------------------------------------

    def send(self, next_hop: bytes, local: bytes, protocol: int, pkt: PacketBuffer) -> None:
        """Send ``pkt`` to ``next_hop`` now if its link address is known, else queue it and ask."""
        static = self._resolver.resolve_static_address(next_hop)
        if static is not None:
            self._nic.write_to_link(static, protocol, pkt)
            return
        entry = self._entries.get(next_hop)
        if entry is None:
            entry = self._new_entry(next_hop, NeighborState.INCOMPLETE)
            entry.local = local
            pkt.own_payload()       # held past the write: not in memory its writer may change
            entry.pending.append((protocol, pkt))
            self._solicit(entry)
            return
        if entry.state is NeighborState.INCOMPLETE:
            if len(entry.pending) >= self.config.max_pending_packets:
                entry.pending.pop(0)
                self._stats.pending_packets_dropped.increment()
            pkt.own_payload()
            entry.pending.append((protocol, pkt))
            return
        if entry.state is NeighborState.STALE:
            entry.state = NeighborState.DELAY
            entry.local = local
            entry.timer.reset(self.config.delay_first_probe_time)
        self._nic.write_to_link(entry.link_address, protocol, pkt)

    # --- what the resolver learns ----------------------------------------------------------------

    def handle_confirmation(self, addr: bytes, link_address: bytes, solicited: bool = True) -> None:
        """A reply (ARP reply, solicited NA): the neighbour is reachable at ``link_address``."""
        entry = self._entries.get(addr)
        if entry is None or entry.state is NeighborState.STATIC:
            return
        changed = entry.link_address != link_address
        entry.link_address = link_address
        if solicited:
            self._set_reachable(entry)
        elif changed or entry.state is NeighborState.INCOMPLETE:
            entry.state = NeighborState.STALE
            entry.timer.cancel()
        self._flush(entry)

    def handle_probe(self, addr: bytes, link_address: bytes) -> None:
        """A request from ``addr``: remember its link address as STALE, as RFC 4861 §7.2.3 says."""
        entry = self._entries.get(addr)
        if entry is None:
            entry = self._new_entry(addr, NeighborState.STALE)
            entry.link_address = link_address
            return
        if entry.state is NeighborState.STATIC:
            return
        if entry.state is NeighborState.INCOMPLETE or entry.link_address != link_address:
            entry.link_address = link_address
            entry.state = NeighborState.STALE
            entry.timer.cancel()
            self._flush(entry)

    def confirm_reachability(self, addr: bytes) -> None:
        """Upper-layer proof of two-way traffic (e.g. new TCP ACKs), saving a probe."""
        entry = self._entries.get(addr)
        if entry is not None and entry.link_address and entry.state is not NeighborState.STATIC:
            self._set_reachable(entry)

    # --- administration ----------------------------------------------------------------------------

    def add_static(self, addr: bytes, link_address: bytes) -> None:
        self.remove(addr)
        entry = self._new_entry(addr, NeighborState.STATIC)
        entry.link_address = link_address

    def remove(self, addr: bytes) -> None:
        entry = self._entries.pop(addr, None)
        if entry is not None:
            entry.timer.close()     # its heap entry may outlive it: it must not keep this cache alive
            self._drop_pending(entry)

    def clear(self) -> None:
        for addr in list(self._entries):
            self.remove(addr)

    def entries(self) -> list[NeighborEntry]:
        return list(self._entries.values())

    def get(self, addr: bytes) -> NeighborEntry | None:
        return self._entries.get(addr)

    def __len__(self) -> int:
        return len(self._entries)

    # --- internals ----------------------------------------------------------------------------------

    def _new_entry(self, addr: bytes, state: NeighborState) -> NeighborEntry:
        if len(self._entries) >= self.config.max_entries:
            self._evict()
        entry = NeighborEntry(bytes(addr), state, None)  # type: ignore[arg-type]
        entry.timer = self._timers.timer(self._on_timer, entry)
        self._entries[entry.addr] = entry
        return entry

    def _evict(self) -> None:
        """Make room: drop the oldest entry that is not static, preferring ones not being resolved."""
        victims = [e for e in self._entries.values() if e.state is not NeighborState.STATIC]
        settled = [e for e in victims if e.state is not NeighborState.INCOMPLETE]
        victim = (settled or victims or [None])[0]
        if victim is not None:
            self.remove(victim.addr)

    def _set_reachable(self, entry: NeighborEntry) -> None:
        entry.state = NeighborState.REACHABLE
        entry.probes = 0
        base = self.config.base_reachable_time
        entry.timer.reset(random.uniform(0.5 * base, 1.5 * base))  # RFC 4861 §6.3.2 jitter

    def _solicit(self, entry: NeighborEntry) -> None:
        entry.probes += 1
        unicast = entry.link_address if entry.state is NeighborState.PROBE else b""
        self._resolver.link_address_request(entry.addr, entry.local, unicast)
        entry.timer.reset(self.config.retransmit_timer)

    def _on_timer(self, entry: NeighborEntry) -> None:
        state = entry.state
        if state is NeighborState.INCOMPLETE:
            if entry.probes >= self.config.max_multicast_probes:
                self._stats.resolution_failures.increment()
                self.remove(entry.addr)
            else:
                self._solicit(entry)
        elif state is NeighborState.REACHABLE:
            entry.state = NeighborState.STALE
        elif state is NeighborState.DELAY:
            entry.state = NeighborState.PROBE
            entry.probes = 0
            self._solicit(entry)
        elif state is NeighborState.PROBE:
            if entry.probes >= self.config.max_unicast_probes:
                self.remove(entry.addr)
            else:
                self._solicit(entry)

    def _flush(self, entry: NeighborEntry) -> None:
        pending, entry.pending = entry.pending, []
        for protocol, pkt in pending:
            try:
                self._nic.write_to_link(entry.link_address, protocol, pkt)
            except Error:
                pass  # the link counted it; nobody is left to tell


    def _drop_pending(self, entry: NeighborEntry) -> None:
        if entry.pending:
            self._stats.pending_packets_dropped.increment(len(entry.pending))
            entry.pending = []
