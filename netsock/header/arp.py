"""ARP (RFC 826) for IPv4 over Ethernet: the only combination a TAP link needs."""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed

SIZE = 28
HTYPE_ETHERNET = 1
PTYPE_IPV4 = 0x0800
OP_REQUEST = 1
OP_REPLY = 2

_HDR = struct.Struct("!HHBBH6s4s6s4s")


class ARPPacket(NamedTuple):
    op: int
    sender_hw: bytes
    sender_proto: bytes
    target_hw: bytes
    target_proto: bytes


def parse(buf: bytes | memoryview) -> ARPPacket | Malformed:
    """Accepts only Ethernet/IPv4 ARP; anything else is BAD_FIELD (there is nothing to resolve with it)."""
    if len(buf) < SIZE:
        return Malformed.TRUNCATED
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _HDR.unpack_from(buf)
    if htype != HTYPE_ETHERNET or ptype != PTYPE_IPV4 or hlen != 6 or plen != 4:
        return Malformed.BAD_FIELD
    return ARPPacket(op, sha, spa, tha, tpa)


def build(buf: memoryview | bytearray, op: int, sender_hw: bytes, sender_proto: bytes,
          target_hw: bytes, target_proto: bytes) -> None:
    _HDR.pack_into(buf, 0, HTYPE_ETHERNET, PTYPE_IPV4, 6, 4, op, sender_hw, sender_proto, target_hw, target_proto)
