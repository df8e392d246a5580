"""An inbound TCP segment, validated once: header, checksum and options."""

from __future__ import annotations

import struct

from ...header import Malformed, tcp
from ...header.checksum import checksum, combine, pseudo_header_checksum
from ...stack.packet_buffer import PacketBuffer
from ...tcpip.stats import TCPStats

SYN, FIN, RST, ACK, PSH, URG = tcp.SYN, tcp.FIN, tcp.RST, tcp.ACK, tcp.PSH, tcp.URG

# The header fields a segment keeps (the checksum is verified over the whole segment, the urgent
# pointer is not used), read in one unpack: every segment of every connection goes through here.
_FIELDS = struct.Struct("!HHIIBBH")
# Linux's tcp_fast_parse_options case, which nearly every segment after the handshake matches: the
# options area is NOP NOP TIMESTAMP and nothing else.
_ALIGNED_TIMESTAMP = struct.Struct("!III")
_NOP_NOP_TS = 0x0101080A
_TS_ONLY_SIZE = tcp.MIN_SIZE + _ALIGNED_TIMESTAMP.size
_new_options = tuple.__new__


class Segment:
    """Wire values of one segment. ``seq``/``ack`` are as received (mod 2**32); endpoints translate
    them to their own unwrapped sequence space."""

    # ``urgent``, the urgent pointer field, is set only on a segment with URG (read only then).
    __slots__ = ("src_port", "dst_port", "seq", "ack", "flags", "window", "options", "data", "src", "dst",
                 "nic_id", "urgent")
    urgent: int

    def __init__(self, src_port: int, dst_port: int, seq: int, ack: int, flags: int, window: int,
                 options: tcp.TCPOptions, data: memoryview, src: bytes, dst: bytes, nic_id: int) -> None:
        self.src_port = src_port
        self.dst_port = dst_port
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.options = options
        self.data = data
        self.src = src
        self.dst = dst
        self.nic_id = nic_id

    @property
    def length(self) -> int:
        """Sequence space the segment occupies: data plus one each for SYN and FIN."""
        return len(self.data) + (self.flags & SYN and 1) + (self.flags & FIN and 1)

    def __repr__(self) -> str:
        names = "".join(n for f, n in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."))
                        if self.flags & f)
        return (f"<Segment {self.src_port}->{self.dst_port} [{names}] seq={self.seq} ack={self.ack} "
                f"len={len(self.data)}>")


def parse_segment(pkt: PacketBuffer, src: bytes, dst: bytes, stats: TCPStats, verify_checksum: bool) -> Segment | None:
    """Validate the segment in pkt.data; None (counted in ``stats``) if it is malformed or corrupt.

    The checks are those of ``tcp.parse`` and ``tcp.parse_options``, done here in line.
    """
    data = pkt.data
    size = len(data)
    if size < tcp.MIN_SIZE:
        stats.invalid_segments_received.increment()
        return None
    src_port, dst_port, seq, ack, offset, flags, window = _FIELDS.unpack_from(data)
    offset = (offset >> 4) << 2
    if offset < tcp.MIN_SIZE or offset > size:
        stats.invalid_segments_received.increment()
        return None
    # A segment whose checksum the link completed or saw verified needs no second pass, and a
    # super-segment from a GSO link carries a partial checksum (the pseudo-header sum), which the
    # device that built it vouches for: see ``link.gso``.
    if verify_checksum and not pkt.checksum_verified and not pkt.gso_size and combine(
            pseudo_header_checksum(tcp.PROTOCOL_NUMBER, src, dst, size), checksum(data)) != 0xFFFF:
        stats.checksum_errors.increment()
        stats.invalid_segments_received.increment()
        return None
    if offset == tcp.MIN_SIZE:
        options = tcp.NO_OPTIONS
    else:
        if offset == _TS_ONLY_SIZE:
            lead, tsval, tsecr = _ALIGNED_TIMESTAMP.unpack_from(data, tcp.MIN_SIZE)
        else:
            lead = 0
        if lead == _NOP_NOP_TS:
            options = _new_options(tcp.TCPOptions, (None, None, False, (tsval, tsecr), ()))
        else:
            parsed = tcp.parse_options(data[tcp.MIN_SIZE:offset])
            if isinstance(parsed, Malformed):
                stats.invalid_segments_received.increment()
                return None
            options = parsed
    stats.valid_segments_received.value += 1
    pkt.transport_header = data[:offset]
    seg = Segment(src_port, dst_port, seq, ack, flags, window, options, data[offset:], src, dst, pkt.nic_id)
    if flags & URG:
        seg.urgent = int.from_bytes(data[18:20], "big")
    return seg
