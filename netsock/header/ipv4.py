"""IPv4 (RFC 791): header parse, validation, options and build."""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed
from .checksum import checksum

MIN_SIZE = 20
MAX_SIZE = 60
MAX_TOTAL_LENGTH = 65535
VERSION = 4
PROTOCOL_NUMBER = 0x0800
DEFAULT_TTL = 64

# Flags, as the top three bits of the 16-bit flags/fragment-offset word.
FLAG_MORE_FRAGMENTS = 0x2000
FLAG_DONT_FRAGMENT = 0x4000
FLAG_RESERVED = 0x8000
FRAGMENT_OFFSET_MASK = 0x1FFF

# Option types (RFC 791 §3.1 and the IANA registry).
OPT_END = 0
OPT_NOP = 1
OPT_RECORD_ROUTE = 7
OPT_TIMESTAMP = 68
OPT_ROUTER_ALERT = 148
OPT_LOOSE_SOURCE_ROUTE = 131
OPT_STRICT_SOURCE_ROUTE = 137

_FIXED = struct.Struct("!BBHHHBBH4s4s")
_new_header = tuple.__new__     # IPv4Header's fields in order, without the Python-level __new__ (per packet)


class IPv4Header(NamedTuple):
    header_length: int      # bytes (IHL * 4)
    tos: int
    total_length: int
    ident: int
    flags_fragment: int     # flags in the top 3 bits, offset (8-byte units) in the low 13
    ttl: int
    protocol: int
    checksum: int
    src: bytes
    dst: bytes

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags_fragment & FLAG_MORE_FRAGMENTS)

    @property
    def dont_fragment(self) -> bool:
        return bool(self.flags_fragment & FLAG_DONT_FRAGMENT)

    @property
    def fragment_offset(self) -> int:
        """Offset of this fragment's payload in bytes."""
        return (self.flags_fragment & FRAGMENT_OFFSET_MASK) * 8

    def is_fragment(self) -> bool:
        return bool(self.flags_fragment & (FLAG_MORE_FRAGMENTS | FRAGMENT_OFFSET_MASK))


def parse(buf: bytes | memoryview, big: bool = False) -> IPv4Header | Malformed:
    """Parse and validate the structure (not the checksum: see ``checksum_valid``).

    ``buf`` is everything the link delivered; link padding beyond total_length is allowed and the
    caller trims it. ``big``: ``buf`` is a super-segment, which beyond 64 KB has total length 0 and
    is as long as the buffer (BIG TCP; Linux's iph_totlen); the header returned then says its length.
    """
    size = len(buf)
    if size < MIN_SIZE:
        return Malformed.TRUNCATED
    vihl, tos, total, ident, ff, ttl, proto, csum, src, dst = _FIXED.unpack_from(buf)
    if not total and big and size > MAX_TOTAL_LENGTH:
        total = size
    if vihl >> 4 != VERSION:
        return Malformed.BAD_VERSION
    hlen = (vihl & 0x0F) * 4
    if hlen < MIN_SIZE:
        return Malformed.BAD_HEADER_LENGTH
    if hlen > size:
        return Malformed.TRUNCATED
    if total < hlen:
        return Malformed.BAD_TOTAL_LENGTH
    if total > size:
        return Malformed.TRUNCATED
    return _new_header(IPv4Header, (hlen, tos, total, ident, ff, ttl, proto, csum, src, dst))


def checksum_valid(buf: bytes | memoryview, header_length: int) -> bool:
    """The header's 16-bit words sum to 0xffff: the big-endian value of the header is then a nonzero
    multiple of 0xffff (2**16 == 1 mod 0xffff), checked without a call into ``checksum`` per packet."""
    value = int.from_bytes(buf[:header_length], "big")
    return not value % 0xFFFF and value != 0


def options_valid(options: bytes | memoryview) -> bool:
    """Structural check of the options area: every option's length fits and is at least 2."""
    i, n = 0, len(options)
    while i < n:
        kind = options[i]
        if kind == OPT_END:
            return True
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            return False
        length = options[i + 1]
        if length < 2 or i + length > n:
            return False
        i += length
    return True


def parse_options(options: bytes | memoryview) -> list[tuple[int, bytes]] | Malformed:
    """The options as (type, data) pairs, NOPs and the end marker left out."""
    if not options_valid(options):
        return Malformed.BAD_OPTIONS
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(options)
    while i < n:
        kind = options[i]
        if kind == OPT_END:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        length = options[i + 1]
        out.append((kind, bytes(options[i + 2:i + length])))
        i += length
    return out


def encode_options(options: list[tuple[int, bytes]]) -> bytes:
    """Serialise (type, data) options, padded with END to a multiple of 4 bytes (max 40)."""
    raw = b"".join(bytes((kind,)) if kind in (OPT_END, OPT_NOP) else bytes((kind, len(data) + 2)) + data
                   for kind, data in options)
    raw += bytes(-len(raw) % 4)
    if len(raw) > MAX_SIZE - MIN_SIZE:
        raise ValueError("IPv4 options longer than 40 bytes")
    return raw


def build(buf: memoryview | bytearray, *, src: bytes, dst: bytes, protocol: int, total_length: int,
          ttl: int = DEFAULT_TTL, tos: int = 0, ident: int = 0, flags_fragment: int = 0,
          options: bytes = b"") -> None:
    """Write the header (with checksum) into the first 20 + len(options) bytes of ``buf``.

    ``options`` must already be padded to a multiple of four (``encode_options`` does).
    """
    hlen = MIN_SIZE + len(options)
    _FIXED.pack_into(buf, 0, 0x40 | (hlen >> 2), tos, total_length, ident, flags_fragment, ttl, protocol, 0,
                     src, dst)
    if options:
        buf[MIN_SIZE:hlen] = options
    csum = ~checksum(memoryview(buf)[:hlen]) & 0xFFFF
    buf[10] = csum >> 8
    buf[11] = csum & 0xFF


def is_multicast(addr: bytes) -> bool:
    return 224 <= addr[0] <= 239


def is_loopback(addr: bytes) -> bool:
    return addr[0] == 127
