"""ICMPv4 in the network layer: answer echo requests, send errors, and route received errors to the
transport endpoint whose packet caused them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...header import icmpv4, ipv4
from ...header.checksum import checksum
from ...tcpip import ICMPV4_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER, Error
from ...stack.interfaces import PacketType
from ...stack.packet_buffer import PacketBuffer
from ...stack.registration import ControlType

if TYPE_CHECKING:
    from ...tcpip.stats import ICMPv4PacketStats
    from .ipv4 import IPv4Endpoint

# RFC 1812 §4.3.2.3: an error quotes as much of the original as fits in a 576-byte datagram.
MAX_ERROR_SIZE = 576

_TYPE_COUNTERS = {
    icmpv4.ECHO: "echo", icmpv4.ECHO_REPLY: "echo_reply", icmpv4.DST_UNREACHABLE: "dst_unreachable",
    icmpv4.SRC_QUENCH: "src_quench", icmpv4.REDIRECT: "redirect", icmpv4.TIME_EXCEEDED: "time_exceeded",
    icmpv4.PARAM_PROBLEM: "param_problem", icmpv4.TIMESTAMP: "timestamp",
    icmpv4.TIMESTAMP_REPLY: "timestamp_reply", icmpv4.INFO_REQUEST: "info_request",
    icmpv4.INFO_REPLY: "info_reply",
}

_UNREACHABLE_KINDS = {
    icmpv4.NET_UNREACHABLE: ControlType.NET_UNREACHABLE,
    icmpv4.HOST_UNREACHABLE: ControlType.HOST_UNREACHABLE,
    icmpv4.PROTO_UNREACHABLE: ControlType.PROTOCOL_UNREACHABLE,
    icmpv4.PORT_UNREACHABLE: ControlType.PORT_UNREACHABLE,
    icmpv4.FRAG_NEEDED: ControlType.PACKET_TOO_BIG,
    icmpv4.NET_UNKNOWN: ControlType.NET_UNKNOWN,
    icmpv4.HOST_UNKNOWN: ControlType.HOST_UNKNOWN,
    icmpv4.NET_PROHIBITED: ControlType.NET_UNKNOWN,     # Linux: ENETUNREACH, fatal (icmp_err_convert)
    icmpv4.HOST_PROHIBITED: ControlType.PROHIBITED,
    icmpv4.ADMIN_PROHIBITED: ControlType.PROHIBITED,
}


def _count(stats: ICMPv4PacketStats, icmp_type: int) -> None:
    name = _TYPE_COUNTERS.get(icmp_type)
    if name is not None:
        getattr(stats, name).value += 1


def handle(ep: IPv4Endpoint, pkt: PacketBuffer, ip: ipv4.IPv4Header) -> None:
    """An inbound ICMP message (pkt.data starts at the ICMP header)."""
    received = ep.stack.stats().icmp.v4_packets_received
    data = pkt.data
    hdr = icmpv4.parse(data)
    if not hdr or checksum(data) != 0xFFFF:
        received.invalid.increment()
        return
    _count(received, hdr.type)
    if hdr.type == icmpv4.ECHO:
        # RFC 1122 §3.2.2.6; broadcast and multicast echoes ignored as Linux's icmp_echo_ignore_broadcasts.
        if pkt.pkt_type == PacketType.HOST:
            _reply_echo(ep, pkt, ip, hdr)
    elif hdr.type == icmpv4.ECHO_REPLY:
        pkt.transport_header = pkt.data[:icmpv4.MIN_SIZE]
        ep.stack.deliver_transport_packet(ep.nic, IPV4_PROTOCOL_NUMBER, ICMPV4_PROTOCOL_NUMBER, pkt, ip.src, ip.dst)
    elif hdr.type == icmpv4.DST_UNREACHABLE:
        kind = _UNREACHABLE_KINDS.get(hdr.code)
        if kind is not None:
            _deliver_error(ep, pkt, kind, hdr.mtu if hdr.code == icmpv4.FRAG_NEEDED else 0)
    elif hdr.type == icmpv4.TIME_EXCEEDED:
        _deliver_error(ep, pkt, ControlType.TTL_EXCEEDED, 0)
    elif hdr.type == icmpv4.PARAM_PROBLEM:
        _deliver_error(ep, pkt, ControlType.PARAMETER_PROBLEM, hdr.rest >> 24)


def _reply_echo(ep: IPv4Endpoint, pkt: PacketBuffer, ip: ipv4.IPv4Header, hdr: icmpv4.ICMPv4Header) -> None:
    stack = ep.stack
    sent = stack.stats().icmp.v4_packets_sent
    try:
        route = stack.find_route(0, ip.dst, ip.src, IPV4_PROTOCOL_NUMBER)
    except Error:
        sent.dropped.increment()
        return
    payload = pkt.data[icmpv4.MIN_SIZE:]   # the request's own buffer: echoed without a copy
    reply = PacketBuffer(route.max_header_length() + icmpv4.MIN_SIZE, payload)
    icmpv4.build(reply.prepend(icmpv4.MIN_SIZE), icmpv4.ECHO_REPLY, 0, hdr.rest, payload)
    try:
        route.write_packet(ICMPV4_PROTOCOL_NUMBER, reply, stack.default_ttl, ip.tos, dont_fragment=False)
    except Error:
        sent.dropped.increment()
        return
    sent.echo_reply.value += 1


def _deliver_error(ep: IPv4Endpoint, pkt: PacketBuffer, kind: ControlType, info: int) -> None:
    """Find the endpoint that sent the quoted packet and tell it (the quote is IP header + 8 bytes)."""
    # Only the quoted header and the first 4 transport bytes (the ports) matter; the quote's own
    # total length and checksum are not checked, as the router that sent it may have truncated it.
    quoted = pkt.data[icmpv4.MIN_SIZE:]
    hlen = (quoted[0] & 0x0F) * 4 if quoted else 0
    if hlen < ipv4.MIN_SIZE or quoted[0] >> 4 != 4 or len(quoted) < hlen + 4:
        ep.stack.stats().icmp.v4_packets_received.invalid.increment()
        return
    if kind is ControlType.PACKET_TOO_BIG and info:
        ep.stack.path_mtu.update(bytes(quoted[16:20]), info)
    # What IP_RECVERR reports besides the quote: the ICMP header and the quoted IP header after it.
    pkt.transport_header = pkt.data[:icmpv4.MIN_SIZE + hlen]
    pkt.data = quoted[hlen:]
    ep.stack.deliver_transport_control_packet(ep.nic, IPV4_PROTOCOL_NUMBER, quoted[9], bytes(quoted[12:16]),
                                              bytes(quoted[16:20]), kind, info, pkt)


def send_error(ep: IPv4Endpoint, pkt: PacketBuffer, ip: ipv4.IPv4Header, icmp_type: int, code: int, rest: int,
               original: memoryview) -> None:
    """Send an ICMP error about ``original`` (the offending datagram, IP header first) to its source.

    Follows RFC 1122 §3.2.2: never about an ICMP error, a non-initial fragment, or a packet to a
    broadcast/multicast address or from a non-unicast source; rate-limited per destination, but for
    "fragmentation needed", which path MTU discovery cannot do without (as Linux's icmpv4_mask_allow).
    """
    stack = ep.stack
    sent = stack.stats().icmp.v4_packets_sent
    if pkt.pkt_type != PacketType.HOST or ip.flags_fragment & ipv4.FRAGMENT_OFFSET_MASK:
        return
    if ip.src[0] == 0 or ip.src[0] >= 224 or ip.src[0] == 127 and not ep.nic.loopback:
        return
    if ip.protocol == ICMPV4_PROTOCOL_NUMBER:
        hlen = ip.header_length
        if len(original) <= hlen or original[hlen] not in (icmpv4.ECHO, icmpv4.ECHO_REPLY, icmpv4.TIMESTAMP,
                                                            icmpv4.TIMESTAMP_REPLY, icmpv4.INFO_REQUEST,
                                                            icmpv4.INFO_REPLY):
            return
    pmtu = icmp_type == icmpv4.DST_UNREACHABLE and code == icmpv4.FRAG_NEEDED
    if not pmtu and not stack.icmp_rate_limiter.allow(ip.src):
        sent.rate_limited.increment()
        return
    local = ip.dst if stack.local_address_nic(ip.dst) is not None else b""
    try:
        route = stack.find_route(0, local, ip.src, IPV4_PROTOCOL_NUMBER)
    except Error:
        sent.dropped.increment()
        return
    room = MAX_ERROR_SIZE - ipv4.MIN_SIZE - icmpv4.MIN_SIZE
    quote = bytes(original[:room])
    reply = PacketBuffer(route.max_header_length() + icmpv4.MIN_SIZE, quote)
    icmpv4.build(reply.prepend(icmpv4.MIN_SIZE), icmp_type, code, rest, quote)
    try:
        route.write_packet(ICMPV4_PROTOCOL_NUMBER, reply, stack.default_ttl, 0, dont_fragment=False)
    except Error:
        sent.dropped.increment()
        return
    _count(sent, icmp_type)
