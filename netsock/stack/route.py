"""A resolved route: everything needed to send to one remote address (netstack's stack.Route).

``Stack.find_route`` builds one from the route table; transports cache it on connected endpoints so
the per-packet path does no table lookup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..tcpip import address_str
from .packet_buffer import PacketBuffer

if TYPE_CHECKING:
    from .nic import NIC
    from .registration import NetworkEndpoint


class Route:
    __slots__ = ("local_address", "remote_address", "next_hop", "nic", "net_proto", "network_endpoint",
                 "loop", "broadcast", "multicast", "_mtu")

    def __init__(self, local_address: bytes, remote_address: bytes, next_hop: bytes, nic: NIC, net_proto: int,
                 loop: bool = False, broadcast: bool = False, multicast: bool = False, mtu: int = 0) -> None:
        self.local_address = local_address
        self.remote_address = remote_address
        self.next_hop = next_hop            # gateway, or the remote address itself when on-link
        self.nic = nic
        self.net_proto = net_proto
        self.network_endpoint: NetworkEndpoint = nic.network_endpoints[net_proto]
        self.loop = loop                    # destination is this stack: deliver without the link
        self.broadcast = broadcast
        self.multicast = multicast
        self._mtu = mtu                     # route-table MTU; 0 means the NIC's

    @property
    def stack(self):  # noqa: ANN201 - Stack, kept untyped to avoid an import cycle
        return self.nic.stack

    def mtu(self) -> int:
        """Largest network-layer packet on this path."""
        link_mtu = self.network_endpoint.mtu()
        return min(self._mtu, link_mtu) if self._mtu else link_mtu

    def max_header_length(self) -> int:
        """Room a transport must reserve in front of its header for the layers below."""
        return self.network_endpoint.max_header_length()

    def write_packet(self, transport: int, pkt: PacketBuffer, ttl: int, tos: int) -> None:
        """Prepend the network header and send (raises a tcpip Error if the packet cannot go)."""
        self.network_endpoint.write_packet(self, transport, pkt, ttl, tos)

    def default_ttl(self) -> int:
        return self.nic.stack.default_ttl

    def __repr__(self) -> str:
        return (f"<Route {address_str(self.local_address)} -> {address_str(self.remote_address)}"
                f" via {address_str(self.next_hop)} nic {self.nic.id}{' loop' if self.loop else ''}>")
