"""Transport demultiplexer: which endpoint gets an inbound packet (netstack's transport_demuxer.go).

Endpoints register under a ``TransportEndpointID`` (local port, local address, remote port, remote
address) where unset fields (0 / b'') are wildcards. An inbound packet is offered to the most
specific registration first: connected 4-tuple, then bound address, then wildcard address. Several
endpoints may share one ID when each set SO_REUSEPORT, or each set SO_REUSEADDR. Broadcast and
multicast datagrams go to all of them; a unicast packet to one: in a SO_REUSEPORT group, chosen by a
hash of the flow (so a flow sticks to one endpoint) unless the group's SO_ATTACH_REUSEPORT_CBPF program
names one, otherwise the most recently registered, as Linux does for SO_REUSEADDR datagram sockets.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import NamedTuple

from ..tcpip import ErrInvalidOptionValue, ErrNoSuchFile, ErrPortInUse
from .bpf import Filter
from .registration import TransportEndpoint


class TransportEndpointID(NamedTuple):
    local_port: int
    local_address: bytes
    remote_port: int
    remote_address: bytes


class EndpointGroup(list):
    """The endpoints registered under one ID, oldest first, with the sharing flags of each.

    Nearly every group is a connection's 4-tuple with that connection alone in it, made and dropped
    once per connection: those paths take no more than they must.
    """

    __slots__ = ("_flags", "load_balanced", "program")

    def __init__(self) -> None:
        self._flags: list[tuple[bool, bool]] = []   # (reuse_addr, reuse_port) of each endpoint
        self.load_balanced = False                  # every member set SO_REUSEPORT
        self.program: Filter | None = None          # SO_ATTACH_REUSEPORT_CBPF's: picks a member by its index

    def admits(self, reuse_addr: bool, reuse_port: bool) -> bool:
        """May an endpoint with these flags join? Only if all members set the same flag."""
        return (not self or (reuse_port and all(rp for _, rp in self._flags))
                or (reuse_addr and all(ra for ra, _ in self._flags)))

    def add(self, ep: TransportEndpoint, reuse_addr: bool, reuse_port: bool) -> None:
        self.append(ep)
        self._flags.append((reuse_addr, reuse_port))
        self.load_balanced = reuse_port and (len(self) == 1 or self.load_balanced)

    def discard(self, ep: TransportEndpoint) -> bool:
        if len(self) == 1:
            if self[0] is not ep:
                return False
            self.clear()
            self._flags.clear()
            self.load_balanced = False
            return True
        for i, member in enumerate(self):
            if member is ep:
                if self.load_balanced:      # the last member takes its place (Linux's reuseport_detach_sock)
                    self[i], self._flags[i] = self[-1], self._flags[-1]
                    i = -1
                del self[i]
                del self._flags[i]
                self.load_balanced = all(rp for _, rp in self._flags)
                return True
        return False


def _most_specific(table: dict[TransportEndpointID, EndpointGroup], src: bytes, dst: bytes, src_port: int,
                   dst_port: int) -> EndpointGroup | None:
    # Plain tuples hash and compare equal to the TransportEndpointID keys, and are cheaper. A
    # connection's full 4-tuple first, on its own: that is what nearly every packet finds.
    group = table.get((dst_port, dst, src_port, src))
    if group is None:
        group = table.get((dst_port, dst, 0, b""))
        if group is None:
            group = table.get((dst_port, b"", src_port, src))
            if group is None:
                group = table.get((dst_port, b"", 0, b""))
    return group


class TransportDemuxer:
    def __init__(self) -> None:
        # (network protocol, transport protocol, nic or 0) -> id -> group
        self._tables: dict[tuple[int, int, int], dict[TransportEndpointID, EndpointGroup]] = {}
        self._secret = secrets.token_bytes(16)

    def register(self, net_protos: tuple[int, ...], trans_proto: int, id: TransportEndpointID,
                 ep: TransportEndpoint, reuse_port: bool = False, nic: int = 0, reuse_addr: bool = False,
                 program: Filter | None = None) -> None:
        """Register ``ep`` for each network protocol; all or nothing. ``program``: the reuseport program it
        holds, which a group it founds takes (one it joins keeps its own, as Linux's reuseport_add_sock)."""
        done: list[int] = []
        try:
            for net in net_protos:
                key = (net, trans_proto, nic)
                table = self._tables.get(key)
                if table is None:
                    table = self._tables[key] = {}
                group = table.get(id)
                if group is None:
                    group = table[id] = EndpointGroup()
                    group.program = program if reuse_port else None
                elif not group.admits(reuse_addr, reuse_port):
                    raise ErrPortInUse()
                group.add(ep, reuse_addr, reuse_port)
                done.append(net)
        except ErrPortInUse:
            for net in done:
                self.unregister((net,), trans_proto, id, ep, nic)
            raise

    def unregister(self, net_protos: tuple[int, ...], trans_proto: int, id: TransportEndpointID,
                   ep: TransportEndpoint, nic: int = 0) -> None:
        for net in net_protos:
            table = self._tables.get((net, trans_proto, nic))
            if not table:
                continue
            group = table.get(id)
            if group is None or not group.discard(ep):
                continue
            if not group:
                del table[id]

    def replace(self, net_protos: tuple[int, ...], trans_proto: int, id: TransportEndpointID,
                old: TransportEndpoint, new: TransportEndpoint, nic: int = 0) -> None:
        """Put ``new`` where ``old`` is registered under ``id``, with its sharing flags (a TCP
        connection handing over to its TIME-WAIT record): there is no moment in which the ID is free."""
        for net in net_protos:
            group = self._tables[(net, trans_proto, nic)][id]
            for i, member in enumerate(group):
                if member is old:
                    group[i] = new
                    break
            else:
                raise KeyError(f"{old!r} is not registered under {id}")

    def lookup_exact(self, net_proto: int, trans_proto: int, nic: int, id: TransportEndpointID) -> bool:
        """Is ``id`` itself registered (no wildcard matching)? For connect's 4-tuple uniqueness check."""
        table = self._tables.get((net_proto, trans_proto, nic))
        return bool(table) and id in table  # type: ignore[operator]

    def lookup(self, net_proto: int, trans_proto: int, nic: int, src: bytes, dst: bytes, src_port: int,
               dst_port: int) -> EndpointGroup | None:
        """Endpoints of the most specific match, or None. Shared IDs' groups are returned whole."""
        tables = self._tables
        if nic:     # endpoints bound to this NIC first
            table = tables.get((net_proto, trans_proto, nic))
            if table:
                group = _most_specific(table, src, dst, src_port, dst_port)
                if group is not None:
                    return group
        table = tables.get((net_proto, trans_proto, 0))
        return _most_specific(table, src, dst, src_port, dst_port) if table else None

    def connected(self, net_proto: int, trans_proto: int, nic: int, src: bytes, dst: bytes, src_port: int,
                  dst_port: int) -> EndpointGroup | None:
        """The endpoints registered under the packet's own 4-tuple (a connection's), or None: no wildcard."""
        for nic_key in ((nic, 0) if nic else (0,)):
            table = self._tables.get((net_proto, trans_proto, nic_key))
            group = table.get((dst_port, dst, src_port, src)) if table else None
            if group is not None:
                return group
        return None

    def lookup_all(self, net_proto: int, trans_proto: int, nic: int, src: bytes, dst: bytes, src_port: int,
                   dst_port: int) -> list[TransportEndpoint]:
        """Every endpoint any ID matches (not only the most specific): who gets a copy of a broadcast
        or multicast datagram, as Linux delivers one to every socket bound to the group or the wildcard."""
        found: list[TransportEndpoint] = []
        for nic_key in ((nic, 0) if nic else (0,)):
            table = self._tables.get((net_proto, trans_proto, nic_key))
            if not table:
                continue
            for id in ((dst_port, dst, src_port, src), (dst_port, dst, 0, b""),
                       (dst_port, b"", src_port, src), (dst_port, b"", 0, b"")):
                group = table.get(id)
                if group is not None:
                    found.extend(ep for ep in group if ep not in found)
        return found

    def groups_of(self, ep: TransportEndpoint) -> list[EndpointGroup]:
        """Every group ``ep`` is registered in (a search of all: for the rare option that needs it)."""
        return [group for table in self._tables.values() for group in table.values()
                if any(member is ep for member in group)]

    def select(self, endpoints: EndpointGroup, src: bytes, src_port: int, dst: bytes,
               dst_port: int) -> TransportEndpoint:
        """The endpoint of a group that gets a unicast packet: stable for a given flow."""
        if len(endpoints) == 1:
            return endpoints[0]
        if not endpoints.load_balanced:
            return endpoints[-1]
        key = bytes(src) + src_port.to_bytes(2, "big") + bytes(dst) + dst_port.to_bytes(2, "big")
        h = int.from_bytes(hashlib.blake2s(key, key=self._secret, digest_size=4).digest(), "big")
        return endpoints[h % len(endpoints)]

    def all_endpoints(self) -> list[TransportEndpoint]:
        seen: dict[int, TransportEndpoint] = {}
        for table in self._tables.values():
            for group in table.values():
                for ep in group:
                    seen[id(ep)] = ep
        return list(seen.values())

    def __len__(self) -> int:
        return sum(len(g) for t in self._tables.values() for g in t.values())


def reuseport_program(demux: TransportDemuxer, ep: TransportEndpoint, program: Filter | None, reuse_port: bool,
                      held: Filter | None) -> Filter | None:
    """SO_ATTACH_REUSEPORT_CBPF (``program``) or SO_DETACH_REUSEPORT_BPF (None) on ``ep``, as Linux's
    reuseport_attach_prog and reuseport_detach_prog decide them; returns the program ``ep`` holds from now on
    (``held``: before). A bound endpoint's SO_REUSEPORT group takes the program, for every member; an unbound
    one with SO_REUSEPORT holds it for the group it will found when it binds."""
    groups = demux.groups_of(ep)
    if not groups:
        if not reuse_port or (program is None and held is None):
            raise ErrNoSuchFile() if reuse_port else ErrInvalidOptionValue()
        return program
    if not reuse_port or not all(group.load_balanced for group in groups):
        raise ErrInvalidOptionValue()       # bound without SO_REUSEPORT: no group to program
    if program is None and all(group.program is None for group in groups):
        raise ErrNoSuchFile()
    for group in groups:
        group.program = program
    return None
