"""UDP (RFC 768)."""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed

HEADER_SIZE = 8
PROTOCOL_NUMBER = 17

_HDR = struct.Struct("!HHHH")


class UDPHeader(NamedTuple):
    src_port: int
    dst_port: int
    length: int
    checksum: int


def parse(buf: bytes | memoryview) -> UDPHeader | Malformed:
    """Parse and check the length field against the datagram the network layer delivered.

    A length shorter than the buffer is allowed (the rest is IP padding the caller trims); a length
    longer than the buffer, or shorter than the header, is malformed.
    """
    if len(buf) < HEADER_SIZE:
        return Malformed.TRUNCATED
    hdr = UDPHeader(*_HDR.unpack_from(buf))
    if hdr.length < HEADER_SIZE or hdr.length > len(buf):
        return Malformed.BAD_TOTAL_LENGTH
    return hdr


def build(buf: memoryview | bytearray, src_port: int, dst_port: int, length: int, checksum: int = 0) -> None:
    _HDR.pack_into(buf, 0, src_port, dst_port, length, checksum)
