"""IPv4: inbound validation (every malformed class is a counted drop), delivery, the ICMP errors and
echo replies a host owes its peers (RFC 1122), rate limiting, and the header of what it sends."""

from __future__ import annotations

import errno
import struct
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP, IPOption_NOP, IPOption_RR
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from netsock.tcpip import ErrMessageTooLong, Route, SockOpt
from netsock.waiter import EventMask

from conftest import (LIMITED_BROADCAST, LOCAL, NIC_ID, OTHER_PEER, PEER, REMOTE, SUBNET_BROADCAST, StackHarness,
                      checksums_valid, to)


def udp_to(port: int, payload: bytes = b"data", src: str = PEER, dst: str = LOCAL, **ip_fields) -> IP:
    return IP(src=src, dst=dst, **ip_fields) / UDP(sport=40000, dport=port) / Raw(payload)


def with_header_checksum(raw: bytes | bytearray) -> bytes:
    """``raw`` with a correct IPv4 header checksum, whatever its header says (for hostile headers)."""
    raw = bytearray(raw)
    hlen = min((raw[0] & 0x0F) * 4, len(raw))
    raw[10:12] = b"\x00\x00"
    raw[10:12] = struct.pack("!H", scapy_checksum(bytes(raw[:hlen])))
    return bytes(raw)


VALID = bytes(udp_to(9))


def mutate(offset: int, value: bytes, fix_checksum: bool = True) -> bytes:
    raw = bytearray(VALID)
    raw[offset:offset + len(value)] = value
    return with_header_checksum(raw) if fix_checksum else bytes(raw)


# --- malformed packets ----------------------------------------------------------------------------

MALFORMED = {
    "truncated below 20 bytes": VALID[:19],
    "empty": b"",
    "version 6": mutate(0, b"\x65"),
    "IHL below 5": mutate(0, b"\x44"),
    "IHL beyond the packet": with_header_checksum(b"\x4f" + VALID[1:30]),
    "total length beyond the buffer": mutate(2, struct.pack("!H", len(VALID) + 1)),
    "total length below IHL": mutate(2, struct.pack("!H", 19)),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_packet_is_a_counted_drop(harness: StackHarness, raw: bytes) -> None:
    ep = harness.udp(9)
    harness.inject(raw)
    assert harness.stats.ip.malformed_packets_received.value == 1
    assert harness.stats.ip.packets_delivered.value == 0
    assert not ep.readiness(EventMask.IN)
    assert harness.sent() == []


def test_bad_header_checksum_is_counted_twice(harness: StackHarness) -> None:
    harness.udp(9)
    harness.inject(mutate(10, b"\x12\x34", fix_checksum=False))
    assert harness.stats.ip.malformed_packets_received.value == 1
    assert harness.stats.ip.checksum_errors.value == 1
    assert harness.stats.ip.packets_delivered.value == 0
    assert harness.sent() == []


def test_bad_options_are_dropped_with_a_parameter_problem(harness: StackHarness) -> None:
    # An option whose length (1) is below the minimum of 2.
    bad = IP(src=PEER, dst=LOCAL, options=[IPOption_NOP()]) / UDP(sport=40000, dport=9) / Raw(b"x")
    raw = bytearray(bytes(bad))
    raw[20:24] = b"\x07\x01\x00\x00"
    raw = with_header_checksum(raw)
    ep = harness.udp(9)

    harness.inject(raw)

    assert harness.stats.ip.malformed_packets_received.value == 1
    assert not ep.readiness(EventMask.IN)
    [out] = harness.sent_raw()
    reply = IP(out)
    assert (reply.dst, reply[ICMP].type, reply[ICMP].code, reply[ICMP].ptr) == (PEER, 12, 0, 20)  # at the option
    assert out[28:] == raw and checksums_valid(out)


def test_valid_options_are_accepted(harness: StackHarness) -> None:
    ep = harness.udp(9)
    harness.inject(IP(src=PEER, dst=LOCAL, options=[IPOption_RR(routers=["0.0.0.0"])]) /
                   UDP(sport=40000, dport=9) / Raw(b"with options"))
    assert ep.read().data == b"with options"


def test_link_padding_is_trimmed(harness: StackHarness) -> None:
    ep = harness.udp(9)
    harness.inject(bytes(udp_to(9, b"abc")) + b"\x00" * 20)   # Ethernet pads short frames to 60 bytes
    assert ep.read().data == b"abc"
    assert harness.stats.ip.malformed_packets_received.value == 0


@pytest.mark.parametrize("source", ["224.0.0.5", "239.1.2.3", "240.0.0.1", LIMITED_BROADCAST])
def test_martian_source_is_dropped(harness: StackHarness, source: str) -> None:
    ep = harness.udp(9)
    harness.inject(udp_to(9, src=source))
    harness.inject(IP(src=source, dst=LOCAL) / ICMP(type=8, id=1, seq=1))
    assert harness.stats.ip.invalid_addresses_received.value == 2
    assert not ep.readiness(EventMask.IN)
    assert harness.sent() == []


def test_packet_for_another_host_is_dropped(harness: StackHarness) -> None:
    harness.udp(9)
    harness.inject(udp_to(9, dst=OTHER_PEER))
    harness.inject(udp_to(9, dst=REMOTE))
    assert harness.stats.ip.invalid_addresses_received.value == 2
    assert harness.stats.ip.packets_delivered.value == 0
    assert harness.sent() == []


@pytest.mark.parametrize("fields, quoted", [({"flags": "MF"}, True), ({"frag": 185}, False),
                                            ({"flags": "MF", "frag": 3}, False)], ids=["first", "last", "middle"])
def test_a_lone_fragment_waits_then_expires(harness: StackHarness, fields: dict, quoted: bool) -> None:
    ep = harness.udp(9)
    harness.inject(udp_to(9, b"8 bytes!", **fields))     # 16 bytes of IP payload: a valid fragment size
    assert harness.stats.ip.fragments_received.value == 1
    assert not ep.readiness(EventMask.IN) and harness.sent() == []
    harness.clock.advance(29.9)
    assert harness.stats.ip.reassembly_failures.value == 0
    harness.clock.advance(0.2)
    assert harness.stats.ip.reassembly_failures.value == 1
    sent = [IP(raw) for raw in harness.sent_raw()]
    # RFC 792 / RFC 1122 §3.3.2: time exceeded (reassembly) only when the first fragment had come.
    assert [(p[ICMP].type, p[ICMP].code) for p in sent] == ([(11, 1)] if quoted else [])
    assert len(harness.stack.timers) == 0


def test_dont_fragment_alone_is_not_a_fragment(harness: StackHarness) -> None:
    ep = harness.udp(9)
    harness.inject(udp_to(9, b"df", flags="DF"))
    assert ep.read().data == b"df"


# --- ICMP errors ----------------------------------------------------------------------------------

def test_unknown_protocol_gets_protocol_unreachable(harness: StackHarness) -> None:
    original = bytes(IP(src=PEER, dst=LOCAL, proto=253) / Raw(b"experimental"))
    harness.inject(original)

    [raw] = harness.sent_raw()
    reply = IP(raw)
    assert (reply.src, reply.dst, reply.proto) == (LOCAL, PEER, 1)
    assert (reply[ICMP].type, reply[ICMP].code) == (3, 2)
    assert raw[28:] == original and checksums_valid(raw)
    assert harness.stats.ip.unknown_protocol_received.value == 1
    assert harness.stats.icmp.v4_packets_sent.dst_unreachable.value == 1


def test_udp_to_closed_port_gets_port_unreachable_quoting_it(harness: StackHarness) -> None:
    original = bytes(udp_to(9, b"is anyone there?"))
    harness.inject(original)

    [raw] = harness.sent_raw()
    reply = IP(raw)
    assert checksums_valid(raw)
    assert (reply.src, reply.dst, reply.ttl) == (LOCAL, PEER, 64)
    assert (reply[ICMP].type, reply[ICMP].code) == (3, 3)
    assert reply.flags == 0                           # the stack's own ICMP goes without DF, as Linux's
    assert raw[28:] == original                       # the whole datagram: header and data
    quoted = IP(raw[28:])
    assert (quoted.src, quoted.dst, quoted[UDP].sport, quoted[UDP].dport) == (PEER, LOCAL, 40000, 9)
    assert harness.stats.udp.unknown_port_errors.value == 1


def test_icmp_error_quote_is_capped_at_576_bytes(harness: StackHarness) -> None:
    original = bytes(udp_to(9, bytes(range(256)) * 5))
    harness.inject(original)
    [raw] = harness.sent_raw()
    reply = IP(raw)
    assert (len(raw), reply.len, reply.ihl, reply[ICMP].type) == (576, 576, 5, 3)
    assert raw[28:] == original[:576 - 28]     # after the IP and ICMP headers: as much as fits


@pytest.mark.parametrize("dst", [SUBNET_BROADCAST, LIMITED_BROADCAST, "224.0.0.1"])
def test_no_icmp_error_for_broadcast_or_multicast_destination(harness: StackHarness, dst: str) -> None:
    harness.inject(udp_to(9, dst=dst))
    harness.inject(IP(src=PEER, dst=dst, proto=253) / Raw(b"x"))
    assert harness.sent() == []
    assert harness.stats.udp.unknown_port_errors.value == 1
    assert harness.stats.ip.unknown_protocol_received.value == 1   # dropped, but not silently


def test_no_icmp_error_for_bad_options_to_broadcast(harness: StackHarness) -> None:
    raw = bytearray(bytes(IP(src=PEER, dst=SUBNET_BROADCAST, options=[IPOption_NOP()]) / UDP(dport=9)))
    raw[20:24] = b"\x07\x01\x00\x00"
    harness.inject(with_header_checksum(raw))
    assert harness.stats.ip.malformed_packets_received.value == 1
    assert harness.sent() == []


def test_no_icmp_error_about_an_icmp_error(harness: StackHarness) -> None:
    """Bad options in an ICMP error: no parameter problem back. In an echo request: one back."""
    def with_bad_options(icmp_message) -> bytes:
        raw = bytearray(bytes(IP(src=PEER, dst=LOCAL, options=[IPOption_NOP()]) / icmp_message))
        raw[20:24] = b"\x07\x01\x00\x00"
        return with_header_checksum(raw)

    harness.inject(with_bad_options(ICMP(type=3, code=1) / bytes(udp_to(53, src=LOCAL, dst=PEER))))
    assert harness.sent() == []
    harness.inject(with_bad_options(ICMP(type=8, id=1, seq=1)))
    assert harness.sent_one()[ICMP].type == 12


def test_no_icmp_error_for_bad_udp_checksum(harness: StackHarness) -> None:
    raw = bytearray(bytes(udp_to(9)))
    raw[26] ^= 0xFF
    harness.inject(bytes(raw))
    assert harness.sent() == []
    assert harness.stats.udp.checksum_errors.value == 1
    assert harness.stats.udp.unknown_port_errors.value == 0


@pytest.mark.parametrize("source", ["0.0.0.0", "127.0.0.1"])
def test_no_icmp_error_to_unspecified_or_loopback_source(harness: StackHarness, source: str) -> None:
    harness.inject(udp_to(9, src=source))
    assert harness.sent() == []


def test_icmp_errors_are_rate_limited_per_destination(harness: StackHarness) -> None:
    for _ in range(10):
        harness.inject(udp_to(9))
    errors = harness.sent_raw()
    assert len(errors) == 6 and all(checksums_valid(raw) for raw in errors)   # Linux's burst
    assert harness.stats.icmp.v4_packets_sent.rate_limited.value == 4

    harness.inject(udp_to(9, src=OTHER_PEER))                         # another destination has its own bucket
    assert [p.dst for p in harness.sent()] == [OTHER_PEER]

    harness.clock.advance(1.0)                                        # one token per second
    harness.inject(udp_to(9))
    harness.inject(udp_to(9))
    assert len(harness.sent()) == 1
    assert harness.stats.icmp.v4_packets_sent.rate_limited.value == 5

    harness.clock.advance(10.0)                                       # refills up to the burst, no further
    for _ in range(10):
        harness.inject(udp_to(9))
    assert len(harness.sent()) == 6


def test_echo_replies_are_not_rate_limited(harness: StackHarness) -> None:
    for seq in range(20):
        harness.inject(IP(src=PEER, dst=LOCAL) / ICMP(type=8, id=7, seq=seq))
    assert [p[ICMP].seq for p in harness.sent()] == list(range(20))


# --- echo -----------------------------------------------------------------------------------------

def test_echo_request_gets_an_echo_reply(harness: StackHarness) -> None:
    payload = bytes(range(256)) + b"odd"
    harness.inject(IP(src=PEER, dst=LOCAL, tos=0x10) / ICMP(type=8, id=0x1234, seq=77) / Raw(payload))

    [raw] = harness.sent_raw()
    reply = IP(raw)
    assert checksums_valid(raw)
    assert (reply.src, reply.dst, reply.ttl, reply.tos) == (LOCAL, PEER, 64, 0x10)
    assert (reply[ICMP].type, reply[ICMP].code, reply[ICMP].id, reply[ICMP].seq) == (0, 0, 0x1234, 77)
    assert reply.flags == 0                           # the stack's own ICMP goes without DF, as Linux's
    assert reply[Raw].load == payload
    assert harness.stats.icmp.v4_packets_received.echo.value == 1
    assert harness.stats.icmp.v4_packets_sent.echo_reply.value == 1


def test_echo_request_from_off_link_is_answered(harness: StackHarness) -> None:
    harness.inject(IP(src=REMOTE, dst=LOCAL) / ICMP(type=8, id=1, seq=1))
    assert harness.sent_one().dst == REMOTE


@pytest.mark.parametrize("dst", [SUBNET_BROADCAST, LIMITED_BROADCAST, "224.0.0.1"])
def test_broadcast_and_multicast_echo_is_ignored(harness: StackHarness, dst: str) -> None:
    harness.inject(IP(src=PEER, dst=dst) / ICMP(type=8, id=1, seq=1))
    assert harness.sent() == []
    assert harness.stats.icmp.v4_packets_received.echo.value == 1


def test_echo_request_with_bad_icmp_checksum_is_ignored(harness: StackHarness) -> None:
    harness.inject(IP(src=PEER, dst=LOCAL) / ICMP(type=8, id=1, seq=1, chksum=0xDEAD))
    assert harness.sent() == []
    assert harness.stats.icmp.v4_packets_received.invalid.value == 1


def test_truncated_icmp_is_counted_invalid(harness: StackHarness) -> None:
    harness.inject(IP(src=PEER, dst=LOCAL, proto=1) / Raw(b"\x08\x00\x00"))
    assert harness.sent() == []
    assert harness.stats.icmp.v4_packets_received.invalid.value == 1


# --- never raise, always account --------------------------------------------------------------------

def disposition_changed(h: StackHarness, before: dict[str, int]) -> bool:
    """Did something other than the receive counters say what became of the packet?"""
    after = h.counters()
    ignored = {"ip.packets_received", "nic.rx_packets", "nic.rx_bytes"}
    return any(after.get(k, 0) != before.get(k, 0) for k in set(after) | set(before) if k not in ignored)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise_and_are_accounted_for(raw: bytes) -> None:
    h = StackHarness()
    h.udp(9)
    before = h.counters()
    h.inject(raw)
    assert h.stats.ip.packets_received.value == 1
    assert disposition_changed(h, before)


ADDRESSES = st.sampled_from([LOCAL, PEER, REMOTE, SUBNET_BROADCAST, LIMITED_BROADCAST, "224.0.0.1", "239.9.9.9",
                             "0.0.0.0", "127.0.0.1", "240.0.0.1"])


@settings(max_examples=300, deadline=None)
@given(src=ADDRESSES, dst=ADDRESSES, transport=st.sampled_from(["udp", "icmp", "other"]),
       proto=st.integers(0, 255), icmp_type=st.integers(0, 20), icmp_code=st.integers(0, 15),
       flags=st.integers(0, 7), frag=st.just(0) | st.integers(0, 0x1FFF), ttl=st.integers(0, 255),
       port=st.sampled_from([9, 10]), payload=st.binary(max_size=64))
def test_well_formed_packets_with_hostile_fields_never_raise(src: str, dst: str, transport: str, proto: int,
                                                             icmp_type: int, icmp_code: int, flags: int,
                                                             frag: int, ttl: int, port: int,
                                                             payload: bytes) -> None:
    """Valid checksums everywhere, so the packet gets past validation into delivery and ICMP."""
    h = StackHarness()
    h.udp(9)
    before = h.counters()
    ip = IP(src=src, dst=dst, flags=flags, frag=frag, ttl=ttl)
    if transport == "udp":
        packet = ip / UDP(sport=1, dport=port) / Raw(payload)
    elif transport == "icmp":
        packet = ip / ICMP(type=icmp_type, code=icmp_code) / Raw(payload)
    else:
        ip.proto = proto
        packet = ip / Raw(payload)
    h.inject(packet)
    assert disposition_changed(h, before)
    for raw in h.sent_raw():
        assert checksums_valid(raw)


# --- outbound header ------------------------------------------------------------------------------

def test_outbound_header_defaults(harness: StackHarness) -> None:
    harness.udp(5000).write(b"hello", to(PEER, 9))
    raw = harness.sent_raw()[0]
    packet = IP(raw)
    assert checksums_valid(raw)
    assert (packet.version, packet.ihl, packet.tos, packet.ttl, packet.proto) == (4, 5, 0, 64, 17)
    assert (packet.src, packet.dst, packet.len, packet.frag) == (LOCAL, PEER, 20 + 8 + 5, 0)
    # DF on what fits the path, as Linux sends a socket's (IP_PMTUDISC_WANT: RFC 1191 path MTU discovery)
    assert packet.flags == "DF"


def test_ttl_and_tos_options(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.set_sock_opt(SockOpt.TTL, 3)
    ep.set_sock_opt(SockOpt.IPV4_TOS, 0xB8)
    ep.write(b"x", to(PEER, 9))
    packet = harness.sent_one()
    assert (packet.ttl, packet.tos) == (3, 0xB8)
    assert checksums_valid(packet.original)

    ep.set_sock_opt(SockOpt.TTL, 0)          # back to the stack default
    ep.write(b"x", to(PEER, 9))
    assert harness.sent_one().ttl == 64


def test_stack_default_ttl() -> None:
    h = StackHarness()
    h.stack.default_ttl = 100
    h.udp(5000).write(b"x", to(PEER, 9))
    assert h.sent_one().ttl == 100


def test_ident_increments(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    for _ in range(5):
        ep.write(b"x", to(PEER, 9))
    idents = [p.id for p in harness.sent()]
    assert [(b - a) % 65536 for a, b in pairwise(idents)] == [1] * 4


def test_datagram_larger_than_mtu_is_fragmented(harness: StackHarness) -> None:
    ep = harness.udp(5000)
    ep.write(bytes(1500 - 28), to(PEER, 9))          # exactly the MTU: one packet
    assert harness.sent_one().len == 1500
    ep.write(bytes(range(256)) * 12, to(PEER, 9))    # 3072 bytes: three fragments, DF clear
    frags = [IP(raw) for raw in harness.sent_raw()]
    assert [p.len for p in frags] == [1500, 1500, 20 + 8 + 3072 - 2 * 1480]
    assert [p.frag * 8 for p in frags] == [0, 1480, 2960] and [p.flags.MF for p in frags] == [1, 1, 0]
    assert not any(p.flags.DF for p in frags)
    assert len({p.id for p in frags}) == 1
    whole = b"".join(bytes(p[IP].payload) for p in frags)
    assert UDP(whole).len == 3080 and bytes(UDP(whole).payload) == bytes(range(256)) * 12
    with pytest.raises(ErrMessageTooLong) as info:
        ep.write(bytes(65535 - 28 + 1), to(PEER, 9))  # no IPv4 datagram is that long
    assert info.value.errno == errno.EMSGSIZE


def test_route_mtu_below_link_mtu_applies() -> None:
    h = StackHarness()
    h.stack.set_route_table([Route.parse("192.0.2.0/24", NIC_ID, mtu=1280)])
    ep = h.udp(5000)
    ep.write(bytes(1280 - 28), to(PEER, 9))
    assert [IP(raw).len for raw in h.sent_raw()] == [1280]
    ep.write(bytes(1280 - 27), to(PEER, 9))
    assert [IP(raw).len for raw in h.sent_raw()] == [1276, 20 + (8 + 1253) - 1256]




@given(st.binary(min_size=20, max_size=60).filter(lambda b: len(b) % 4 == 0))
def test_header_checksum_check_agrees_with_the_rfc_1071_sum(header: bytes) -> None:
    from netsock.header import ipv4 as ipv4_header
    from netsock.header.checksum import checksum, py_checksum
    # Made valid: the checksum field set so the header sums to 0xffff (unless it is all zero).
    fixed = bytearray(header)
    fixed[10:12] = b"\x00\x00"
    fixed[10:12] = (~checksum(fixed) & 0xFFFF).to_bytes(2, "big")
    for candidate in (header, bytes(fixed), bytes(len(header))):
        expected = py_checksum(candidate) == 0xFFFF
        assert ipv4_header.checksum_valid(candidate, len(candidate)) is expected
        assert ipv4_header.checksum_valid(memoryview(candidate), len(candidate)) is expected
