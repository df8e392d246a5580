"""ICMPv6 (RFC 4443): message types, codes, the header and the pseudo-header checksum.

Unlike ICMPv4, the checksum covers the IPv6 pseudo-header (RFC 8200 §8.1), so building and
verifying take the packet's addresses. Neighbor Discovery and MLD bodies are in ``ndp`` and ``mld``.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed
from .checksum import Buffer, checksum, pseudo_header_checksum

HEADER_SIZE = 4         # type, code, checksum: what precedes every message body
MIN_SIZE = 8            # every defined message has at least the 4 bytes of ``rest``
PROTOCOL_NUMBER = 58
MAX_ERROR_SIZE = 1280   # RFC 4443 §2.4(c): an error, IPv6 header included, fits the minimum MTU

# Error messages (types below 128, RFC 4443 §2.1).
DST_UNREACHABLE = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROBLEM = 4

# Informational messages.
ECHO_REQUEST = 128
ECHO_REPLY = 129
MLD_QUERY = 130             # RFC 2710, RFC 3810 (a v2 query is longer)
MLD_REPORT = 131
MLD_DONE = 132
ROUTER_SOLICIT = 133        # RFC 4861
ROUTER_ADVERT = 134
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136
REDIRECT = 137
MLDV2_REPORT = 143

# Destination-unreachable codes.
NO_ROUTE = 0
ADMIN_PROHIBITED = 1
BEYOND_SCOPE = 2
ADDRESS_UNREACHABLE = 3
PORT_UNREACHABLE = 4
SOURCE_POLICY_FAILED = 5
REJECT_ROUTE = 6

# Time-exceeded codes.
HOP_LIMIT_EXCEEDED = 0
REASSEMBLY_TIMEOUT = 1

# Parameter-problem codes (RFC 4443 §3.4, RFC 7112 §5).
ERRONEOUS_HEADER = 0
UNRECOGNIZED_NEXT_HEADER = 1
UNRECOGNIZED_OPTION = 2
INCOMPLETE_HEADER_CHAIN = 3

_HDR = struct.Struct("!BBHI")
_TYPE_CODE = struct.Struct("!BBH")
_CHECKSUM = struct.Struct("!H")


class ICMPv6Header(NamedTuple):
    type: int
    code: int
    checksum: int
    rest: int       # the first 4 bytes of the body: ident/sequence, MTU, pointer, or unused

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        """MTU of a Packet Too Big message: all 32 bits, unlike ICMPv4's."""
        return self.rest

    @property
    def pointer(self) -> int:
        """Offset in the quoted packet that a Parameter Problem message blames."""
        return self.rest


def is_error(type_: int) -> bool:
    return type_ < 128


def parse(buf: Buffer) -> ICMPv6Header | Malformed:
    """The header; the checksum is a separate check (``checksum_valid``), made before acting on it."""
    if len(buf) < MIN_SIZE:
        return Malformed.TRUNCATED
    return ICMPv6Header(*_HDR.unpack_from(buf))


def checksum_valid(src: bytes, dst: bytes, message: Buffer) -> bool:
    """Whether ``message`` (the whole ICMPv6 message) checks against the pseudo-header of ``src``/``dst``."""
    return checksum(message, pseudo_header_checksum(PROTOCOL_NUMBER, src, dst, len(message))) == 0xFFFF


def _sum(src: bytes, dst: bytes, header: Buffer, payload: Buffer) -> int:
    # The header is an even number of bytes, so the payload's 16-bit lanes line up behind it.
    total = pseudo_header_checksum(PROTOCOL_NUMBER, src, dst, len(header) + len(payload))
    return ~checksum(payload, checksum(header, total)) & 0xFFFF


def build(buf: memoryview | bytearray, type_: int, code: int, rest: int, src: bytes, dst: bytes,
          payload: Buffer = b"") -> None:
    """Write the 8-byte header (echo, errors) with the checksum over it and ``payload``."""
    _HDR.pack_into(buf, 0, type_, code, 0, rest)
    _CHECKSUM.pack_into(buf, 2, _sum(src, dst, memoryview(buf)[:MIN_SIZE], payload))


def build_header(buf: memoryview | bytearray, type_: int, code: int, src: bytes, dst: bytes, body: Buffer) -> None:
    """Write the 4-byte type/code/checksum in front of a message ``body`` (from ``ndp`` or ``mld``)."""
    _TYPE_CODE.pack_into(buf, 0, type_, code, 0)
    _CHECKSUM.pack_into(buf, 2, _sum(src, dst, memoryview(buf)[:HEADER_SIZE], body))


def echo_rest(ident: int, sequence: int) -> int:
    return (ident << 16) | sequence
