"""Super-segments merged as a TUN with offloads is read (GRO at the super-segment level, native/gro.c's
ns_read_gro): which consecutive packets become one, what the one looks like, and that everything
else comes up exactly as it was read, however the reads fall across the reader's arenas.

The merging exists only in the C reader (the Python one reads packet by packet): these tests need
the extension, which every supported install builds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from netsock.header import ipv4
from netsock.header.checksum import checksum, pseudo_header_checksum
from netsock.header.gso import segment_tcp
from netsock.link import fdbased
from netsock.link.gso import F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VIRTIO_NET_HDR_SIZE

from test_fdbased_offload import Link, partial, vnet

pytestmark = pytest.mark.skipif(fdbased._native is None, reason="the merging reader is the C extension's")

MSS = 1448
SRC, DST = "192.0.2.1", "192.0.2.2"
HEADERS = 20 + 32       # IPv4 and TCP with timestamps


def piece(seq: int, segments: int = 10, *, ident: int = 1, flags: str = "A", sport: int = 40000, ts: int = 7,
          ack: int = 1, window: int = 512, ttl: int = 64, size: int | None = None, gso_size: int = MSS,
          v6: bool = False) -> bytes:
    """A TCP super-segment as the kernel hands it to a TUN with offloads: virtio-net header asking
    for segmentation, checksum partial, ``segments`` full segments of payload (or ``size`` bytes)."""
    size = segments * MSS if size is None else size
    payload = bytes((seq + i) & 0xFF for i in range(size))     # the stream's byte at each position
    layer = IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=ttl) if v6 else \
        IP(src=SRC, dst=DST, id=ident, ttl=ttl, flags="DF")
    options = [("NOP", None), ("NOP", None), ("Timestamp", (ts, 3))]
    packet = bytes(layer / TCP(sport=sport, dport=5001, seq=seq & 0xFFFFFFFF, ack=ack, flags=flags, window=window,
                               options=options) / Raw(payload))
    ip_len = 40 if v6 else 20
    header = vnet(F_NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, ip_len + 32, gso_size, ip_len, 16)
    return header + bytes(partial(packet))


def stream(start: int, length: int) -> bytes:
    return bytes((start + i) & 0xFF for i in range(length))


@pytest.fixture
def link() -> Iterator[Link]:
    lk = Link()
    yield lk
    lk.close()


def read_all(link: Link, *frames: bytes) -> list[bytes]:
    """Send ``frames`` as the kernel would, read them in one wake-up, and return what came up (the IP
    packets, behind no virtio-net header)."""
    for frame in frames:
        link.peer.send(frame)
    assert link.ep.dispatch_available() == len(frames)
    return [bytes(pkt.data) for pkt in link.rec.packets]


def tcp_payload(packet: bytes) -> bytes:
    return packet[HEADERS:]


def test_consecutive_super_segments_of_a_flow_come_up_as_one(link: Link) -> None:
    seq = 1000
    frames = [piece(seq, ident=1), piece(seq + 10 * MSS, ident=11), piece(seq + 20 * MSS, ident=21, flags="PA")]
    [merged] = read_all(link, *frames)
    assert len(merged) == HEADERS + 30 * MSS
    assert int.from_bytes(merged[2:4], "big") == len(merged)              # it fits a 16-bit total length
    assert checksum(merged[:20]) == 0xFFFF
    assert merged[20 + 13] == 0x18                                        # PSH from the last piece
    assert tcp_payload(merged) == stream(seq, 30 * MSS)
    # The partial checksum of the whole, and the same wire segments the three pieces stand for.
    assert int.from_bytes(merged[36:38], "big") == pseudo_header_checksum(
        6, merged[12:16], merged[16:20], len(merged) - 20)
    cut = [segment for frame in frames for segment in segment_tcp(frame[VIRTIO_NET_HDR_SIZE:], MSS)]
    assert segment_tcp(merged, MSS) == cut
    [pkt] = link.rec.packets
    assert pkt.gso_size == MSS
    stats = link.ep.stats
    assert (stats.rx_packets.value, stats.rx_super_segments.value, stats.rx_merged_super_segments.value) == (3, 1, 2)


def test_beyond_64k_the_total_length_is_zero_as_in_big_tcp(link: Link) -> None:
    frames = [piece(5 + 40 * MSS * i, 40, ident=1 + 40 * i) for i in range(3)]
    [merged] = read_all(link, *frames)
    assert len(merged) == HEADERS + 120 * MSS > ipv4.MAX_TOTAL_LENGTH
    assert merged[2:4] == b"\x00\x00" and checksum(merged[:20]) == 0xFFFF
    assert not ipv4.parse(merged)                                         # not without knowing it is BIG
    assert ipv4.parse(merged, big=True).total_length == len(merged)
    assert tcp_payload(merged) == stream(5, 120 * MSS)


def test_runs_merge_across_the_sequence_wrap(link: Link) -> None:
    start = (1 << 32) - 5 * MSS
    [merged] = read_all(link, piece(start), piece(start + 10 * MSS), piece(start + 20 * MSS))
    assert int.from_bytes(merged[24:28], "big") == start
    assert tcp_payload(merged) == stream(start, 30 * MSS)


def test_psh_on_a_piece_does_not_end_the_run(link: Link) -> None:
    """The kernel sets PSH on nearly every super-segment it hands a TUN; the whole keeps it."""
    [merged] = read_all(link, piece(0, flags="PA"), piece(10 * MSS, flags="PA"), piece(20 * MSS))
    assert merged[33] == 0x18 and tcp_payload(merged) == stream(0, 30 * MSS)


@pytest.mark.parametrize("second", [
    pytest.param(dict(seq=10 * MSS + 1), id="not the next sequence number"),
    pytest.param(dict(sport=40001), id="another flow"),
    pytest.param(dict(ts=8), id="another timestamp"),
    pytest.param(dict(ack=2), id="another acknowledgement"),
    pytest.param(dict(window=511), id="another window"),
    pytest.param(dict(ttl=63), id="another TTL"),
    pytest.param(dict(gso_size=1000, segments=0, size=10000), id="another segment size"),
    pytest.param(dict(flags="FA"), id="FIN"),
    pytest.param(dict(flags="RA"), id="RST"),
    pytest.param(dict(flags="UA"), id="URG"),
])
def test_what_does_not_continue_the_run_is_not_merged(link: Link, second: dict) -> None:
    fields = dict(seq=10 * MSS, ident=11) | second
    frames = [piece(0), piece(**fields)]
    assert read_all(link, *frames) == [frame[VIRTIO_NET_HDR_SIZE:] for frame in frames]
    assert link.ep.stats.rx_merged_super_segments.value == 0


def test_a_piece_short_of_a_whole_segment_ends_the_run(link: Link) -> None:
    """Merged after it, the next piece's segments would no longer be those the kernel meant."""
    frames = [piece(0, size=10 * MSS - 1), piece(10 * MSS - 1)]
    assert read_all(link, *frames) == [frame[VIRTIO_NET_HDR_SIZE:] for frame in frames]


def test_a_piece_with_a_bad_ip_checksum_is_not_merged(link: Link) -> None:
    second = bytearray(piece(10 * MSS))
    second[VIRTIO_NET_HDR_SIZE + 11] ^= 0xFF
    packets = read_all(link, piece(0), bytes(second))
    assert packets == [piece(0)[VIRTIO_NET_HDR_SIZE:], bytes(second[VIRTIO_NET_HDR_SIZE:])]


def test_ipv6_super_segments_are_not_merged(link: Link) -> None:
    """A merged one would need a jumbo payload option beyond 64 KB: left whole, as they came."""
    frames = [piece(0, v6=True), piece(10 * MSS, v6=True)]
    assert read_all(link, *frames) == [frame[VIRTIO_NET_HDR_SIZE:] for frame in frames]


def test_what_ends_a_run_comes_up_exactly_as_it_was_read(link: Link) -> None:
    """A packet read behind an open run lands with its headers apart from its payload; whatever it
    is, it must come up whole: another flow, a small segment, a gap, a plain packet."""
    small = vnet() + bytes(IP(src=SRC, dst=DST) / TCP(sport=40000, dport=5001, flags="A", seq=77, ack=1))
    frames = [piece(0), piece(10 * MSS), piece(20 * MSS, sport=40001), piece(30 * MSS, sport=40001), small,
              piece(40 * MSS), piece(70 * MSS), vnet() + b"\x45"]
    packets = read_all(link, *frames)
    first_run, other_flow, *rest = packets
    assert tcp_payload(first_run) == stream(0, 20 * MSS)
    assert tcp_payload(other_flow) == stream(20 * MSS, 20 * MSS)
    assert rest == [frame[VIRTIO_NET_HDR_SIZE:] for frame in frames[4:]]
    assert link.ep.stats.rx_merged_super_segments.value == 2


def test_merging_stops_at_gro_ipv4_max_size() -> None:
    lk = Link(gro_ipv4_max_size=100_000)
    try:
        frames = [piece(20 * MSS * i, 20) for i in range(4)]     # 29,012 bytes each: three fit, four do not
        first, second = read_all(lk, *frames)
        assert len(first) == HEADERS + 60 * MSS and tcp_payload(first) == stream(0, 60 * MSS)
        assert second == frames[3][VIRTIO_NET_HDR_SIZE:]
    finally:
        lk.close()


def test_64k_or_less_turns_merging_off() -> None:
    lk = Link(gro_ipv4_max_size=65536)
    try:
        frames = [piece(0, 5), piece(5 * MSS, 5)]
        assert read_all(lk, *frames) == [frame[VIRTIO_NET_HDR_SIZE:] for frame in frames]
    finally:
        lk.close()


def test_a_truncated_read_inside_a_run_is_dropped_and_the_run_goes_on(link: Link) -> None:
    too_long = vnet() + bytes([0x60]) + bytes(40 + 65535)
    [merged] = read_all(link, piece(0), too_long, piece(10 * MSS))
    assert tcp_payload(merged) == stream(0, 20 * MSS)
    assert link.ep.stats.rx_too_long.value == 1


def test_reads_fill_arena_after_arena_and_what_came_up_stays_intact(link: Link) -> None:
    """More than an arena holds, in one wake-up and over several: every frame handed up keeps its
    bytes while later reads go on, merged runs included."""
    sent = []
    for wake_up in range(3):
        frames = [piece(30 * MSS * k, 30, ident=wake_up) if k % 3 else vnet() + bytes(
            IP(src=SRC, dst=DST, id=k) / TCP(sport=40002, dport=5001, flags="A") / Raw(bytes([k]) * (k * 700)))
            for k in range(40)]
        for frame in frames:
            link.peer.send(frame)
            sent.append(frame)
        while link.ep.dispatch_available():
            pass
    # Reassemble: the plain packets exactly, the flow's payload as the stream it was.
    plain = [bytes(p.data) for p in link.rec.packets if bytes(p.data)[20:22] == (40002).to_bytes(2, "big")]
    assert plain == [frame[VIRTIO_NET_HDR_SIZE:] for frame in sent if frame[0] != F_NEEDS_CSUM]
    flow = [bytes(p.data) for p in link.rec.packets if bytes(p.data)[20:22] == (40000).to_bytes(2, "big")]
    for packet in flow:
        seq = int.from_bytes(packet[24:28], "big")
        assert tcp_payload(packet) == stream(seq, len(packet) - HEADERS)
    assert sum(len(p) - HEADERS for p in flow) == sum(
        len(f) - VIRTIO_NET_HDR_SIZE - HEADERS for f in sent if f[0] == F_NEEDS_CSUM)
    assert link.ep.stats.rx_merged_super_segments.value > 0
