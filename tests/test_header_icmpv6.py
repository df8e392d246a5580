"""ICMPv6, Neighbor Discovery, MLD and IGMP, cross-checked against scapy.

For each message, random field values are encoded by us and by scapy: the two encodings must be
the same bytes, checksum included (scapy computes it over its own IPv6 pseudo-header), scapy must
dissect ours back to the fields, and our parser must decode scapy's to them. The receive-side
validity rules (RFC 4861, RFC 2710/3810, RFC 3376) and hostile bytes are checked separately.
"""

from __future__ import annotations

import logging
import socket
from typing import Callable, NamedTuple

import pytest
from hypothesis import given, settings, strategies as st

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # before scapy's import: no route warnings

from scapy.layers.igmp import IGMP, IGMPv3_MQ, IGMPv3_MR, IGMPv3_MR_Group  # noqa: E402
from scapy.layers.inet6 import (IPv6, ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest,  # noqa: E402
                                ICMPv6MLDMultAddrRec, ICMPv6MLDone, ICMPv6MLQuery, ICMPv6MLQuery2, ICMPv6MLReport,
                                ICMPv6MLReport2, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6ND_Redirect,
                                ICMPv6ND_RS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptMTU, ICMPv6NDOptPrefixInfo,
                                ICMPv6NDOptRDNSS, ICMPv6NDOptRedirectedHdr, ICMPv6NDOptSrcLLAddr,
                                ICMPv6NDOptUnknown, ICMPv6PacketTooBig, ICMPv6ParamProblem, ICMPv6TimeExceeded)
from scapy.packet import Packet, Raw  # noqa: E402
from scapy.utils import str2mac  # noqa: E402

from netsock.header import Malformed, icmpv6, igmp, ipv6, mld, ndp  # noqa: E402

SETTINGS = settings(max_examples=100, deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ipv4_addrs = st.binary(min_size=4, max_size=4)
ipv6_addrs = st.binary(min_size=16, max_size=16)
unicast_addrs = ipv6_addrs.filter(lambda a: a[0] != 0xFF)
link_local_addrs = st.binary(min_size=8, max_size=8).map(lambda iid: b"\xfe\x80" + bytes(6) + iid)
macs = st.binary(min_size=6, max_size=6)
payloads = st.binary(max_size=64)

ROUTER = bytes.fromhex("fe800000000000000000000000000001")     # link-local: NDP and MLD senders
HOST = bytes.fromhex("20010db8000000000000000000000002")


def ntoa(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(addr) == 16 else socket.AF_INET, addr)


def scapy_message(src: bytes, dst: bytes, *layers: Packet) -> bytes:
    """The ICMPv6 message scapy builds (checksum computed over its pseudo-header) from ``layers``."""
    pkt = IPv6(src=ntoa(src), dst=ntoa(dst))
    for layer in layers:
        pkt = pkt / layer
    return bytes(pkt)[ipv6.HEADER_SIZE:]


def dissected(src: bytes, dst: bytes, message: bytes, hop_limit: int = 64) -> IPv6:
    """Our ``message`` as scapy reads it in an IPv6 packet."""
    return IPv6(bytes(IPv6(src=ntoa(src), dst=ntoa(dst), nh=icmpv6.PROTOCOL_NUMBER, hlim=hop_limit) / Raw(message)))


def ours(type_: int, code: int, rest: int, src: bytes, dst: bytes, payload: bytes = b"") -> bytes:
    header = bytearray(icmpv6.MIN_SIZE)
    icmpv6.build(header, type_, code, rest, src, dst, payload)
    return bytes(header) + payload


def ours_with_body(type_: int, src: bytes, dst: bytes, body: bytes) -> bytes:
    header = bytearray(icmpv6.HEADER_SIZE)
    icmpv6.build_header(header, type_, 0, src, dst, body)
    return bytes(header) + body


# --- ICMPv6 ---------------------------------------------------------------------------------------


@SETTINGS
@given(src=ipv6_addrs, dst=ipv6_addrs, request=st.booleans(), ident=u16, sequence=u16, payload=payloads)
def test_echo_both_ways(src, dst, request, ident, sequence, payload):
    type_, cls = (icmpv6.ECHO_REQUEST, ICMPv6EchoRequest) if request else (icmpv6.ECHO_REPLY, ICMPv6EchoReply)
    message = ours(type_, 0, icmpv6.echo_rest(ident, sequence), src, dst, payload)
    assert message == scapy_message(src, dst, cls(id=ident, seq=sequence, data=payload))
    echo = dissected(src, dst, message)[cls]
    assert (echo.type, echo.code, echo.id, echo.seq, echo.data) == (type_, 0, ident, sequence, payload)

    hdr = icmpv6.parse(message)
    assert (hdr.type, hdr.code, hdr.ident, hdr.sequence) == (type_, 0, ident, sequence)
    assert icmpv6.checksum_valid(src, dst, message)
    assert icmpv6.checksum_valid(src, dst, memoryview(message))


class ErrorCase(NamedTuple):
    type: int
    codes: st.SearchStrategy[int]
    rest: st.SearchStrategy[int]
    scapy: Callable[[int, int], Packet]     # (code, rest) -> the scapy layer
    field: Callable[[icmpv6.ICMPv6Header], int]


ERRORS = [
    ErrorCase(icmpv6.DST_UNREACHABLE, st.integers(0, 7), st.just(0), lambda c, r: ICMPv6DestUnreach(code=c),
              lambda h: h.rest),
    ErrorCase(icmpv6.PACKET_TOO_BIG, st.just(0), u32, lambda c, r: ICMPv6PacketTooBig(mtu=r), lambda h: h.mtu),
    ErrorCase(icmpv6.TIME_EXCEEDED, st.sampled_from((icmpv6.HOP_LIMIT_EXCEEDED, icmpv6.REASSEMBLY_TIMEOUT)),
              st.just(0), lambda c, r: ICMPv6TimeExceeded(code=c), lambda h: h.rest),
    ErrorCase(icmpv6.PARAM_PROBLEM, st.integers(0, 3), u32, lambda c, r: ICMPv6ParamProblem(code=c, ptr=r),
              lambda h: h.pointer),
]


@st.composite
def quoted_packets(draw) -> bytes:
    """What an error quotes: the start of an offending IPv6 packet."""
    header = bytearray(ipv6.HEADER_SIZE)
    body = draw(payloads)
    ipv6.build(header, src=draw(ipv6_addrs), dst=draw(ipv6_addrs), next_header=ipv6.NO_NEXT,
               payload_length=len(body), hop_limit=draw(u8))
    return (bytes(header) + body)[:draw(st.integers(ipv6.HEADER_SIZE, ipv6.HEADER_SIZE + len(body)))]


@SETTINGS
@given(src=ipv6_addrs, dst=ipv6_addrs, case=st.sampled_from(ERRORS), data=st.data(), quoted=quoted_packets())
def test_errors_both_ways(src, dst, case, data, quoted):
    code, rest = data.draw(case.codes), data.draw(case.rest)
    message = ours(case.type, code, rest, src, dst, quoted)
    assert message == scapy_message(src, dst, case.scapy(code, rest), Raw(quoted))
    layer = dissected(src, dst, message)[type(case.scapy(code, rest))]
    assert (layer.type, layer.code) == (case.type, code)
    assert bytes(layer.payload) == quoted

    hdr = icmpv6.parse(message)
    assert (hdr.type, hdr.code, case.field(hdr)) == (case.type, code, rest)
    assert icmpv6.is_error(hdr.type)
    assert icmpv6.checksum_valid(src, dst, message)


@SETTINGS
@given(src=ipv6_addrs, dst=ipv6_addrs, payload=st.binary(min_size=1, max_size=64), data=st.data())
def test_checksum_catches_corruption(src, dst, payload, data):
    message = bytearray(ours(icmpv6.ECHO_REQUEST, 0, 0x01020304, src, dst, payload))
    position = data.draw(st.integers(0, len(message) - 1))
    message[position] ^= 1 << data.draw(st.integers(0, 7))
    assert not icmpv6.checksum_valid(src, dst, bytes(message))
    other = bytearray(dst)
    other[data.draw(st.integers(0, 15))] ^= 0x80
    assert not icmpv6.checksum_valid(src, bytes(other), ours(icmpv6.ECHO_REQUEST, 0, 7, src, dst, payload))


def test_icmpv6_truncated():
    message = ours(icmpv6.ECHO_REQUEST, 0, 0, ROUTER, HOST)
    assert icmpv6.parse(message)
    for size in range(icmpv6.MIN_SIZE):
        assert icmpv6.parse(message[:size]) is Malformed.TRUNCATED
        assert icmpv6.parse(memoryview(message)[:size]) is Malformed.TRUNCATED


# --- NDP ------------------------------------------------------------------------------------------


class NDPOption(NamedTuple):
    encoded: bytes                              # by our encoder
    scapy: Packet                               # the same option by scapy
    apply: Callable[[dict], None]               # its effect on the NDPOptions fields


def _first(name: str, value) -> Callable[[dict], None]:
    def apply(fields: dict) -> None:
        fields.setdefault(name, value)
    return apply


def _append(name: str, value) -> Callable[[dict], None]:
    def apply(fields: dict) -> None:
        fields[name] = fields.get(name, ()) + (value,)
    return apply


@st.composite
def _link_address(draw, kind: int) -> NDPOption:
    mac = draw(macs)
    cls, name = ((ICMPv6NDOptSrcLLAddr, "source_link_address") if kind == ndp.OPT_SOURCE_LINK_ADDRESS
                 else (ICMPv6NDOptDstLLAddr, "target_link_address"))
    return NDPOption(ndp.encode_link_address(kind, mac), cls(lladdr=str2mac(mac)), _first(name, mac))


@st.composite
def _prefix(draw) -> NDPOption:
    length, flags, valid, preferred, prefix = draw(u8), draw(u8), draw(u32), draw(u32), draw(ipv6_addrs)
    return NDPOption(ndp.encode_prefix_info(length, flags, valid, preferred, prefix),
                     ICMPv6NDOptPrefixInfo(prefixlen=length, L=flags >> 7, A=(flags >> 6) & 1, R=(flags >> 5) & 1,
                                           res1=flags & 0x1F, validlifetime=valid, preferredlifetime=preferred,
                                           prefix=ntoa(prefix)),
                     _append("prefixes", ndp.PrefixInfo(length, flags, valid, preferred, prefix)))


@st.composite
def _mtu(draw) -> NDPOption:
    mtu = draw(u32)
    return NDPOption(ndp.encode_mtu(mtu), ICMPv6NDOptMTU(mtu=mtu), _first("mtu", mtu))


@st.composite
def _rdnss(draw) -> NDPOption:
    lifetime, servers = draw(u32), draw(st.lists(ipv6_addrs, min_size=1, max_size=3))
    return NDPOption(ndp.encode_rdnss(lifetime, servers),
                     ICMPv6NDOptRDNSS(res=0, lifetime=lifetime, dns=[ntoa(s) for s in servers]),
                     _append("rdnss", ndp.RDNSS(lifetime, tuple(servers))))


@st.composite
def _redirected(draw) -> NDPOption:
    """A packet cut to a multiple of 8 bytes (scapy's encoder does not pad the option)."""
    body = draw(st.binary(min_size=0, max_size=40))
    body = body[:len(body) & ~7]
    header = bytearray(ipv6.HEADER_SIZE)
    ipv6.build(header, src=draw(ipv6_addrs), dst=draw(ipv6_addrs), next_header=ipv6.NO_NEXT, payload_length=len(body))
    packet = bytes(header) + body
    return NDPOption(ndp.encode_redirected_header(packet), ICMPv6NDOptRedirectedHdr(pkt=packet),
                     _first("redirected_header", packet))


@st.composite
def _nonce(draw) -> NDPOption:
    nonce = draw(st.sampled_from((6, 14)).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
    return NDPOption(ndp.encode_nonce(nonce), ICMPv6NDOptUnknown(type=ndp.OPT_NONCE, data=nonce),
                     _first("nonce", nonce))


UNKNOWN_NDP_OPTIONS = st.sampled_from((11, 12, 13, 15, 16, 20, 21, 22, 27, 40, 200, 253))   # no meaning to us


@st.composite
def _unknown(draw) -> NDPOption:
    """An option of a type we do not know; RFC 4861 §4.6 says to ignore it."""
    kind, data = draw(UNKNOWN_NDP_OPTIONS), draw(st.sampled_from((6, 14, 22)).flatmap(
        lambda n: st.binary(min_size=n, max_size=n)))
    return NDPOption(bytes((kind, (len(data) + 2) // 8)) + data, ICMPv6NDOptUnknown(type=kind, data=data),
                     lambda fields: None)


ndp_option_lists = st.lists(st.one_of(_link_address(ndp.OPT_SOURCE_LINK_ADDRESS),
                                      _link_address(ndp.OPT_TARGET_LINK_ADDRESS), _prefix(), _mtu(), _rdnss(),
                                      _redirected(), _nonce(), _unknown()), max_size=5)


def expected_options(options: list[NDPOption]) -> ndp.NDPOptions:
    fields: dict = {}
    for option in options:
        option.apply(fields)
    return ndp.NDPOptions(**fields)


class NDPCase(NamedTuple):
    type: int
    body: bytes                 # ours, options excluded
    scapy: Packet
    parsed: Callable[[ndp.NDPOptions], ndp.NDPMessage]


@st.composite
def ndp_messages(draw) -> NDPCase:
    """Valid messages of every kind, from a link-local router address to a unicast destination."""
    kind = draw(st.sampled_from((icmpv6.ROUTER_SOLICIT, icmpv6.ROUTER_ADVERT, icmpv6.NEIGHBOR_SOLICIT,
                                 icmpv6.NEIGHBOR_ADVERT, icmpv6.REDIRECT)))
    if kind == icmpv6.ROUTER_SOLICIT:
        return NDPCase(kind, ndp.encode_router_solicit(), ICMPv6ND_RS(), ndp.RouterSolicit)
    if kind == icmpv6.ROUTER_ADVERT:
        hops, flags, lifetime, reachable, retrans = draw(u8), draw(u8), draw(u16), draw(u32), draw(u32)
        return NDPCase(kind, ndp.encode_router_advert(hops, flags, lifetime, reachable, retrans),
                       ICMPv6ND_RA(chlim=hops, M=flags >> 7, O=(flags >> 6) & 1, H=(flags >> 5) & 1,
                                   prf=(flags >> 3) & 3, P=(flags >> 2) & 1, res=flags & 3, routerlifetime=lifetime,
                                   reachabletime=reachable, retranstimer=retrans),
                       lambda options: ndp.RouterAdvert(hops, flags, lifetime, reachable, retrans, options))
    target = draw(unicast_addrs)
    if kind == icmpv6.NEIGHBOR_SOLICIT:
        return NDPCase(kind, ndp.encode_neighbor_solicit(target), ICMPv6ND_NS(tgt=ntoa(target)),
                       lambda options: ndp.NeighborSolicit(target, options))
    if kind == icmpv6.NEIGHBOR_ADVERT:
        flags = draw(st.integers(0, 7)) << 5
        return NDPCase(kind, ndp.encode_neighbor_advert(flags, target),
                       ICMPv6ND_NA(R=flags >> 7, S=(flags >> 6) & 1, O=(flags >> 5) & 1, tgt=ntoa(target)),
                       lambda options: ndp.NeighborAdvert(flags, target, options))
    destination = draw(unicast_addrs)
    if draw(st.booleans()):
        target = destination                    # the destination is on-link
    else:
        target = draw(link_local_addrs)         # a better first hop
    return NDPCase(kind, ndp.encode_redirect(target, destination),
                   ICMPv6ND_Redirect(tgt=ntoa(target), dst=ntoa(destination)),
                   lambda options: ndp.Redirect(target, destination, options))


@SETTINGS
@given(case=ndp_messages(), options=ndp_option_lists, dst=unicast_addrs)
def test_ndp_both_ways(case, options, dst):
    message = ours_with_body(case.type, ROUTER, dst, case.body + b"".join(o.encoded for o in options))
    assert message == scapy_message(ROUTER, dst, case.scapy, *(o.scapy for o in options))
    pkt = dissected(ROUTER, dst, message, ndp.HOP_LIMIT)
    assert type(pkt.payload) is type(case.scapy)
    assert [(o.type, bytes(o)[:o.len * 8]) for o in _scapy_options(pkt.payload)] == \
        [(o.encoded[0], o.encoded) for o in options]

    assert icmpv6.checksum_valid(ROUTER, dst, message)
    assert ndp.parse(message, ROUTER, dst, ndp.HOP_LIMIT) == case.parsed(expected_options(options))


def _scapy_options(message: Packet, include_self: bool = False) -> list[Packet]:
    """The layers scapy stacked behind ``message`` (NDP options follow the message as its payload)."""
    found, layer = [], message if include_self else message.payload
    while layer:
        found.append(layer)
        layer = layer.payload
    return found


def _ns(src: bytes, dst: bytes, target: bytes, options: bytes = b"") -> bytes:
    return ours_with_body(icmpv6.NEIGHBOR_SOLICIT, src, dst, ndp.encode_neighbor_solicit(target, options))


SLLA = ndp.encode_link_address(ndp.OPT_SOURCE_LINK_ADDRESS, bytes.fromhex("020000000001"))


def test_ndp_validity_rules():
    """RFC 4861 §6.1.1, §6.1.2, §7.1.1, §7.1.2 and §8.1, one rule at a time."""
    solicited = ipv6.solicited_node_multicast(HOST)
    ns = _ns(ROUTER, solicited, HOST, SLLA)
    assert ndp.parse(ns, ROUTER, solicited, 255) == ndp.NeighborSolicit(HOST, ndp.NDPOptions(SLLA[2:]))
    assert ndp.parse(ns, ROUTER, solicited, 254) is Malformed.BAD_FIELD             # hop limit not 255
    assert ndp.parse(ns[:1] + b"\x01" + ns[2:], ROUTER, solicited, 255) is Malformed.BAD_FIELD    # code not 0
    assert ndp.parse(_ns(ROUTER, HOST, ipv6.ALL_NODES), ROUTER, HOST, 255) is Malformed.BAD_FIELD  # multicast target
    # Duplicate address detection: from ::, to the solicited-node group, without a source address option.
    dad = _ns(ipv6.UNSPECIFIED, solicited, HOST)
    assert ndp.parse(dad, ipv6.UNSPECIFIED, solicited, 255) == ndp.NeighborSolicit(HOST, ndp.NDPOptions())
    assert ndp.parse(_ns(ipv6.UNSPECIFIED, HOST, HOST), ipv6.UNSPECIFIED, HOST, 255) is Malformed.BAD_FIELD
    assert ndp.parse(_ns(ipv6.UNSPECIFIED, solicited, HOST, SLLA), ipv6.UNSPECIFIED, solicited,
                     255) is Malformed.BAD_FIELD

    na = ndp.encode_neighbor_advert(ndp.NA_SOLICITED | ndp.NA_OVERRIDE, HOST)
    assert ndp.parse(ours_with_body(icmpv6.NEIGHBOR_ADVERT, HOST, ROUTER, na), HOST, ROUTER, 255).solicited
    assert ndp.parse(ours_with_body(icmpv6.NEIGHBOR_ADVERT, HOST, ipv6.ALL_NODES, na), HOST, ipv6.ALL_NODES,
                     255) is Malformed.BAD_FIELD                                    # solicited, to a group
    unsolicited = ndp.encode_neighbor_advert(ndp.NA_OVERRIDE | ndp.NA_ROUTER, HOST)
    advert = ndp.parse(ours_with_body(icmpv6.NEIGHBOR_ADVERT, HOST, ipv6.ALL_NODES, unsolicited), HOST,
                       ipv6.ALL_NODES, 255)
    assert (advert.router, advert.solicited, advert.override) == (True, False, True)
    multicast_target = ndp.encode_neighbor_advert(0, ipv6.ALL_ROUTERS)
    assert ndp.parse(ours_with_body(icmpv6.NEIGHBOR_ADVERT, HOST, ROUTER, multicast_target), HOST, ROUTER,
                     255) is Malformed.BAD_FIELD

    rs = ndp.encode_router_solicit(SLLA)
    assert ndp.parse(ours_with_body(icmpv6.ROUTER_SOLICIT, HOST, ipv6.ALL_ROUTERS, rs), HOST, ipv6.ALL_ROUTERS, 255)
    assert ndp.parse(ours_with_body(icmpv6.ROUTER_SOLICIT, ipv6.UNSPECIFIED, ipv6.ALL_ROUTERS, rs),
                     ipv6.UNSPECIFIED, ipv6.ALL_ROUTERS, 255) is Malformed.BAD_FIELD

    ra = ours_with_body(icmpv6.ROUTER_ADVERT, ROUTER, ipv6.ALL_NODES,
                        ndp.encode_router_advert(64, ndp.RA_MANAGED, 1800, 0, 0))
    parsed = ndp.parse(ra, ROUTER, ipv6.ALL_NODES, 255)
    assert (parsed.managed, parsed.other_config) == (True, False)
    assert ndp.parse(ra, HOST, ipv6.ALL_NODES, 255) is Malformed.BAD_FIELD           # not from a link-local

    def redirect(target: bytes, destination: bytes, src: bytes = ROUTER) -> ndp.NDPMessage | Malformed:
        return ndp.parse(ours_with_body(icmpv6.REDIRECT, src, HOST, ndp.encode_redirect(target, destination)),
                         src, HOST, 255)

    assert redirect(HOST, HOST) and redirect(ROUTER, HOST)
    assert redirect(HOST, HOST, src=HOST) is Malformed.BAD_FIELD
    assert redirect(ipv6.ALL_NODES, ipv6.ALL_NODES) is Malformed.BAD_FIELD           # multicast destination
    assert redirect(bytes.fromhex("20010db8000000000000000000000009"), HOST) is Malformed.BAD_FIELD

    echo = ours(icmpv6.ECHO_REQUEST, 0, 0, ROUTER, HOST)
    assert ndp.parse(echo, ROUTER, HOST, 255) is Malformed.BAD_FIELD                # not NDP at all


NDP_SIZES = {icmpv6.ROUTER_SOLICIT: ndp.ROUTER_SOLICIT_SIZE, icmpv6.ROUTER_ADVERT: ndp.ROUTER_ADVERT_SIZE,
             icmpv6.NEIGHBOR_SOLICIT: ndp.NEIGHBOR_SOLICIT_SIZE, icmpv6.NEIGHBOR_ADVERT: ndp.NEIGHBOR_ADVERT_SIZE,
             icmpv6.REDIRECT: ndp.REDIRECT_SIZE}


@pytest.mark.parametrize("type_, size", NDP_SIZES.items())
def test_ndp_truncated(type_, size):
    message = ours_with_body(type_, ROUTER, HOST, bytes(size - icmpv6.HEADER_SIZE))
    assert ndp.parse(message, ROUTER, HOST, 255)
    for cut in range(size):
        assert ndp.parse(message[:cut], ROUTER, HOST, 255) is Malformed.TRUNCATED, cut


def test_ndp_bad_options():
    def parsed(options: bytes) -> ndp.NDPOptions | Malformed:
        return ndp.parse(_ns(ROUTER, HOST, HOST, options), ROUTER, HOST, 255)

    prefix = ndp.encode_prefix_info(64, ndp.PREFIX_ON_LINK | ndp.PREFIX_AUTONOMOUS, 600, 300, HOST)
    assert parsed(prefix).options.prefixes[0].on_link and parsed(prefix).options.prefixes[0].autonomous
    for bad in (
        SLLA[:1] + b"\x00" + SLLA[2:],              # length 0 (§7.1.1)
        SLLA[:1] + b"\x02" + SLLA[2:],              # runs past the message
        SLLA + b"\x01",                             # a lone type byte
        SLLA + bytes(7),                            # padding that is no option: type 0, length 0
        prefix[:1] + b"\x03" + prefix[2:24],        # prefix information of the wrong length
        ndp.encode_mtu(1500)[:1] + b"\x02" + ndp.encode_mtu(1500)[2:] + bytes(8),
        ndp.encode_rdnss(60, [HOST])[:1] + b"\x02" + ndp.encode_rdnss(60, [HOST])[2:16],   # no server
        ndp.encode_rdnss(60, [HOST])[:1] + b"\x04" + ndp.encode_rdnss(60, [HOST])[2:] + bytes(8),  # half a server
    ):
        assert parsed(bad) is Malformed.BAD_OPTIONS, bad.hex()
    assert parsed(SLLA + ndp.encode_link_address(ndp.OPT_SOURCE_LINK_ADDRESS, bytes(6))).options \
        .source_link_address == SLLA[2:]            # the first one counts
    with pytest.raises(ValueError):
        ndp.encode_nonce(bytes(8))


@settings(max_examples=300, deadline=None)
@given(area=st.binary(max_size=80), type_=st.sampled_from(sorted(NDP_SIZES)),
       fixed=st.binary(min_size=36, max_size=36), src=st.sampled_from((ROUTER, HOST, ipv6.UNSPECIFIED)))
def test_ndp_hostile_messages_never_raise(area, type_, fixed, src):
    message = bytes((type_, 0, 0, 0)) + fixed[:NDP_SIZES[type_] - icmpv6.HEADER_SIZE] + area
    parsed = ndp.parse(message, src, ipv6.ALL_NODES, 255)
    assert isinstance(parsed, (Malformed, ndp.RouterSolicit, ndp.RouterAdvert, ndp.NeighborSolicit,
                               ndp.NeighborAdvert, ndp.Redirect))
    options = ndp.parse_options(area)
    if not isinstance(options, Malformed):
        assert all(len(p.prefix) == 16 for p in options.prefixes)
        assert all(len(s) == 16 for r in options.rdnss for s in r.servers)


# --- MLD ------------------------------------------------------------------------------------------


def _mld_parse(message: bytes, src: bytes = ROUTER) -> mld.MLDMessage | Malformed:
    return mld.parse(message, src, mld.HOP_LIMIT, ipv6.ROUTER_ALERT_MLD)


@SETTINGS
@given(type_=st.sampled_from((icmpv6.MLD_QUERY, icmpv6.MLD_REPORT, icmpv6.MLD_DONE)), delay=u16,
       group=ipv6_addrs, dst=ipv6_addrs)
def test_mld_v1_both_ways(type_, delay, group, dst):
    cls = {icmpv6.MLD_QUERY: ICMPv6MLQuery, icmpv6.MLD_REPORT: ICMPv6MLReport, icmpv6.MLD_DONE: ICMPv6MLDone}[type_]
    message = ours_with_body(type_, ROUTER, dst, mld.encode_v1(delay, group))
    assert message == scapy_message(ROUTER, dst, cls(mrd=delay, mladdr=ntoa(group)))
    layer = dissected(ROUTER, dst, message, mld.HOP_LIMIT)[cls]
    assert (layer.type, layer.mrd, layer.mladdr) == (type_, delay, ntoa(group))

    assert icmpv6.checksum_valid(ROUTER, dst, message)
    if type_ == icmpv6.MLD_QUERY:
        query = _mld_parse(message)
        assert query == mld.Query(1, delay, group)
        assert query.max_response_delay == delay
    else:
        assert _mld_parse(message) == mld.Report(type_, group)


@SETTINGS
@given(code=u16, group=ipv6_addrs, suppress=st.booleans(), robustness=st.integers(0, 7), qqic=u8,
       sources=st.lists(ipv6_addrs, max_size=4), dst=ipv6_addrs)
def test_mld_v2_query_both_ways(code, group, suppress, robustness, qqic, sources, dst):
    message = ours_with_body(icmpv6.MLD_QUERY, ROUTER, dst,
                             mld.encode_v2_query(code, group, suppress, robustness, qqic, sources))
    assert message == scapy_message(ROUTER, dst, ICMPv6MLQuery2(mrd=code, mladdr=ntoa(group), S=suppress,
                                                               QRV=robustness, QQIC=qqic,
                                                               sources=[ntoa(s) for s in sources]))
    layer = dissected(ROUTER, dst, message, mld.HOP_LIMIT)[ICMPv6MLQuery2]
    assert (layer.mrd, layer.S, layer.QRV, layer.QQIC, layer.sources_number) == \
        (code, suppress, robustness, qqic, len(sources))

    query = _mld_parse(message)
    assert query == mld.Query(2, code, group, suppress, robustness, qqic, tuple(sources))
    assert query.max_response_delay == mld.decode_max_response_code(code)
    assert query.query_interval == igmp.decode_code(qqic)


record_types = st.integers(igmp.MODE_IS_INCLUDE, igmp.BLOCK_OLD_SOURCES)


@st.composite
def mld_records(draw) -> igmp.GroupRecord:
    return igmp.GroupRecord(draw(record_types), draw(ipv6_addrs), tuple(draw(st.lists(ipv6_addrs, max_size=3))))


@SETTINGS
@given(records=st.lists(mld_records(), max_size=4), src=st.sampled_from((ROUTER, ipv6.UNSPECIFIED)))
def test_mld_v2_report_both_ways(records, src):
    message = ours_with_body(icmpv6.MLDV2_REPORT, src, ipv6.ALL_MLDV2_ROUTERS, mld.encode_v2_report(records))
    assert message == scapy_message(src, ipv6.ALL_MLDV2_ROUTERS, ICMPv6MLReport2(records=[
        ICMPv6MLDMultAddrRec(rtype=r.type, dst=ntoa(r.group), sources=[ntoa(s) for s in r.sources])
        for r in records]))
    report = dissected(src, ipv6.ALL_MLDV2_ROUTERS, message, mld.HOP_LIMIT)[ICMPv6MLReport2]
    # scapy chains each record after the first to the one before it, as its payload.
    dissected_records = [r for first in report.records for r in _scapy_options(first, include_self=True)]
    assert [(r.rtype, r.dst, r.sources) for r in dissected_records] == \
        [(r.type, ntoa(r.group), [ntoa(s) for s in r.sources]) for r in records]
    assert _mld_parse(message, src) == mld.V2Report(tuple(records))


def test_mld_auxiliary_data_is_counted_in_words():
    """RFC 3810 §5.2.6: Aux Data Len counts 32-bit words (scapy counts bytes, so it is not the oracle here)."""
    record = igmp.GroupRecord(igmp.MODE_IS_EXCLUDE, ipv6.ALL_NODES, (HOST,), b"abcdefgh")
    body = mld.encode_v2_report([record, record._replace(aux_data=b"")])
    assert body[4:8] == bytes((igmp.MODE_IS_EXCLUDE, 2, 0, 1))
    message = ours_with_body(icmpv6.MLDV2_REPORT, ROUTER, ipv6.ALL_MLDV2_ROUTERS, body)
    assert _mld_parse(message) == mld.V2Report((record, record._replace(aux_data=b"")))
    assert _mld_parse(message[:-1]) is Malformed.TRUNCATED


def test_mld_validity_rules():
    query = ours_with_body(icmpv6.MLD_QUERY, ROUTER, ipv6.ALL_NODES, mld.encode_v1(1000, bytes(16)))
    report = ours_with_body(icmpv6.MLD_REPORT, ROUTER, ipv6.ALL_NODES, mld.encode_v1(0, ipv6.ALL_NODES))
    assert mld.parse(query, ROUTER, 1, ipv6.ROUTER_ALERT_MLD)
    assert mld.parse(query, ROUTER, 2, ipv6.ROUTER_ALERT_MLD) is Malformed.BAD_FIELD           # hop limit
    assert mld.parse(query, ROUTER, 1, None) is Malformed.BAD_FIELD                           # no router alert
    assert mld.parse(query, ROUTER, 1, ipv6.ROUTER_ALERT_RSVP) is Malformed.BAD_FIELD
    assert mld.parse(query, HOST, 1, ipv6.ROUTER_ALERT_MLD) is Malformed.BAD_FIELD            # not link-local
    assert mld.parse(query, ipv6.UNSPECIFIED, 1, ipv6.ROUTER_ALERT_MLD) is Malformed.BAD_FIELD
    assert mld.parse(report, ipv6.UNSPECIFIED, 1, ipv6.ROUTER_ALERT_MLD)                      # RFC 3590
    assert mld.parse(report, HOST, 1, ipv6.ROUTER_ALERT_MLD) is Malformed.BAD_FIELD
    echo = ours(icmpv6.ECHO_REQUEST, 0, 0, ROUTER, HOST, bytes(16))
    assert mld.parse(echo, ROUTER, 1, ipv6.ROUTER_ALERT_MLD) is Malformed.BAD_FIELD


def test_mld_lengths():
    v2 = ours_with_body(icmpv6.MLD_QUERY, ROUTER, ipv6.ALL_NODES,
                        mld.encode_v2_query(0, bytes(16), False, 2, 125, [HOST, ROUTER]))
    assert _mld_parse(v2).version == 2 and _mld_parse(v2 + bytes(3)).sources == (HOST, ROUTER)
    for size in range(mld.V1_SIZE):
        assert _mld_parse(v2[:size]) is Malformed.TRUNCATED, size
    assert _mld_parse(v2[:mld.V1_SIZE]).version == 1
    for size in range(mld.V1_SIZE + 1, mld.V2_QUERY_MIN_SIZE):             # neither version (RFC 3810 §8.1)
        assert _mld_parse(v2[:size]) is Malformed.BAD_TOTAL_LENGTH, size
    for size in range(mld.V2_QUERY_MIN_SIZE, len(v2)):                       # sources cut short
        assert _mld_parse(v2[:size]) is Malformed.TRUNCATED, size
    report = ours_with_body(icmpv6.MLD_DONE, ROUTER, ipv6.ALL_ROUTERS, mld.encode_v1(0, ipv6.ALL_NODES))
    for size in range(mld.V1_SIZE):
        assert _mld_parse(report[:size]) is Malformed.TRUNCATED, size
    v2_report = ours_with_body(icmpv6.MLDV2_REPORT, ROUTER, ipv6.ALL_MLDV2_ROUTERS,
                               mld.encode_v2_report([igmp.GroupRecord(igmp.CHANGE_TO_EXCLUDE, ipv6.ALL_NODES)]))
    for size in range(len(v2_report)):
        assert _mld_parse(v2_report[:size]) is Malformed.TRUNCATED, size


@pytest.mark.parametrize("encode, decode, limit", [
    (mld.encode_max_response_code, mld.decode_max_response_code, 0x8000),
    (igmp.encode_code, igmp.decode_code, 0x80)])
def test_floating_point_codes(encode, decode, limit):
    """Below the limit the code is the value; above it, every code decodes to a value that encodes
    back to it, and values in between round down to the nearest code."""
    assert [encode(v) for v in range(limit)] == list(range(limit))
    codes = range(limit, 2 * limit)
    values = [decode(c) for c in codes]
    assert values == sorted(values) and values[0] == limit
    assert [encode(v) for v in values] == list(codes)
    for (value, code), following in zip(zip(values, codes), values[1:]):
        assert encode((value + following) // 2) == encode(following - 1) == code
    assert encode(10 ** 9) == 2 * limit - 1


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=120), type_=st.sampled_from((icmpv6.MLD_QUERY, icmpv6.MLD_REPORT, icmpv6.MLD_DONE,
                                                            icmpv6.MLDV2_REPORT)))
def test_mld_hostile_messages_never_raise(body, type_):
    parsed = _mld_parse(bytes((type_,)) + body)
    assert isinstance(parsed, (Malformed, mld.Query, mld.Report, mld.V2Report))


# --- IGMP -----------------------------------------------------------------------------------------


@SETTINGS
@given(type_=st.sampled_from((igmp.MEMBERSHIP_QUERY, igmp.V1_REPORT, igmp.V2_REPORT, igmp.LEAVE_GROUP)), code=u8,
       group=ipv4_addrs)
def test_igmp_v2_both_ways(type_, code, group):
    message = bytearray(igmp.MIN_SIZE)
    igmp.build(message, type_, code, group)
    assert message == bytes(IGMP(type=type_, mrcode=code, gaddr=ntoa(group)))
    pkt = IGMP(bytes(message))
    assert (pkt.type, pkt.mrcode, pkt.gaddr) == (type_, code, ntoa(group))

    assert igmp.checksum_valid(message)
    if type_ == igmp.MEMBERSHIP_QUERY:
        query = igmp.parse(message)
        assert query == igmp.Query(2 if code else 1, code, group)
        assert query.max_response_time == (code or igmp.V1_MAX_RESPONSE_TIME)
    else:
        assert igmp.parse(message) == igmp.Report(type_, group)


@SETTINGS
@given(code=u8, group=ipv4_addrs, suppress=st.booleans(), robustness=st.integers(0, 7), qqic=u8,
       sources=st.lists(ipv4_addrs, max_size=4))
def test_igmp_v3_query_both_ways(code, group, suppress, robustness, qqic, sources):
    message = igmp.encode_v3_query(code, group, suppress, robustness, qqic, sources)
    # scapy's Max Resp Code field takes and shows the decoded time, and encodes it itself.
    theirs = bytes(IGMPv3_MQ(mrcode=igmp.decode_code(code), gaddr=ntoa(group), s=suppress, qrv=robustness,
                             qqic=qqic, srcaddrs=[ntoa(s) for s in sources]))
    assert message == theirs
    pkt = IGMPv3_MQ(message)
    assert (pkt.getfieldval("mrcode"), pkt.gaddr, pkt.s, pkt.qrv, pkt.qqic, pkt.srcaddrs) == \
        (igmp.decode_code(code), ntoa(group), suppress, robustness, qqic, [ntoa(s) for s in sources])

    assert igmp.checksum_valid(theirs)
    query = igmp.parse(theirs)
    assert query == igmp.Query(3, code, group, suppress, robustness, qqic, tuple(sources))
    assert (query.max_response_time, query.query_interval) == (igmp.decode_code(code), igmp.decode_code(qqic))


@SETTINGS
@given(tenths=st.integers(0, igmp.decode_code(0xFF) + 1023))   # scapy overflows beyond what 0xff covers
def test_igmp_code_encoding_agrees_with_scapy(tenths):
    assert bytes(IGMPv3_MQ(mrcode=tenths))[1] == igmp.encode_code(tenths)


@st.composite
def igmp_records(draw) -> igmp.GroupRecord:
    return igmp.GroupRecord(draw(record_types), draw(ipv4_addrs), tuple(draw(st.lists(ipv4_addrs, max_size=4))))


@SETTINGS
@given(records=st.lists(igmp_records(), max_size=5))
def test_igmp_v3_report_both_ways(records):
    message = igmp.encode_v3_report(records)
    assert message == bytes(IGMPv3_MR(records=[
        IGMPv3_MR_Group(rtype=r.type, maddr=ntoa(r.group), srcaddrs=[ntoa(s) for s in r.sources]) for r in records]))
    pkt = IGMPv3_MR(message)
    assert [(r.rtype, r.maddr, r.srcaddrs) for r in pkt.records] == \
        [(r.type, ntoa(r.group), [ntoa(s) for s in r.sources]) for r in records]
    assert igmp.checksum_valid(message)
    assert igmp.parse(message) == igmp.V3Report(tuple(records))


def test_igmp_lengths_and_types():
    query = igmp.encode_v3_query(100, bytes(4), False, 2, 125, [bytes((192, 0, 2, 1)), bytes((192, 0, 2, 2))])
    for size in range(igmp.MIN_SIZE):
        assert igmp.parse(query[:size]) is Malformed.TRUNCATED, size
    assert igmp.parse(query[:igmp.MIN_SIZE]).version == 2
    for size in range(igmp.MIN_SIZE + 1, igmp.V3_QUERY_MIN_SIZE):             # neither version (RFC 3376 §7.1)
        assert igmp.parse(query[:size]) is Malformed.BAD_TOTAL_LENGTH, size
    for size in range(igmp.V3_QUERY_MIN_SIZE, len(query)):
        assert igmp.parse(query[:size]) is Malformed.TRUNCATED, size
    report = igmp.encode_v3_report([igmp.GroupRecord(igmp.ALLOW_NEW_SOURCES, bytes((232, 1, 1, 1)),
                                                     (bytes((192, 0, 2, 1)),), b"auxd")])
    assert igmp.parse(report).records[0].aux_data == b"auxd"
    for size in range(len(report)):
        assert igmp.parse(report[:size]) is Malformed.TRUNCATED, size
    leave = bytearray(igmp.MIN_SIZE)
    igmp.build(leave, igmp.LEAVE_GROUP, 0, bytes((239, 1, 1, 1)))
    assert igmp.parse(bytes(leave) + b"extra") == igmp.Report(igmp.LEAVE_GROUP, bytes((239, 1, 1, 1)))
    assert igmp.parse(b"\x13" + bytes(leave[1:])) is Malformed.BAD_FIELD      # DVMRP: not ours to parse
    leave[5] ^= 1
    assert not igmp.checksum_valid(leave)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=80), type_=st.sampled_from((igmp.MEMBERSHIP_QUERY, igmp.V3_REPORT)) | u8)
def test_igmp_hostile_messages_never_raise(body, type_):
    parsed = igmp.parse(bytes((type_,)) + body)
    assert isinstance(parsed, (Malformed, igmp.Query, igmp.Report, igmp.V3Report))
