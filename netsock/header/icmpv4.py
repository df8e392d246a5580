"""ICMPv4 (RFC 792): message types, codes and the 8-byte header."""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed
from .checksum import checksum_views

MIN_SIZE = 8
PROTOCOL_NUMBER = 1

ECHO_REPLY = 0
DST_UNREACHABLE = 3
SRC_QUENCH = 4
REDIRECT = 5
ECHO = 8
TIME_EXCEEDED = 11
PARAM_PROBLEM = 12
TIMESTAMP = 13
TIMESTAMP_REPLY = 14
INFO_REQUEST = 15
INFO_REPLY = 16

# Destination-unreachable codes.
NET_UNREACHABLE = 0
HOST_UNREACHABLE = 1
PROTO_UNREACHABLE = 2
PORT_UNREACHABLE = 3
FRAG_NEEDED = 4
SOURCE_ROUTE_FAILED = 5
NET_UNKNOWN = 6
HOST_UNKNOWN = 7
NET_PROHIBITED = 9
HOST_PROHIBITED = 10
ADMIN_PROHIBITED = 13

# Time-exceeded codes.
TTL_EXCEEDED = 0
REASSEMBLY_TIMEOUT = 1

ERROR_TYPES = frozenset((DST_UNREACHABLE, SRC_QUENCH, REDIRECT, TIME_EXCEEDED, PARAM_PROBLEM))

_HDR = struct.Struct("!BBHI")
_ECHO = struct.Struct("!HH")


class ICMPv4Header(NamedTuple):
    type: int
    code: int
    checksum: int
    rest: int       # the type-specific 4 bytes (ident/sequence, MTU, pointer, gateway)

    @property
    def ident(self) -> int:
        return self.rest >> 16

    @property
    def sequence(self) -> int:
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        """Next-hop MTU of a fragmentation-needed message (RFC 1191)."""
        return self.rest & 0xFFFF


def parse(buf: bytes | memoryview) -> ICMPv4Header | Malformed:
    if len(buf) < MIN_SIZE:
        return Malformed.TRUNCATED
    return ICMPv4Header(*_HDR.unpack_from(buf))


def checksum_valid(message: bytes | memoryview) -> bool:
    return checksum_views((message,)) == 0xFFFF


def build(buf: memoryview | bytearray, type_: int, code: int, rest: int, payload: bytes | memoryview = b"") -> None:
    """Write the 8-byte header, with the checksum covering header and ``payload``."""
    _HDR.pack_into(buf, 0, type_, code, 0, rest)
    csum = ~checksum_views((memoryview(buf)[:MIN_SIZE], payload)) & 0xFFFF
    buf[2] = csum >> 8
    buf[3] = csum & 0xFF


def echo_rest(ident: int, sequence: int) -> int:
    return (ident << 16) | sequence
