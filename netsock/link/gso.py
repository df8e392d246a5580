"""Segmentation offload: TCP super-segments, cut in software or described to the kernel.

A link that advertises LinkCapabilities.HARDWARE_GSO accepts one TCP packet carrying up to 64 KB
with ``pkt.gso_size`` set to the wire segment size, so the stack walks its send path once per 64 KB
instead of once per MSS (the kernel's GSO/TSO contract). As in Linux (CHECKSUM_PARTIAL), the TCP
checksum field of a super-segment holds only the folded pseudo-header sum over the super-segment's
length: whoever cuts it completes each piece's checksum.

Two ways to cut:

- ``segment_tcp`` does it here, exactly as the kernel would: each piece gets the headers of the
  original with its own sequence number, IP length and identification, FIN and PSH only on the last,
  CWR only on the first, and fresh checksums (an in-memory link's GSO). ``native/segment.c`` makes
  the same pieces and writes them to an fd that has no virtio-net header (software GSO: see
  ``fdbased``); ``segment_tcp`` is its reference and its fallback where the extension is not built.
- A TUN/TAP device opened with IFF_VNET_HDR takes a virtio-net header in front of every frame
  (``gso_header``) and the kernel cuts and checksums. The same header comes in front of what the
  kernel hands us: super-segments of its own TCP (``gso_type`` TCPV4/TCPV6, passed up whole, their
  checksum partial) and packets whose checksum it left to us (``F_NEEDS_CSUM``: ``complete_checksum``).
"""

from __future__ import annotations

import struct

from ..header import tcp
from ..header.checksum import checksum

MASK = 0xFFFFFFFF

# <linux/virtio_net.h> struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start,
# csum_offset. TUN/TAP use the legacy layout, in the host's byte order (unless TUNSETVNETLE/BE).
VIRTIO_NET_HDR = struct.Struct("=BBHHHH")
VIRTIO_NET_HDR_SIZE = VIRTIO_NET_HDR.size      # 10, the kernel's default for TUN/TAP
F_NEEDS_CSUM = 1        # the checksum at csum_start + csum_offset holds only the pseudo-header sum
F_DATA_VALID = 2        # the checksum was verified
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_ECN = 0x80          # a TCP super-segment with CWR set (only if TUN_F_TSO_ECN was offered)
TCP_CHECKSUM_OFFSET = 16    # of the checksum field within the TCP header

# The header of a frame that needs nothing of the kernel: checksums complete, no segmentation.
NO_OFFLOAD = bytes(VIRTIO_NET_HDR_SIZE)


def segment_tcp(packet: bytes | memoryview, gso_size: int) -> list[bytes]:
    """The wire segments of a raw IPv4/IPv6 TCP ``packet`` (IPv6 without extension headers), cut
    every ``gso_size`` payload bytes as Linux's ``tcp_gso_segment`` cuts. A packet with no payload
    is one segment.

    Raises ValueError if ``packet`` is not such a packet, ``gso_size`` is not positive or the
    segments would not fit their IP length field: the caller counts a drop. ``native/segment.c`` makes the same pieces, byte for byte, straight to an fd.
    """
    if gso_size < 1:
        raise ValueError(f"segment size {gso_size}")
    packet = memoryview(packet)
    ip_len, tcp_len = _tcp_header_lengths(packet)
    v4 = packet[0] >> 4 == 4
    src, dst = (packet[12:16], packet[16:20]) if v4 else (packet[8:24], packet[24:40])
    ip_hdr = packet[:ip_len]
    tcp_hdr = packet[ip_len:ip_len + tcp_len]
    payload = packet[ip_len + tcp_len:]
    size = len(payload)
    if (ip_len if v4 else 0) + tcp_len + min(size, gso_size) > 0xFFFF:
        raise ValueError("segments too long for their IP length field")
    seq = int.from_bytes(tcp_hdr[4:8], "big")
    flags = tcp_hdr[13]
    ident = int.from_bytes(ip_hdr[4:6], "big") if v4 else 0
    out = []
    for index, offset in enumerate(range(0, max(size, 1), gso_size)):
        chunk = payload[offset:offset + gso_size]
        th = bytearray(tcp_hdr)
        th[4:8] = ((seq + offset) & MASK).to_bytes(4, "big")
        th[13] = flags & ~((tcp.FIN | tcp.PSH if offset + gso_size < size else 0) | (tcp.CWR if index else 0))
        th[16:18] = b"\x00\x00"
        tcp.set_checksum(th, tcp.compute_checksum(bytes(src), bytes(dst), th, chunk))
        ih = bytearray(ip_hdr)
        if v4:
            ih[2:4] = (ip_len + tcp_len + len(chunk)).to_bytes(2, "big")
            ih[4:6] = ((ident + index) & 0xFFFF).to_bytes(2, "big")
            ih[10:12] = b"\x00\x00"
            ih[10:12] = (~checksum(ih) & 0xFFFF).to_bytes(2, "big")
        else:
            ih[4:6] = (tcp_len + len(chunk)).to_bytes(2, "big")
        out.append(bytes(ih) + bytes(th) + bytes(chunk))
    return out


def _tcp_header_lengths(packet: memoryview) -> tuple[int, int]:
    """The IP and TCP header lengths of a raw IPv4/IPv6 TCP packet; ValueError if it is not one."""
    version = packet[0] >> 4 if len(packet) else 0
    if version == 4:
        ip_len = (packet[0] & 0x0F) * 4
        if ip_len < 20 or len(packet) < ip_len or packet[9] != tcp.PROTOCOL_NUMBER:
            raise ValueError("not an IPv4 TCP packet")
    elif version == 6:
        ip_len = 40
        if len(packet) < ip_len or packet[6] != tcp.PROTOCOL_NUMBER:
            raise ValueError("not an IPv6 TCP packet without extension headers")
    else:
        raise ValueError(f"IP version {version}")
    if len(packet) < ip_len + tcp.MIN_SIZE:
        raise ValueError("truncated TCP header")
    tcp_len = (packet[ip_len + 12] >> 4) * 4
    if tcp_len < tcp.MIN_SIZE or len(packet) < ip_len + tcp_len:
        raise ValueError(f"TCP header length {tcp_len}")
    return ip_len, tcp_len


def gso_header(headers: memoryview, link_header_length: int, gso_size: int) -> bytes:
    """The virtio-net header asking the kernel to cut a TCP super-segment into ``gso_size`` pieces.

    ``headers``: the frame's headers — link (``link_header_length`` bytes), IP, TCP — with the TCP
    checksum field holding the pseudo-header sum, as the stack leaves it in a super-segment.
    """
    ip = link_header_length
    version = headers[ip] >> 4
    ip_len = (headers[ip] & 0x0F) * 4 if version == 4 else 40
    tcp_start = ip + ip_len
    tcp_len = (headers[tcp_start + 12] >> 4) * 4
    return VIRTIO_NET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4 if version == 4 else GSO_TCPV6, tcp_start + tcp_len,
                               gso_size, tcp_start, TCP_CHECKSUM_OFFSET)


def complete_checksum(frame: memoryview, csum_start: int, csum_offset: int) -> bool:
    """Fill in the checksum the kernel left partial (F_NEEDS_CSUM): the sum from ``csum_start`` to the
    end, seeded with the pseudo-header sum already in the field, stored complemented at
    ``csum_start + csum_offset`` — what the device would have done. False if that lies outside the frame.

    A zero result is stored as 0xFFFF, its one's-complement twin: both verify, and for UDP a zero
    would mean "no checksum".
    """
    field = csum_start + csum_offset
    if field + 2 > len(frame):
        return False
    value = ~checksum(frame[csum_start:]) & 0xFFFF or 0xFFFF
    frame[field] = value >> 8
    frame[field + 1] = value & 0xFF
    return True
