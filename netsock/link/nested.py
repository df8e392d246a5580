"""A link endpoint that wraps another (netstack's ``link/nested``): the base of the sniffer and the
fault link. It is the LinkEndpoint the NIC sees and the NetworkDispatcher the wrapped link delivers
to; subclasses override the directions they act on."""

from __future__ import annotations

from ..stack.interfaces import LinkCapabilities, LinkEndpoint, NetworkDispatcher
from ..stack.packet_buffer import PacketBuffer


class NestedEndpoint:
    def __init__(self, lower: LinkEndpoint) -> None:
        self.lower = lower
        self.dispatcher: NetworkDispatcher | None = None

    def mtu(self) -> int:
        return self.lower.mtu()

    def max_header_length(self) -> int:
        return self.lower.max_header_length()

    def link_address(self) -> bytes:
        return self.lower.link_address()

    def capabilities(self) -> LinkCapabilities:
        return self.lower.capabilities()

    def gso_max_size(self, network_protocol: int, remote: bytes = b"") -> int:
        return self.lower.gso_max_size(network_protocol, remote)

    def attach(self, dispatcher: NetworkDispatcher | None) -> None:
        self.dispatcher = dispatcher
        self.lower.attach(self if dispatcher is not None else None)

    def is_attached(self) -> bool:
        return self.dispatcher is not None

    def write_packet(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.lower.write_packet(remote_link_address, protocol, pkt)

    def deliver_network_packet(self, remote_link_address: bytes, local_link_address: bytes, protocol: int,
                               pkt: PacketBuffer) -> None:
        if self.dispatcher is not None:
            self.dispatcher.deliver_network_packet(remote_link_address, local_link_address, protocol, pkt)
