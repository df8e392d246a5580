"""ICMP echo ("ping") datagram endpoints, as Linux's SOCK_DGRAM/IPPROTO_ICMP(V6) sockets.

The user writes an ICMP echo request (8-byte header + payload); the endpoint sets the identifier to
its bound "port" and computes the checksum, as Linux does, and reads back whole echo replies
addressed to that identifier. Echo requests to us are answered by the network layer, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...header import icmpv4, icmpv6
from ...stack.packet_buffer import PacketBuffer
from ...stack.registration import TransportProtocol
from ...tcpip import ICMPV4_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER, ErrInvalidOptionValue, FullAddress
from ...waiter import WaiterQueue
from ..datagram import DatagramEndpoint

if TYPE_CHECKING:
    from ...stack.route import Route

PROTOCOL_NUMBER = ICMPV4_PROTOCOL_NUMBER


class PingEndpoint(DatagramEndpoint):
    transport_number = PROTOCOL_NUMBER
    max_payload = 65507

    def handle_packet(self, pkt: PacketBuffer, src: bytes, dst: bytes, src_port: int, dst_port: int) -> None:
        # The network layer verified the ICMP checksum; the reader gets the whole message.
        self._enqueue(pkt.data, FullAddress(pkt.nic_id, src, 0), pkt, dst)

    def _send(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int, tos: int) -> None:
        if len(data) < icmpv4.MIN_SIZE or data[0] != icmpv4.ECHO or data[1] != 0:
            raise ErrInvalidOptionValue("a ping endpoint sends ICMP echo requests only")
        payload = memoryview(data)[icmpv4.MIN_SIZE:]
        sequence = (data[6] << 8) | data[7]
        pkt = PacketBuffer(route.max_header_length() + icmpv4.MIN_SIZE, payload)
        icmpv4.build(pkt.prepend(icmpv4.MIN_SIZE), icmpv4.ECHO, 0, icmpv4.echo_rest(self.local.port, sequence),
                     payload)
        self._route_write(route, PROTOCOL_NUMBER, pkt, ttl, tos)
        self.stack.stats().icmp.v4_packets_sent.echo.value += 1


class ICMPv4Protocol(TransportProtocol):
    """Owns ping endpoints; the identifier of an echo message plays the part of a port."""

    number = PROTOCOL_NUMBER
    min_header_size = icmpv4.MIN_SIZE

    def new_endpoint(self, net_proto: int, waiter_queue: WaiterQueue) -> PingEndpoint:
        return PingEndpoint(self.stack, net_proto, waiter_queue)

    def parse_ports(self, view: memoryview) -> tuple[int, int] | None:
        """Echo requests carry our identifier as the source "port", echo replies as the destination."""
        if len(view) < icmpv4.MIN_SIZE:
            return None
        ident = (view[4] << 8) | view[5]
        if view[0] == icmpv4.ECHO_REPLY:
            return 0, ident
        if view[0] == icmpv4.ECHO:
            return ident, 0
        return None


class Ping6Endpoint(PingEndpoint):
    """The same over IPv6: ICMPv6 echo (RFC 4443 §4), whose checksum covers the pseudo-header."""

    transport_number = ICMPV6_PROTOCOL_NUMBER

    def _send(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int, tos: int) -> None:
        if len(data) < icmpv6.MIN_SIZE or data[0] != icmpv6.ECHO_REQUEST or data[1] != 0:
            raise ErrInvalidOptionValue("a ping endpoint sends ICMPv6 echo requests only")
        payload = memoryview(data)[icmpv6.MIN_SIZE:]
        sequence = (data[6] << 8) | data[7]
        pkt = PacketBuffer(route.max_header_length() + icmpv6.MIN_SIZE, payload)
        icmpv6.build(pkt.prepend(icmpv6.MIN_SIZE), icmpv6.ECHO_REQUEST, 0, icmpv6.echo_rest(self.local.port, sequence),
                     route.local_address, route.remote_address, payload)
        self._route_write(route, ICMPV6_PROTOCOL_NUMBER, pkt, ttl, tos)
        self.stack.stats().icmp.v6_packets_sent.echo_request.value += 1


class ICMPv6Protocol(TransportProtocol):
    """Owns ping6 endpoints."""

    number = ICMPV6_PROTOCOL_NUMBER
    min_header_size = icmpv6.MIN_SIZE

    def new_endpoint(self, net_proto: int, waiter_queue: WaiterQueue) -> Ping6Endpoint:
        return Ping6Endpoint(self.stack, net_proto, waiter_queue)

    def parse_ports(self, view: memoryview) -> tuple[int, int] | None:
        if len(view) < icmpv6.MIN_SIZE:
            return None
        ident = (view[4] << 8) | view[5]
        if view[0] == icmpv6.ECHO_REPLY:
            return 0, ident
        if view[0] == icmpv6.ECHO_REQUEST:
            return ident, 0
        return None
