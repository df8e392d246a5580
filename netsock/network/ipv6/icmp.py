"""ICMPv6 (RFC 4443) in the network layer: echo, errors in both directions, and dispatch of
neighbour discovery and MLD messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...header import icmpv6, ipv6
from ...stack.interfaces import PacketType
from ...stack.packet_buffer import PacketBuffer
from ...stack.registration import ControlType
from ...tcpip import ICMPV6_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, Error

if TYPE_CHECKING:
    from ...tcpip.stats import ICMPv6PacketStats
    from . import IPv6Endpoint

_TYPE_COUNTERS = {
    icmpv6.ECHO_REQUEST: "echo_request", icmpv6.ECHO_REPLY: "echo_reply",
    icmpv6.DST_UNREACHABLE: "dst_unreachable", icmpv6.PACKET_TOO_BIG: "packet_too_big",
    icmpv6.TIME_EXCEEDED: "time_exceeded", icmpv6.PARAM_PROBLEM: "param_problem",
    icmpv6.ROUTER_SOLICIT: "router_solicit", icmpv6.ROUTER_ADVERT: "router_advert",
    icmpv6.NEIGHBOR_SOLICIT: "neighbor_solicit", icmpv6.NEIGHBOR_ADVERT: "neighbor_advert",
    icmpv6.REDIRECT: "redirect_msg",
}

_UNREACHABLE_KINDS = {
    icmpv6.NO_ROUTE: ControlType.NET_UNREACHABLE,
    icmpv6.ADMIN_PROHIBITED: ControlType.PROHIBITED,
    icmpv6.BEYOND_SCOPE: ControlType.HOST_UNREACHABLE,
    icmpv6.ADDRESS_UNREACHABLE: ControlType.HOST_UNREACHABLE,
    icmpv6.PORT_UNREACHABLE: ControlType.PORT_UNREACHABLE,
    icmpv6.SOURCE_POLICY_FAILED: ControlType.PROHIBITED,
    icmpv6.REJECT_ROUTE: ControlType.PROHIBITED,
}

_NDP_TYPES = frozenset((icmpv6.ROUTER_SOLICIT, icmpv6.ROUTER_ADVERT, icmpv6.NEIGHBOR_SOLICIT,
                        icmpv6.NEIGHBOR_ADVERT, icmpv6.REDIRECT))
_MLD_TYPES = frozenset((icmpv6.MLD_QUERY, icmpv6.MLD_REPORT, icmpv6.MLD_DONE, icmpv6.MLDV2_REPORT))


def count(stats: ICMPv6PacketStats, icmp_type: int) -> None:
    name = _TYPE_COUNTERS.get(icmp_type)
    if name is not None:
        getattr(stats, name).value += 1


def handle(ep: IPv6Endpoint, pkt: PacketBuffer, ip: ipv6.IPv6Header, router_alert: int | None) -> None:
    """An inbound ICMPv6 message (pkt.data starts at the ICMPv6 header)."""
    received = ep.stack.stats().icmp.v6_packets_received
    data = pkt.data
    hdr = icmpv6.parse(data)
    if not hdr or not icmpv6.checksum_valid(ip.src, ip.dst, data):
        received.invalid.increment()
        return
    count(received, hdr.type)
    kind = hdr.type
    if kind in _NDP_TYPES:
        ep.ndp.handle(pkt, ip, hdr)
        return
    if not ep.nic.has_address(IPV6_PROTOCOL_NUMBER, ip.dst) and pkt.pkt_type == PacketType.HOST:
        return   # only neighbour discovery may use a tentative address (RFC 4862 §5.4)
    if kind in _MLD_TYPES:
        ep.ndp.handle_mld(pkt, ip, router_alert)
    elif kind == icmpv6.ECHO_REQUEST:
        _reply_echo(ep, pkt, ip, hdr)
    elif kind == icmpv6.ECHO_REPLY:
        pkt.transport_header = data[:icmpv6.MIN_SIZE]
        ep.stack.deliver_transport_packet(ep.nic, IPV6_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER, pkt, ip.src, ip.dst)
    elif kind == icmpv6.DST_UNREACHABLE:
        control = _UNREACHABLE_KINDS.get(hdr.code)
        if control is not None:
            _deliver_error(ep, pkt, control, 0)
    elif kind == icmpv6.PACKET_TOO_BIG:
        _deliver_error(ep, pkt, ControlType.PACKET_TOO_BIG, max(hdr.mtu, ipv6.MIN_MTU))
    elif kind == icmpv6.TIME_EXCEEDED:
        _deliver_error(ep, pkt, ControlType.TTL_EXCEEDED, 0)
    elif kind == icmpv6.PARAM_PROBLEM:
        _deliver_error(ep, pkt, ControlType.PARAMETER_PROBLEM, hdr.pointer)


def _reply_echo(ep: IPv6Endpoint, pkt: PacketBuffer, ip: ipv6.IPv6Header, hdr: icmpv6.ICMPv6Header) -> None:
    """RFC 4443 §4.2; a multicast echo is answered from a unicast address (Linux answers by default)."""
    stack = ep.stack
    sent = stack.stats().icmp.v6_packets_sent
    local = b"" if ipv6.is_multicast(ip.dst) else ip.dst
    try:
        route = stack.find_route(ep.nic.id if ipv6.is_link_local(ip.src) else 0, local, ip.src,
                                 IPV6_PROTOCOL_NUMBER)
    except Error:
        sent.dropped.increment()
        return
    payload = pkt.data[icmpv6.MIN_SIZE:]
    reply = PacketBuffer(route.max_header_length() + icmpv6.MIN_SIZE, payload)
    icmpv6.build(reply.prepend(icmpv6.MIN_SIZE), icmpv6.ECHO_REPLY, 0, hdr.rest, route.local_address,
                 route.remote_address, payload)
    try:
        route.write_packet(ICMPV6_PROTOCOL_NUMBER, reply, route.default_ttl(), ip.traffic_class)
    except Error:
        sent.dropped.increment()
        return
    sent.echo_reply.value += 1


def _deliver_error(ep: IPv6Endpoint, pkt: PacketBuffer, kind: ControlType, info: int) -> None:
    """Tell the endpoint that sent the quoted packet; a packet-too-big also lowers the path MTU."""
    # The quote is cut to fit 1280 bytes (always so for a packet too big), so its payload length is
    # not checked against it: only the fixed header and the first transport bytes matter.
    quoted = pkt.data[icmpv6.MIN_SIZE:]
    if len(quoted) < ipv6.HEADER_SIZE or quoted[0] >> 4 != ipv6.VERSION:
        ep.stack.stats().icmp.v6_packets_received.invalid.increment()
        return
    src, dst = bytes(quoted[8:24]), bytes(quoted[24:40])
    if kind is ControlType.PACKET_TOO_BIG:
        ep.stack.path_mtu.update(dst, info)
    chain = ipv6.iter_extension_headers(quoted, quoted[ipv6.NEXT_HEADER_OFFSET])
    if not chain or chain.payload_offset + 4 > len(quoted):
        return
    # What IPV6_RECVERR reports besides the quote: the ICMPv6 header and the quoted IPv6 headers after it.
    pkt.transport_header = pkt.data[:icmpv6.MIN_SIZE + chain.payload_offset]
    pkt.data = quoted[chain.payload_offset:]
    ep.stack.deliver_transport_control_packet(ep.nic, IPV6_PROTOCOL_NUMBER, chain.next_header, src, dst, kind,
                                              info, pkt)


def send_error(ep: IPv6Endpoint, pkt: PacketBuffer, ip: ipv6.IPv6Header, icmp_type: int, code: int, rest: int,
               original: memoryview, allow_multicast: bool = False) -> None:
    """Send an ICMPv6 error about ``original`` (the offending packet, IPv6 header first).

    RFC 4443 §2.4 (e): never about an ICMPv6 error, nor to a multicast destination (except
    packet-too-big and unrecognised-option problems), nor from an unspecified or multicast source;
    rate-limited as ICMPv4 errors are, but for packet-too-big, which path MTU discovery cannot do
    without (as Linux's icmpv6_xrlim_allow).
    """
    stack = ep.stack
    sent = stack.stats().icmp.v6_packets_sent
    if ipv6.is_unspecified(ip.src) or ipv6.is_multicast(ip.src):
        return
    if pkt.pkt_type != PacketType.HOST and not allow_multicast:
        return
    if _is_icmpv6_error(original, original[ipv6.NEXT_HEADER_OFFSET]):    # reassembled: not ip.next_header
        return
    if icmp_type != icmpv6.PACKET_TOO_BIG and not stack.icmp_rate_limiter.allow(ip.src):
        sent.rate_limited.increment()
        return
    local = ip.dst if ep.nic.has_address(IPV6_PROTOCOL_NUMBER, ip.dst) else b""
    try:
        route = stack.find_route(ep.nic.id if ipv6.is_link_local(ip.src) else 0, local, ip.src,
                                 IPV6_PROTOCOL_NUMBER)
    except Error:
        sent.dropped.increment()
        return
    quote = bytes(original[:icmpv6.MAX_ERROR_SIZE - ipv6.HEADER_SIZE - icmpv6.MIN_SIZE])
    reply = PacketBuffer(route.max_header_length() + icmpv6.MIN_SIZE, quote)
    icmpv6.build(reply.prepend(icmpv6.MIN_SIZE), icmp_type, code, rest, route.local_address, route.remote_address,
                 quote)
    try:
        route.write_packet(ICMPV6_PROTOCOL_NUMBER, reply, route.default_ttl(), 0)
    except Error:
        sent.dropped.increment()
        return
    count(sent, icmp_type)


def _is_icmpv6_error(packet: memoryview, next_header: int) -> bool:
    """Is ``packet`` an ICMPv6 error, behind however many extension headers (Linux's is_ineligible)?
    A truncated one counts as an error; a chain that cannot be walked, or a later fragment, does not."""
    chain = ipv6.iter_extension_headers(packet, next_header)
    if not chain or chain.next_header != ICMPV6_PROTOCOL_NUMBER or (
            chain.fragment is not None and chain.fragment.offset):
        return False
    return chain.payload_offset >= len(packet) or icmpv6.is_error(packet[chain.payload_offset])
