"""Receive coalescing (Linux's GRO): consecutive TCP segments of one flow in a batch of received frames
become one super-segment before the stack sees them.

The stack's cost is per packet, not per byte: a batch of 44 wire segments of one bulk transfer walks
the IP and TCP receive paths 44 times, and its ACKs go out per two segments. Merged, it walks them
once, as a frame the kernel hands a TUN with offloads does (see ``link.gso``): ``gso_size`` set to the
wire segment size and the TCP checksum field holding the pseudo-header sum of the whole (partial, as
Linux's CHECKSUM_PARTIAL), so that forwarding it on re-segments it exactly.

Merged only what Linux's ``tcp_gro_receive`` merges, so that the super-segment means what its pieces
meant: IPv4 without options or fragmentation (valid header checksum) or IPv6 without extension
headers; TCP with only ACK (PSH on the last piece), payload, a valid checksum each, and the same link
header, addresses, ports, TOS/DF/TTL (traffic class/flow label/hop limit), acknowledgement number,
window and options byte for byte (so timestamps must match); each piece starting where the previous
ended (and its IPv4 identification one more) and as long as the first, except a shorter last piece.
Cut again (``header.gso.segment_tcp``), the super-segment gives back exactly the frames that came.
Anything else passes through unchanged, in order, for the stack to accept or count as it always does.

The per-frame work (parsing, checksums, the rules) runs in C where ``netsock._native`` was built
(native/gro.c: one call plans the batch, one more per super-segment writes it); the pure-Python
``py_coalesce`` is the reference it must match byte for byte, and the fallback.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..header.checksum import checksum, combine, pseudo_header_checksum
from ..stack.packet_buffer import Buffer, PacketBuffer

__all__ = ["coalesce", "coalesce_batch", "mark_udp_flows", "py_coalesce"]

_ACK, _PSH = 0x10, 0x08
_TCP = 6
_MAX_IP_PAYLOAD = 0xFFFF        # IPv4 total length and IPv6 payload length are 16-bit fields


class _Run:
    """Segments merged so far: the first frame's headers, their payloads, what may follow."""

    __slots__ = ("frame", "headers", "key", "payloads", "size", "next_seq", "next_ident", "length", "ended", "push",
                 "v4", "link_header")

    def __init__(self, frame: memoryview, headers: int, key: bytes, payload: memoryview, seq: int, ident: int,
                 push: bool, v4: bool, link_header: int) -> None:
        self.frame = frame
        self.headers = headers              # link + IP + TCP header bytes of the first frame
        self.key = key
        self.payloads = [payload]
        self.size = len(payload)            # the wire segment size: every piece but the last has it
        self.next_seq = (seq + len(payload)) & 0xFFFFFFFF
        self.next_ident = (ident + 1) & 0xFFFF
        self.length = len(payload)
        self.ended = push
        self.push = push
        self.v4 = v4
        self.link_header = link_header

    def take(self, key: bytes, payload: memoryview, seq: int, ident: int, push: bool) -> bool:
        size = len(payload)
        ip_length = self.headers - self.link_header + self.length + size     # IPv4 total length
        if (self.ended or key != self.key or seq != self.next_seq or ident != self.next_ident and ident >= 0
                or size > self.size or ip_length > _MAX_IP_PAYLOAD + (0 if self.v4 else 40)):   # IPv6: payload length
            return False
        self.payloads.append(payload)
        self.length += size
        self.next_seq = (seq + size) & 0xFFFFFFFF
        self.next_ident = (ident + 1) & 0xFFFF
        self.ended = push or size < self.size
        self.push = push
        return True

    def packet(self) -> PacketBuffer:
        if len(self.payloads) == 1:
            return PacketBuffer.inbound(self.frame)
        link, headers = self.link_header, self.headers
        head = bytearray(self.frame[:headers])
        ip = memoryview(head)[link:]
        if self.v4:
            ip_header = 20
            ip[2:4] = (headers - link + self.length).to_bytes(2, "big")
            ip[10:12] = b"\0\0"
            ip[10:12] = (~checksum(ip[:20]) & 0xFFFF).to_bytes(2, "big")
            src, dst = ip[12:16], ip[16:20]
        else:
            ip_header = 40
            ip[4:6] = (headers - link - 40 + self.length).to_bytes(2, "big")
            src, dst = ip[8:24], ip[24:40]
        tcp = ip[ip_header:]
        if self.push:
            tcp[13] |= _PSH
        # Partial, as a GSO super-segment's: the pseudo-header sum only (see link.gso).
        tcp[16:18] = pseudo_header_checksum(_TCP, bytes(src), bytes(dst), len(tcp) + self.length).to_bytes(2, "big")
        pkt = PacketBuffer.inbound(b"".join((head, *self.payloads)))
        pkt.gso_size = self.size
        return pkt


def py_coalesce(frames: Sequence[Buffer], link_header: int = 0) -> list[PacketBuffer]:
    """The frames of one batch as the stack should take them: runs of one TCP flow's consecutive
    segments merged (``gso_size`` set), everything else as it came, in order. ``link_header``: bytes of
    link header in front of the IP header (14 for Ethernet; the EtherType is part of what must match)."""
    out: list[PacketBuffer] = []
    run: _Run | None = None
    for frame in frames:
        view = memoryview(frame)
        parsed = _parse(view, link_header)
        if parsed is not None:
            key, payload, seq, ident, push, headers, v4 = parsed
            if run is not None and run.take(key, payload, seq, ident, push):
                continue
        if run is not None:
            out.append(run.packet())
            run = None
        if parsed is None:
            out.append(PacketBuffer.inbound(view))
        else:
            run = _Run(view, headers, key, payload, seq, ident, push, v4, link_header)
    if run is not None:
        out.append(run.packet())
    return out


def _parse(frame: memoryview, link: int) -> tuple[bytes, memoryview, int, int, bool, int, bool] | None:
    """(merge key, payload, sequence number, IPv4 identification, PSH, header bytes, IPv4?) of a
    mergeable TCP segment."""
    ip = frame[link:]
    if len(ip) < 40:
        return None
    version = ip[0] >> 4
    if version == 4:
        if ip[0] != 0x45 or ip[9] != _TCP or ip[6] & 0x3F or ip[7]:    # options, MF or an offset, not TCP
            return None
        total = int.from_bytes(ip[2:4], "big")
        if not 40 <= total <= len(ip) or checksum(ip[:20]) != 0xFFFF:
            return None
        ip_header, src, dst = 20, ip[12:16], ip[16:20]
        ident = int.from_bytes(ip[4:6], "big")
        # TOS, DF and TTL must match; the identification must count up (checked by the run).
        ip_key = bytes(ip[1:2]) + bytes(ip[6:7]) + bytes(ip[8:9]) + bytes(ip[12:20])
    elif version == 6:
        if ip[6] != _TCP:
            return None
        total = 40 + int.from_bytes(ip[4:6], "big")
        if not 60 <= total <= len(ip):
            return None
        ip_header, src, dst, ident = 40, ip[8:24], ip[24:40], -1     # (IPv6 has none)
        ip_key = bytes(ip[0:4]) + bytes(ip[7:40])
    else:
        return None
    tcp = ip[ip_header:total]
    offset = (tcp[12] >> 4) * 4
    flags = tcp[13]
    if offset < 20 or offset >= len(tcp) or flags & ~_PSH != _ACK:     # only ACK(+PSH), with payload
        return None
    if combine(pseudo_header_checksum(_TCP, bytes(src), bytes(dst), len(tcp)), checksum(tcp)) != 0xFFFF:
        return None
    key = b"".join((frame[:link], ip_key, tcp[0:4], tcp[8:13], tcp[14:16], tcp[20:offset]))
    return (key, tcp[offset:], int.from_bytes(tcp[4:8], "big"), ident, bool(flags & _PSH), link + ip_header + offset,
            version == 4)


def _native_coalesce(frames: Sequence[Buffer], link_header: int = 0) -> list[PacketBuffer]:
    """``py_coalesce`` with the per-frame work in C (native/gro.c): Python's work is per packet out."""
    count = len(frames)
    if count < 2:
        return list(map(PacketBuffer.inbound, frames))
    new, from_buffer, inbound = _ffi.new, _ffi.from_buffer, PacketBuffer.inbound
    buffers = list(map(from_buffer, frames))        # each pins its frame while C reads it
    pointers = new("uint8_t *[]", buffers)
    starts = new("uint32_t[]", count)
    ends = new("uint32_t[]", count)
    runs = new("ns_gro_run[]", count // 2)
    planned = _lib.ns_gro_plan(pointers, new("uint32_t[]", list(map(len, buffers))), count, link_header, starts,
                               ends, runs)
    if not planned:
        return list(map(inbound, frames))
    out: list[PacketBuffer] = []
    done = 0
    for i in range(planned):
        run = runs + i
        first = run.first
        out += map(inbound, frames[done:first])
        merged = bytearray(run.headers + run.length)
        _lib.ns_gro_merge(pointers, link_header, starts, ends, run, from_buffer(merged))
        pkt = inbound(merged)
        pkt.gso_size = run.size
        out.append(pkt)
        done = first + run.count
    out += map(inbound, frames[done:])
    return out


try:  # pragma: no cover - which branch runs depends on the build
    from netsock._native import ffi as _ffi, lib as _lib  # type: ignore[import-not-found]
except ImportError:  # no compiler where this was installed
    coalesce = py_coalesce
else:  # (a build from before native/gro.c lacks the function)
    coalesce = _native_coalesce if hasattr(_lib, "ns_gro_plan") else py_coalesce


def coalesce_batch(batch: Sequence[Buffer | tuple[Buffer, int]], link_header: int = 0) -> list[PacketBuffer]:
    """``coalesce`` for a batch in which super-segments also came whole, as (packet, gso_size) from a
    link that passes them on uncut (``ChannelEndpoint(cut_super_segments=False)``): those are taken
    as they are, in their place; the frames between them are coalesced."""
    out: list[PacketBuffer] = []
    frames: list[Buffer] = []
    for item in batch:
        if item.__class__ is tuple:
            if frames:
                out += coalesce(frames, link_header)
                frames = []
            packet, gso_size = item     # type: ignore[misc]
            pkt = PacketBuffer.inbound(packet)
            pkt.gso_size = gso_size
            out.append(pkt)
        else:
            frames.append(item)         # type: ignore[arg-type]
    if frames:
        out += coalesce(frames, link_header)
    return out


_UDP = 17
_UDP_GRO_MAX_SEGMENTS = 64      # Linux's UDP_GRO_CNT_MAX


def mark_udp_flows(packets: list[PacketBuffer], link_header: int, receiver: object) -> None:
    """UDP's GRO, as Linux's udp_gro_receive merges for a socket with UDP_GRO: consecutive datagrams of one
    flow in a batch (the same link header, addresses and ports, TOS, DF and TTL, or traffic class, flow label
    and hop limit; unfragmented, without IPv4 options), each as long as the first but a shorter last, at most
    64 of them and 64 KB, are marked as the pieces of one super-datagram (``PacketBuffer.gro``). They stay
    apart: a UDP_GRO socket joins them as it queues them, any other takes them one by one, as they came.
    Only while ``receiver`` (the link's dispatcher, a NIC) says a UDP_GRO socket is above it
    (``NetworkDispatcher.udp_gro``): otherwise the work would serve nobody."""
    if len(packets) < 2 or not getattr(receiver, "udp_gro", False):
        return
    key: bytes | None = None
    first: PacketBuffer | None = None
    group = object()
    size = count = total = 0
    ended = False
    for pkt in packets:
        flow = None if pkt.gro is not None or pkt.gso_size else _udp_flow(pkt.data, link_header)
        if flow is None:
            key = None
            continue
        flow_key, length = flow
        if flow_key == key and not ended and length <= size and count < _UDP_GRO_MAX_SEGMENTS and \
                total + length <= _MAX_IP_PAYLOAD - 8:
            if count == 1:
                first.gro = (group, size, 0)    # type: ignore[union-attr]
            pkt.gro = (group, size, count)
            count += 1
            total += length
            ended = length < size
        else:
            key, first, group, size, count, total, ended = flow_key, pkt, object(), length, 1, length, False


def _udp_flow(data: memoryview, link: int) -> tuple[bytes, int] | None:
    """(what GRO compares of a UDP datagram's headers, its payload length), or None for anything else."""
    if len(data) < link + 48:
        return None
    version = data[link] >> 4
    if version == 4:
        if data[link] != 0x45 or data[link + 9] != _UDP or data[link + 6] & 0x3F or data[link + 7]:
            return None     # options, another protocol, or a fragment
        return (bytes(data[:link + 2]) + bytes(data[link + 6:link + 9]) + bytes(data[link + 12:link + 24]),
                (data[link + 24] << 8 | data[link + 25]) - 8)
    if version == 6 and data[link + 6] == _UDP:
        return (bytes(data[:link + 4]) + bytes(data[link + 7:link + 44]),
                (data[link + 44] << 8 | data[link + 45]) - 8)
    return None
