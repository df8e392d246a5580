"""IPv6 for a host (RFC 8200, RFC 4443): inbound validation, extension headers with their RFC 8200
§4.2 actions, the ICMPv6 errors a host owes (and those it must not send), reassembly and source
fragmentation, RFC 6724 source selection and ping6 endpoints.

The stack sits on a bare IPv6 link (as a TUN device) at 2001:db8::2/64 and fe80::2/64; scapy plays
the network, building what is injected and parsing what the stack sends."""

from __future__ import annotations

import random
import struct

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (HBHOptUnknown, ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest,
                                ICMPv6PacketTooBig, ICMPv6ParamProblem, ICMPv6TimeExceeded, IPv6,
                                IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
                                PadN, RouterAlert, defragment6, fragment6)
from scapy.packet import Packet, Raw
from scapy.utils import checksum as scapy_checksum

from netsock.link.channel import ChannelEndpoint
from netsock.network.ipv4 import IPv4Protocol
from netsock.network.ipv6 import IPv6Protocol
from netsock.stack import ManualClock, Stack
from netsock.tcpip import (ICMPV6_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, Address,
                           AddressWithPrefix, ErrConnectStarted, ErrMessageTooLong, FullAddress, Route, SockOpt,
                           WriteOptions)
from netsock.transport.icmp import ICMPv6Protocol
from netsock.transport.tcp import TCPProtocol
from netsock.transport.udp import UDPProtocol
from netsock.waiter import EventMask

LOCAL = "2001:db8::2"
LOCAL_LL = "fe80::2"
PEER = "2001:db8::1"
REMOTE = "2001:db8:1::1"        # off-link, through the default route
ALL_NODES = "ff02::1"
NIC_ID = 1


def a6(text: str) -> bytes:
    return bytes(Address.parse(text))


def to6(host: str, port: int) -> WriteOptions:
    return WriteOptions(to=FullAddress(0, a6(host), port))


def upper_layer_checksum_valid(raw: bytes) -> bool:
    """Does the UDP, TCP or ICMPv6 checksum of the IPv6 packet ``raw`` verify (scapy's RFC 1071 sum
    over the pseudo-header and the bytes as sent)? A zero UDP checksum is invalid over IPv6."""
    next_header, offset = raw[6], 40
    end = 40 + int.from_bytes(raw[4:6], "big")
    while next_header in (0, 43, 60):
        next_header, offset = raw[offset], offset + (raw[offset + 1] + 1) * 8
    body = raw[offset:end]
    if next_header == 17 and body[6:8] == b"\x00\x00":
        return False
    pseudo = raw[8:40] + struct.pack("!I3xB", len(body), next_header)
    return next_header in (6, 17, 58) and scapy_checksum(pseudo + body) == 0


class V6Harness:
    """A Stack(IPv4, IPv6) with UDP, TCP and ICMPv6 endpoints on a bare IPv6 ChannelEndpoint."""

    def __init__(self, mtu: int = 1500) -> None:
        self.clock = ManualClock()
        self.stack = Stack((IPv4Protocol, IPv6Protocol), (UDPProtocol, TCPProtocol, ICMPv6Protocol), clock=self.clock)
        self.link = ChannelEndpoint(mtu=mtu)
        self.nic = self.stack.create_nic(NIC_ID, self.link)
        self.stack.add_address(NIC_ID, IPV6_PROTOCOL_NUMBER, f"{LOCAL}/64")
        self.stack.add_address(NIC_ID, IPV6_PROTOCOL_NUMBER, f"{LOCAL_LL}/64")
        self.stack.set_route_table([Route.parse("2001:db8::/64", NIC_ID), Route.parse("::/0", NIC_ID, PEER)])

    @property
    def stats(self):  # noqa: ANN201 - Stats
        return self.stack.stats()

    @property
    def reassembler(self):  # noqa: ANN201 - Reassembler
        return self.stack.network_protocols[IPV6_PROTOCOL_NUMBER].reassembler

    def inject(self, pkt: Packet | bytes) -> None:
        self.link.inject(IPV6_PROTOCOL_NUMBER, bytes(pkt))

    def sent_raw(self) -> list[bytes]:
        return [info.data for info in self.link.drain()]

    def sent(self) -> list[IPv6]:
        return [IPv6(raw) for raw in self.sent_raw()]

    def sent_one(self) -> IPv6:
        packets = self.sent()
        assert len(packets) == 1, [p.summary() for p in packets]
        return packets[0]

    def udp(self, port: int | None = None):  # noqa: ANN201 - UDPEndpoint
        ep = self.stack.new_endpoint(UDP_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER)
        if port is not None:
            ep.bind(FullAddress(0, b"", port))
        return ep


@pytest.fixture
def h() -> V6Harness:
    return V6Harness()


def udp_to(port: int, payload: bytes = b"data", src: str = PEER, dst: str = LOCAL) -> IPv6:
    return IPv6(src=src, dst=dst) / UDP(sport=40000, dport=port) / Raw(payload)


def echo(src: str = PEER, dst: str = LOCAL, ident: int = 7, seq: int = 1, data: bytes = b"ping6") -> IPv6:
    return IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=ident, seq=seq, data=data)


def param_problem(packet: IPv6) -> tuple[int, int]:
    assert ICMPv6ParamProblem in packet, packet.summary()
    return packet[ICMPv6ParamProblem].code, packet[ICMPv6ParamProblem].ptr


# --- inbound validation ---------------------------------------------------------------------------

VALID = bytes(udp_to(9))

MALFORMED = {
    "empty": b"",
    "short header": VALID[:39],
    "payload length beyond the buffer": VALID[:4] + struct.pack("!H", len(VALID) - 39) + VALID[6:],
    "version 4": b"\x45" + VALID[1:],
    "version 7": b"\x75" + VALID[1:],
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_packet_is_a_counted_drop(h: V6Harness, raw: bytes) -> None:
    ep = h.udp(9)
    h.inject(raw)
    assert h.stats.ip.malformed_packets_received.value == 1
    assert h.stats.ip.packets_delivered.value == 0
    assert not ep.readiness(EventMask.IN)
    assert h.sent() == []


def test_valid_datagram_is_delivered(h: V6Harness) -> None:
    ep = h.udp(9)
    h.inject(udp_to(9, b"hello"))
    result = ep.read()
    assert result.data == b"hello"
    assert (result.sender.addr, result.sender.port) == (a6(PEER), 40000)
    assert h.stats.ip.packets_delivered.value == 1


def test_link_padding_is_trimmed(h: V6Harness) -> None:
    ep = h.udp(9)
    h.inject(bytes(udp_to(9, b"abc")) + bytes(20))
    assert ep.read().data == b"abc"
    assert h.stats.ip.malformed_packets_received.value == 0


@pytest.mark.parametrize("source", ["ff02::1", "ff0e::1234"])
def test_multicast_source_is_dropped(h: V6Harness, source: str) -> None:
    ep = h.udp(9)
    h.inject(udp_to(9, src=source))
    h.inject(echo(src=source))
    assert h.stats.ip.invalid_addresses_received.value == 2
    assert not ep.readiness(EventMask.IN)
    assert h.sent() == []


@pytest.mark.parametrize("destination", ["2001:db8::99", "fe80::99", "ff02::1234", "ff05::2"])
def test_packet_not_for_us_is_dropped(h: V6Harness, destination: str) -> None:
    ep = h.udp(9)
    h.inject(udp_to(9, dst=destination))
    h.inject(echo(dst=destination))
    assert h.stats.ip.invalid_addresses_received.value == 2
    assert h.stats.ip.packets_delivered.value == 0
    assert not ep.readiness(EventMask.IN)
    assert h.sent() == []


def test_zero_udp_checksum_is_dropped(h: V6Harness) -> None:
    ep = h.udp(9)
    raw = bytearray(bytes(udp_to(9)))
    raw[46:48] = b"\x00\x00"
    h.inject(bytes(raw))
    assert h.stats.udp.checksum_errors.value == 1
    assert not ep.readiness(EventMask.IN)
    assert h.sent() == []


def test_bad_icmpv6_checksum_is_counted(h: V6Harness) -> None:
    raw = bytearray(bytes(echo()))
    raw[42] ^= 0xFF
    h.inject(bytes(raw))
    assert h.stats.icmp.v6_packets_received.invalid.value == 1
    assert h.stats.icmp.v6_packets_received.echo_request.value == 0
    assert h.sent() == []


# --- extension headers ----------------------------------------------------------------------------

def test_hop_by_hop_with_padding_and_router_alert_is_accepted(h: V6Harness) -> None:
    ep = h.udp(9)
    h.inject(IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0), PadN(optdata=b"")]) /
             UDP(sport=40000, dport=9) / Raw(b"alert"))
    h.inject(IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrHopByHop(options=[PadN(optdata=bytes(4))]) /
             UDP(sport=40000, dport=9) / Raw(b"padded"))
    assert ep.read().data == b"alert"
    assert ep.read().data == b"padded"
    assert h.sent() == []


@pytest.mark.parametrize("options", [[PadN(optdata=bytes(4)), PadN(optdata=bytes(4))], [PadN(optdata=b"abcd")]],
                         ids=["padding beyond 7 bytes", "non-zero padding"])
def test_abusive_padding_is_a_counted_drop(h: V6Harness, options: list) -> None:
    """As Linux: padding exists to align the next option, anything more is a covert channel."""
    ep = h.udp(9)
    h.inject(IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrHopByHop(options=options) / UDP(sport=40000, dport=9))
    assert h.stats.ip.malformed_packets_received.value == 1
    assert not ep.readiness(EventMask.IN)
    assert h.sent() == []


@pytest.mark.parametrize("header", [IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt], ids=["hop-by-hop", "destination"])
@pytest.mark.parametrize("multicast", [False, True], ids=["unicast", "multicast"])
@pytest.mark.parametrize("action", [0, 1, 2, 3])
def test_unknown_option_action(h: V6Harness, header: type[Packet], multicast: bool, action: int) -> None:
    """RFC 8200 §4.2: the option type's two high bits say skip, discard, discard + parameter problem
    (code 2, pointing at the option), or the same unless the destination was multicast."""
    ep = h.udp(9)
    kind = (action << 6) | 0x1E
    raw = bytes(IPv6(src=PEER, dst=ALL_NODES if multicast else LOCAL) /
                header(options=[PadN(optdata=b"\0\0"), HBHOptUnknown(otype=kind, optdata=b"xy")]) /
                UDP(sport=40000, dport=9) / Raw(b"opt"))
    assert raw[46] == kind          # the option sits behind a 4-byte PadN
    h.inject(raw)

    if action == 0:
        assert ep.read().data == b"opt"
        assert h.sent() == []
        return
    assert not ep.readiness(EventMask.IN)
    if action == 1 or (action == 3 and multicast):
        assert h.sent() == []
        return
    [out] = h.sent_raw()
    reply = IPv6(out)
    assert (reply.src, reply.dst) == (LOCAL, PEER)
    assert param_problem(reply) == (2, 46)
    assert out[48:] == raw and upper_layer_checksum_valid(out)
    assert h.stats.icmp.v6_packets_sent.param_problem.value == 1


def test_hop_by_hop_not_first_is_an_unrecognized_next_header(h: V6Harness) -> None:
    raw = bytes(IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=9))
    ep = h.udp(9)
    h.inject(raw)
    assert not ep.readiness(EventMask.IN)
    [out] = h.sent_raw()
    assert param_problem(IPv6(out)) == (1, 40)   # the destination options header's Next Header field
    assert out[48:] == raw


def test_routing_header_with_segments_left_is_a_parameter_problem(h: V6Harness) -> None:
    raw = bytes(IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1) /
                UDP(sport=1, dport=9))
    ep = h.udp(9)
    h.inject(raw)
    assert not ep.readiness(EventMask.IN)
    [out] = h.sent_raw()
    assert param_problem(IPv6(out)) == (0, 42)   # the routing type
    assert out[48:] == raw


def test_routing_header_without_segments_left_is_ignored(h: V6Harness) -> None:
    ep = h.udp(9)
    h.inject(IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=0) /
             UDP(sport=1, dport=9) / Raw(b"routed"))
    assert ep.read().data == b"routed"


@pytest.mark.parametrize("chain,pointer", [((), 6), ((IPv6ExtHdrDestOpt,), 40),
                                           ((IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt), 48)],
                         ids=["fixed header", "behind destination options", "behind two headers"])
def test_unknown_next_header_points_at_its_next_header_field(h: V6Harness, chain: tuple, pointer: int) -> None:
    packet = IPv6(src=PEER, dst=LOCAL)
    for header in chain:
        packet = packet / header()
    packet = packet / Raw(b"\x00" * 16)
    raw = bytearray(bytes(packet))
    raw[pointer] = 253              # RFC 3692 experimental protocol number
    h.inject(bytes(raw))
    [out] = h.sent_raw()
    assert param_problem(IPv6(out)) == (1, pointer)
    assert out[48:] == raw
    assert h.stats.ip.unknown_protocol_received.value == 1


def test_no_next_header_is_dropped_quietly(h: V6Harness) -> None:
    h.inject(IPv6(src=PEER, dst=LOCAL, nh=59) / Raw(b"ignored"))
    h.inject(IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrDestOpt(nh=59))
    assert h.sent() == []
    assert h.stats.ip.malformed_packets_received.value == 0
    assert h.stats.ip.unknown_protocol_received.value == 0


# --- ICMPv6: echo and errors --------------------------------------------------------------------

@pytest.mark.parametrize("destination", [LOCAL, ALL_NODES])
def test_echo_request_is_answered(h: V6Harness, destination: str) -> None:
    h.inject(echo(dst=destination, ident=0x1234, seq=77, data=b"x" * 100))
    [out] = h.sent_raw()
    reply = IPv6(out)
    assert (reply.src, reply.dst, reply.nh) == (LOCAL, PEER, 58)    # a unicast source, even for ff02::1
    assert (reply[ICMPv6EchoReply].id, reply[ICMPv6EchoReply].seq) == (0x1234, 77)
    assert reply[ICMPv6EchoReply].data == b"x" * 100
    assert upper_layer_checksum_valid(out)
    assert h.stats.icmp.v6_packets_sent.echo_reply.value == 1


def test_echo_request_to_link_local_is_answered_from_link_local(h: V6Harness) -> None:
    h.inject(echo(src="fe80::1", dst=LOCAL_LL))
    reply = h.sent_one()
    assert (reply.src, reply.dst) == (LOCAL_LL, "fe80::1")


def test_udp_to_closed_port_quotes_the_packet_within_the_minimum_mtu(h: V6Harness) -> None:
    raw = bytes(udp_to(9, bytes(range(256)) * 5))
    assert len(raw) > 1280
    h.inject(raw)
    [out] = h.sent_raw()
    reply = IPv6(out)
    assert len(out) == 1280
    assert (reply.src, reply.dst) == (LOCAL, PEER)
    assert (reply[ICMPv6DestUnreach].code, reply.plen) == (4, 1240)
    assert out[48:] == raw[:1232]
    assert upper_layer_checksum_valid(out)
    assert h.stats.udp.unknown_port_errors.value == 1


@pytest.mark.parametrize("inner,answered", [(ICMPv6EchoRequest(), True), (ICMPv6DestUnreach() / IPv6(), False),
                                            (ICMPv6PacketTooBig(mtu=1280) / IPv6(), False)],
                         ids=["echo request", "unreachable", "packet too big"])
@pytest.mark.parametrize("header", [IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x9E, optdata=b"ab")]),
                                    IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1)],
                         ids=["bad option", "routing"])
def test_no_error_about_an_icmpv6_error(h: V6Harness, header: Packet, inner: Packet, answered: bool) -> None:
    """RFC 4443 §2.4 (e.1): also when the error message sits behind extension headers."""
    h.inject(IPv6(src=PEER, dst=LOCAL) / header / inner)
    sent = h.sent()
    assert len(sent) == answered
    if answered:
        assert ICMPv6ParamProblem in sent[0]


def test_no_time_exceeded_about_a_fragmented_icmpv6_error(h: V6Harness) -> None:
    error = IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrFragment(id=5) / ICMPv6DestUnreach() / IPv6() / Raw(bytes(2000))
    first, _ = fragment6(error, 1280)
    h.inject(first)
    h.clock.advance(61)
    assert h.stats.ip.reassembly.timeouts.value == 1
    assert h.sent() == []


def test_no_error_to_a_multicast_destination(h: V6Harness) -> None:
    h.inject(udp_to(9, dst=ALL_NODES))                         # closed port
    raw = bytearray(bytes(IPv6(src=PEER, dst=ALL_NODES) / Raw(bytes(8))))
    raw[6] = 253                                              # unknown next header
    h.inject(bytes(raw))
    h.inject(IPv6(src=PEER, dst=ALL_NODES) / IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1) /
             UDP(sport=1, dport=9))
    assert h.sent() == []


def test_no_error_to_the_unspecified_address(h: V6Harness) -> None:
    h.inject(udp_to(9, src="::"))
    h.inject(IPv6(src="::", dst=LOCAL) / IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1) /
             UDP(sport=1, dport=9))
    assert h.sent() == []


def test_errors_are_rate_limited_per_destination(h: V6Harness) -> None:
    for port in range(10):
        h.inject(udp_to(1000 + port))
    assert len(h.sent()) == 6
    assert h.stats.icmp.v6_packets_sent.rate_limited.value == 4
    h.clock.advance(1)
    h.inject(udp_to(999))
    assert len(h.sent()) == 1
    for _ in range(10):                     # echo replies are not limited
        h.inject(echo())
    assert len(h.sent()) == 10


# --- reassembly -----------------------------------------------------------------------------------

def fragmented_udp(payload: bytes, ident: int = 0x1234, fragment_size: int = 1280) -> list[bytes]:
    packet = (IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrFragment(id=ident) / UDP(sport=40000, dport=9) / Raw(payload))
    return [bytes(f) for f in fragment6(packet, fragment_size)]


def raw_fragment(offset: int, more: bool, data: bytes, ident: int = 0x99, nh: int = 17, src: str = PEER) -> bytes:
    return bytes(IPv6(src=src, dst=LOCAL) / IPv6ExtHdrFragment(nh=nh, offset=offset // 8, m=int(more), id=ident) /
                 Raw(data))


@pytest.mark.parametrize("order", ["in order", "reversed", "shuffled"])
def test_fragments_reassemble_in_any_order(h: V6Harness, order: str) -> None:
    payload = bytes(random.Random(1).randbytes(5000))
    fragments = fragmented_udp(payload)
    assert len(fragments) == 5
    if order == "reversed":
        fragments.reverse()
    elif order == "shuffled":
        random.Random(2).shuffle(fragments)
    ep = h.udp(9)
    for raw in fragments:
        h.inject(raw)
    assert ep.read().data == payload
    assert h.stats.ip.reassembly.completed.value == 1
    assert h.stats.ip.fragments_received.value == 5
    assert len(h.reassembler) == 0 and len(h.stack.timers) == 0


@pytest.mark.parametrize("unfragmentable,pointer", [((), 6), ((IPv6ExtHdrHopByHop,), 40)],
                         ids=["fixed header", "behind hop-by-hop"])
def test_unknown_next_header_of_a_reassembled_datagram(h: V6Harness, unfragmentable: tuple, pointer: int) -> None:
    """The error quotes the reassembled datagram, pointing at the Next Header that names the protocol."""
    packet = IPv6(src=PEER, dst=LOCAL)
    for header in unfragmentable:
        packet = packet / header()
    fragments = fragment6(packet / IPv6ExtHdrFragment(id=3, nh=253) / Raw(bytes(2000)), 1280)
    for fragment in fragments:
        h.inject(fragment)
    [out] = h.sent_raw()
    assert param_problem(IPv6(out)) == (1, pointer)
    quoted = IPv6(out[48:])
    assert IPv6ExtHdrFragment not in quoted and out[48 + pointer] == 253


@pytest.mark.parametrize("action", [1, 2])
def test_options_behind_the_fragment_header_are_processed_after_reassembly(h: V6Harness, action: int) -> None:
    ep = h.udp(9)
    kind = (action << 6) | 0x1E
    datagram = (IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrFragment(id=4) /
                IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=kind, optdata=b"xyzw")]) /
                UDP(sport=40000, dport=9) / Raw(bytes(2000)))
    for fragment in fragment6(datagram, 1280):
        h.inject(fragment)
    assert not ep.readiness(EventMask.IN)
    sent = h.sent()
    if action == 1:
        assert sent == []
    else:
        [reply] = sent
        assert param_problem(reply) == (2, 42)     # in the reassembled datagram, without its fragment header


def test_overlapping_fragments_drop_the_whole_datagram(h: V6Harness) -> None:
    """RFC 5722: a datagram with overlapping fragments is discarded, whatever comes later."""
    ep = h.udp(9)
    head = bytes(UDP(sport=40000, dport=9, len=8 + 40, chksum=0))
    h.inject(raw_fragment(0, True, head + bytes(16)))          # bytes 0..24
    h.inject(raw_fragment(16, True, bytes(16)))                # bytes 16..32: overlaps
    h.inject(raw_fragment(24, True, bytes(16)))
    h.inject(raw_fragment(40, False, bytes(8)))
    assert not ep.readiness(EventMask.IN)
    assert h.stats.ip.reassembly.overlaps.value == 1
    assert h.stats.ip.reassembly_failures.value >= 1
    h.clock.advance(61)                                         # and no time exceeded for it
    assert h.sent() == []


def test_non_final_fragment_not_a_multiple_of_8_is_a_parameter_problem(h: V6Harness) -> None:
    raw = raw_fragment(0, True, bytes(20))
    h.inject(raw)
    [out] = h.sent_raw()
    assert param_problem(IPv6(out)) == (0, 4)      # the payload length
    assert out[48:] == raw
    assert h.stats.ip.malformed_fragments_received.value == 1
    assert len(h.reassembler) == 0


def test_fragment_beyond_65535_bytes_is_a_parameter_problem(h: V6Harness) -> None:
    raw = raw_fragment(65528, False, bytes(16))
    h.inject(raw)
    [out] = h.sent_raw()
    assert param_problem(IPv6(out)) == (0, 42)     # the fragment offset
    assert h.stats.ip.malformed_fragments_received.value == 1
    assert len(h.reassembler) == 0


def test_atomic_fragment_is_processed_as_a_whole_packet(h: V6Harness) -> None:
    """RFC 6946: offset 0 and M=0 is the whole packet, and leaves reassembly of its ident alone."""
    ep = h.udp(9)
    payload = bytes(range(256)) * 8
    fragments = fragmented_udp(payload, ident=7)
    h.inject(fragments[0])
    h.inject(IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrFragment(id=7, offset=0, m=0) / UDP(sport=40000, dport=9) /
             Raw(b"atomic"))
    assert ep.read().data == b"atomic"
    for raw in fragments[1:]:
        h.inject(raw)
    assert ep.read().data == payload


def test_reassembly_timeout_sends_time_exceeded_quoting_the_first_fragment(h: V6Harness) -> None:
    fragments = fragmented_udp(bytes(3000))
    h.inject(fragments[0])
    h.inject(fragments[2])
    h.clock.advance(59)
    assert h.sent() == []
    h.clock.advance(2)
    [out] = h.sent_raw()
    reply = IPv6(out)
    assert (reply.dst, reply[ICMPv6TimeExceeded].code) == (PEER, 1)
    assert out[48:] == fragments[0][:1232]
    assert upper_layer_checksum_valid(out)
    assert h.stats.ip.reassembly.timeouts.value == 1
    assert len(h.stack.timers) == 0


def test_reassembly_timeout_without_the_first_fragment_is_silent(h: V6Harness) -> None:
    fragments = fragmented_udp(bytes(3000))
    h.inject(fragments[1])
    h.clock.advance(61)
    assert h.sent() == []
    assert h.stats.ip.reassembly.timeouts.value == 1


def test_hostile_fragments_leave_memory_bounded(h: V6Harness) -> None:
    reassembler = h.reassembler
    big = bytearray(raw_fragment(0, True, bytes(1232), ident=0))
    tiny = bytearray(raw_fragment(8, True, bytes(8), ident=0))
    peak = 0
    for ident in range(4000):
        big[44:48] = struct.pack("!I", ident)                       # a first fragment of datagram ident
        tiny[42:48] = struct.pack("!HI", 8 * (1 + ident % 1000) | 1, ident + 1_000_000)   # a stray 8 bytes
        h.inject(bytes(big))
        h.inject(bytes(tiny))
        peak = max(peak, reassembler.memory_used)
    assert peak <= reassembler.high_threshold
    assert h.stats.ip.reassembly.evicted.value > 0
    assert h.sent() == []
    h.inject(echo(seq=4242))
    assert h.sent_one()[ICMPv6EchoReply].seq == 4242


# --- sending --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mtu", [1280, 1500])
def test_large_datagram_leaves_as_fragments_that_reassemble(mtu: int) -> None:
    h = V6Harness(mtu=mtu)
    payload = bytes(random.Random(3).randbytes(4000))
    h.udp(5000).write(payload, to6(PEER, 9))
    raws = h.sent_raw()
    assert len(raws) > 1 and all(len(raw) <= mtu for raw in raws)
    fragments = [IPv6(raw) for raw in raws]
    assert len({f[IPv6ExtHdrFragment].id for f in fragments}) == 1
    assert [f[IPv6ExtHdrFragment].m for f in fragments] == [1] * (len(fragments) - 1) + [0]
    assert all(len(f[IPv6ExtHdrFragment].payload) % 8 == 0 for f in fragments[:-1])
    whole = defragment6(fragments)
    raw = bytes(whole)
    assert IPv6(raw)[UDP].payload.load == payload
    assert (IPv6(raw)[UDP].sport, IPv6(raw)[UDP].dport) == (5000, 9)
    assert upper_layer_checksum_valid(raw)


def test_fragmented_echo_request_gets_a_fragmented_reply(h: V6Harness) -> None:
    payload = bytes(random.Random(4).randbytes(3000))
    request = IPv6(src=PEER, dst=LOCAL) / IPv6ExtHdrFragment(id=9) / ICMPv6EchoRequest(id=1, seq=2, data=payload)
    for fragment in fragment6(request, 1280):
        h.inject(fragment)
    fragments = h.sent()
    assert len(fragments) == 3 and all(len(f) <= 1500 for f in fragments)
    reply = IPv6(bytes(defragment6(fragments)))
    assert (reply[ICMPv6EchoReply].id, reply[ICMPv6EchoReply].seq, reply[ICMPv6EchoReply].data) == (1, 2, payload)
    assert upper_layer_checksum_valid(bytes(reply))


def test_datagram_to_our_own_address_loops_back(h: V6Harness) -> None:
    receiver = h.udp(9)
    h.udp(5000).write(b"to myself", to6(LOCAL, 9))
    result = receiver.read()
    assert (result.data, result.sender.addr, result.sender.port) == (b"to myself", a6(LOCAL), 5000)
    assert h.sent() == []


def test_datagram_too_large_for_ipv6_is_refused(h: V6Harness) -> None:
    with pytest.raises(ErrMessageTooLong):
        h.udp(5000).write(bytes(65535 - 8 + 1), to6(PEER, 9))
    assert h.sent() == []


# --- RFC 6724 source selection -------------------------------------------------------------------

@pytest.mark.parametrize("destination,source", [
    ("fe80::1", LOCAL_LL),                  # rule 2: a link-local destination, a link-local source
    (PEER, LOCAL),
    ("2001:db8:1:0:8000::1", "2001:db8:1::2"),   # rule 8: the longest matching prefix
    ("2001:db8:1:1::1", "2001:db8:1::2"),
    ("2001:db9::1", LOCAL),                 # global destination: a global source, never the link-local
])
def test_source_address_selection(h: V6Harness, destination: str, source: str) -> None:
    h.stack.add_address(NIC_ID, IPV6_PROTOCOL_NUMBER, "2001:db8:1::2/64")
    assert h.nic.primary_address(IPV6_PROTOCOL_NUMBER, a6(destination)) == a6(source)
    h.udp(5000).write(b"x", to6(destination, 9))
    assert h.sent_one().src == source


def test_destination_address_of_ours_is_its_own_source(h: V6Harness) -> None:
    h.stack.add_address(NIC_ID, IPV6_PROTOCOL_NUMBER, AddressWithPrefix(Address.parse("2001:db8:1::2"), 64))
    assert h.nic.primary_address(IPV6_PROTOCOL_NUMBER, a6("2001:db8:1::2")) == a6("2001:db8:1::2")


# --- ping6 endpoints ------------------------------------------------------------------------------

def ping6(h: V6Harness, ident: int):  # noqa: ANN201 - Ping6Endpoint
    ep = h.stack.new_endpoint(ICMPV6_PROTOCOL_NUMBER, IPV6_PROTOCOL_NUMBER)
    ep.bind(FullAddress(0, b"", ident))
    return ep


def test_ping6_request_carries_our_identifier_and_a_valid_checksum(h: V6Harness) -> None:
    ep = ping6(h, 0x4242)
    ep.write(bytes(ICMPv6EchoRequest(id=0x1111, seq=9, cksum=0, data=b"are you there")), to6(PEER, 0))
    [out] = h.sent_raw()
    packet = IPv6(out)
    assert (packet.src, packet.dst, packet.nh, packet.hlim) == (LOCAL, PEER, 58, 64)
    request = packet[ICMPv6EchoRequest]
    assert (request.type, request.code, request.id, request.seq, request.data) == (128, 0, 0x4242, 9,
                                                                                   b"are you there")
    assert upper_layer_checksum_valid(out)
    assert h.stats.icmp.v6_packets_sent.echo_request.value == 1


def test_ping6_reply_is_delivered_to_its_identifier_only(h: V6Harness) -> None:
    ep = ping6(h, 0x4242)
    ep.write(bytes(ICMPv6EchoRequest(seq=1, data=b"hi")), to6(PEER, 0))
    h.sent()
    h.inject(IPv6(src=PEER, dst=LOCAL) / ICMPv6EchoReply(id=0x4343, seq=1, data=b"not ours"))
    assert not ep.readiness(EventMask.IN)
    h.inject(IPv6(src=PEER, dst=LOCAL) / ICMPv6EchoReply(id=0x4242, seq=1, data=b"hi"))
    result = ep.read()
    reply = ICMPv6EchoReply(result.data)
    assert (reply.type, reply.id, reply.seq, reply.data) == (129, 0x4242, 1, b"hi")
    assert result.sender.addr == a6(PEER)


# --- flow labels ----------------------------------------------------------------------------------

def test_a_connections_segments_carry_one_flow_label_drawn_anew_at_each_timeout(h: V6Harness) -> None:
    """Linux's auto flow labels (RFC 6437): a TCP connection's label comes from a random hash of its own, the
    same on every segment until a timeout draws another (sk_rethink_txhash), which TCP_INFO counts
    (tcpi_rehash)."""
    ep = h.stack.new_endpoint(TCPProtocol.number, IPV6_PROTOCOL_NUMBER)
    with pytest.raises(ErrConnectStarted):
        ep.connect(FullAddress(0, a6(PEER), 80))
    first = h.sent_one()
    assert first.fl and ep.info().rehash == 0
    h.clock.advance(1.01)
    again = h.sent_one()
    assert again[TCP].flags == "S" and again.fl not in (0, first.fl) and ep.info().rehash == 1


def test_without_rehashing_a_timeout_keeps_the_flow_label(h: V6Harness) -> None:
    """SO_TXREHASH 0: the label stays through timeouts (Linux's sk_rethink_txhash does nothing then)."""
    ep = h.stack.new_endpoint(TCPProtocol.number, IPV6_PROTOCOL_NUMBER)
    ep.set_sock_opt(SockOpt.TCP_TXREHASH, False)
    with pytest.raises(ErrConnectStarted):
        ep.connect(FullAddress(0, a6(PEER), 80))
    first = h.sent_one()
    h.clock.advance(1.01)
    again = h.sent_one()
    assert again[TCP].flags == "S" and again.fl == first.fl and ep.info().rehash == 0


@pytest.mark.parametrize("auto", [True, False])
def test_datagrams_of_one_flow_share_a_label_of_its_hash(h: V6Harness, auto: bool) -> None:
    """Unconnected datagrams are labelled by their flow (addresses, protocol, ports: Linux's flow dissector
    hash); IPV6_AUTOFLOWLABEL off, they go unlabelled (0)."""
    ep = h.udp(5000)
    ep.set_sock_opt(SockOpt.IPV6_AUTO_FLOW_LABEL, auto)
    for port in (53, 53, 54):
        ep.write(b"q", to6(PEER, port))
    labels = [packet.fl for packet in h.sent()]
    if auto:
        assert labels[0] == labels[1] != labels[2] and all(labels)
    else:
        assert labels == [0, 0, 0]


def test_a_reassembled_datagram_tells_its_largest_fragment(h: V6Harness) -> None:
    """IPV6_RECVFRAGSIZE: the largest fragment as it came, its headers included (Linux's frag_max_size); none
    for a datagram that came whole."""
    ep = h.udp(9)
    ep.set_sock_opt(SockOpt.RECEIVE_FRAGMENT_SIZE6, True)
    fragments = fragmented_udp(bytes(3000))
    for raw in reversed(fragments):
        h.inject(raw)
    assert ep.read().control.fragment_size6 == max(map(len, fragments)) == 1280
    h.inject(udp_to(9))
    assert ep.read().control.fragment_size6 is None


def test_a_connected_datagram_socket_labels_its_flow_from_a_hash_of_its_own(h: V6Harness) -> None:
    """As Linux's connected sockets (sk_txhash, drawn at connect): one label for the socket's datagrams,
    another for another socket's to the same place."""
    labels = []
    for _ in range(2):
        ep = h.udp()
        ep.connect(FullAddress(0, a6(PEER), 53))
        ep.write(b"q")
        ep.write(b"q")
        labels.append([packet.fl for packet in h.sent()])
    assert labels[0][0] == labels[0][1] and labels[1][0] == labels[1][1] and labels[0][0] != labels[1][0]
