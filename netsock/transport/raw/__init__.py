"""Raw IP endpoints (netstack's transport/raw; Linux's SOCK_RAW sockets).

A raw endpoint of protocol P reads a copy of every packet of protocol P addressed to this host, taken
before and besides the protocol's own handling (a raw ICMP endpoint sees the echo requests the stack
answers): over IPv4 the whole datagram, IP header included; over IPv6 the payload alone, as Linux's
raw sockets read them. Binding and connecting narrow what it reads to one local and one remote
address; no ports are involved (getsockname reports the protocol as the port, as Linux does).

Writes are the payload, behind an IP header the stack builds, or over IPv4 with HEADER_INCLUDED
(IP_HDRINCL; on from the start for protocol 255, IPPROTO_RAW) the whole datagram, whose total
length, checksum and, when 0, identification and source the stack fills in, as Linux does. Over IPv6,
IPV6_CHECKSUM makes the stack fill in a checksum at an offset of the payload (always at 2 for ICMPv6)
and check the one of each packet read. ICMP and ICMPv6 endpoints may leave message types unread
(ICMP_FILTER, ICMP6_FILTER).

Linux lets only holders of CAP_NET_RAW open raw sockets: that guards the host's kernel, and netsock's
stack is the process's own, so anyone may make raw endpoints of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...header import ipv4
from ...header.checksum import checksum, pseudo_header_checksum
from ...stack.iptables import HEAD_SIZE
from ...stack.packet_buffer import PacketBuffer
from ...stack.registration import socket_route
from ...tcpip import (DEFAULT_WRITE_OPTIONS, ICMPV4_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER,
                      ErrBadLocalAddress, ErrBroadcastDisabled, ErrInvalidEndpointState, ErrInvalidOptionValue,
                      ErrMessageTooLong, ErrUnknownProtocolOption, FullAddress, SockOpt, WriteOptions)
from ...waiter import WaiterQueue
from ..datagram import DatagramEndpoint, EndpointState

if TYPE_CHECKING:
    from ...stack.route import Route
    from ...stack.stack import Stack

RAW_PROTOCOL_NUMBER = 255       # IPPROTO_RAW: send-only, its writes carry their own IPv4 header
_ICMPV6_CHECKSUM_OFFSET = 2     # RFC 4443 §2.1
_ICMP_HEADER_SIZE = 8           # what Linux's icmp_filter/icmpv6_filter want to see of a message
_FILTER_BITS = {ICMPV4_PROTOCOL_NUMBER: 32, ICMPV6_PROTOCOL_NUMBER: 256}   # struct icmp_filter, icmp6_filter


class RawEndpoint(DatagramEndpoint):
    """A raw endpoint of one transport protocol over one network protocol."""

    max_payload = 65535

    def __init__(self, stack: Stack, net_proto: int, trans_proto: int, waiter_queue: WaiterQueue) -> None:
        if not 0 < trans_proto < 256:
            raise ErrInvalidOptionValue("a raw endpoint's protocol is a one-byte IP protocol number")
        super().__init__(stack, net_proto, waiter_queue)
        self.transport_number = trans_proto
        self.v4 = net_proto == IPV4_PROTOCOL_NUMBER
        self.local = FullAddress(0, b"", trans_proto)
        # What inbound packets must match (b'' and 0: anything), as Linux's raw_v4_match/raw_v6_match.
        self._match_local = b""
        self._match_remote = b""
        self._match_nic = 0
        # ICMP of its own IP version: messages are read only whole, and only of types not filtered out.
        self._icmp = trans_proto == (ICMPV4_PROTOCOL_NUMBER if self.v4 else ICMPV6_PROTOCOL_NUMBER)
        self._icmp_filter = 0
        if self._icmp:
            self.options[SockOpt.ICMP_FILTER] = 0
        if self.v4:
            self.options[SockOpt.HEADER_INCLUDED] = trans_proto == RAW_PROTOCOL_NUMBER
        else:
            self.options[SockOpt.IPV6_CHECKSUM] = \
                _ICMPV6_CHECKSUM_OFFSET if trans_proto == ICMPV6_PROTOCOL_NUMBER else -1
        # Linux hashes a raw socket when it is created: it reads from then on, bound or not.
        stack.register_raw_endpoint(net_proto, trans_proto, self)

    # --- binding and connecting ------------------------------------------------------------------

    def bind(self, addr: FullAddress) -> None:
        """Read only packets to ``addr`` (b'': any) and send from it; the port is ignored. Linux's
        raw_bind: allowed again and again, until connected."""
        if self.state in (EndpointState.CONNECTED, EndpointState.CLOSED):
            raise ErrInvalidEndpointState()
        local = bytes(addr.addr)
        if local and not self._may_bind(local) and not self._is_subnet_broadcast(local):
            raise ErrBadLocalAddress()
        self._bound_addr = local
        self._match_local = local
        self._match_nic = addr.nic
        self.local = FullAddress(addr.nic, local, self.transport_number)
        self.state = EndpointState.BOUND

    def connect(self, addr: FullAddress) -> None:
        """Send to ``addr`` by default and read only packets from it (and, unbound, to the route's
        source address, as Linux's ip4_datagram_connect); an empty address disconnects."""
        if self.state is EndpointState.CLOSED:
            raise ErrInvalidEndpointState()
        if not addr.addr:
            self.disconnect()
            return
        remote = bytes(addr.addr)
        nic = self._output_nic(addr.nic, remote)
        route = socket_route(self.stack, nic, self._source_address(), remote, self.net_proto,
                             self.options[SockOpt.DONT_ROUTE], self.options[SockOpt.TRANSPARENT])
        if route.broadcast and not self.options[SockOpt.BROADCAST]:
            raise ErrBroadcastDisabled()
        local = self._bound_addr or route.local_address
        self._match_local = local
        self._match_remote = remote
        self.local = FullAddress(self.local.nic, local, self.transport_number)
        self.remote = FullAddress(addr.nic, remote, addr.port)
        self._route = route
        self.state = EndpointState.CONNECTED

    def disconnect(self) -> None:
        if self.state is not EndpointState.CONNECTED:
            return
        self._match_local = self._bound_addr
        self._match_remote = b""
        self.local = FullAddress(self.local.nic, self._bound_addr, self.transport_number)
        self.remote = None
        self._route = None
        self.state = EndpointState.BOUND

    def _autobind(self) -> None:
        """Nothing to take: a raw endpoint has no port."""

    def _release(self) -> None:
        self.stack.unregister_raw_endpoint(self.net_proto, self.transport_number, self)

    def _is_subnet_broadcast(self, addr: bytes) -> bool:
        return self.v4 and any(nic.is_subnet_broadcast(self.net_proto, addr) for nic in self.stack.nics.values())

    # --- reading ----------------------------------------------------------------------------------

    def accepts(self, nic_id: int, src: bytes, dst: bytes) -> bool:
        """Is an inbound packet from ``src`` to ``dst`` on NIC ``nic_id`` for this endpoint?"""
        if self._match_remote and self._match_remote != src:
            return False
        if self._match_local and self._match_local != dst:
            return False
        bound_nic = self.options[SockOpt.BIND_TO_DEVICE] or self._match_nic
        return not bound_nic or bound_nic == nic_id

    def handle_raw_packet(self, pkt: PacketBuffer, src: bytes, dst: bytes, packet: bytes) -> None:
        """Queue ``packet`` (shared by every raw endpoint that reads it: immutable) for the reader;
        over IPv6 with a checksum to check, only if it is right (Linux's rawv6_rcv); ICMP, only a
        whole ICMP header of a type not filtered out; a group's, as the socket's memberships let it in."""
        if (self._source_filtered or not self._multicast_all) and self._not_for_this_socket(pkt, src, dst):
            return
        if self._icmp:
            at = (packet[0] & 0x0F) * 4 if self.v4 else 0
            if len(packet) < at + _ICMP_HEADER_SIZE:
                self.stats.receive_errors.malformed_packets_received.increment()
                return
            if self._icmp_filter >> packet[at] & 1:
                return
        if not self.v4 and self.options[SockOpt.IPV6_CHECKSUM] >= 0 and \
                checksum(packet, pseudo_header_checksum(self.transport_number, src, dst, len(packet))) != 0xFFFF:
            self.stats.receive_errors.checksum_errors.increment()
            return
        view = memoryview(packet)
        if self.socket_filter is not None:
            # At 0: what the socket reads (IPv4: the IP header; IPv6: the payload), as Linux's filter.
            link = bytes(pkt.link_header)
            keep = self._filter_keeps(pkt, link if self.v4 else link + bytes(pkt.network_header), packet, len(link))
            if not keep:
                return
            view = view[:keep]
        self._enqueue(view, FullAddress(pkt.nic_id, src, 0), pkt, dst)

    # --- writing ----------------------------------------------------------------------------------

    def _quoted_payload(self, pkt: PacketBuffer) -> tuple[int, bytes]:
        """The quoted packet from its transport header, or, IP_HDRINCL, from its IP header, as the socket
        wrote it (Linux's raw_err)."""
        if self.v4 and self.options[SockOpt.HEADER_INCLUDED]:
            return 0, bytes(pkt.transport_header[8:]) + bytes(pkt.data)
        return 0, bytes(pkt.data)

    def write(self, data: bytes | bytearray | memoryview, options: WriteOptions = DEFAULT_WRITE_OPTIONS) -> int:
        """As a datagram endpoint's; over IPv6 the destination's port, if any, must be the protocol
        (Linux's rawv6_sendmsg), over IPv4 it is ignored."""
        to = options.to
        if not self.v4 and to is not None and to.port not in (0, self.transport_number):
            self.stats.write_errors.invalid_args.increment()
            raise ErrInvalidOptionValue()
        return super().write(data, options)

    def _send(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int, tos: int) -> None:
        if self.v4 and self.options[SockOpt.HEADER_INCLUDED]:
            self._send_header_included(route, data)
            return
        checksum_offset = -1 if self.v4 else self.options[SockOpt.IPV6_CHECKSUM]
        if checksum_offset >= 0:
            if checksum_offset + 1 >= len(data):
                raise ErrInvalidOptionValue("the checksum lies beyond the payload")
            payload = bytearray(data)
            payload[checksum_offset:checksum_offset + 2] = b"\0\0"
            csum = ~checksum(payload, pseudo_header_checksum(self.transport_number, route.local_address,
                                                             route.remote_address, len(payload))) & 0xFFFF
            payload[checksum_offset] = csum >> 8
            payload[checksum_offset + 1] = csum & 0xFF
            data = payload
        self._route_write(route, self.transport_number, PacketBuffer(route.max_header_length(), data), ttl, tos)

    def _send_header_included(self, route: Route, data: bytes | bytearray | memoryview) -> None:
        """Linux's raw_send_hdrinc: the caller's datagram, unfragmented, sent where the write said
        (whatever its header's destination), with its total length, header checksum and, when 0,
        identification and source filled in; a header length under 20 leaves all of it as written."""
        if len(data) < ipv4.MIN_SIZE:
            raise ErrInvalidOptionValue("shorter than an IPv4 header")
        header_length = (data[0] & 0x0F) * 4
        if header_length > len(data):
            raise ErrInvalidOptionValue("the header is longer than the datagram")
        if len(data) > route.mtu():
            raise ErrMessageTooLong()
        datagram = bytearray(data)
        if header_length >= ipv4.MIN_SIZE:
            if not any(datagram[12:16]):
                datagram[12:16] = route.local_address
            datagram[2:4] = len(datagram).to_bytes(2, "big")
            if not any(datagram[4:6]):
                datagram[4:6] = route.network_endpoint.protocol.next_ident().to_bytes(2, "big")
            datagram[10:12] = b"\0\0"
            datagram[10:12] = (~checksum(memoryview(datagram)[:header_length]) & 0xFFFF).to_bytes(2, "big")
            route.network_endpoint.filter_output(route, datagram[9], bytes(datagram[12:16]), bytes(datagram[16:20]),
                                                 len(datagram), datagram[header_length:header_length + HEAD_SIZE],
                                                 self.options[SockOpt.MARK])
        pkt = PacketBuffer(route.max_header_length(), datagram)
        pkt.network_protocol = IPV4_PROTOCOL_NUMBER
        route.network_endpoint.send(route, pkt)

    # --- options ----------------------------------------------------------------------------------

    def set_sock_opt(self, opt: SockOpt, value: Any) -> None:
        if opt is SockOpt.HEADER_INCLUDED:
            if not self.v4:
                raise ErrUnknownProtocolOption()
            value = bool(value)
        elif opt is SockOpt.IPV6_CHECKSUM:
            if self.v4:
                raise ErrUnknownProtocolOption()
            value = int(value)
            if value > 0 and value & 1:     # Linux: an odd offset would split a 16-bit word
                raise ErrInvalidOptionValue()
            value = max(value, -1)
        elif opt is SockOpt.ICMP_FILTER:
            if not self._icmp:
                raise ErrUnknownProtocolOption()
            value = int(value) & ((1 << _FILTER_BITS[self.transport_number]) - 1)
            self._icmp_filter = value
        super().set_sock_opt(opt, value)
