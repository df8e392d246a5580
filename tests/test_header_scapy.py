"""Cross-check every header codec against scapy, an independent implementation.

Each codec is exercised both ways with random field values: what we encode, scapy decodes to the
same fields (and, rebuilding the packet with its checksums deleted, scapy computes the checksums
we wrote); what scapy encodes, we decode to the fields scapy was given and verify its checksums.
Hostile inputs must come back as ``Malformed``, never as an exception.
"""

from __future__ import annotations

import logging
import socket
import struct
from functools import partial
from typing import Callable, NamedTuple

import pytest
from hypothesis import assume, given, settings, strategies as st

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # before scapy's import: no route warnings

from scapy.layers.inet import (ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert,  # noqa: E402
                               IPOption_RR, IPOption_Timestamp)
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402
from scapy.packet import Packet  # noqa: E402
from scapy.utils import str2mac  # noqa: E402

from netsock.header import Malformed, arp, ethernet, icmpv4, ipv4, tcp, udp  # noqa: E402
from netsock.header.checksum import checksum_views, pseudo_header_checksum  # noqa: E402

SETTINGS = settings(max_examples=200, deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ipv4_addrs = st.binary(min_size=4, max_size=4)
ipv6_addrs = st.binary(min_size=16, max_size=16)
macs = st.binary(min_size=6, max_size=6)
payloads = st.binary(max_size=64)   # odd lengths included: they exercise the checksum's padding

TCP_OPTIONS_FIELD = next(f for f in TCP.fields_desc if f.name == "options")


def ntoa(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def ipv4_packet(src: bytes, dst: bytes, protocol: int, body: bytes, options: bytes = b"", **fields) -> bytes:
    """``body`` behind an IPv4 header built by us."""
    header = bytearray(ipv4.MIN_SIZE + len(options))
    ipv4.build(header, src=src, dst=dst, protocol=protocol, total_length=len(header) + len(body),
               options=options, **fields)
    return bytes(header) + body


def rebuilt_by_scapy(pkt: Packet, *checksummed: type[Packet]) -> bytes:
    """``pkt`` serialised again by scapy after deleting the checksum of each layer named, so that
    scapy recomputes them; every other field keeps its dissected value."""
    for layer in checksummed:
        del pkt[layer].chksum
    return bytes(pkt)


# --- IPv4 -----------------------------------------------------------------------------------------


class IPv4Option(NamedTuple):
    kind: int                       # type byte (copy flag, class and number)
    data: bytes                     # what follows the type and length bytes
    scapy: Callable[[], Packet]     # the same option as a scapy object

    @property
    def size(self) -> int:
        return 1 if self.kind == ipv4.OPT_NOP else 2 + len(self.data)


def _nop() -> st.SearchStrategy[IPv4Option]:
    return st.just(IPv4Option(ipv4.OPT_NOP, b"", IPOption_NOP))


@st.composite
def _record_route(draw) -> IPv4Option:
    pointer = draw(u8)
    routers = draw(st.lists(ipv4_addrs, max_size=4))
    return IPv4Option(ipv4.OPT_RECORD_ROUTE, bytes((pointer,)) + b"".join(routers),
                      partial(IPOption_RR, pointer=pointer, routers=[ntoa(r) for r in routers]))


@st.composite
def _timestamp(draw) -> IPv4Option:
    pointer, overflow, stamp = draw(u8), draw(st.integers(0, 15)), draw(u32)
    flag = draw(st.sampled_from((0, 1, 3)))     # timestamps only / with address / prespecified
    address = draw(ipv4_addrs) if flag else b""
    data = bytes((pointer, overflow << 4 | flag)) + address + stamp.to_bytes(4, "big")
    extra = {"internet_address": ntoa(address)} if flag else {}
    return IPv4Option(ipv4.OPT_TIMESTAMP, data,
                      partial(IPOption_Timestamp, pointer=pointer, oflw=overflow, flg=flag, timestamp=stamp,
                              **extra))


@st.composite
def _router_alert(draw) -> IPv4Option:
    value = draw(u16)
    return IPv4Option(ipv4.OPT_ROUTER_ALERT, value.to_bytes(2, "big"), partial(IPOption_Router_Alert, alert=value))


@st.composite
def ipv4_option_lists(draw) -> list[IPv4Option]:
    """Up to 40 bytes of NOP, record-route, timestamp and router-alert options, in any order."""
    options: list[IPv4Option] = []
    room = ipv4.MAX_SIZE - ipv4.MIN_SIZE
    for option in draw(st.lists(st.one_of(_nop(), _record_route(), _timestamp(), _router_alert()), max_size=6)):
        if option.size <= room:
            options.append(option)
            room -= option.size
    return options


# Not IGMP (2): scapy's IGMP layer, dissecting the payload, adds a Router Alert option to the IP header it sits in.
ipv4_fields = st.fixed_dictionaries({
    "tos": u8, "ident": u16, "flags_fragment": u16, "ttl": u8, "protocol": u8.filter(lambda p: p != 2),
})


@SETTINGS
@given(src=ipv4_addrs, dst=ipv4_addrs, fields=ipv4_fields, options=ipv4_option_lists(), payload=payloads)
def test_ipv4_ours_to_scapy(src, dst, fields, options, payload):
    encoded = ipv4.encode_options([(o.kind, o.data) for o in options])
    raw = ipv4_packet(src, dst, body=payload, options=encoded, **fields)
    hlen = ipv4.MIN_SIZE + len(encoded)

    pkt = IP(raw)
    assert (pkt.version, pkt.ihl * 4, pkt.len) == (4, hlen, len(raw))
    assert (pkt.tos, pkt.id, pkt.ttl, pkt.proto) == (fields["tos"], fields["ident"], fields["ttl"],
                                                     fields["protocol"])
    assert (int(pkt.flags) << 13) | pkt.frag == fields["flags_fragment"]
    assert (pkt.src, pkt.dst) == (ntoa(src), ntoa(dst))
    scapy_options = [bytes(o) for o in pkt.options]
    assert [(b[0], b[2:]) for b in scapy_options if b[0] > ipv4.OPT_NOP] == \
        [(o.kind, o.data) for o in options if o.kind != ipv4.OPT_NOP]
    assert rebuilt_by_scapy(pkt, IP)[:hlen] == raw[:hlen]


@SETTINGS
@given(src=ipv4_addrs, dst=ipv4_addrs, fields=ipv4_fields, options=ipv4_option_lists(), payload=payloads)
def test_ipv4_scapy_to_ours(src, dst, fields, options, payload):
    ff = fields["flags_fragment"]
    raw = bytes(IP(src=ntoa(src), dst=ntoa(dst), tos=fields["tos"], id=fields["ident"], ttl=fields["ttl"],
                   proto=fields["protocol"], flags=ff >> 13, frag=ff & ipv4.FRAGMENT_OFFSET_MASK,
                   options=[o.scapy() for o in options]) / payload)

    hdr = ipv4.parse(raw)
    assert hdr
    options_size = sum(o.size for o in options)
    assert hdr.header_length == ipv4.MIN_SIZE + options_size + -options_size % 4
    assert hdr.total_length == len(raw) == hdr.header_length + len(payload)
    assert (hdr.tos, hdr.ident, hdr.flags_fragment, hdr.ttl, hdr.protocol) == \
        (fields["tos"], fields["ident"], ff, fields["ttl"], fields["protocol"])
    assert (hdr.src, hdr.dst) == (src, dst)
    assert ipv4.checksum_valid(raw, hdr.header_length)
    assert ipv4.parse_options(raw[ipv4.MIN_SIZE:hdr.header_length]) == \
        [(o.kind, o.data) for o in options if o.kind != ipv4.OPT_NOP]


def test_ipv4_bad_header_fields():
    good = ipv4_packet(b"\xc0\x00\x02\x01", b"\xc6\x33\x64\x02", 17, bytes(8))
    assert ipv4.parse(good)
    for ihl in range(5):
        assert ipv4.parse(bytes((0x40 | ihl,)) + good[1:]) is Malformed.BAD_HEADER_LENGTH
    for version in (0, 6, 15):
        assert ipv4.parse(bytes((version << 4 | 5,)) + good[1:]) is Malformed.BAD_VERSION
    assert ipv4.parse(b"\x48" + good[1:]) is Malformed.TRUNCATED           # IHL 32 > the 28 delivered
    assert ipv4.parse(good[:2] + struct.pack("!H", 19) + good[4:]) is Malformed.BAD_TOTAL_LENGTH
    assert ipv4.parse(good[:2] + struct.pack("!H", 29) + good[4:]) is Malformed.TRUNCATED


@SETTINGS
@given(area=st.binary(max_size=40))
def test_ipv4_hostile_options_never_raise(area):
    parsed = ipv4.parse_options(area)
    if parsed is Malformed.BAD_OPTIONS:
        assert not ipv4.options_valid(area)
        return
    assert all(len(data) <= 38 for _, data in parsed)
    reencoded = ipv4.encode_options(parsed)
    assert ipv4.parse_options(reencoded) == parsed


@SETTINGS
@given(raw=st.binary(min_size=20, max_size=80), ihl=st.integers(0, 15))
def test_ipv4_hostile_headers_never_raise(raw, ihl):
    raw = bytes((0x40 | ihl,)) + raw[1:]
    hdr = ipv4.parse(raw)
    if hdr:
        assert ipv4.MIN_SIZE <= hdr.header_length <= hdr.total_length <= len(raw)
        assert isinstance(ipv4.parse_options(raw[ipv4.MIN_SIZE:hdr.header_length]), (list, Malformed))
    else:
        assert isinstance(hdr, Malformed)


# --- UDP ------------------------------------------------------------------------------------------


def udp_checksum(src: bytes, dst: bytes, datagram: bytes) -> int:
    """RFC 768: the complemented sum, sent as 0xffff when it comes out 0 (0 means "no checksum")."""
    total = checksum_views((datagram,), pseudo_header_checksum(udp.PROTOCOL_NUMBER, src, dst, len(datagram)))
    return (~total & 0xFFFF) or 0xFFFF


def udp_datagram(src: bytes, dst: bytes, src_port: int, dst_port: int, payload: bytes, with_checksum: bool) -> bytes:
    header = bytearray(udp.HEADER_SIZE)
    length = udp.HEADER_SIZE + len(payload)
    udp.build(header, src_port, dst_port, length)
    if with_checksum:
        udp.build(header, src_port, dst_port, length, udp_checksum(src, dst, bytes(header) + payload))
    return bytes(header) + payload


@SETTINGS
@given(src=ipv4_addrs, dst=ipv4_addrs, src_port=u16, dst_port=u16, payload=payloads, with_checksum=st.booleans())
def test_udp_ours_to_scapy(src, dst, src_port, dst_port, payload, with_checksum):
    datagram = udp_datagram(src, dst, src_port, dst_port, payload, with_checksum)
    pkt = IP(ipv4_packet(src, dst, udp.PROTOCOL_NUMBER, datagram))
    u = pkt[UDP]
    assert (u.sport, u.dport, u.len) == (src_port, dst_port, len(datagram))
    assert bytes(u.payload) == payload
    if with_checksum:
        assert rebuilt_by_scapy(pkt, UDP)[ipv4.MIN_SIZE:] == datagram
    else:
        assert u.chksum == 0


@SETTINGS
@given(src=ipv4_addrs, dst=ipv4_addrs, src_port=u16, dst_port=u16, payload=payloads)
def test_udp_scapy_to_ours(src, dst, src_port, dst_port, payload):
    raw = bytes(IP(src=ntoa(src), dst=ntoa(dst)) / UDP(sport=src_port, dport=dst_port) / payload)
    datagram = raw[ipv4.MIN_SIZE:]
    hdr = udp.parse(datagram)
    assert hdr == (src_port, dst_port, len(datagram), hdr.checksum)
    assert hdr.checksum != 0
    pseudo = pseudo_header_checksum(udp.PROTOCOL_NUMBER, src, dst, hdr.length)
    assert checksum_views((datagram[:udp.HEADER_SIZE], datagram[udp.HEADER_SIZE:]), pseudo) == 0xFFFF


@SETTINGS
@given(src=ipv6_addrs, dst=ipv6_addrs, src_port=u16, dst_port=u16, payload=payloads)
def test_udp_ipv6_checksum_matches_scapy(src, dst, src_port, dst_port, payload):
    raw = bytes(IPv6(src=ntoa(src), dst=ntoa(dst)) / UDP(sport=src_port, dport=dst_port) / payload)
    datagram = raw[40:]
    assert udp.parse(datagram)
    assert udp_datagram(src, dst, src_port, dst_port, payload, True) == datagram


def test_udp_bad_length():
    datagram = udp_datagram(bytes(4), bytes(4), 1, 2, b"abcd", False)
    for length in (0, 7, 13):
        assert udp.parse(datagram[:4] + struct.pack("!H", length) + datagram[6:]) is Malformed.BAD_TOTAL_LENGTH
    assert udp.parse(datagram[:4] + struct.pack("!H", 8) + datagram[6:])   # shorter: IP padding follows


# --- TCP ------------------------------------------------------------------------------------------

ScapyOptions = list[tuple[str, object]]
timestamps = st.none() | st.tuples(u32, u32)
sack_blocks = st.lists(st.tuples(u32, u32), max_size=6)


@st.composite
def our_tcp_options(draw) -> tuple[bytes, ScapyOptions]:
    """Options from our encoders, with the list scapy must dissect them into (Linux's layouts)."""
    if draw(st.booleans()):
        mss, sack_permitted, timestamp = draw(u16), draw(st.booleans()), draw(timestamps)
        window_scale = draw(st.none() | st.integers(0, tcp.MAX_WINDOW_SCALE))
        expected: ScapyOptions = [("MSS", mss)]
        if timestamp and sack_permitted:
            expected += [("SAckOK", b""), ("Timestamp", timestamp)]
        elif timestamp:
            expected += [("NOP", None), ("NOP", None), ("Timestamp", timestamp)]
        elif sack_permitted:
            expected += [("NOP", None), ("NOP", None), ("SAckOK", b"")]
        if window_scale is not None:
            expected += [("NOP", None), ("WScale", window_scale)]
        return tcp.encode_syn_options(mss, window_scale, sack_permitted, timestamp), expected
    timestamp, blocks = draw(timestamps), draw(sack_blocks)
    expected = []
    if timestamp:
        expected += [("NOP", None), ("NOP", None), ("Timestamp", timestamp)]
    if blocks:
        kept = blocks[:3 if timestamp else 4]
        expected += [("NOP", None), ("NOP", None), ("SAck", tuple(n for block in kept for n in block))]
    return tcp.encode_options(timestamp, blocks), expected


def scapy_dissects(port: int) -> bool:
    """Does scapy dissect TCP payloads on ``port`` (135: DCE/RPC, 53: DNS ...)? A random payload there
    may not survive its dissector's rebuild, which is scapy's business, not the checksum's. Asked at
    draw time: the bindings grow as other test modules import more of scapy."""
    return any(fields.get(name) == port for fields, _ in TCP.payload_guess for name in ("sport", "dport"))


plain_ports = u16.filter(lambda port: not scapy_dissects(port))
tcp_fields = st.fixed_dictionaries({
    "src_port": plain_ports, "dst_port": plain_ports, "seq": u32, "ack": u32, "flags": u8, "window": u16,
    "urgent": u16,
})


def tcp_segment(src: bytes, dst: bytes, fields: dict, options: bytes, payload: bytes) -> bytes:
    header = bytearray(tcp.MIN_SIZE + len(options))
    tcp.build(header, options=options, **fields)
    tcp.set_checksum(header, tcp.compute_checksum(src, dst, header, payload))
    return bytes(header) + payload


@SETTINGS
@given(src=ipv4_addrs, dst=ipv4_addrs, fields=tcp_fields, options=our_tcp_options(), payload=payloads)
def test_tcp_ours_to_scapy(src, dst, fields, options, payload):
    encoded, expected_options = options
    segment = tcp_segment(src, dst, fields, encoded, payload)
    pkt = IP(ipv4_packet(src, dst, tcp.PROTOCOL_NUMBER, segment))
    t = pkt[TCP]
    assert (t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window, t.urgptr) == \
        (fields["src_port"], fields["dst_port"], fields["seq"], fields["ack"], fields["flags"],
         fields["window"], fields["urgent"])
    assert t.dataofs * 4 == tcp.MIN_SIZE + len(encoded) <= tcp.MAX_SIZE
    assert t.options == expected_options
    assert bytes(t.payload) == payload
    assert rebuilt_by_scapy(pkt, TCP)[ipv4.MIN_SIZE:] == segment


def linux_view(options: ScapyOptions) -> tcp.TCPOptions:
    """What Linux's tcp_parse_options takes from options as scapy lists them: options of the wrong
    size (scapy leaves those as raw bytes) and an MSS of 0 ignored, a repeated option overriding the
    earlier one, nothing read past EOL, the window scale clamped to 14; a Fast Open cookie (scapy shows
    an 8-byte one as two 32-bit numbers) of RFC 7413's sizes, or none (a request)."""
    mss = window_scale = timestamp = fast_open = None
    sack_permitted = False
    blocks: tuple[tuple[int, int], ...] = ()
    for name, value in options:
        if name == "EOL":
            break
        if name == "MSS" and isinstance(value, int) and value:
            mss = value
        elif name == "WScale" and isinstance(value, int):
            window_scale = min(value, tcp.MAX_WINDOW_SCALE)
        elif name == "SAckOK" and value == b"":
            sack_permitted = True
        elif name == "Timestamp" and isinstance(value, tuple):
            timestamp = value
        elif name == "SAck" and isinstance(value, tuple) and value and len(value) % 2 == 0:
            blocks = tuple(zip(value[::2], value[1::2]))
        elif name == "TFO":
            cookie = b"".join(n.to_bytes(4, "big") for n in value) if isinstance(value, tuple) else value
            if not len(cookie) & 1:
                fast_open = cookie if not cookie or len(cookie) in tcp.FAST_OPEN_COOKIE_SIZES else None
    return tcp.TCPOptions(mss, window_scale, sack_permitted, timestamp, blocks, fast_open)


_SCAPY_OPTION_SIZES = {"EOL": 1, "NOP": 1, "MSS": 4, "WScale": 3, "SAckOK": 2, "Timestamp": 10}


def _scapy_option_size(option: tuple[str, object]) -> int:
    name, value = option
    return 2 + 4 * len(value) if name == "SAck" else _SCAPY_OPTION_SIZES[name]


@st.composite
def scapy_tcp_options(draw) -> ScapyOptions:
    """Options for scapy to encode: any mix and order, repeats included, within 40 bytes."""
    candidates = st.one_of(
        st.just(("NOP", None)), st.just(("EOL", None)), st.just(("SAckOK", b"")),
        st.tuples(st.just("MSS"), u16), st.tuples(st.just("WScale"), u8),
        st.tuples(st.just("Timestamp"), st.tuples(u32, u32)),
        st.tuples(st.just("SAck"), st.lists(u32, min_size=2, max_size=8).map(
            lambda ns: tuple(ns[:len(ns) & ~1]))),
    )
    options: ScapyOptions = []
    room = tcp.MAX_OPTIONS_SIZE
    for option in draw(st.lists(candidates, max_size=8)):
        size = _scapy_option_size(option)
        if size <= room:
            options.append(option)
            room -= size
    return options


@SETTINGS
@given(src=ipv4_addrs, dst=ipv4_addrs, fields=tcp_fields, options=scapy_tcp_options(), payload=payloads)
def test_tcp_scapy_to_ours(src, dst, fields, options, payload):
    raw = bytes(IP(src=ntoa(src), dst=ntoa(dst))
                / TCP(sport=fields["src_port"], dport=fields["dst_port"], seq=fields["seq"], ack=fields["ack"],
                      flags=fields["flags"], window=fields["window"], urgptr=fields["urgent"], options=options)
                / payload)
    segment = raw[ipv4.MIN_SIZE:]
    hdr = tcp.parse(segment)
    assert hdr
    assert hdr._replace(checksum=0, data_offset=0) == tcp.TCPHeader(
        fields["src_port"], fields["dst_port"], fields["seq"], fields["ack"], 0, fields["flags"],
        fields["window"], 0, fields["urgent"])
    assert hdr.data_offset == len(segment) - len(payload)
    assert tcp.parse_options(segment[tcp.MIN_SIZE:hdr.data_offset]) == linux_view(options)
    pseudo = pseudo_header_checksum(tcp.PROTOCOL_NUMBER, src, dst, len(segment))
    assert tcp.checksum_valid(pseudo, (segment[:hdr.data_offset], segment[hdr.data_offset:]))
    zeroed = bytearray(segment[:hdr.data_offset])
    tcp.set_checksum(zeroed, 0)
    assert tcp.compute_checksum(src, dst, zeroed, segment[hdr.data_offset:]) == hdr.checksum


@SETTINGS
@given(src=ipv6_addrs, dst=ipv6_addrs, fields=tcp_fields, options=our_tcp_options(), payload=payloads)
def test_tcp_ipv6_checksum_matches_scapy(src, dst, fields, options, payload):
    segment = tcp_segment(src, dst, fields, options[0], payload)
    raw = bytes(IPv6(src=ntoa(src), dst=ntoa(dst), nh=tcp.PROTOCOL_NUMBER) / segment)
    pkt = IPv6(raw)
    assert rebuilt_by_scapy(pkt, TCP)[40:] == segment
    pseudo = pseudo_header_checksum(tcp.PROTOCOL_NUMBER, src, dst, len(segment))
    assert tcp.checksum_valid(pseudo, (segment,))


SCAPY_TCP_AO = 29   # scapy's dissector for this kind raises on a short value: keep it out of its way


@st.composite
def tlv_option_areas(draw) -> bytes:
    """Structurally sound option areas: any kind (known kinds at wrong sizes too) with any content."""
    known = st.sampled_from((tcp.OPT_MSS, tcp.OPT_WS, tcp.OPT_SACK_PERMITTED, tcp.OPT_SACK, tcp.OPT_TIMESTAMP))
    kinds = known | u8.filter(lambda kind: kind != SCAPY_TCP_AO)
    area = b""
    for kind, content in draw(st.lists(st.tuples(kinds, st.binary(max_size=12)), max_size=8)):
        option = bytes((kind,)) if kind in (tcp.OPT_EOL, tcp.OPT_NOP) else bytes((kind, 2 + len(content))) + content
        if len(area) + len(option) > tcp.MAX_OPTIONS_SIZE:
            break
        area += option
    return area


@SETTINGS
@given(area=tlv_option_areas() | st.binary(max_size=tcp.MAX_OPTIONS_SIZE))
def test_tcp_options_agree_with_scapy(area):
    """Where the area is well formed, we read what scapy's dissector reads (under Linux's rules)."""
    assume(SCAPY_TCP_AO not in area)
    parsed = tcp.parse_options(area)
    if parsed is not Malformed.BAD_OPTIONS:
        assert parsed == linux_view(TCP_OPTIONS_FIELD.m2i(None, area))


@SETTINGS
@given(raw=st.binary(min_size=tcp.MIN_SIZE, max_size=100), offset=st.integers(0, 15))
def test_tcp_hostile_segments_never_raise(raw, offset):
    raw = raw[:12] + bytes((offset << 4 | raw[12] & 0x0F,)) + raw[13:]
    hdr = tcp.parse(raw)
    if hdr:
        assert tcp.MIN_SIZE <= hdr.data_offset <= min(len(raw), tcp.MAX_SIZE)
        assert isinstance(tcp.parse_options(raw[tcp.MIN_SIZE:hdr.data_offset]), (tcp.TCPOptions, Malformed))
    else:
        assert hdr is (Malformed.BAD_HEADER_LENGTH if offset < 5 else Malformed.TRUNCATED)


def test_tcp_bad_data_offset():
    segment = tcp_segment(bytes(4), bytes(4), dict(src_port=1, dst_port=2, seq=3, ack=4, flags=tcp.ACK, window=5),
                          tcp.encode_options((1, 2)), b"xy")
    for offset in range(5):
        assert tcp.parse(segment[:12] + bytes((offset << 4,)) + segment[13:]) is Malformed.BAD_HEADER_LENGTH
    assert tcp.parse(segment[:12] + b"\x90" + segment[13:]) is Malformed.TRUNCATED     # 36 > 34 delivered
    assert tcp.parse(segment[:31]) is Malformed.TRUNCATED                              # options cut short
    assert tcp.parse(segment).data_offset == 32


# --- ICMPv4 ---------------------------------------------------------------------------------------


def icmp_message(type_: int, code: int, rest: int, payload: bytes) -> bytes:
    header = bytearray(icmpv4.MIN_SIZE)
    icmpv4.build(header, type_, code, rest, payload)
    return bytes(header) + payload


@st.composite
def quoted_datagrams(draw) -> bytes:
    """What an ICMP error quotes: the offending IPv4 header (options too) and 8 bytes of its payload."""
    options = ipv4.encode_options([(o.kind, o.data) for o in draw(ipv4_option_lists())])
    src, dst = draw(ipv4_addrs), draw(ipv4_addrs)
    datagram = udp_datagram(src, dst, draw(u16), draw(u16), draw(payloads), True)
    return ipv4_packet(src, dst, udp.PROTOCOL_NUMBER, datagram, options=options,
                       ttl=draw(u8), ident=draw(u16))[:ipv4.MIN_SIZE + len(options) + 8]


@SETTINGS
@given(type_=st.sampled_from((icmpv4.ECHO, icmpv4.ECHO_REPLY)), ident=u16, sequence=u16, payload=payloads)
def test_icmp_echo_ours_to_scapy(type_, ident, sequence, payload):
    message = icmp_message(type_, 0, icmpv4.echo_rest(ident, sequence), payload)
    pkt = ICMP(message)
    assert (pkt.type, pkt.code, pkt.id, pkt.seq) == (type_, 0, ident, sequence)
    assert bytes(pkt.payload) == payload
    assert rebuilt_by_scapy(pkt, ICMP) == message


@SETTINGS
@given(type_=st.sampled_from((icmpv4.ECHO, icmpv4.ECHO_REPLY)), ident=u16, sequence=u16, payload=payloads)
def test_icmp_echo_scapy_to_ours(type_, ident, sequence, payload):
    message = bytes(ICMP(type=type_, id=ident, seq=sequence) / payload)
    hdr = icmpv4.parse(message)
    assert (hdr.type, hdr.code, hdr.ident, hdr.sequence) == (type_, 0, ident, sequence)
    assert icmpv4.checksum_valid(message)


@SETTINGS
@given(code=st.integers(0, 15), mtu=u16, quoted=quoted_datagrams())
def test_icmp_dst_unreachable_ours_to_scapy(code, mtu, quoted):
    message = icmp_message(icmpv4.DST_UNREACHABLE, code, mtu, quoted)
    pkt = ICMP(message)
    assert (pkt.type, pkt.code, pkt.length, pkt.nexthopmtu) == (icmpv4.DST_UNREACHABLE, code, 0, mtu)
    assert bytes(pkt.payload) == quoted
    assert rebuilt_by_scapy(pkt, ICMP) == message


@SETTINGS
@given(code=st.integers(0, 15), mtu=u16, quoted=quoted_datagrams())
def test_icmp_dst_unreachable_scapy_to_ours(code, mtu, quoted):
    message = bytes(ICMP(type=icmpv4.DST_UNREACHABLE, code=code, nexthopmtu=mtu) / quoted)
    hdr = icmpv4.parse(message)
    assert (hdr.type, hdr.code, hdr.mtu) == (icmpv4.DST_UNREACHABLE, code, mtu)
    assert icmpv4.checksum_valid(message)
    assert message[icmpv4.MIN_SIZE:] == quoted


@SETTINGS
@given(code=st.sampled_from((icmpv4.TTL_EXCEEDED, icmpv4.REASSEMBLY_TIMEOUT)), quoted=quoted_datagrams())
def test_icmp_time_exceeded_both_ways(code, quoted):
    ours = icmp_message(icmpv4.TIME_EXCEEDED, code, 0, quoted)
    pkt = ICMP(ours)
    assert (pkt.type, pkt.code, pkt.length, pkt.unused) == (icmpv4.TIME_EXCEEDED, code, 0, 0)
    assert bytes(pkt.payload) == quoted
    assert rebuilt_by_scapy(pkt, ICMP) == ours

    theirs = bytes(ICMP(type=icmpv4.TIME_EXCEEDED, code=code) / quoted)
    assert theirs == ours
    assert icmpv4.parse(theirs) == (icmpv4.TIME_EXCEEDED, code, int.from_bytes(ours[2:4], "big"), 0)
    assert icmpv4.checksum_valid(theirs)


# --- Ethernet and ARP -----------------------------------------------------------------------------


@SETTINGS
@given(dst=macs, src=macs, op=u16, sender_hw=macs, sender_proto=ipv4_addrs, target_hw=macs, target_proto=ipv4_addrs)
def test_ethernet_arp_ours_to_scapy(dst, src, op, sender_hw, sender_proto, target_hw, target_proto):
    frame = bytearray(ethernet.HEADER_SIZE + arp.SIZE)
    ethernet.build(frame, dst, src, ethernet.ETHERTYPE_ARP)
    arp.build(memoryview(frame)[ethernet.HEADER_SIZE:], op, sender_hw, sender_proto, target_hw, target_proto)

    pkt = Ether(bytes(frame))
    assert (pkt.dst, pkt.src, pkt.type) == (str2mac(dst), str2mac(src), ethernet.ETHERTYPE_ARP)
    a = pkt[ARP]
    assert (a.hwtype, a.ptype, a.hwlen, a.plen, a.op) == (1, 0x0800, 6, 4, op)
    assert (a.hwsrc, a.psrc, a.hwdst, a.pdst) == \
        (str2mac(sender_hw), ntoa(sender_proto), str2mac(target_hw), ntoa(target_proto))


@SETTINGS
@given(dst=macs, src=macs, op=u16, sender_hw=macs, sender_proto=ipv4_addrs, target_hw=macs, target_proto=ipv4_addrs)
def test_ethernet_arp_scapy_to_ours(dst, src, op, sender_hw, sender_proto, target_hw, target_proto):
    frame = bytes(Ether(dst=str2mac(dst), src=str2mac(src))
                  / ARP(op=op, hwsrc=str2mac(sender_hw), psrc=ntoa(sender_proto), hwdst=str2mac(target_hw),
                        pdst=ntoa(target_proto)))
    assert ethernet.parse(frame) == (dst, src, ethernet.ETHERTYPE_ARP)
    assert arp.parse(frame[ethernet.HEADER_SIZE:]) == (op, sender_hw, sender_proto, target_hw, target_proto)


@SETTINGS
@given(dst=macs, src=macs, ethertype=st.integers(0x0600, 0xFFFF), payload=payloads)
def test_ethernet_any_ethertype_both_ways(dst, src, ethertype, payload):
    ours = bytearray(ethernet.HEADER_SIZE)
    ethernet.build(ours, dst, src, ethertype)
    pkt = Ether(bytes(ours) + payload)
    assert (pkt.dst, pkt.src, pkt.type) == (str2mac(dst), str2mac(src), ethertype)
    theirs = bytes(Ether(dst=str2mac(dst), src=str2mac(src), type=ethertype))
    assert theirs == ours
    assert ethernet.parse(theirs + payload) == (dst, src, ethertype)


def test_arp_other_hardware_or_protocol_is_bad_field():
    valid = bytes(ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="192.0.2.1", pdst="192.0.2.2"))
    assert arp.parse(valid)
    for offset, value in ((0, b"\x00\x06"), (2, b"\x86\xdd"), (4, b"\x08"), (5, b"\x10")):
        assert arp.parse(valid[:offset] + value + valid[offset + len(value):]) is Malformed.BAD_FIELD


# --- Truncation -----------------------------------------------------------------------------------


_SRC, _DST, _MAC = "192.0.2.1", "192.0.2.2", "02:00:00:00:00:01"
MINIMAL_HEADERS = [
    pytest.param(ipv4.parse, ipv4.MIN_SIZE, lambda: bytes(IP(src=_SRC, dst=_DST)), id="ipv4"),
    pytest.param(udp.parse, udp.HEADER_SIZE, lambda: bytes(UDP()), id="udp"),
    pytest.param(tcp.parse, tcp.MIN_SIZE, lambda: bytes(TCP()), id="tcp"),
    pytest.param(icmpv4.parse, icmpv4.MIN_SIZE, lambda: bytes(ICMP()), id="icmpv4"),
    pytest.param(ethernet.parse, ethernet.HEADER_SIZE, lambda: bytes(Ether(dst=_MAC, src=_MAC)), id="ethernet"),
    pytest.param(arp.parse, arp.SIZE, lambda: bytes(ARP(hwsrc=_MAC, psrc=_SRC, pdst=_DST)), id="arp"),
]


@pytest.mark.parametrize("parse, minimum, make_valid", MINIMAL_HEADERS)
def test_every_length_below_minimum_is_truncated(parse, minimum, make_valid):
    valid = make_valid()
    assert len(valid) == minimum and parse(valid)
    for size in range(minimum):
        assert parse(valid[:size]) is Malformed.TRUNCATED, size
        assert parse(memoryview(valid)[:size]) is Malformed.TRUNCATED, size
