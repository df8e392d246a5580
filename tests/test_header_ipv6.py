"""IPv6 fixed header, addresses and extension headers, cross-checked against scapy.

What we build, scapy dissects to the fields we gave; what scapy builds (extension-header chains,
hop-by-hop and destination options with scapy's own alignment padding), we walk and decode to the
fields scapy was given. Hostile chains and option areas come back as ``Malformed`` or as a result
whose offsets stay inside the buffer: never an exception, never an endless walk.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # before scapy's import: no route warnings

from scapy.layers.inet6 import (HBHOptUnknown, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,  # noqa: E402
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrSegmentRouting, Pad1, PadN,
                                RouterAlert, _hbhoptcls)
from scapy.packet import Packet, Raw  # noqa: E402
from scapy.utils import str2mac  # noqa: E402
from scapy.utils6 import in6_getnsma, in6_mactoifaceid  # noqa: E402

from netsock.header import Malformed, ipv6  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ipv6_addrs = st.binary(min_size=16, max_size=16)
macs = st.binary(min_size=6, max_size=6)
payloads = st.binary(max_size=64)
# Upper layers scapy leaves as raw bytes, so the payload's content cannot upset its dissector.
upper_layers = st.sampled_from((ipv6.NO_NEXT, 253, 254))

SRC = bytes.fromhex("fe800000000000000000000000000001")
DST = bytes.fromhex("20010db8000000000000000000000002")


def ntoa(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, addr)


def ours(src: bytes, dst: bytes, next_header: int, body: bytes, **fields) -> bytes:
    header = bytearray(ipv6.HEADER_SIZE)
    ipv6.build(header, src=src, dst=dst, next_header=next_header, payload_length=len(body), **fields)
    return bytes(header) + body


# --- Fixed header ---------------------------------------------------------------------------------

header_fields = st.fixed_dictionaries({
    "traffic_class": u8, "flow_label": st.integers(0, 0xFFFFF), "hop_limit": u8,
})


@SETTINGS
@given(src=ipv6_addrs, dst=ipv6_addrs, fields=header_fields, next_header=upper_layers, payload=payloads)
def test_header_ours_to_scapy(src, dst, fields, next_header, payload):
    pkt = IPv6(ours(src, dst, next_header, payload, **fields))
    assert (pkt.version, pkt.tc, pkt.fl, pkt.plen, pkt.nh, pkt.hlim) == \
        (6, fields["traffic_class"], fields["flow_label"], len(payload), next_header, fields["hop_limit"])
    assert (pkt.src, pkt.dst) == (ntoa(src), ntoa(dst))
    assert bytes(pkt.payload) == payload


@SETTINGS
@given(src=ipv6_addrs, dst=ipv6_addrs, fields=header_fields, next_header=upper_layers, payload=payloads,
       link_padding=st.binary(max_size=8))
def test_header_scapy_to_ours(src, dst, fields, next_header, payload, link_padding):
    raw = bytes(IPv6(src=ntoa(src), dst=ntoa(dst), tc=fields["traffic_class"], fl=fields["flow_label"],
                     hlim=fields["hop_limit"], nh=next_header) / Raw(payload))
    assert ipv6.parse(raw + link_padding) == ipv6.IPv6Header(
        fields["traffic_class"], fields["flow_label"], len(payload), next_header, fields["hop_limit"], src, dst)
    assert raw == ours(src, dst, next_header, payload, **fields)


def test_header_bad_version_and_lengths():
    good = ours(SRC, DST, ipv6.NO_NEXT, b"abcd")
    assert ipv6.parse(good)
    for version in (0, 4, 7, 15):
        assert ipv6.parse(bytes((version << 4,)) + good[1:]) is Malformed.BAD_VERSION
    assert ipv6.parse(good[:-1]) is Malformed.TRUNCATED                         # payload length 4, 3 delivered
    for size in range(ipv6.HEADER_SIZE):
        assert ipv6.parse(good[:size]) is Malformed.TRUNCATED
        assert ipv6.parse(memoryview(good)[:size]) is Malformed.TRUNCATED


# --- Addresses ------------------------------------------------------------------------------------

# Mostly the interesting prefixes, so that every class is drawn often.
addresses = st.one_of(
    ipv6_addrs,
    st.tuples(st.sampled_from((b"\xfe\x80", b"\xfe\xbf", b"\xfe\xc0", b"\xff\x02", b"\xff\x05", b"\x00\x00")),
              st.binary(min_size=14, max_size=14)).map(b"".join),
    st.sampled_from((ipv6.UNSPECIFIED, ipv6.LOOPBACK, ipv6.ALL_NODES)),
)


@SETTINGS
@given(addr=addresses)
def test_address_classes_agree_with_ipaddress(addr):
    ref = ipaddress.IPv6Address(addr)
    assert ipv6.is_multicast(addr) == ref.is_multicast
    assert ipv6.is_link_local(addr) == ref.is_link_local
    assert ipv6.is_loopback(addr) == ref.is_loopback
    assert ipv6.is_unspecified(addr) == ref.is_unspecified
    assert ipv6.solicited_node_multicast(addr) == in6_getnsma(addr)
    assert ipv6.is_solicited_node_multicast(in6_getnsma(addr))
    assert ipv6.is_solicited_node_multicast(addr) == (ref in ipaddress.IPv6Network("ff02::1:ff00:0/104"))


@SETTINGS
@given(mac=macs)
def test_link_local_from_mac_agrees_with_scapy(mac):
    interface_id = socket.inet_pton(socket.AF_INET6, "::" + in6_mactoifaceid(str2mac(mac)))[8:]
    assert ipv6.interface_id_from_mac(mac) == interface_id
    assert ipv6.link_local_from_mac(mac) == b"\xfe\x80" + bytes(6) + interface_id
    assert ipv6.is_link_local(ipv6.link_local_from_mac(mac))


def test_well_known_addresses_and_scopes():
    assert (ntoa(ipv6.ALL_NODES), ntoa(ipv6.ALL_ROUTERS), ntoa(ipv6.ALL_MLDV2_ROUTERS)) == \
        ("ff02::1", "ff02::2", "ff02::16")
    assert ntoa(ipv6.solicited_node_multicast(socket.inet_pton(socket.AF_INET6, "2001:db8::12:3456"))) == \
        "ff02::1:ff12:3456"
    scopes = {"ff01::1": ipv6.SCOPE_INTERFACE_LOCAL, "ff02::1": ipv6.SCOPE_LINK_LOCAL,
              "ff12::1234": ipv6.SCOPE_LINK_LOCAL, "ff05::2": ipv6.SCOPE_SITE_LOCAL,
              "ff08::1": ipv6.SCOPE_ORGANIZATION_LOCAL, "ff3e::8000:1": ipv6.SCOPE_GLOBAL}
    for text, scope in scopes.items():
        assert ipv6.multicast_scope(socket.inet_pton(socket.AF_INET6, text)) == scope, text


# --- Extension-header chains ----------------------------------------------------------------------

# Option types scapy dissects as plain ones (the others it has classes for, which vary with its version: 2.8
# added RPL's, 0x63).
KNOWN_TO_SCAPY = frozenset((0, 1, 4, 5, 6, 0xC2, 0xC9, *_hbhoptcls))
UNKNOWN_OPTION_TYPES = u8.filter(lambda t: t not in KNOWN_TO_SCAPY)


def _scapy_option() -> st.SearchStrategy[Packet]:
    return st.one_of(
        st.just(Pad1()),
        (st.integers(0, 5).map(bytes) | st.binary(max_size=5)).map(lambda data: PadN(optdata=data)),
        u16.map(lambda value: RouterAlert(value=value)),
        st.tuples(UNKNOWN_OPTION_TYPES, st.binary(max_size=10)).map(
            lambda t: HBHOptUnknown(otype=t[0], optdata=t[1])),
    )


scapy_options = st.lists(_scapy_option(), max_size=10)


@st.composite
def scapy_extension_headers(draw) -> tuple[int, Packet]:
    """One extension header as scapy builds it, with the Next Header value that names it."""
    kind = draw(st.sampled_from((ipv6.HOP_BY_HOP, ipv6.DEST_OPTIONS, ipv6.ROUTING, ipv6.FRAGMENT)))
    if kind == ipv6.HOP_BY_HOP:
        return kind, IPv6ExtHdrHopByHop(options=draw(scapy_options))
    if kind == ipv6.DEST_OPTIONS:
        return kind, IPv6ExtHdrDestOpt(options=draw(scapy_options))
    if kind == ipv6.ROUTING:
        addresses = [ntoa(a) for a in draw(st.lists(ipv6_addrs, max_size=3))]
        if draw(st.booleans()):
            return kind, IPv6ExtHdrSegmentRouting(segleft=draw(u8), addresses=addresses or ["::1"])
        return kind, IPv6ExtHdrRouting(type=draw(u8), segleft=draw(u8), addresses=addresses)
    atomic = draw(st.booleans())
    return kind, IPv6ExtHdrFragment(offset=0 if atomic else draw(st.integers(0, 0x1FFF)),
                                    m=0 if atomic else draw(st.integers(0, 1)), id=draw(u32))


@st.composite
def scapy_chains(draw) -> tuple[bytes, int, list[tuple[int, Packet]], int]:
    """(packet, first next header, [(kind, header)], upper layer), all built by scapy."""
    chain = draw(st.lists(scapy_extension_headers(), max_size=6))
    upper = draw(upper_layers)
    kinds = [kind for kind, _ in chain] + [upper]
    for (_, header), following in zip(chain, kinds[1:]):
        header.nh = following
    pkt = IPv6(src=ntoa(SRC), dst=ntoa(DST), nh=kinds[0])
    for _, header in chain:
        pkt = pkt / header
    return bytes(pkt / Raw(draw(payloads))), kinds[0], chain, upper


@SETTINGS
@given(chain=scapy_chains())
def test_walk_scapy_chains(chain):
    raw, first, headers, upper = chain
    expected: list[ipv6.ExtHeader] = []
    next_header, offset, fragment = upper, ipv6.HEADER_SIZE, None
    kinds = [kind for kind, _ in headers]
    for i, (kind, header) in enumerate(headers):
        if kind == ipv6.HOP_BY_HOP and i:       # RFC 8200 §4.1: only right behind the fixed header
            next_header = kind
            break
        size = len(header)      # ``pkt / header`` stacked a copy: this one has no payload
        following = kinds[i + 1] if i + 1 < len(kinds) else upper
        expected.append(ipv6.ExtHeader(kind, offset, size, following))
        offset += size
        if kind == ipv6.FRAGMENT and (header.offset or header.m):
            next_header, fragment = following, ipv6.FragmentHeader(following, header.offset * 8, bool(header.m),
                                                                   header.id)
            break
    chain_result = ipv6.iter_extension_headers(raw, first)
    assert chain_result == ipv6.ExtensionChain(tuple(expected), next_header, offset, fragment)
    assert chain_result.next_header_pointer == (expected[-1].offset if expected else ipv6.NEXT_HEADER_OFFSET)


@SETTINGS
@given(kind=st.sampled_from((ipv6.HOP_BY_HOP, ipv6.DEST_OPTIONS)), options=scapy_options)
def test_options_agree_with_scapy(kind, options):
    """Options in a header scapy builds (and pads) are processed as RFC 8200 §4.2 and Linux's limits say."""
    cls = IPv6ExtHdrHopByHop if kind == ipv6.HOP_BY_HOP else IPv6ExtHdrDestOpt
    raw = bytes(IPv6(nh=kind) / cls(options=options))
    header = ipv6.iter_extension_headers(raw, kind).headers[0]
    assert ipv6.parse_options(raw, header) == options_reference(cls(raw[ipv6.HEADER_SIZE:]).options,
                                                                kind == ipv6.HOP_BY_HOP)


def options_reference(options: list[Packet], hop_by_hop: bool) -> ipv6.HeaderOptions | Malformed:
    """The verdict on the options as scapy dissected them: padding runs of at most 7 bytes of zeros,
    at most 8 other options, the first unknown option not to skip deciding the action."""
    padding = count = 0
    router_alert = None
    pointer = ipv6.HEADER_SIZE + 2
    for option in options:
        if isinstance(option, Pad1):
            padding += 1
            if padding > 7:
                return Malformed.BAD_OPTIONS
        elif isinstance(option, PadN):
            padding += 2 + len(option.optdata)
            if padding > 7 or any(option.optdata):
                return Malformed.BAD_OPTIONS
        else:
            padding = 0
            count += 1
            if count > 8:
                return Malformed.BAD_OPTIONS
            if isinstance(option, RouterAlert) and hop_by_hop:
                router_alert = option.value
            elif option.otype >> 6:
                return ipv6.HeaderOptions(router_alert, option.otype >> 6, pointer)
        pointer += len(bytes(option))
    return ipv6.HeaderOptions(router_alert, ipv6.ACTION_SKIP, 0)


@SETTINGS
@given(value=u16, fragment_offset=st.integers(0, 0x1FFF), more=st.booleans(), ident=u32, payload=payloads)
def test_router_alert_and_fragment_ours_to_scapy(value, fragment_offset, more, ident, payload):
    body = bytearray(ipv6.ROUTER_ALERT_HEADER_SIZE + ipv6.FRAGMENT_HEADER_SIZE)
    ipv6.build_router_alert(body, ipv6.FRAGMENT, value)
    ipv6.build_fragment(memoryview(body)[ipv6.ROUTER_ALERT_HEADER_SIZE:], ipv6.NO_NEXT, fragment_offset * 8, more,
                        ident)
    raw = ours(SRC, DST, ipv6.HOP_BY_HOP, bytes(body) + payload)

    pkt = IPv6(raw)
    hbh, frag = pkt[IPv6ExtHdrHopByHop], pkt[IPv6ExtHdrFragment]
    assert (hbh.nh, hbh.len) == (ipv6.FRAGMENT, 0)
    assert [(type(o), o.otype) for o in hbh.options] == [(RouterAlert, ipv6.OPT_ROUTER_ALERT), (PadN, ipv6.OPT_PADN)]
    assert hbh.options[0].value == value and hbh.options[1].optdata == b""
    assert (frag.nh, frag.offset, frag.m, frag.id, frag.res1, frag.res2) == \
        (ipv6.NO_NEXT, fragment_offset, more, ident, 0, 0)

    chain = ipv6.iter_extension_headers(raw, ipv6.HOP_BY_HOP)
    assert ipv6.parse_options(raw, chain.headers[0]) == (value, ipv6.ACTION_SKIP, 0)
    assert ipv6.parse_fragment(raw, chain.headers[1].offset) == (ipv6.NO_NEXT, fragment_offset * 8, more, ident)
    assert chain.fragment == (None if not fragment_offset and not more else
                              ipv6.FragmentHeader(ipv6.NO_NEXT, fragment_offset * 8, more, ident))


@SETTINGS
@given(next_header=u8, fragment_offset=st.integers(0, 0x1FFF), more=st.booleans(), ident=u32,
       reserved=st.tuples(u8, st.integers(0, 3)))
def test_fragment_scapy_to_ours(next_header, fragment_offset, more, ident, reserved):
    raw = bytes(IPv6ExtHdrFragment(nh=next_header, offset=fragment_offset, m=more, id=ident, res1=reserved[0],
                                   res2=reserved[1]))
    header = ipv6.parse_fragment(raw)
    assert header == (next_header, fragment_offset * 8, more, ident)          # reserved bits ignored
    assert header.is_atomic() == (not fragment_offset and not more)
    rebuilt = bytearray(ipv6.FRAGMENT_HEADER_SIZE)
    ipv6.build_fragment(rebuilt, next_header, fragment_offset * 8, more, ident)
    assert rebuilt == bytes(IPv6ExtHdrFragment(nh=next_header, offset=fragment_offset, m=more, id=ident))
    for size in range(ipv6.FRAGMENT_HEADER_SIZE):
        assert ipv6.parse_fragment(raw[:size]) is Malformed.TRUNCATED


@pytest.mark.parametrize("offset", [1, 7, 12, 0x10000, -8])
def test_build_fragment_rejects_unaligned_offsets(offset):
    with pytest.raises(ValueError):
        ipv6.build_fragment(bytearray(8), ipv6.NO_NEXT, offset, False, 0)


@SETTINGS
@given(routing_type=u8, segments_left=u8, addresses=st.lists(ipv6_addrs, max_size=4), at=st.integers(0, 8))
def test_routing_scapy_to_ours(routing_type, segments_left, addresses, at):
    raw = bytes(at) + bytes(IPv6ExtHdrRouting(nh=ipv6.NO_NEXT, type=routing_type, segleft=segments_left,
                                              addresses=[ntoa(a) for a in addresses]))
    assert ipv6.parse_routing(raw, at) == (ipv6.NO_NEXT, routing_type, segments_left, bytes(4) + b"".join(addresses))
    for size in range(at, len(raw)):
        assert ipv6.parse_routing(raw[:size], at) is Malformed.TRUNCATED


def _dest_options(next_header: int, area: bytes) -> bytes:
    """A destination options header around an area of 6 + 8n bytes."""
    return bytes((next_header, (len(area) + 2) // 8 - 1)) + area


def test_walk_limits():
    for count, expected in ((ipv6.MAX_EXTENSION_HEADERS, True), (ipv6.MAX_EXTENSION_HEADERS + 1, False)):
        body = b"".join(_dest_options(ipv6.DEST_OPTIONS, bytes(6)) for _ in range(count - 1))
        raw = ours(SRC, DST, ipv6.DEST_OPTIONS, body + _dest_options(ipv6.NO_NEXT, bytes(6)))
        chain = ipv6.iter_extension_headers(raw, ipv6.DEST_OPTIONS)
        if expected:
            assert len(chain.headers) == count and chain.next_header == ipv6.NO_NEXT
            assert chain.payload_offset == len(raw)
        else:
            assert chain is Malformed.BAD_FIELD
    # A header whose length runs past the packet, and one that is not there at all.
    raw = ours(SRC, DST, ipv6.DEST_OPTIONS, bytes((ipv6.NO_NEXT, 1)) + bytes(6))
    assert ipv6.iter_extension_headers(raw, ipv6.DEST_OPTIONS) is Malformed.TRUNCATED
    for size in range(8):
        raw = ours(SRC, DST, ipv6.HOP_BY_HOP, bytes((ipv6.NO_NEXT, 0, 1, 4)) + bytes(4))[:ipv6.HEADER_SIZE + size]
        assert ipv6.iter_extension_headers(raw, ipv6.HOP_BY_HOP) is Malformed.TRUNCATED
    # No extension headers: the upper layer follows the fixed header.
    assert ipv6.iter_extension_headers(ours(SRC, DST, 17, bytes(8)), 17) == ((), 17, ipv6.HEADER_SIZE, None)


def test_walk_resumes_behind_a_fragment():
    """Fragment data is walked separately, from where it starts, once reassembled."""
    frag = bytearray(8)
    ipv6.build_fragment(frag, ipv6.DEST_OPTIONS, 0, True, 7)
    raw = ours(SRC, DST, ipv6.FRAGMENT, bytes(frag) + _dest_options(58, bytes(6)) + bytes(8))
    chain = ipv6.iter_extension_headers(raw, ipv6.FRAGMENT)
    assert chain == ((ipv6.ExtHeader(ipv6.FRAGMENT, 40, 8, ipv6.DEST_OPTIONS),), ipv6.DEST_OPTIONS, 48,
                     ipv6.FragmentHeader(ipv6.DEST_OPTIONS, 0, True, 7))
    rest = ipv6.iter_extension_headers(raw, chain.next_header, chain.payload_offset)
    assert rest == ((ipv6.ExtHeader(ipv6.DEST_OPTIONS, 48, 8, 58),), 58, 56, None)
    # A first fragment cut inside the chain (RFC 7112): the second walk says so.
    assert ipv6.iter_extension_headers(raw[:52], chain.next_header, chain.payload_offset) is Malformed.TRUNCATED


def test_options_actions_and_limits():
    def verdict(area: bytes, kind: int = ipv6.DEST_OPTIONS) -> ipv6.HeaderOptions | Malformed:
        raw = ours(SRC, DST, kind, _dest_options(ipv6.NO_NEXT, area))
        return ipv6.parse_options(raw, ipv6.iter_extension_headers(raw, kind).headers[0])

    for action in range(4):
        option_type = action << 6 | 0x1E
        expected = (None, action, ipv6.HEADER_SIZE + 2) if action else (None, ipv6.ACTION_SKIP, 0)
        assert verdict(bytes((option_type, 0, 1, 2)) + bytes(2)) == expected
    # The jumbo payload option (RFC 2675) is unsupported: unknown, with its ICMP-unless-multicast bits.
    assert verdict(bytes((ipv6.OPT_JUMBO, 4)) + bytes(4), ipv6.HOP_BY_HOP) == \
        (None, ipv6.ACTION_DISCARD_SEND_ICMP_UNLESS_MULTICAST, 42)
    # Processing stops at the first option that is not skipped: the malformed one behind it is not seen.
    assert verdict(bytes((0x80, 0, 0xC0, 9, 0, 0))) == (None, ipv6.ACTION_DISCARD_SEND_ICMP, 42)
    # Router Alert: recognised in hop-by-hop options only, and only 2 bytes long.
    assert verdict(bytes((5, 2, 0, 1, 1, 0)), ipv6.HOP_BY_HOP) == (1, ipv6.ACTION_SKIP, 0)
    assert verdict(bytes((5, 2, 0, 1, 1, 0))) == (None, ipv6.ACTION_SKIP, 0)
    assert verdict(bytes((5, 3, 0, 1, 0, 0)), ipv6.HOP_BY_HOP) is Malformed.BAD_OPTIONS
    # Padding: at most 7 bytes in a row, PadN all zeros; options must fit the header.
    assert verdict(bytes(6) + bytes(8)) is Malformed.BAD_OPTIONS                        # 14 Pad1
    assert verdict(bytes((1, 4, 0, 0, 0, 0))) == (None, ipv6.ACTION_SKIP, 0)            # PadN of 6
    assert verdict(bytes((1, 4, 0, 0, 1, 0))) is Malformed.BAD_OPTIONS                  # non-zero PadN
    assert verdict(bytes((1, 4, 0, 0, 0, 0)) + bytes((0x1E, 0, 1, 4, 0, 0, 0, 0))) == (None, ipv6.ACTION_SKIP, 0)
    assert verdict(bytes((0x1E, 5, 0, 0, 0, 0))) is Malformed.BAD_OPTIONS               # runs past the end
    assert verdict(bytes((0, 0, 0, 0, 0, 0x1E))) is Malformed.BAD_OPTIONS               # length byte missing
    nine = bytes((0x1E, 0)) * 9 + bytes((1, 2, 0, 0))
    assert verdict(nine) is Malformed.BAD_OPTIONS
    assert verdict(nine[2:] + bytes(2)) == (None, ipv6.ACTION_SKIP, 0)


def test_misplaced_hop_by_hop_is_an_unknown_next_header():
    raw = ours(SRC, DST, ipv6.DEST_OPTIONS, _dest_options(ipv6.HOP_BY_HOP, bytes(6)) + bytes(8))
    chain = ipv6.iter_extension_headers(raw, ipv6.DEST_OPTIONS)
    assert (chain.next_header, chain.payload_offset, chain.next_header_pointer) == \
        (ipv6.HOP_BY_HOP, 48, ipv6.HEADER_SIZE)


# --- Hostile input --------------------------------------------------------------------------------


@st.composite
def hostile_chains(draw) -> bytes:
    """Headers that name each other with random lengths and contents, cut anywhere."""
    names = st.sampled_from(sorted(ipv6.EXTENSION_HEADERS)) | u8
    body = b"".join(bytes((draw(names), draw(st.integers(0, 3) | u8))) + draw(st.binary(max_size=30))
                    for _ in range(draw(st.integers(0, 20))))
    return body[:draw(st.integers(0, len(body)))]


@settings(max_examples=400, deadline=None)
@given(body=hostile_chains() | st.binary(max_size=200), first=st.sampled_from(sorted(ipv6.EXTENSION_HEADERS)))
def test_hostile_chains_never_raise(body, first):
    raw = bytes(ipv6.HEADER_SIZE) + body
    chain = ipv6.iter_extension_headers(raw, first)
    if isinstance(chain, Malformed):
        assert chain in (Malformed.TRUNCATED, Malformed.BAD_FIELD)
        return
    assert len(chain.headers) <= ipv6.MAX_EXTENSION_HEADERS
    end = ipv6.HEADER_SIZE
    for header in chain.headers:
        assert header.offset == end and header.length >= 8
        end += header.length
        if header.kind in (ipv6.HOP_BY_HOP, ipv6.DEST_OPTIONS):
            verdict = ipv6.parse_options(raw, header)
            if not isinstance(verdict, Malformed) and verdict.action != ipv6.ACTION_SKIP:
                assert header.offset + 2 <= verdict.pointer < end and raw[verdict.pointer] >> 6 == verdict.action
        elif header.kind == ipv6.ROUTING:
            assert ipv6.parse_routing(raw, header.offset).next_header == header.next_header
    assert chain.payload_offset == end <= len(raw)


@settings(max_examples=400, deadline=None)
@given(area=st.binary(max_size=62), kind=st.sampled_from((ipv6.HOP_BY_HOP, ipv6.DEST_OPTIONS)))
def test_hostile_option_areas_never_raise(area, kind):
    area += bytes(-(len(area) + 2) % 8)
    raw = ours(SRC, DST, kind, _dest_options(ipv6.NO_NEXT, area))
    header = ipv6.iter_extension_headers(raw, kind).headers[0]
    verdict = ipv6.parse_options(raw, header)
    if isinstance(verdict, Malformed):
        assert verdict is Malformed.BAD_OPTIONS
    elif verdict.action == ipv6.ACTION_SKIP:
        assert verdict.pointer == 0
    else:
        assert raw[verdict.pointer] >> 6 == verdict.action


def test_router_alert_header_layout():
    """The router alert header we send is byte for byte what Linux sends (net/ipv6/mcast.c)."""
    buf = bytearray(8)
    ipv6.build_router_alert(buf, 58)
    assert bytes(buf) == struct.pack("!BBBBHBB", 58, 0, 5, 2, 0, 1, 0)
