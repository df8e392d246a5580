"""Segmentation offload: TCP super-segments (and UDP super-datagrams), cut in software or described
to the kernel.

A link that advertises LinkCapabilities.HARDWARE_GSO accepts one TCP packet carrying up to 64 KB
with ``pkt.gso_size`` set to the wire segment size, so the stack walks its send path once per 64 KB
instead of once per MSS (the kernel's GSO/TSO contract). As in Linux (CHECKSUM_PARTIAL), the TCP
checksum field of a super-segment holds only the folded pseudo-header sum over the super-segment's
length: whoever cuts it completes each piece's checksum.

Two ways to cut:

- ``segment_tcp`` (``header.gso``, so that forwarding can use it too) does it in Python, exactly as
  the kernel would: each piece gets the headers of the
  original with its own sequence number, IP length and identification, FIN and PSH only on the last,
  CWR only on the first, and fresh checksums (an in-memory link's GSO). ``native/segment.c`` makes
  the same pieces and writes them to an fd that has no virtio-net header (software GSO: see
  ``fdbased``); ``segment_tcp`` is its reference and its fallback where the extension is not built.
- A TUN/TAP device opened with IFF_VNET_HDR takes a virtio-net header in front of every frame
  (``gso_header``) and the kernel cuts and checksums. The same header comes in front of what the
  kernel hands us: super-segments of its own TCP (``gso_type`` TCPV4/TCPV6, passed up whole, their
  checksum partial), super-datagrams of its UDP (UDP_L4, cut into datagrams on the way in: the
  stack's UDP takes datagrams) and packets whose checksum it left to us (``F_NEEDS_CSUM``), which
  stay partial (``PacketBuffer.csum_offset``) until forwarding needs them whole
  (``header.checksum.complete_checksum``).
"""

from __future__ import annotations

import struct


# <linux/virtio_net.h> struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start,
# csum_offset. TUN/TAP use the legacy layout, in the host's byte order (unless TUNSETVNETLE/BE).
VIRTIO_NET_HDR = struct.Struct("=BBHHHH")
VIRTIO_NET_HDR_SIZE = VIRTIO_NET_HDR.size      # 10, the kernel's default for TUN/TAP
F_NEEDS_CSUM = 1        # the checksum at csum_start + csum_offset holds only the pseudo-header sum
F_DATA_VALID = 2        # the checksum was verified
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_UDP_L4 = 5          # a UDP super-datagram (UDP_SEGMENT), IPv4 or IPv6 (TUN_F_USO4/USO6)
GSO_ECN = 0x80          # a TCP super-segment with CWR set (only if TUN_F_TSO_ECN was offered)
TCP_CHECKSUM_OFFSET = 16    # of the checksum field within the TCP header
UDP_CHECKSUM_OFFSET = 6
_UDP = 17

# The header of a frame that needs nothing of the kernel: checksums complete, no segmentation.
NO_OFFLOAD = bytes(VIRTIO_NET_HDR_SIZE)


def transport_start(frame: memoryview, link_header_length: int) -> int:
    """Where the transport header of the IPv4 or IPv6 packet behind ``link_header_length`` bytes of
    ``frame`` starts (IPv6: behind the fixed header); -1 if it is neither."""
    if len(frame) <= link_header_length:
        return -1
    first = frame[link_header_length]
    version = first >> 4
    ip_len = (first & 0x0F) * 4 if version == 4 else 40 if version == 6 else -1
    return link_header_length + ip_len if ip_len > 0 else -1


def gso_header(headers: memoryview, link_header_length: int, gso_size: int) -> bytes:
    """The virtio-net header asking the kernel to cut a TCP super-segment or a UDP super-datagram
    into ``gso_size`` pieces.

    ``headers``: the frame's headers — link (``link_header_length`` bytes), IP, TCP or UDP — with the
    transport checksum field holding the pseudo-header sum, as the stack leaves it in a super-packet.
    """
    ip = link_header_length
    version = headers[ip] >> 4
    start = transport_start(headers, ip)
    if headers[ip + 9 if version == 4 else ip + 6] == _UDP:
        return VIRTIO_NET_HDR.pack(F_NEEDS_CSUM, GSO_UDP_L4, start + 8, gso_size, start, UDP_CHECKSUM_OFFSET)
    tcp_len = (headers[start + 12] >> 4) * 4
    return VIRTIO_NET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4 if version == 4 else GSO_TCPV6, start + tcp_len,
                               gso_size, start, TCP_CHECKSUM_OFFSET)
