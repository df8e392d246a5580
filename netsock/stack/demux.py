"""Transport demultiplexer: which endpoint gets an inbound packet (netstack's transport_demuxer.go).

Endpoints register under a ``TransportEndpointID`` (local port, local address, remote port, remote
address) where unset fields (0 / b'') are wildcards. An inbound packet is offered to the most
specific registration first: connected 4-tuple, then bound address, then wildcard address. Several
endpoints under one ID form a SO_REUSEPORT group: unicast packets go to one of them chosen by a hash
of the sender (so a flow sticks to one endpoint), broadcast and multicast datagrams to all.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import NamedTuple

from ..tcpip import ErrPortInUse
from .registration import TransportEndpoint


class TransportEndpointID(NamedTuple):
    local_port: int
    local_address: bytes
    remote_port: int
    remote_address: bytes


class _Group:
    __slots__ = ("endpoints", "reuse_port")

    def __init__(self, reuse_port: bool) -> None:
        self.endpoints: list[TransportEndpoint] = []
        self.reuse_port = reuse_port


class TransportDemuxer:
    def __init__(self) -> None:
        # (network protocol, transport protocol, nic or 0) -> id -> group
        self._tables: dict[tuple[int, int, int], dict[TransportEndpointID, _Group]] = {}
        self._secret = secrets.token_bytes(16)

    def register(self, net_protos: tuple[int, ...], trans_proto: int, id: TransportEndpointID,
                 ep: TransportEndpoint, reuse_port: bool = False, nic: int = 0) -> None:
        """Register ``ep`` for each network protocol; all or nothing."""
        done: list[int] = []
        try:
            for net in net_protos:
                table = self._tables.setdefault((net, trans_proto, nic), {})
                group = table.get(id)
                if group is None:
                    group = table[id] = _Group(reuse_port)
                elif not (reuse_port and group.reuse_port):
                    raise ErrPortInUse()
                group.endpoints.append(ep)
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
            if group is None:
                continue
            try:
                group.endpoints.remove(ep)
            except ValueError:
                continue
            if not group.endpoints:
                del table[id]

    def lookup(self, net_proto: int, trans_proto: int, nic: int, src: bytes, dst: bytes, src_port: int,
               dst_port: int) -> list[TransportEndpoint] | None:
        """Endpoints of the most specific match, or None. Reuse-port groups are returned whole."""
        for nic_key in ((nic, 0) if nic else (0,)):
            table = self._tables.get((net_proto, trans_proto, nic_key))
            if not table:
                continue
            # Plain tuples hash and compare equal to the TransportEndpointID keys, and are cheaper.
            for id in ((dst_port, dst, src_port, src), (dst_port, dst, 0, b""),
                       (dst_port, b"", src_port, src), (dst_port, b"", 0, b"")):
                group = table.get(id)
                if group is not None:
                    return group.endpoints
        return None

    def select(self, endpoints: list[TransportEndpoint], src: bytes, src_port: int, dst: bytes,
               dst_port: int) -> TransportEndpoint:
        """One endpoint of a reuse-port group, stable for a given flow."""
        if len(endpoints) == 1:
            return endpoints[0]
        key = bytes(src) + src_port.to_bytes(2, "big") + bytes(dst) + dst_port.to_bytes(2, "big")
        h = int.from_bytes(hashlib.blake2s(key, key=self._secret, digest_size=4).digest(), "big")
        return endpoints[h % len(endpoints)]

    def all_endpoints(self) -> list[TransportEndpoint]:
        seen: dict[int, TransportEndpoint] = {}
        for table in self._tables.values():
            for group in table.values():
                for ep in group.endpoints:
                    seen[id(ep)] = ep
        return list(seen.values())

    def __len__(self) -> int:
        return sum(len(g.endpoints) for t in self._tables.values() for g in t.values())
