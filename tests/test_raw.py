"""Raw IP endpoints, as Linux's SOCK_RAW sockets: a copy of every inbound packet of their protocol
(IPv4: the whole datagram; IPv6: the payload) beside the stack's own handling, narrowed by bind and
connect; writes behind a header the stack builds, or (IPv4, HEADER_INCLUDED) the caller's own.

The stack sits on bare IP channel links; scapy builds what is injected and parses what is sent."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from netsock.link.channel import ChannelEndpoint
from netsock.network.ipv4 import IPv4Protocol
from netsock.network.ipv6 import IPv6Protocol
from netsock.stack import ManualClock, Stack
from netsock.tcpip import (IPV4_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, Address, ErrBadLocalAddress,
                           ErrInvalidEndpointState, ErrInvalidOptionValue, ErrMessageTooLong, ErrUnknownProtocolOption,
                           ErrWouldBlock, FullAddress, Route, SockOpt, WriteOptions)
from netsock.transport.icmp import ICMPv6Protocol
from netsock.transport.raw import RawEndpoint
from netsock.transport.udp import UDPProtocol
from netsock.waiter import EventMask, WaiterQueue

from conftest import LOCAL, NIC_ID, OTHER_PEER, PEER, StackHarness, addr, checksums_valid, received, to

EXPERIMENTAL = 253      # RFC 3692: a protocol number no stack handles


def raw4(h: StackHarness, proto: int) -> RawEndpoint:
    return RawEndpoint(h.stack, IPV4_PROTOCOL_NUMBER, proto, WaiterQueue())


# --- IPv4: receiving --------------------------------------------------------------------------------

def test_icmp_endpoint_reads_whole_echo_requests_the_stack_also_answers(harness: StackHarness) -> None:
    ep = raw4(harness, 1)
    events: list[EventMask] = []
    ep.waiter_queue.register(events.append, EventMask.IN)
    request = IP(src=PEER, dst=LOCAL, id=7) / ICMP(type=8, id=5, seq=1) / Raw(b"ping")
    harness.inject(request)

    assert events == [EventMask.IN] and ep.readiness(EventMask.IN) == EventMask.IN
    result = ep.read()
    assert result.data == bytes(request)                 # IP header included, as Linux reads it
    assert result.sender == FullAddress(NIC_ID, addr(PEER), 0)
    reply = harness.sent_one()
    assert reply[ICMP].type == 0 and reply[Raw].load == b"ping"


def test_udp_endpoint_sees_datagrams_and_udp_still_answers_unreachable_ports(harness: StackHarness) -> None:
    ep = raw4(harness, 17)
    datagram = IP(src=PEER, dst=LOCAL) / UDP(sport=1000, dport=9) / Raw(b"x")
    harness.inject(datagram)

    assert ep.read().data == bytes(datagram)
    assert harness.sent_one()[ICMP].type == 3           # port unreachable: raw sockets change nothing here


def test_unknown_protocol_taken_by_a_raw_endpoint_is_no_error(harness: StackHarness) -> None:
    packet = IP(src=PEER, dst=LOCAL, proto=EXPERIMENTAL) / Raw(b"experiment")
    harness.inject(packet)
    assert harness.sent_one()[ICMP].code == 2            # protocol unreachable, without a raw endpoint

    ep = raw4(harness, EXPERIMENTAL)
    harness.inject(packet)
    assert ep.read().data == bytes(packet)
    assert harness.sent() == []                          # no "protocol unreachable", as Linux


def test_every_raw_endpoint_of_the_protocol_gets_a_copy_and_others_none(harness: StackHarness) -> None:
    first, second, udp = raw4(harness, 1), raw4(harness, 1), raw4(harness, 17)
    request = IP(src=PEER, dst=LOCAL) / ICMP(type=8, id=1, seq=1)
    harness.inject(request)
    assert first.read().data == second.read().data == bytes(request)
    with pytest.raises(ErrWouldBlock):
        udp.read()


def test_bound_endpoint_reads_packets_to_its_address_only(harness: StackHarness) -> None:
    harness.stack.add_address(NIC_ID, IPV4_PROTOCOL_NUMBER, "192.0.2.4/24")
    ep = raw4(harness, EXPERIMENTAL)
    ep.bind(FullAddress(0, addr("192.0.2.4"), 0))
    assert ep.get_local_address() == FullAddress(0, addr("192.0.2.4"), EXPERIMENTAL)   # the port: the protocol

    harness.inject(IP(src=PEER, dst=LOCAL, proto=EXPERIMENTAL) / Raw(b"to .2"))
    harness.inject(IP(src=PEER, dst="192.0.2.4", proto=EXPERIMENTAL) / Raw(b"to .4"))
    assert [IP(p)[Raw].load for p in received(ep)] == [b"to .4"]

    ep.bind(FullAddress(0, b"", 0))                      # rebinding is allowed until connected, as Linux
    harness.inject(IP(src=PEER, dst=LOCAL, proto=EXPERIMENTAL) / Raw(b"to .2"))
    assert len(received(ep)) == 1


def test_bind_refuses_foreign_addresses(harness: StackHarness) -> None:
    with pytest.raises(ErrBadLocalAddress):
        raw4(harness, 1).bind(FullAddress(0, addr("203.0.113.9"), 0))


def test_connected_endpoint_reads_its_peer_only_and_sends_to_it(harness: StackHarness) -> None:
    ep = raw4(harness, EXPERIMENTAL)
    ep.connect(FullAddress(0, addr(PEER), 0))
    assert ep.get_local_address().addr == addr(LOCAL)

    harness.inject(IP(src=OTHER_PEER, dst=LOCAL, proto=EXPERIMENTAL) / Raw(b"stranger"))
    harness.inject(IP(src=PEER, dst=LOCAL, proto=EXPERIMENTAL) / Raw(b"peer"))
    assert [IP(p)[Raw].load for p in received(ep)] == [b"peer"]
    harness.sent()

    ep.write(b"hello")
    packet = harness.sent_one()
    assert (packet.dst, packet.proto, packet[Raw].load) == (PEER, EXPERIMENTAL, b"hello")
    with pytest.raises(ErrInvalidEndpointState):
        ep.bind(FullAddress(0, b"", 0))

    ep.connect(FullAddress())                            # AF_UNSPEC: reads from anyone again
    harness.inject(IP(src=OTHER_PEER, dst=LOCAL, proto=EXPERIMENTAL) / Raw(b"stranger"))
    assert len(received(ep)) == 1


def test_reassembled_datagram_is_read_whole_behind_an_unfragmented_header(harness: StackHarness) -> None:
    ep = raw4(harness, EXPERIMENTAL)
    payload = bytes(range(256)) * 8
    whole = IP(src=PEER, dst=LOCAL, proto=EXPERIMENTAL, id=99) / Raw(payload)
    for fragment in whole.fragment(fragsize=800):
        harness.inject(fragment)
    [packet] = received(ep)
    parsed = IP(packet)
    assert (parsed.len, parsed.flags, parsed.frag, parsed[Raw].load) == (20 + len(payload), 0, 0, payload)
    assert scapy_checksum(packet[:20]) == 0


def test_closed_endpoint_leaves_the_fast_path_empty(harness: StackHarness) -> None:
    ep = raw4(harness, 1)
    assert harness.stack.raw_endpoints
    ep.close()
    assert harness.stack.raw_endpoints == {}
    harness.inject(IP(src=PEER, dst=LOCAL) / ICMP(type=8, id=1, seq=1))
    assert harness.sent_one()[ICMP].type == 0


def test_full_receive_queue_drops_and_counts(harness: StackHarness) -> None:
    ep = raw4(harness, EXPERIMENTAL)
    ep.set_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE, 0)      # clamped to the minimum, 4096 bytes
    for _ in range(4):
        harness.inject(IP(src=PEER, dst=LOCAL, proto=EXPERIMENTAL) / Raw(bytes(1400)))
    assert len(received(ep)) == 3
    assert ep.stats.receive_errors.receive_buffer_overflow.value == 1


# --- IPv4: sending ----------------------------------------------------------------------------------

def test_write_goes_behind_a_header_the_stack_builds(harness: StackHarness) -> None:
    ep = raw4(harness, 1)
    message = bytes(ICMP(type=8, id=3, seq=4) / Raw(b"hand made"))   # the caller's checksum, as Linux
    ep.set_sock_opt(SockOpt.TTL, 9)
    assert ep.write(message, to(PEER, 1234)) == len(message)         # the port is ignored
    [raw] = harness.sent_raw()
    packet = IP(raw)
    assert checksums_valid(raw)
    assert (packet.src, packet.dst, packet.proto, packet.ttl) == (LOCAL, PEER, 1, 9)
    assert raw[20:] == message


def test_write_too_big_for_one_ipv4_datagram_is_refused(harness: StackHarness) -> None:
    with pytest.raises(ErrMessageTooLong):
        raw4(harness, EXPERIMENTAL).write(bytes(65516), to(PEER, 0))


def test_header_included_write_gets_length_checksum_ident_and_source_filled(harness: StackHarness) -> None:
    ep = raw4(harness, EXPERIMENTAL)
    ep.set_sock_opt(SockOpt.HEADER_INCLUDED, True)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0x10, 0, 0, 0, 33, EXPERIMENTAL, 0, bytes(4), addr(OTHER_PEER))
    ep.write(header + b"payload", to(PEER, 0))          # routed to PEER, addressed as the header says
    [raw] = harness.sent_raw()
    packet = IP(raw)
    assert scapy_checksum(raw[:20]) == 0
    assert (packet.len, packet.src, packet.dst, packet.ttl, packet.tos) == (27, LOCAL, OTHER_PEER, 33, 0x10)
    assert packet.id != 0 and packet[Raw].load == b"payload"


def test_header_included_write_keeps_what_the_caller_set(harness: StackHarness) -> None:
    ep = raw4(harness, 255)                              # IPPROTO_RAW: header included from the start
    assert ep.get_sock_opt(SockOpt.HEADER_INCLUDED) is True
    written = bytes(IP(src="192.0.2.77", dst=PEER, id=0x1234, proto=17, flags="DF") / UDP(sport=1, dport=2))
    ep.write(written, to(PEER, 0))
    assert harness.sent_raw() == [written]              # scapy's length and checksum are right already


def test_header_included_write_checks_lengths(harness: StackHarness) -> None:
    ep = raw4(harness, 255)
    with pytest.raises(ErrInvalidOptionValue):
        ep.write(bytes(19), to(PEER, 0))
    with pytest.raises(ErrInvalidOptionValue):
        ep.write(b"\x46" + bytes(20), to(PEER, 0))      # a 24-byte header in 21 bytes
    with pytest.raises(ErrMessageTooLong):              # never fragmented, as Linux
        ep.write(bytes(IP(dst=PEER) / Raw(bytes(1481))), to(PEER, 0))
    assert harness.sent_raw() == []


def test_header_included_is_ipv4_only(harness: StackHarness) -> None:
    stack = Stack((IPv4Protocol, IPv6Protocol), (), clock=ManualClock())
    ep = RawEndpoint(stack, IPV6_PROTOCOL_NUMBER, EXPERIMENTAL, WaiterQueue())
    with pytest.raises(ErrUnknownProtocolOption):
        ep.set_sock_opt(SockOpt.HEADER_INCLUDED, True)
    with pytest.raises(ErrUnknownProtocolOption):
        raw4(harness, 1).set_sock_opt(SockOpt.IPV6_CHECKSUM, 2)


def test_protocol_must_fit_the_ip_header(harness: StackHarness) -> None:
    for proto in (0, 256):
        with pytest.raises(ErrInvalidOptionValue):
            raw4(harness, proto)


# --- IPv6 ---------------------------------------------------------------------------------------------

LOCAL6 = "2001:db8::2"
PEER6 = "2001:db8::1"


class V6:
    """A Stack(IPv6) with UDP and ICMPv6 on a bare IPv6 channel link at 2001:db8::2/64."""

    def __init__(self) -> None:
        self.stack = Stack((IPv6Protocol,), (UDPProtocol, ICMPv6Protocol), clock=ManualClock())
        self.link = ChannelEndpoint(mtu=1500)
        self.stack.create_nic(NIC_ID, self.link)
        self.stack.add_address(NIC_ID, IPV6_PROTOCOL_NUMBER, f"{LOCAL6}/64")
        self.stack.set_route_table([Route.parse("2001:db8::/64", NIC_ID)])

    def raw(self, proto: int) -> RawEndpoint:
        return RawEndpoint(self.stack, IPV6_PROTOCOL_NUMBER, proto, WaiterQueue())

    def inject(self, packet: IPv6) -> None:
        self.link.inject(IPV6_PROTOCOL_NUMBER, bytes(packet))

    def sent(self) -> list[IPv6]:
        return [IPv6(info.data) for info in self.link.drain()]


def a6(text: str) -> bytes:
    return bytes(Address.parse(text))


def to6(host: str, port: int = 0) -> WriteOptions:
    return WriteOptions(to=FullAddress(0, a6(host), port))


@pytest.fixture
def v6() -> V6:
    return V6()


def test_icmpv6_endpoint_reads_the_payload_of_requests_the_stack_also_answers(v6: V6) -> None:
    ep = v6.raw(58)
    request = IPv6(src=PEER6, dst=LOCAL6) / ICMPv6EchoRequest(id=5, seq=1, data=b"ping6")
    v6.inject(request)

    result = ep.read()
    assert result.data == bytes(request[ICMPv6EchoRequest])      # no IPv6 header, as Linux
    assert result.sender == FullAddress(NIC_ID, a6(PEER6), 0)
    [reply] = v6.sent()
    assert ICMPv6EchoReply in reply


def test_icmpv6_endpoint_drops_bad_checksums(v6: V6) -> None:
    ep = v6.raw(58)
    v6.inject(IPv6(src=PEER6, dst=LOCAL6) / ICMPv6EchoRequest(id=5, seq=1, cksum=0x1234))
    with pytest.raises(ErrWouldBlock):
        ep.read()
    assert ep.stats.receive_errors.checksum_errors.value == 1


def test_icmpv6_write_gets_its_checksum(v6: V6) -> None:
    ep = v6.raw(58)
    assert ep.get_sock_opt(SockOpt.IPV6_CHECKSUM) == 2
    ep.write(bytes(ICMPv6EchoRequest(id=9, seq=2, data=b"hi", cksum=0)), to6(PEER6))
    [packet] = v6.sent()
    assert (packet.src, packet.dst, packet.nh) == (LOCAL6, PEER6, 58)
    sent_sum = packet[ICMPv6EchoRequest].cksum
    del packet[ICMPv6EchoRequest].cksum
    assert sent_sum == IPv6(bytes(packet))[ICMPv6EchoRequest].cksum      # scapy's own sum agrees


def test_ipv6_checksum_option_fills_and_checks_at_an_offset(v6: V6) -> None:
    ep = v6.raw(EXPERIMENTAL)
    assert ep.get_sock_opt(SockOpt.IPV6_CHECKSUM) == -1
    ep.write(b"\xaa\xbb\xcc\xdd", to6(PEER6))
    assert bytes(v6.sent()[0].payload) == b"\xaa\xbb\xcc\xdd"       # none by default

    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.IPV6_CHECKSUM, 3)                   # odd: Linux's EINVAL
    ep.set_sock_opt(SockOpt.IPV6_CHECKSUM, 2)
    ep.write(b"\xaa\xbb\x00\x00\xee", to6(PEER6))
    [packet] = v6.sent()
    body = bytes(packet.payload)
    pseudo = a6(LOCAL6) + a6(PEER6) + struct.pack("!I3xB", len(body), EXPERIMENTAL)
    assert body[:2] == b"\xaa\xbb" and body[4] == 0xEE and scapy_checksum(pseudo + body) == 0
    with pytest.raises(ErrInvalidOptionValue):
        ep.write(b"\xaa\xbb\xcc", to6(PEER6))                       # the field does not fit

    # The pseudo-header sums the same both ways: what we sent is a valid packet to us, too.
    v6.inject(IPv6(src=PEER6, dst=LOCAL6, nh=EXPERIMENTAL) / Raw(body))
    v6.inject(IPv6(src=PEER6, dst=LOCAL6, nh=EXPERIMENTAL) / Raw(b"\xaa\xbb\x00\x01\xee"))
    assert received(ep) == [body]
    assert ep.stats.receive_errors.checksum_errors.value == 1


def test_ipv6_destination_port_must_be_zero_or_the_protocol(v6: V6) -> None:
    ep = v6.raw(EXPERIMENTAL)
    with pytest.raises(ErrInvalidOptionValue):
        ep.write(b"data", to6(PEER6, 17))
    ep.write(b"data", to6(PEER6, EXPERIMENTAL))
    assert len(v6.sent()) == 1


def test_unknown_next_header_taken_by_a_raw_endpoint_is_no_error(v6: V6) -> None:
    packet = IPv6(src=PEER6, dst=LOCAL6, nh=EXPERIMENTAL) / Raw(b"experiment")
    v6.inject(packet)
    assert len(v6.sent()) == 1                                     # parameter problem

    ep = v6.raw(EXPERIMENTAL)
    v6.inject(packet)
    assert ep.read().data == b"experiment"
    assert v6.sent() == []


# --- ICMP filters ---------------------------------------------------------------------------------------

def test_icmp_filter_leaves_blocked_types_and_truncated_messages_unread(harness: StackHarness) -> None:
    ep = raw4(harness, 1)
    ep.set_sock_opt(SockOpt.ICMP_FILTER, 1 << 8)                 # no echo requests
    harness.inject(IP(src=PEER, dst=LOCAL) / ICMP(type=8, id=1, seq=1))
    harness.inject(IP(src=PEER, dst=LOCAL) / ICMP(type=0, id=1, seq=1))
    harness.inject(IP(src=PEER, dst=LOCAL, proto=1) / Raw(b"\x0d\x00\x00\x00"))   # 4 bytes: no whole header
    assert [IP(p)[ICMP].type for p in received(ep)] == [0]
    assert ep.stats.receive_errors.malformed_packets_received.value == 1
    assert harness.sent_one()[ICMP].type == 0                    # the stack still answered the request

    with pytest.raises(ErrUnknownProtocolOption):
        raw4(harness, EXPERIMENTAL).set_sock_opt(SockOpt.ICMP_FILTER, 0)


def test_icmpv6_filter_covers_all_256_types(v6: V6) -> None:
    ep = v6.raw(58)
    ep.set_sock_opt(SockOpt.ICMP_FILTER, 1 << 128)              # no echo requests
    v6.inject(IPv6(src=PEER6, dst=LOCAL6) / ICMPv6EchoRequest(id=5, seq=1))
    v6.inject(IPv6(src=PEER6, dst=LOCAL6) / ICMPv6EchoReply(id=5, seq=1))
    assert [p[0] for p in received(ep)] == [129]
