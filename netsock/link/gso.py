"""Generic segmentation offload done in software: cut a TCP super-segment into wire segments.

A link that advertises LinkCapabilities.HARDWARE_GSO accepts one TCP packet carrying up to 64 KB
with ``pkt.gso_size`` set to the wire segment size, so the stack walks its send path once per 64 KB
instead of once per MSS (the kernel's GSO/TSO contract). A TUN device with virtio-net headers does
the cutting in the kernel; an in-memory link does it here, exactly as the kernel would: each piece
gets the headers of the original with its own sequence number, IP length and identification, FIN
and PSH only on the last, and fresh checksums.
"""

from __future__ import annotations

from ..header import tcp
from ..header.checksum import checksum

MASK = 0xFFFFFFFF


def segment_tcp(packet: bytes | memoryview, gso_size: int) -> list[bytes]:
    """The wire segments of a raw IPv4/IPv6 TCP ``packet`` (IPv6 without extension headers)."""
    packet = memoryview(packet)
    v4 = packet[0] >> 4 == 4
    ip_len = (packet[0] & 0x0F) * 4 if v4 else 40
    src, dst = (packet[12:16], packet[16:20]) if v4 else (packet[8:24], packet[24:40])
    tcp_len = (packet[ip_len + 12] >> 4) * 4
    ip_hdr = packet[:ip_len]
    tcp_hdr = packet[ip_len:ip_len + tcp_len]
    payload = packet[ip_len + tcp_len:]
    seq = int.from_bytes(tcp_hdr[4:8], "big")
    flags = tcp_hdr[13]
    ident = int.from_bytes(ip_hdr[4:6], "big") if v4 else 0
    out = []
    size = len(payload)
    for index, offset in enumerate(range(0, size, gso_size)):
        chunk = payload[offset:offset + gso_size]
        th = bytearray(tcp_hdr)
        th[4:8] = ((seq + offset) & MASK).to_bytes(4, "big")
        if offset + gso_size < size:
            th[13] = flags & ~(tcp.FIN | tcp.PSH)
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

