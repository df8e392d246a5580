"""An inbound TCP segment, validated once: header, checksum and options."""

from __future__ import annotations

from ...header import tcp
from ...header.checksum import checksum, combine, pseudo_header_checksum
from ...stack.packet_buffer import PacketBuffer
from ...tcpip.stats import TCPStats

SYN, FIN, RST, ACK, PSH, URG = tcp.SYN, tcp.FIN, tcp.RST, tcp.ACK, tcp.PSH, tcp.URG


class Segment:
    """Wire values of one segment. ``seq``/``ack`` are as received (mod 2**32); endpoints translate
    them to their own unwrapped sequence space."""

    __slots__ = ("src_port", "dst_port", "seq", "ack", "flags", "window", "options", "data", "src", "dst",
                 "nic_id")

    def __init__(self, hdr: tcp.TCPHeader, options: tcp.TCPOptions, data: memoryview, src: bytes, dst: bytes,
                 nic_id: int) -> None:
        self.src_port = hdr.src_port
        self.dst_port = hdr.dst_port
        self.seq = hdr.seq
        self.ack = hdr.ack
        self.flags = hdr.flags
        self.window = hdr.window
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
        return f"<Segment {self.src_port}->{self.dst_port} [{names}] seq={self.seq} ack={self.ack} len={len(self.data)}>"


def parse_segment(pkt: PacketBuffer, src: bytes, dst: bytes, stats: TCPStats, verify_checksum: bool) -> Segment | None:
    """Validate the segment in pkt.data; None (counted in ``stats``) if it is malformed or corrupt."""
    data = pkt.data
    hdr = tcp.parse(data)
    if not hdr:
        stats.invalid_segments_received.increment()
        return None
    # A super-segment from a GSO link carries a partial checksum (the pseudo-header sum), which the
    # device that built it vouches for: see ``link.gso``.
    if verify_checksum and not pkt.gso_size and combine(
            pseudo_header_checksum(tcp.PROTOCOL_NUMBER, src, dst, len(data)), checksum(data)) != 0xFFFF:
        stats.checksum_errors.increment()
        stats.invalid_segments_received.increment()
        return None
    offset = hdr.data_offset
    if offset > tcp.MIN_SIZE:
        options = tcp.parse_options(data[tcp.MIN_SIZE:offset])
        if not options:  # a Malformed value; TCPOptions tuples are always true
            stats.invalid_segments_received.increment()
            return None
    else:
        options = tcp.NO_OPTIONS
    stats.valid_segments_received.value += 1
    pkt.transport_header = data[:offset]
    return Segment(hdr, options, data[offset:], src, dst, pkt.nic_id)  # type: ignore[arg-type]
