"""Ethernet II frames (IEEE 802.3 with an EtherType)."""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import Malformed

HEADER_SIZE = 14
BROADCAST = b"\xff\xff\xff\xff\xff\xff"
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD

_HDR = struct.Struct("!6s6sH")


class EthernetHeader(NamedTuple):
    dst: bytes
    src: bytes
    ethertype: int


def parse(buf: bytes | memoryview) -> EthernetHeader | Malformed:
    if len(buf) < HEADER_SIZE:
        return Malformed.TRUNCATED
    return EthernetHeader(*_HDR.unpack_from(buf))


def build(buf: memoryview | bytearray, dst: bytes, src: bytes, ethertype: int) -> None:
    """Write the 14-byte header into ``buf``."""
    _HDR.pack_into(buf, 0, dst, src, ethertype)


def is_multicast(mac: bytes) -> bool:
    """Group bit set (broadcast included)."""
    return bool(mac[0] & 1)


def ipv4_multicast_mac(addr: bytes) -> bytes:
    """RFC 1112 §6.4: 01:00:5e followed by the low 23 bits of the group address."""
    return b"\x01\x00\x5e" + bytes((addr[1] & 0x7F, addr[2], addr[3]))


def ipv6_multicast_mac(addr: bytes) -> bytes:
    """RFC 2464 §7: 33:33 followed by the low 32 bits of the group address."""
    return b"\x33\x33" + bytes(addr[12:16])
