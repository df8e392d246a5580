"""IPv6 (RFC 8200): the fixed header, address classes and the extension-header chain.

The chain is walked in one bounded pass (``iter_extension_headers``) that only establishes where each
header is; what a header asks for (options with their RFC 8200 §4.2 actions, a routing header with
segments left, a fragment) is decoded by the parsers below it, because acting on it is the network
layer's business: only it knows whether the packet is for us and which ICMPv6 error to send.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed
from .checksum import Buffer

HEADER_SIZE = 40
VERSION = 6
PROTOCOL_NUMBER = 0x86DD
MIN_MTU = 1280                  # RFC 8200 §5: every link must carry packets this large
DEFAULT_HOP_LIMIT = 64
PAYLOAD_LENGTH_OFFSET = 4       # field offsets in the fixed header, for Parameter Problem pointers
NEXT_HEADER_OFFSET = 6

# Next Header values (IANA "Assigned Internet Protocol Numbers").
HOP_BY_HOP = 0
ROUTING = 43
FRAGMENT = 44
ICMPV6 = 58
NO_NEXT = 59
DEST_OPTIONS = 60

EXTENSION_HEADERS = frozenset((HOP_BY_HOP, ROUTING, FRAGMENT, DEST_OPTIONS))
MAX_EXTENSION_HEADERS = 16      # a longer chain is hostile, not a packet anyone sends

# Hop-by-hop and destination option types (IANA "Destination Options and Hop-by-Hop Options").
OPT_PAD1 = 0
OPT_PADN = 1
OPT_ROUTER_ALERT = 5
OPT_JUMBO = 0xC2

# Router Alert values (RFC 2711).
ROUTER_ALERT_MLD = 0
ROUTER_ALERT_RSVP = 1
ROUTER_ALERT_ACTIVE_NETWORKS = 2

# What to do with an option we do not recognise: its type's two high bits (RFC 8200 §4.2).
ACTION_SKIP = 0
ACTION_DISCARD = 1
ACTION_DISCARD_SEND_ICMP = 2                    # Parameter Problem, code 2, pointer at the option
ACTION_DISCARD_SEND_ICMP_UNLESS_MULTICAST = 3   # the same, but silently if the destination was multicast

# Limits on options that Linux enforces (net/ipv6/exthdrs.c): padding exists to align the next
# option, so more than 7 bytes of it in a row, or non-zero PadN contents (RFC 4942 §2.1.9.5), is a
# covert channel or an attack; eight real options are more than any protocol puts in one header.
MAX_PADDING = 7
MAX_OPTIONS = 8

# Routing types (IANA "Routing Types"); type 0 is deprecated (RFC 5095) and must be treated as unknown.
ROUTING_TYPE_SOURCE_ROUTE = 0
ROUTING_TYPE_MOBILITY = 2
ROUTING_TYPE_RPL = 3
ROUTING_TYPE_SEGMENT = 4
ROUTING_TYPE_OFFSET = 2         # in the routing header: the Parameter Problem pointer for an unknown type

FRAGMENT_HEADER_SIZE = 8
FRAGMENT_OFFSET_OFFSET = 2      # in the fragment header: the pointer when offset + length > 65535
ROUTER_ALERT_HEADER_SIZE = 8

UNSPECIFIED = bytes(16)
LOOPBACK = bytes(15) + b"\x01"
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")
ALL_MLDV2_ROUTERS = bytes.fromhex("ff020000000000000000000000000016")
_LINK_LOCAL_PREFIX = bytes.fromhex("fe80000000000000")                 # fe80::/64
_SOLICITED_NODE_PREFIX = bytes.fromhex("ff0200000000000000000001ff")    # ff02::1:ff00:0/104

# Multicast scopes (RFC 4291 §2.7, RFC 7346).
SCOPE_INTERFACE_LOCAL = 0x1
SCOPE_LINK_LOCAL = 0x2
SCOPE_REALM_LOCAL = 0x3
SCOPE_ADMIN_LOCAL = 0x4
SCOPE_SITE_LOCAL = 0x5
SCOPE_ORGANIZATION_LOCAL = 0x8
SCOPE_GLOBAL = 0xE

_FIXED = struct.Struct("!IHBB16s16s")
_FRAGMENT = struct.Struct("!BBHI")
_ROUTING = struct.Struct("!BBBB")
_ROUTER_ALERT = struct.Struct("!BBBBHBB")   # next header, length 0, RA option, PadN of 2


class IPv6Header(NamedTuple):
    traffic_class: int
    flow_label: int
    payload_length: int     # bytes after the fixed header, extension headers included
    next_header: int
    hop_limit: int
    src: bytes
    dst: bytes


def parse(buf: Buffer) -> IPv6Header | Malformed:
    """Parse the fixed header and check the payload length against what the link delivered.

    Link padding beyond the payload is allowed and the caller trims it. A payload length of zero is
    an empty payload: jumbograms (RFC 2675) are not supported, so their Jumbo Payload option meets
    the unrecognised-option rule of RFC 8200 §4.2 when the hop-by-hop options are processed.
    """
    if len(buf) < HEADER_SIZE:
        return Malformed.TRUNCATED
    word, payload_length, next_header, hop_limit, src, dst = _FIXED.unpack_from(buf)
    if word >> 28 != VERSION:
        return Malformed.BAD_VERSION
    if payload_length > len(buf) - HEADER_SIZE:
        return Malformed.TRUNCATED
    return IPv6Header((word >> 20) & 0xFF, word & 0xFFFFF, payload_length, next_header, hop_limit, src, dst)


def build(buf: memoryview | bytearray, *, src: bytes, dst: bytes, next_header: int, payload_length: int,
          hop_limit: int = DEFAULT_HOP_LIMIT, traffic_class: int = 0, flow_label: int = 0) -> None:
    """Write the 40-byte fixed header into ``buf`` (there is no header checksum in IPv6)."""
    _FIXED.pack_into(buf, 0, (VERSION << 28) | (traffic_class << 20) | flow_label, payload_length, next_header,
                     hop_limit, src, dst)


# --- Addresses ------------------------------------------------------------------------------------


def is_multicast(addr: bytes) -> bool:
    return addr[0] == 0xFF


def multicast_scope(addr: bytes) -> int:
    """The scope nibble of a multicast address (one of the SCOPE_* values, or a reserved one)."""
    return addr[1] & 0x0F


def is_link_local(addr: bytes) -> bool:
    """Link-local unicast, fe80::/10."""
    return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80


def is_loopback(addr: bytes) -> bool:
    return addr == LOOPBACK


def is_unspecified(addr: bytes) -> bool:
    return addr == UNSPECIFIED


def is_solicited_node_multicast(addr: bytes) -> bool:
    return addr[:13] == _SOLICITED_NODE_PREFIX


def solicited_node_multicast(addr: bytes) -> bytes:
    """The group a Neighbor Solicitation for ``addr`` goes to (RFC 4291 §2.7.1): ff02::1:ff + its low 24 bits."""
    return _SOLICITED_NODE_PREFIX + bytes(addr[13:16])


def interface_id_from_mac(mac: bytes) -> bytes:
    """Modified EUI-64 interface identifier of a 48-bit MAC (RFC 4291 App. A): ff:fe in the middle,
    the universal/local bit inverted."""
    return bytes((mac[0] ^ 0x02, mac[1], mac[2], 0xFF, 0xFE, mac[3], mac[4], mac[5]))


def link_local_from_mac(mac: bytes) -> bytes:
    """The fe80::/64 address an interface with this MAC configures first (RFC 4862 §5.3)."""
    return _LINK_LOCAL_PREFIX + interface_id_from_mac(mac)


# --- Extension headers ----------------------------------------------------------------------------


class ExtHeader(NamedTuple):
    kind: int           # HOP_BY_HOP, ROUTING, FRAGMENT or DEST_OPTIONS
    offset: int         # of the header in the walked buffer; its Next Header field is the byte there
    length: int         # bytes, the whole header
    next_header: int    # what follows it


class FragmentHeader(NamedTuple):
    next_header: int
    offset: int         # of this fragment's data in the original payload, in bytes (a multiple of 8)
    more: bool
    ident: int

    def is_atomic(self) -> bool:
        """Offset 0 and no more fragments: the whole packet, processed as such (RFC 6946)."""
        return not self.offset and not self.more


class ExtensionChain(NamedTuple):
    headers: tuple[ExtHeader, ...]      # in wire order
    next_header: int                    # the upper-layer protocol, NO_NEXT, or what a fragment carries
    payload_offset: int                 # where that begins
    fragment: FragmentHeader | None     # the walk stopped at this (non-atomic) fragment's header

    @property
    def next_header_pointer(self) -> int:
        """Offset of the Next Header field that names ``next_header``: the Parameter Problem pointer
        (code 1) when that protocol is unknown. Counted from the fixed header when the walk began
        behind it."""
        return self.headers[-1].offset if self.headers else NEXT_HEADER_OFFSET


def iter_extension_headers(buf: Buffer, first_next_header: int, start: int = HEADER_SIZE) -> ExtensionChain | Malformed:
    """Walk the extension headers of the packet ``buf`` from ``start`` up to the upper-layer header.

    ``buf`` is normally the whole packet, trimmed to the payload length, so that every offset in the
    result is a Parameter Problem pointer as it stands. The walk stops
      - at the first Next Header that is not an extension header (an upper-layer protocol, NO_NEXT,
        or one we do not know: the caller answers those with code 1 at ``next_header_pointer``);
      - at a Hop-by-Hop Options header anywhere but right behind the fixed header, which RFC 8200
        §4.1 treats exactly like an unknown Next Header;
      - behind a fragment header that is not atomic: what follows is fragment data, to be walked
        again once reassembled (RFC 7112's check that the first fragment holds the whole chain is
        that second walk over the first fragment's data).
    A header running past the buffer is TRUNCATED; more than MAX_EXTENSION_HEADERS is BAD_FIELD.
    Every header is at least 8 bytes, so the walk always advances.
    """
    headers: list[ExtHeader] = []
    next_header, offset, end = first_next_header, start, len(buf)
    while next_header in EXTENSION_HEADERS:
        if next_header == HOP_BY_HOP and offset != HEADER_SIZE:
            break
        if len(headers) == MAX_EXTENSION_HEADERS:
            return Malformed.BAD_FIELD
        if offset + 8 > end:
            return Malformed.TRUNCATED
        following = buf[offset]
        if next_header == FRAGMENT:
            fragment = _fragment_at(buf, offset)
            headers.append(ExtHeader(FRAGMENT, offset, FRAGMENT_HEADER_SIZE, following))
            offset += FRAGMENT_HEADER_SIZE
            if not fragment.is_atomic():
                return ExtensionChain(tuple(headers), following, offset, fragment)
        else:
            length = (buf[offset + 1] + 1) << 3
            if offset + length > end:
                return Malformed.TRUNCATED
            headers.append(ExtHeader(next_header, offset, length, following))
            offset += length
        next_header = following
    return ExtensionChain(tuple(headers), next_header, offset, None)


class HeaderOptions(NamedTuple):
    router_alert: int | None    # the Router Alert value (hop-by-hop only), None when there is none
    action: int                 # ACTION_SKIP, or what the first unrecognised option not to skip demands
    pointer: int                # that option's offset: the Parameter Problem pointer (code 2)


def parse_options(buf: Buffer, header: ExtHeader) -> HeaderOptions | Malformed:
    """Process the options of a hop-by-hop or destination options ``header`` found in ``buf``.

    Processing stops at the first unrecognised option whose action is not ACTION_SKIP, as RFC 8200
    §4.2 orders; the caller then drops the packet and sends the ICMPv6 error the action asks for.
    An option running past the header, a Router Alert that is not 2 bytes long, and padding beyond
    the limits above are BAD_OPTIONS: silent drops, as in Linux.
    """
    i, end = header.offset + 2, header.offset + header.length
    router_alert = None
    padding = count = 0
    while i < end:
        kind = buf[i]
        if kind == OPT_PAD1:
            padding += 1
            if padding > MAX_PADDING:
                return Malformed.BAD_OPTIONS
            i += 1
            continue
        if i + 2 > end:
            return Malformed.BAD_OPTIONS
        size = buf[i + 1] + 2
        if i + size > end:
            return Malformed.BAD_OPTIONS
        if kind == OPT_PADN:
            padding += size
            if padding > MAX_PADDING or any(buf[i + 2:i + size]):
                return Malformed.BAD_OPTIONS
        else:
            padding = 0
            count += 1
            if count > MAX_OPTIONS:
                return Malformed.BAD_OPTIONS
            if kind == OPT_ROUTER_ALERT and header.kind == HOP_BY_HOP:
                if size != 4:
                    return Malformed.BAD_OPTIONS
                router_alert = (buf[i + 2] << 8) | buf[i + 3]
            elif kind >> 6 != ACTION_SKIP:
                return HeaderOptions(router_alert, kind >> 6, i)
        i += size
    return HeaderOptions(router_alert, ACTION_SKIP, 0)


class RoutingHeader(NamedTuple):
    next_header: int
    routing_type: int
    segments_left: int
    data: bytes         # the type-specific rest of the header, from its fifth byte


def parse_routing(buf: Buffer, at: int = 0) -> RoutingHeader | Malformed:
    """The routing header at ``at``. With segments left it is the network layer's to act on (RFC 8200
    §4.4: an unknown type is Parameter Problem code 0 at ``at + ROUTING_TYPE_OFFSET``); with none
    left it is ignored."""
    if at + 8 > len(buf):
        return Malformed.TRUNCATED
    next_header, ext_length, routing_type, segments_left = _ROUTING.unpack_from(buf, at)
    end = at + ((ext_length + 1) << 3)
    if end > len(buf):
        return Malformed.TRUNCATED
    return RoutingHeader(next_header, routing_type, segments_left, bytes(buf[at + 4:end]))


def parse_fragment(buf: Buffer, at: int = 0) -> FragmentHeader | Malformed:
    """The fragment header at ``at``; the reserved bits are ignored, as RFC 8200 §4.5 says."""
    if at + FRAGMENT_HEADER_SIZE > len(buf):
        return Malformed.TRUNCATED
    return _fragment_at(buf, at)


def _fragment_at(buf: Buffer, at: int) -> FragmentHeader:
    next_header, _, offset_flags, ident = _FRAGMENT.unpack_from(buf, at)
    return FragmentHeader(next_header, offset_flags & 0xFFF8, bool(offset_flags & 1), ident)


def build_fragment(buf: memoryview | bytearray, next_header: int, offset: int, more: bool, ident: int) -> None:
    """Write an 8-byte fragment header; ``offset`` is in bytes and must be a multiple of 8."""
    if offset & 7 or not 0 <= offset <= 0xFFF8:
        raise ValueError(f"fragment offset must be a multiple of 8 below 65536: {offset}")
    _FRAGMENT.pack_into(buf, 0, next_header, 0, offset | more, ident)


def build_router_alert(buf: memoryview | bytearray, next_header: int, value: int = ROUTER_ALERT_MLD) -> None:
    """Write the 8-byte hop-by-hop header MLD messages must carry (RFC 3810 §5): a Router Alert
    padded with a PadN, laid out as Linux sends it."""
    _ROUTER_ALERT.pack_into(buf, 0, next_header, 0, OPT_ROUTER_ALERT, 2, value, OPT_PADN, 0)
