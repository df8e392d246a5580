"""UDP (RFC 768, with RFC 1122 §4.1 host requirements).

UDP-Lite (``..udplite``) is these classes with its own checksum rules: it overrides the protocol's
``validate`` and the endpoint's ``_send``, and counts in its own stats group (``protocol.stats``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ...header import udp
from ...header.checksum import checksum, combine, pseudo_header_checksum
from ...stack.interfaces import LinkCapabilities
from ...stack.packet_buffer import PacketBuffer
from ...stack.registration import TransportProtocol, UnknownDestinationDisposition
from ...tcpip import (DEFAULT_WRITE_OPTIONS, UDP_PROTOCOL_NUMBER, ErrDestinationRequired, ErrInvalidOptionValue,
                      ErrMessageTooLong, Error, FullAddress, SendableControlMessages, SockOpt, WriteOptions)
from ...waiter import EventMask, WaiterQueue
from ..datagram import DatagramEndpoint, EndpointState

if TYPE_CHECKING:
    from ...stack.nic import NIC
    from ...stack.route import Route
    from ...stack.stack import Stack
    from ...tcpip.stats import UDPStats

PROTOCOL_NUMBER = UDP_PROTOCOL_NUMBER
UDP_MAX_SEGMENTS = 128      # Linux's limit on the datagrams one UDP_SEGMENT write makes


class UDPEndpoint(DatagramEndpoint):
    transport_number = PROTOCOL_NUMBER
    binds_address_alone = True

    def __init__(self, stack: Stack, net_proto: int, waiter_queue: WaiterQueue) -> None:
        super().__init__(stack, net_proto, waiter_queue)
        self.options[SockOpt.UDP_SEGMENT] = 0
        self.options[SockOpt.NO_CHECKSUM6_TX] = self.options[SockOpt.NO_CHECKSUM6_RX] = False
        self.options[SockOpt.UDP_CORK] = False
        self.options[SockOpt.UDP_GRO] = False
        # UDP_GRO: the queued entry the next datagram of a super-datagram joins (PacketBuffer.gro's key
        # and index, and the entry itself), as Linux queues the super-datagram whole.
        self._gro_tail: tuple[object, int, tuple[Any, ...]] | None = None
        # Corked writes (MSG_MORE, UDP_CORK): the first one's options (its destination) and the bytes so far.
        self._corked: tuple[WriteOptions, bytearray] | None = None
        self.protocol: UDPProtocol = stack.transport_protocols[self.transport_number]

    def handle_packet(self, pkt: PacketBuffer, src: bytes, dst: bytes, src_port: int, dst_port: int) -> None:
        if (self._source_filtered or not self._multicast_all) and self._not_for_this_socket(pkt, src, dst):
            return
        proto = self.protocol
        if not proto.validate(pkt, src, dst, self.options[SockOpt.NO_CHECKSUM6_RX]):
            self.stats.receive_errors.malformed_packets_received.increment()
            return
        proto.stats.packets_received.value += 1
        data = pkt.data
        pkt.transport_header = data[:udp.HEADER_SIZE]
        end = len(data)
        if self.socket_filter is not None:      # it sees the UDP header at 0, which it cannot trim (Linux)
            keep = self._filter_keeps(pkt, bytes(pkt.link_header) + bytes(pkt.network_header), data,
                                      len(pkt.link_header))
            if not keep:
                return
            end = max(keep, udp.HEADER_SIZE)
        payload = data[udp.HEADER_SIZE:end]
        gro = pkt.gro
        if gro is not None and self.options[SockOpt.UDP_GRO] and self.socket_filter is None:
            if self._join(payload, gro):
                return
            self._enqueue(payload, FullAddress(pkt.nic_id, src, src_port), pkt, dst)
            queue = self._queue
            self._gro_tail = (gro[0], gro[2] + 1, queue[-1]) if queue and queue[-1][0] is payload else None
            return
        self._enqueue(payload, FullAddress(pkt.nic_id, src, src_port), pkt, dst)

    def _join(self, payload: memoryview, gro: tuple[object, int, int]) -> bool:
        """UDP_GRO: the next datagram of the super-datagram the last queued entry holds joins it (the read
        returns them as one, with UDP_GRO's control message giving the segment size: Linux's
        udp_cmsg_recv); False if it does not follow on from it."""
        tail = self._gro_tail
        key, size, index = gro
        queue = self._queue
        if tail is None or tail[0] is not key or tail[1] != index or not queue or queue[-1] is not tail[2]:
            return False
        # No receive-buffer test: the first datagram's admission stands for the whole super-datagram
        # (at most 64 KiB), which Linux admits or drops as one.
        data, sender, control = tail[2]
        if type(data) is bytearray:
            data += payload
            entry = tail[2]
        else:
            entry = queue[-1] = (bytearray(data) + payload, sender, replace(control, gro_size=size))
        self._gro_tail = (key, index + 1, entry)
        self._queued_bytes += len(payload)
        self.stats.packets_received.value += 1
        if self.peeking_with_offset:
            self.waiter_queue.notify(EventMask.IN)
        return True

    def _count_overflow(self) -> None:
        self.protocol.stats.receive_buffer_errors.increment()

    def close(self) -> None:
        if self.options[SockOpt.UDP_GRO] and self.state is not EndpointState.CLOSED:
            self.stack.udp_gro_sockets -= 1
        super().close()

    def _quoted_payload(self, pkt: PacketBuffer) -> tuple[int, bytes]:
        """What follows the quoted UDP header, and the port it was sent to (Linux's ip_icmp_error from
        __udp4_lib_err: ``uh->dest``, ``uh + 1``)."""
        quoted = pkt.data
        return (quoted[2] << 8 | quoted[3]) if len(quoted) >= 4 else 0, bytes(quoted[udp.HEADER_SIZE:])

    def write(self, data: bytes | bytearray | memoryview, options: WriteOptions = DEFAULT_WRITE_OPTIONS) -> int:
        """One datagram per write, unless corked (MSG_MORE on the write, or UDP_CORK): then the bytes gather
        until a write without MSG_MORE while not UDP_CORK, and leave as one datagram to where the first
        write said; a later write's destination is ignored (Linux's udp_sendmsg with ``up->pending``)."""
        corked = self._corked
        if corked is None and not options.more and not self.options[SockOpt.UDP_CORK]:
            return super().write(data, options)
        if corked is None:
            if options.to is None and self.remote is None:
                raise ErrDestinationRequired()
            corked = self._corked = (options, bytearray())
        gathered = corked[1]
        if len(gathered) + len(data) > self.max_payload:
            self.stats.write_errors.invalid_args.increment()
            raise ErrMessageTooLong()
        gathered += data
        if options.zerocopy and self.options[SockOpt.ZEROCOPY]:
            self._complete_zerocopy(True)   # copied into the datagram being gathered: free at once
        if not options.more and not self.options[SockOpt.UDP_CORK]:
            self._push_corked()
        return len(data)

    def _push_corked(self) -> None:
        """Send what the corked writes gathered, as one datagram."""
        corked, self._corked = self._corked, None
        if corked is not None:
            first, gathered = corked
            super().write(gathered, replace(first, more=False, zerocopy=False))

    def _without_checksum(self, route: Route) -> bool:
        """Whether datagrams go without a checksum (0): SO_NO_CHECK over IPv4 (RFC 768), UDP_NO_CHECK6_TX
        over IPv6 (RFC 6935), as Linux's udp_send_skb and udp_v6_send_skb."""
        return self.options[SockOpt.NO_CHECKSUM6_TX if len(route.remote_address) == 16 else SockOpt.NO_CHECKSUM]

    def set_sock_opt(self, opt: SockOpt, value: Any) -> None:
        if opt is SockOpt.UDP_SEGMENT and not 0 <= int(value) <= 0xFFFF:
            raise ErrInvalidOptionValue()
        if opt is SockOpt.UDP_GRO and bool(value) != self.options[SockOpt.UDP_GRO] and \
                self.state is not EndpointState.CLOSED:
            self.stack.udp_gro_sockets += 1 if value else -1
        super().set_sock_opt(opt, value)
        if opt is SockOpt.UDP_CORK and not value:
            try:
                self._push_corked()     # uncorking sends what was gathered (an error goes unreported, as Linux's)
            except Error:
                pass

    def _transmit(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int, tos: int,
                  control: SendableControlMessages) -> int:
        """UDP_SEGMENT (Linux's UDP GSO): a write of many segments' worth leaves as datagrams of
        ``gso_size`` bytes (the last may be shorter), handed to a link that cuts them itself
        (HARDWARE_GSO_UDP) as one super-datagram, else cut here."""
        gso_size = control.gso_size if control.gso_size is not None else self.options[SockOpt.UDP_SEGMENT]
        if not gso_size:
            return super()._transmit(route, data, dst_port, ttl, tos, control)
        if self._without_checksum(route):
            # Segmented datagrams have their checksums completed from a partial one: none to leave out.
            self.stats.write_errors.invalid_args.increment()
            raise ErrInvalidOptionValue()
        # As Linux's udp_send_skb: each datagram must fit the path unfragmented, and there is a limit
        # to how many one write makes.
        ip_header = 20 if len(route.remote_address) == 4 else 40
        if ip_header + udp.HEADER_SIZE + min(len(data), gso_size) > route.mtu():
            self.stats.write_errors.invalid_args.increment()
            raise ErrMessageTooLong()
        if len(data) > gso_size * UDP_MAX_SEGMENTS:
            self.stats.write_errors.invalid_args.increment()
            raise ErrInvalidOptionValue()
        if len(data) <= gso_size:
            return super()._transmit(route, data, dst_port, ttl, tos, control)
        if (not route.multicast and not route.loop
                and int(route.nic.link.capabilities()) & LinkCapabilities.HARDWARE_GSO_UDP):
            try:
                self._send(route, data, dst_port, ttl, tos, gso_size)
            except Error:
                self.stats.send_errors.send_to_network_failed.increment()
                raise
            return -(-len(data) // gso_size)
        view = memoryview(data)
        if route.multicast:
            send_one = super()._transmit
            return sum(send_one(route, view[offset:offset + gso_size], dst_port, ttl, tos, control)
                       for offset in range(0, len(view), gso_size))
        # Cut here, each datagram marked as a piece of the super-datagram (a UDP_GRO socket of this stack
        # reads them as one, as Linux's loopback carries the super-datagram whole).
        key = object()
        offsets = range(0, len(view), gso_size)
        try:
            for index, offset in enumerate(offsets):
                self._send(route, view[offset:offset + gso_size], dst_port, ttl, tos, gro=(key, gso_size, index))
        except Error:
            self.stats.send_errors.send_to_network_failed.increment()
            raise
        return len(offsets)

    def _send(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int, tos: int,
              gso_size: int = 0, gro: tuple[object, int, int] | None = None) -> None:
        length = udp.HEADER_SIZE + len(data)
        pkt = PacketBuffer(route.max_header_length() + udp.HEADER_SIZE, data)
        pkt.gro = gro
        hdr = pkt.prepend(udp.HEADER_SIZE)
        udp.build(hdr, self.local.port, dst_port, length)
        if self._without_checksum(route):
            self._output(route, pkt, ttl, tos)      # the field left 0
            return
        pseudo = pseudo_header_checksum(PROTOCOL_NUMBER, route.local_address, route.remote_address, length)
        if gso_size:
            # A super-datagram: the link cuts it every gso_size bytes and completes each datagram's
            # checksum from the pseudo-header sum left in the field (Linux's CHECKSUM_PARTIAL).
            pkt.gso_size = gso_size
            csum = pseudo
        else:
            csum = ~combine(pseudo, checksum(hdr, checksum(data))) & 0xFFFF
            csum = csum or 0xFFFF   # RFC 768: a computed zero is sent as all ones
        hdr[6] = csum >> 8
        hdr[7] = csum & 0xFF
        self._output(route, pkt, ttl, tos)

    def _output(self, route: Route, pkt: PacketBuffer, ttl: int, tos: int) -> None:
        """Hand one finished datagram to the network layer, counting it."""
        stats = self.protocol.stats
        try:
            self._route_write(route, self.transport_number, pkt, ttl, tos)
        except Exception:
            stats.packet_send_errors.increment()
            raise
        stats.packets_sent.value += 1


class UDPProtocol(TransportProtocol):
    number = PROTOCOL_NUMBER
    min_header_size = udp.HEADER_SIZE

    def __init__(self, stack) -> None:  # noqa: ANN001 - Stack (import cycle)
        super().__init__(stack)
        self.stats: UDPStats = stack.stats().udp

    def new_endpoint(self, net_proto: int, waiter_queue: WaiterQueue) -> UDPEndpoint:
        return UDPEndpoint(self.stack, net_proto, waiter_queue)

    def validate(self, pkt: PacketBuffer, src: bytes, dst: bytes, zero_checksum_ok: bool = False) -> bool:
        """Check the datagram in pkt.data (trimming it to the UDP length) and its checksum; a bad one
        is counted, and False. ``zero_checksum_ok``: the receiving socket takes IPv6 datagrams without
        one (UDP_NO_CHECK6_RX, RFC 6936)."""
        stats = self.stats
        hdr = udp.parse(pkt.data)
        if not hdr:
            stats.malformed_packets_received.increment()
            return False
        pkt.trim(hdr.length)
        if not hdr.checksum and len(src) == 16 and not zero_checksum_ok:
            stats.checksum_errors.increment()   # RFC 8200 §8.1: over IPv6 a zero checksum is invalid
            return False
        # A zero checksum means the sender computed none (RFC 768; allowed over IPv4 only).
        if hdr.checksum and self.verify_checksums(pkt) and combine(
                pseudo_header_checksum(PROTOCOL_NUMBER, src, dst, hdr.length), checksum(pkt.data)) != 0xFFFF:
            stats.checksum_errors.increment()
            return False
        return True

    def header_length(self, view: memoryview) -> int:
        return udp.HEADER_SIZE

    def parse_ports(self, view: memoryview) -> tuple[int, int] | None:
        if len(view) < 4:
            return None
        return (view[0] << 8) | view[1], (view[2] << 8) | view[3]

    def verify_checksums(self, pkt: PacketBuffer) -> bool:
        """Whether ``pkt``'s checksum is still to be checked: not if the link or the device did."""
        if pkt.checksum_verified:
            return False
        nic = self.stack.nics.get(pkt.nic_id)
        return nic is None or not nic.rx_checksum_offload

    def handle_unknown_destination_packet(self, nic: NIC, pkt: PacketBuffer, src: bytes,
                                          dst: bytes) -> UnknownDestinationDisposition:
        """No socket on that port: a valid datagram earns "port unreachable", a corrupt one nothing."""
        if not self.validate(pkt, src, dst):
            return UnknownDestinationDisposition.MALFORMED
        self.stats.unknown_port_errors.increment()
        return UnknownDestinationDisposition.UNHANDLED
