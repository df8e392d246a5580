"""ARP (RFC 826): resolves IPv4 next hops on Ethernet links and answers for our own addresses.

The protocol-specific half of neighbour resolution; the NIC's NeighborCache runs the state
machine (retries, timeouts, queued packets) and calls back here to send requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...header import arp, ethernet
from ...tcpip import ARP_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER, Error
from ...stack.packet_buffer import PacketBuffer
from ...stack.registration import NetworkEndpoint, NetworkProtocol

if TYPE_CHECKING:
    from ...stack.nic import NIC

PROTOCOL_NUMBER = ARP_PROTOCOL_NUMBER


class ARPEndpoint(NetworkEndpoint):
    """ARP on one NIC; the LinkAddressResolver of the NIC's IPv4 neighbour cache."""

    resolves_protocol = IPV4_PROTOCOL_NUMBER

    def __init__(self, protocol: ARPProtocol, nic: NIC) -> None:
        super().__init__(protocol, nic)
        self._stats = self.stack.stats().arp

    def handle_packet(self, pkt: PacketBuffer) -> None:
        stats = self._stats
        stats.packets_received.value += 1
        msg = arp.parse(pkt.data)
        if not msg:
            stats.malformed_packets_received.increment()
            return
        cache = self.nic.neighbors.get(IPV4_PROTOCOL_NUMBER)
        if cache is None:
            return
        if msg.op == arp.OP_REQUEST:
            stats.requests_received.increment()
            if not self.nic.has_address(IPV4_PROTOCOL_NUMBER, msg.target_proto):
                # Not for us, but a neighbour we know may have moved (gratuitous ARP).
                if cache.get(msg.sender_proto) is not None:
                    cache.handle_probe(msg.sender_proto, msg.sender_hw)
                return
            if msg.sender_proto != b"\x00\x00\x00\x00":  # not a duplicate-address probe (RFC 5227)
                cache.handle_probe(msg.sender_proto, msg.sender_hw)
            try:
                self._send(arp.OP_REPLY, msg.sender_hw, msg.target_proto, msg.sender_hw, msg.sender_proto)
            except Error:
                return
            stats.replies_sent.increment()
        elif msg.op == arp.OP_REPLY:
            stats.replies_received.increment()
            cache.handle_confirmation(msg.sender_proto, msg.sender_hw, solicited=True)
        else:
            stats.malformed_packets_received.increment()

    # --- LinkAddressResolver -----------------------------------------------------------------------

    def link_address_request(self, target: bytes, local: bytes, remote_link_address: bytes) -> None:
        sender = local or self.nic.primary_address(IPV4_PROTOCOL_NUMBER, target)
        if not sender:
            return
        try:
            self._send(arp.OP_REQUEST, remote_link_address or ethernet.BROADCAST, sender, b"\x00" * 6, target)
        except Error:
            return
        self._stats.requests_sent.increment()

    def resolve_static_address(self, addr: bytes) -> bytes | None:
        if addr == b"\xff\xff\xff\xff" or self.nic.is_subnet_broadcast(IPV4_PROTOCOL_NUMBER, addr):
            return ethernet.BROADCAST
        if 224 <= addr[0] <= 239:
            return ethernet.ipv4_multicast_mac(addr)
        return None

    def _send(self, op: int, link_dst: bytes, sender_proto: bytes, target_hw: bytes, target_proto: bytes) -> None:
        pkt = PacketBuffer(self.nic.link.max_header_length() + arp.SIZE)
        arp.build(pkt.prepend(arp.SIZE), op, self.nic.link.link_address(), sender_proto, target_hw, target_proto)
        self.nic.write_to_link(link_dst, PROTOCOL_NUMBER, pkt)


class ARPProtocol(NetworkProtocol):
    number = PROTOCOL_NUMBER
    min_header_size = arp.SIZE

    def new_endpoint(self, nic: NIC) -> ARPEndpoint:
        return ARPEndpoint(self, nic)
