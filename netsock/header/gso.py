"""Super-packets cut into their wire packets: software GSO, as Linux's ``tcp_gso_segment`` (TCP) and
``__udp_gso_segment`` (UDP, whose super-datagrams a sender makes with UDP_SEGMENT).

A super-segment is one IPv4/IPv6 TCP packet carrying many segments' payload, its TCP checksum field
holding only the pseudo-header sum (Linux's CHECKSUM_PARTIAL; see ``link.gso``). Links cut what they
cannot hand over whole, and a router cuts a super-segment it received whole (from a TUN with
offloads, or coalesced by ``link.gro``) when the next hop's link cannot.
"""

from __future__ import annotations

from . import tcp, udp
from .checksum import checksum, pseudo_header_checksum

__all__ = ["segment", "segment_tcp", "segment_udp", "segments_to_forward", "split_tcp"]

MASK = 0xFFFFFFFF


def segment_tcp(packet: bytes | memoryview, gso_size: int, prefix: bytes | memoryview = b"") -> list[bytes]:
    """The wire segments of a raw IPv4/IPv6 TCP ``packet`` (IPv6 without extension headers), cut
    every ``gso_size`` payload bytes as Linux's ``tcp_gso_segment`` cuts, each behind ``prefix`` (a
    link header). A packet with no payload is one segment.

    Raises ValueError if ``packet`` is not such a packet, ``gso_size`` is not positive or the
    segments would not fit their IP length field: the caller counts a drop. ``native/segment.c``
    makes the same pieces, byte for byte, straight to an fd.
    """
    return _cut_tcp(packet, gso_size, 1, prefix)


def split_tcp(packet: bytes | memoryview, gso_size: int, max_packet: int) -> list[bytes]:
    """A TCP super-segment cut into smaller super-segments of whole ``gso_size`` segments, none over
    ``max_packet`` bytes, each with its checksum left partial as the stack leaves a super-segment's:
    what a link writes instead when the kernel refuses one larger than 64 KB (BIG TCP), cut so that
    the kernel, cutting each piece, makes the same wire segments the whole would have made."""
    packet = memoryview(packet)
    ip_len, tcp_len = _tcp_header_lengths(packet)
    per_piece = (max_packet - ip_len - tcp_len) // gso_size
    if per_piece < 1:
        raise ValueError(f"no {gso_size}-byte segment fits a {max_packet}-byte packet")
    return _cut_tcp(packet, gso_size, per_piece, b"")


def _cut_tcp(packet: bytes | memoryview, gso_size: int, per_piece: int, prefix: bytes | memoryview) -> list[bytes]:
    """Pieces of ``per_piece`` segments each: wire segments with full checksums (1), else
    super-segments with partial ones. In IPv4 the identification counts up per wire segment."""
    if gso_size < 1:
        raise ValueError(f"segment size {gso_size}")
    packet = memoryview(packet)
    ip_len, tcp_len = _tcp_header_lengths(packet)
    v4 = packet[0] >> 4 == 4
    src, dst = (packet[12:16], packet[16:20]) if v4 else (packet[8:24], packet[24:40])
    src, dst = bytes(src), bytes(dst)
    ip_hdr = packet[:ip_len]
    tcp_hdr = packet[ip_len:ip_len + tcp_len]
    payload = packet[ip_len + tcp_len:]
    size = len(payload)
    step = gso_size * per_piece
    if (ip_len if v4 else 0) + tcp_len + min(size, step) > 0xFFFF:
        raise ValueError("segments too long for their IP length field")
    seq = int.from_bytes(tcp_hdr[4:8], "big")
    flags = tcp_hdr[13]
    ident = int.from_bytes(ip_hdr[4:6], "big") if v4 else 0
    out = []
    for index, offset in enumerate(range(0, max(size, 1), step)):
        chunk = payload[offset:offset + step]
        th = bytearray(tcp_hdr)
        th[4:8] = ((seq + offset) & MASK).to_bytes(4, "big")
        th[13] = flags & ~((tcp.FIN | tcp.PSH if offset + step < size else 0) | (tcp.CWR if index else 0))
        th[16:18] = b"\x00\x00"
        if per_piece == 1:
            tcp.set_checksum(th, tcp.compute_checksum(src, dst, th, chunk))
        else:
            tcp.set_checksum(th, pseudo_header_checksum(tcp.PROTOCOL_NUMBER, src, dst, tcp_len + len(chunk)))
        ih = bytearray(ip_hdr)
        if v4:
            ih[2:4] = (ip_len + tcp_len + len(chunk)).to_bytes(2, "big")
            ih[4:6] = ((ident + index * per_piece) & 0xFFFF).to_bytes(2, "big")
            ih[10:12] = b"\x00\x00"
            ih[10:12] = (~checksum(ih) & 0xFFFF).to_bytes(2, "big")
        else:
            ih[4:6] = (tcp_len + len(chunk)).to_bytes(2, "big")
        out.append(b"".join((prefix, ih, th, chunk)))     # the payload copied once
    return out


def segment(frame: bytes | memoryview, gso_size: int, link_header_length: int = 0) -> list[bytes]:
    """The wire packets of a TCP super-segment or a UDP super-datagram (by its IP header's protocol);
    a ``frame`` that begins with a link header of ``link_header_length`` bytes gives pieces that each
    begin with a copy of it."""
    frame = memoryview(frame)
    prefix, packet = frame[:link_header_length], frame[link_header_length:]
    if len(packet) >= 40 and (packet[9] if packet[0] >> 4 == 4 else packet[6]) == udp.PROTOCOL_NUMBER:
        return segment_udp(packet, gso_size, prefix)
    return segment_tcp(packet, gso_size, prefix)


def segment_udp(packet: bytes | memoryview, gso_size: int, prefix: bytes | memoryview = b"") -> list[bytes]:
    """The datagrams of a raw IPv4/IPv6 UDP super-datagram (IPv6 without extension headers), one per
    ``gso_size`` payload bytes, as Linux's ``__udp_gso_segment`` cuts: each with the super-datagram's
    ports, its own UDP length and full checksum and, in IPv4, its own total length and identification
    (counting up), each behind ``prefix`` (a link header). The super-datagram's UDP length and checksum
    fields are not consulted (a sender's GSO leaves the checksum partial).

    Raises ValueError if ``packet`` is not such a packet or ``gso_size`` is not positive: the caller
    counts a drop.
    """
    if gso_size < 1:
        raise ValueError(f"segment size {gso_size}")
    packet = memoryview(packet)
    version = packet[0] >> 4 if len(packet) else 0
    if version == 4:
        ip_len = (packet[0] & 0x0F) * 4
        if ip_len < 20 or len(packet) < ip_len + udp.HEADER_SIZE or packet[9] != udp.PROTOCOL_NUMBER:
            raise ValueError("not an IPv4 UDP packet")
        src, dst = bytes(packet[12:16]), bytes(packet[16:20])
        ident = int.from_bytes(packet[4:6], "big")
    elif version == 6:
        ip_len = 40
        if len(packet) < ip_len + udp.HEADER_SIZE or packet[6] != udp.PROTOCOL_NUMBER:
            raise ValueError("not an IPv6 UDP packet without extension headers")
        src, dst = bytes(packet[8:24]), bytes(packet[24:40])
        ident = 0
    else:
        raise ValueError(f"IP version {version}")
    ip_hdr = packet[:ip_len]
    ports = bytes(packet[ip_len:ip_len + 4])
    payload = packet[ip_len + udp.HEADER_SIZE:]
    size = len(payload)
    out = []
    for index, offset in enumerate(range(0, max(size, 1), gso_size)):
        chunk = payload[offset:offset + gso_size]
        length = udp.HEADER_SIZE + len(chunk)
        uh = bytearray(ports + length.to_bytes(2, "big") + b"\0\0")
        total = ~checksum(chunk, checksum(uh, pseudo_header_checksum(udp.PROTOCOL_NUMBER, src, dst, length))) & 0xFFFF
        uh[6:8] = (total or 0xFFFF).to_bytes(2, "big")     # RFC 768: a computed zero is sent as all ones
        ih = bytearray(ip_hdr)
        if version == 4:
            ih[2:4] = (ip_len + length).to_bytes(2, "big")
            ih[4:6] = ((ident + index) & 0xFFFF).to_bytes(2, "big")
            ih[10:12] = b"\0\0"
            ih[10:12] = (~checksum(ih) & 0xFFFF).to_bytes(2, "big")
        else:
            ih[4:6] = length.to_bytes(2, "big")
        out.append(b"".join((prefix, ih, uh, chunk)))
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


def segments_to_forward(packet: bytes | memoryview, ip_header_length: int, gso_size: int, mtu: int,
                        link_cuts: bool) -> list[bytes] | None:
    """What a router sends on for a TCP super-segment it received whole: None if it may leave as it is
    (the next link cuts super-segments, ``link_cuts``, and the wire segments fit ``mtu``), else its wire
    segments, each then forwarded as if it had come alone. ValueError if it is not a TCP super-segment."""
    if link_cuts:
        if len(packet) < ip_header_length + tcp.MIN_SIZE:
            raise ValueError("truncated TCP header")
        if ip_header_length + (packet[ip_header_length + 12] >> 4) * 4 + gso_size <= mtu:
            return None
    return segment_tcp(packet, gso_size)
