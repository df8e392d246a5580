"""UDP-Lite (RFC 3828): UDP whose checksum may cover only the start of the datagram, so that an
application that prefers damaged payload to none (voice, video) still gets it.

The header is UDP's, but its length field is the checksum coverage: 0 for the whole datagram, else
8 (the header alone) up to the datagram's length, which the IP payload length gives instead. The
checksum is mandatory, over IPv4 too, and sums the pseudo-header (with the IP payload length) and
the covered bytes. Everything else (ports, binding, queues, options, ICMP errors) is UDP's, in a port
space of its own, as Linux's UDP-Lite shares UDP's code; the coverage options follow Linux's
udp_lib_setsockopt and udplite_sender_cscov.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...header import udp
from ...header.checksum import checksum, combine, pseudo_header_checksum
from ...stack.packet_buffer import PacketBuffer
from ...tcpip import ErrPartialChecksumOffload, SendableControlMessages, SockOpt
from ...waiter import WaiterQueue
from ..udp import UDPEndpoint, UDPProtocol

if TYPE_CHECKING:
    from ...stack.route import Route
    from ...stack.stack import Stack
    from ...tcpip.stats import UDPLiteStats

PROTOCOL_NUMBER = 136       # IPPROTO_UDPLITE
MAX_COVERAGE = 0xFFFF       # what the 16-bit field holds; larger settings are cut to it, as Linux does


def _coverage_setting(value: Any) -> int:
    """A UDPLITE_*_CSCOV value as Linux stores it: 0 is the whole datagram, anything else below the
    header's 8 bytes is raised to 8, and the most is what the field holds."""
    value = int(value)
    if value == 0:
        return 0
    return min(max(value, udp.HEADER_SIZE), MAX_COVERAGE)


class UDPLiteEndpoint(UDPEndpoint):
    transport_number = PROTOCOL_NUMBER

    def __init__(self, stack: Stack, net_proto: int, waiter_queue: WaiterQueue) -> None:
        super().__init__(stack, net_proto, waiter_queue)
        self.options[SockOpt.UDPLITE_SEND_COVERAGE] = None
        self.options[SockOpt.UDPLITE_RECEIVE_COVERAGE] = None

    def set_sock_opt(self, opt: SockOpt, value: Any) -> None:
        if opt is SockOpt.UDPLITE_SEND_COVERAGE or opt is SockOpt.UDPLITE_RECEIVE_COVERAGE:
            value = _coverage_setting(value)
        super().set_sock_opt(opt, value)

    def handle_packet(self, pkt: PacketBuffer, src: bytes, dst: bytes, src_port: int, dst_port: int) -> None:
        """RFC 3828 §3.3: a receiver that set a minimum coverage refuses datagrams that cover less
        (with a minimum of 0, any partial coverage), as Linux's udp_queue_rcv_one_skb; a datagram
        covered whole always passes, and an invalid coverage is left for validation to count."""
        minimum = self.options[SockOpt.UDPLITE_RECEIVE_COVERAGE]
        if minimum is not None:
            data = pkt.data
            length = len(data)
            coverage = data[4] << 8 | data[5] if length >= udp.HEADER_SIZE else 0
            if udp.HEADER_SIZE <= coverage < length and (minimum == 0 or coverage < minimum):
                self.protocol.stats.coverage_errors.increment()
                return
        super().handle_packet(pkt, src, dst, src_port, dst_port)

    def _transmit(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int, tos: int,
                  control: SendableControlMessages) -> int:
        gso_size = control.gso_size if control.gso_size is not None else self.options[SockOpt.UDP_SEGMENT]
        if gso_size:
            self.stats.send_errors.send_to_network_failed.increment()
            raise ErrPartialChecksumOffload()
        return super()._transmit(route, data, dst_port, ttl, tos, control)

    def _send(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int, tos: int,
              gso_size: int = 0, gro: tuple[object, int, int] | None = None) -> None:
        """As Linux's udplite_sender_cscov: without UDPLITE_SEND_CSCOV the whole datagram is covered
        and the field holds its length; with it, a coverage short of the datagram's length is sent
        (0: the whole, said as 0), and one that is not falls back to the whole. (``gso_size`` and ``gro``
        are never given: ``_transmit`` refuses segmentation offload.)"""
        length = udp.HEADER_SIZE + len(data)
        field = covered = length
        setting = self.options[SockOpt.UDPLITE_SEND_COVERAGE]
        if setting is not None and setting < length:
            field = setting
            covered = setting or length
        pkt = PacketBuffer(route.max_header_length() + udp.HEADER_SIZE, data)
        hdr = pkt.prepend(udp.HEADER_SIZE)
        udp.build(hdr, self.local.port, dst_port, field)
        pseudo = pseudo_header_checksum(PROTOCOL_NUMBER, route.local_address, route.remote_address, length)
        body = data if covered == length else memoryview(data)[:covered - udp.HEADER_SIZE]
        csum = ~combine(pseudo, checksum(hdr, checksum(body))) & 0xFFFF
        csum = csum or 0xFFFF       # a computed zero is sent as all ones: zero is no checksum
        hdr[6] = csum >> 8
        hdr[7] = csum & 0xFF
        self._output(route, pkt, ttl, tos)


class UDPLiteProtocol(UDPProtocol):
    number = PROTOCOL_NUMBER

    def __init__(self, stack) -> None:  # noqa: ANN001 - Stack (import cycle)
        super().__init__(stack)
        self.stats: UDPLiteStats = stack.stats().udplite

    def new_endpoint(self, net_proto: int, waiter_queue: WaiterQueue) -> UDPLiteEndpoint:
        return UDPLiteEndpoint(self.stack, net_proto, waiter_queue)

    def validate(self, pkt: PacketBuffer, src: bytes, dst: bytes, zero_checksum_ok: bool = False) -> bool:
        """Check the datagram in pkt.data (all of it: the IP payload length is its length) and its
        checksum over the covered bytes, as Linux's udplite_checksum_init; a bad one is counted, and
        False. (UDP_NO_CHECK6_RX does not apply: UDP-Lite's checksum is never optional.)"""
        stats = self.stats
        data = pkt.data
        length = len(data)
        if length < udp.HEADER_SIZE:
            stats.malformed_packets_received.increment()
            return False
        coverage = data[4] << 8 | data[5] or length
        if coverage < udp.HEADER_SIZE or coverage > length:
            stats.malformed_packets_received.increment()
            return False
        if not (data[6] or data[7]):
            stats.checksum_errors.increment()   # RFC 3828 §3.1: the checksum is mandatory
            return False
        if self.verify_checksums(pkt) and combine(
                pseudo_header_checksum(PROTOCOL_NUMBER, src, dst, length), checksum(data[:coverage])) != 0xFFFF:
            stats.checksum_errors.increment()
            return False
        return True


__all__ = ["PROTOCOL_NUMBER", "UDPLiteEndpoint", "UDPLiteProtocol"]
