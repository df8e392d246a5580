"""Neighbor Discovery (RFC 4861): message bodies, options, and the receive-side validity checks.

``parse`` applies the checks RFC 4861 §6.1.1, §6.1.2, §7.1.1, §7.1.2 and §8.1 list (the ICMPv6
checksum aside: ``icmpv6.checksum_valid`` comes first for every ICMPv6 message), so a message it
returns may be acted on. The encoders return a message body, i.e. everything after the 4-byte
ICMPv6 header that ``icmpv6.build_header`` writes in front of it.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Sequence

from . import Malformed
from .checksum import Buffer
from .icmpv6 import MIN_SIZE, NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT, REDIRECT, ROUTER_ADVERT, ROUTER_SOLICIT
from .ipv6 import is_link_local, is_multicast, is_solicited_node_multicast, is_unspecified

HOP_LIMIT = 255     # §6.1/§7.1: anything less may have come through a router, from off-link

# Whole-message (ICMPv6 header included) minimum sizes; options follow the fixed part.
ROUTER_SOLICIT_SIZE = 8
ROUTER_ADVERT_SIZE = 16
NEIGHBOR_SOLICIT_SIZE = 24
NEIGHBOR_ADVERT_SIZE = 24
REDIRECT_SIZE = 40

# Router Advertisement flags (RFC 4861 §4.2; RFC 4191 preference bits and others left in ``flags``).
RA_MANAGED = 0x80
RA_OTHER_CONFIG = 0x40

# Neighbor Advertisement flags (the high bits of the first body byte).
NA_ROUTER = 0x80
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20

# Option types (IANA "IPv6 Neighbor Discovery Option Formats").
OPT_SOURCE_LINK_ADDRESS = 1
OPT_TARGET_LINK_ADDRESS = 2
OPT_PREFIX_INFO = 3
OPT_REDIRECTED_HEADER = 4
OPT_MTU = 5
OPT_NONCE = 14          # RFC 3971, used by enhanced DAD (RFC 7527)
OPT_RDNSS = 25          # RFC 8106

# Prefix Information flags (RFC 4861 §4.6.2).
PREFIX_ON_LINK = 0x80
PREFIX_AUTONOMOUS = 0x40

INFINITE_LIFETIME = 0xFFFFFFFF

_PREFIX_INFO = struct.Struct("!BBBBIII16s")
_MTU = struct.Struct("!BBHI")
_RDNSS = struct.Struct("!BBHI")
_ROUTER_ADVERT = struct.Struct("!BBHII")
_NEIGHBOR_ADVERT = struct.Struct("!B3x16s")
_SIZES = {ROUTER_SOLICIT: ROUTER_SOLICIT_SIZE, ROUTER_ADVERT: ROUTER_ADVERT_SIZE,
          NEIGHBOR_SOLICIT: NEIGHBOR_SOLICIT_SIZE, NEIGHBOR_ADVERT: NEIGHBOR_ADVERT_SIZE, REDIRECT: REDIRECT_SIZE}


class PrefixInfo(NamedTuple):
    prefix_length: int
    flags: int
    valid_lifetime: int         # seconds, INFINITE_LIFETIME for ever
    preferred_lifetime: int
    prefix: bytes

    @property
    def on_link(self) -> bool:
        return bool(self.flags & PREFIX_ON_LINK)

    @property
    def autonomous(self) -> bool:
        """May be used for stateless address autoconfiguration (RFC 4862 §5.5.3)."""
        return bool(self.flags & PREFIX_AUTONOMOUS)


class RDNSS(NamedTuple):
    lifetime: int               # seconds
    servers: tuple[bytes, ...]


class NDPOptions(NamedTuple):
    """The options of one message. Of the single-valued ones the first counts, as in Linux's
    ``ndisc_parse_options``; options of unknown type are ignored (RFC 4861 §4.6)."""

    source_link_address: bytes | None = None    # the option's data: exactly the MAC on Ethernet
    target_link_address: bytes | None = None
    prefixes: tuple[PrefixInfo, ...] = ()
    mtu: int | None = None
    rdnss: tuple[RDNSS, ...] = ()
    redirected_header: bytes | None = None      # as much of the redirected packet as fitted
    nonce: bytes | None = None


class RouterSolicit(NamedTuple):
    options: NDPOptions


class RouterAdvert(NamedTuple):
    cur_hop_limit: int          # 0: unspecified by this router
    flags: int
    router_lifetime: int        # seconds; 0: not a default router
    reachable_time: int         # milliseconds; 0: unspecified
    retrans_timer: int          # milliseconds; 0: unspecified
    options: NDPOptions

    @property
    def managed(self) -> bool:
        return bool(self.flags & RA_MANAGED)

    @property
    def other_config(self) -> bool:
        return bool(self.flags & RA_OTHER_CONFIG)


class NeighborSolicit(NamedTuple):
    target: bytes
    options: NDPOptions


class NeighborAdvert(NamedTuple):
    flags: int
    target: bytes
    options: NDPOptions

    @property
    def router(self) -> bool:
        return bool(self.flags & NA_ROUTER)

    @property
    def solicited(self) -> bool:
        return bool(self.flags & NA_SOLICITED)

    @property
    def override(self) -> bool:
        return bool(self.flags & NA_OVERRIDE)


class Redirect(NamedTuple):
    target: bytes               # the better first hop (or the destination itself, when on-link)
    destination: bytes
    options: NDPOptions


NDPMessage = RouterSolicit | RouterAdvert | NeighborSolicit | NeighborAdvert | Redirect


def parse_options(area: Buffer) -> NDPOptions | Malformed:
    """Parse an options area. A length of zero, an option running past the area, and a known option
    of the wrong length make the whole message BAD_OPTIONS (§6.1, §7.1: it must be discarded)."""
    source = target = mtu = redirected = nonce = None
    prefixes: list[PrefixInfo] = []
    rdnss: list[RDNSS] = []
    i, n = 0, len(area)
    while i < n:
        if i + 2 > n:
            return Malformed.BAD_OPTIONS
        kind, size = area[i], area[i + 1] << 3
        if not size or i + size > n:
            return Malformed.BAD_OPTIONS
        if kind == OPT_SOURCE_LINK_ADDRESS:
            if source is None:
                source = bytes(area[i + 2:i + size])
        elif kind == OPT_TARGET_LINK_ADDRESS:
            if target is None:
                target = bytes(area[i + 2:i + size])
        elif kind == OPT_PREFIX_INFO:
            if size != _PREFIX_INFO.size:
                return Malformed.BAD_OPTIONS
            _, _, length, flags, valid, preferred, _, prefix = _PREFIX_INFO.unpack_from(area, i)
            prefixes.append(PrefixInfo(length, flags, valid, preferred, prefix))
        elif kind == OPT_MTU:
            if size != _MTU.size:
                return Malformed.BAD_OPTIONS
            if mtu is None:
                mtu = _MTU.unpack_from(area, i)[3]
        elif kind == OPT_RDNSS:
            if size < 24 or (size - 8) & 15:      # RFC 8106 §5.1: length 3 + 2n
                return Malformed.BAD_OPTIONS
            lifetime = _RDNSS.unpack_from(area, i)[3]
            servers = tuple(bytes(area[j:j + 16]) for j in range(i + 8, i + size, 16))
            rdnss.append(RDNSS(lifetime, servers))
        elif kind == OPT_REDIRECTED_HEADER:
            if redirected is None:
                redirected = bytes(area[i + 8:i + size])
        elif kind == OPT_NONCE:
            if nonce is None:
                nonce = bytes(area[i + 2:i + size])
        i += size
    return NDPOptions(source, target, tuple(prefixes), mtu, tuple(rdnss), redirected, nonce)


def parse(message: Buffer, src: bytes, dst: bytes, hop_limit: int) -> NDPMessage | Malformed:
    """Parse and validate the NDP ``message`` (ICMPv6 header included) that came from ``src`` to
    ``dst`` with ``hop_limit``. Any failed check is a silent discard: TRUNCATED for a short message,
    BAD_OPTIONS for bad options, BAD_FIELD for everything else (and for a type that is not NDP)."""
    if len(message) < MIN_SIZE:
        return Malformed.TRUNCATED
    type_ = message[0]
    size = _SIZES.get(type_)
    if size is None:
        return Malformed.BAD_FIELD
    if len(message) < size:
        return Malformed.TRUNCATED
    if message[1] != 0 or hop_limit != HOP_LIMIT:
        return Malformed.BAD_FIELD
    options = parse_options(message[size:])
    if isinstance(options, Malformed):
        return options
    from_unspecified = is_unspecified(src)
    if type_ == NEIGHBOR_SOLICIT:
        target = bytes(message[8:24])
        if is_multicast(target):
            return Malformed.BAD_FIELD
        # DAD probes come from :: to the solicited-node group, and have no address to announce.
        if from_unspecified and (not is_solicited_node_multicast(dst) or options.source_link_address is not None):
            return Malformed.BAD_FIELD
        return NeighborSolicit(target, options)
    if type_ == NEIGHBOR_ADVERT:
        flags, target = _NEIGHBOR_ADVERT.unpack_from(message, 4)
        if is_multicast(target) or (flags & NA_SOLICITED and is_multicast(dst)):
            return Malformed.BAD_FIELD
        return NeighborAdvert(flags, target, options)
    if type_ == ROUTER_SOLICIT:
        if from_unspecified and options.source_link_address is not None:
            return Malformed.BAD_FIELD
        return RouterSolicit(options)
    if not is_link_local(src):      # router advertisements and redirects come from a router's link-local
        return Malformed.BAD_FIELD
    if type_ == ROUTER_ADVERT:
        cur_hop_limit, flags, lifetime, reachable, retrans = _ROUTER_ADVERT.unpack_from(message, 4)
        return RouterAdvert(cur_hop_limit, flags, lifetime, reachable, retrans, options)
    target, destination = bytes(message[8:24]), bytes(message[24:40])
    if is_multicast(destination) or not (is_link_local(target) or target == destination):
        return Malformed.BAD_FIELD
    return Redirect(target, destination, options)


# --- Encoders -------------------------------------------------------------------------------------


def _padded(option: bytes) -> bytes:
    return option + bytes(-len(option) % 8)


def encode_link_address(kind: int, address: bytes) -> bytes:
    """A source or target link-layer address option (OPT_SOURCE_/OPT_TARGET_LINK_ADDRESS)."""
    return _padded(bytes((kind, (len(address) + 9) >> 3)) + address)


def encode_prefix_info(prefix_length: int, flags: int, valid_lifetime: int, preferred_lifetime: int,
                       prefix: bytes) -> bytes:
    return _PREFIX_INFO.pack(OPT_PREFIX_INFO, 4, prefix_length, flags, valid_lifetime, preferred_lifetime, 0, prefix)


def encode_mtu(mtu: int) -> bytes:
    return _MTU.pack(OPT_MTU, 1, 0, mtu)


def encode_rdnss(lifetime: int, servers: Sequence[bytes]) -> bytes:
    return _RDNSS.pack(OPT_RDNSS, 1 + 2 * len(servers), 0, lifetime) + b"".join(servers)


def encode_redirected_header(packet: bytes) -> bytes:
    """The Redirected Header option around ``packet``, which the caller has cut so that the whole
    Redirect stays within the minimum MTU (RFC 4861 §4.6.3)."""
    return _padded(bytes((OPT_REDIRECTED_HEADER, (len(packet) + 15) >> 3)) + bytes(6) + packet)


def encode_nonce(nonce: bytes) -> bytes:
    """The Nonce option; ``nonce`` is 6 bytes, or 6 + a multiple of 8 (RFC 3971 §5.3.2)."""
    if len(nonce) < 6 or (len(nonce) + 2) & 7:
        raise ValueError(f"a nonce is 6 + 8n bytes long, not {len(nonce)}")
    return bytes((OPT_NONCE, (len(nonce) + 2) >> 3)) + nonce


def encode_router_solicit(options: bytes = b"") -> bytes:
    return bytes(4) + options


def encode_router_advert(cur_hop_limit: int, flags: int, router_lifetime: int, reachable_time: int,
                         retrans_timer: int, options: bytes = b"") -> bytes:
    return _ROUTER_ADVERT.pack(cur_hop_limit, flags, router_lifetime, reachable_time, retrans_timer) + options


def encode_neighbor_solicit(target: bytes, options: bytes = b"") -> bytes:
    return bytes(4) + target + options


def encode_neighbor_advert(flags: int, target: bytes, options: bytes = b"") -> bytes:
    return _NEIGHBOR_ADVERT.pack(flags, target) + options


def encode_redirect(target: bytes, destination: bytes, options: bytes = b"") -> bytes:
    return bytes(4) + target + destination + options
