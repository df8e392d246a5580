"""Software GSO: a TCP super-segment cut as the kernel cuts it, and TCP using it end to end."""

from __future__ import annotations

import hashlib

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.packet import Raw

from netsock.header.checksum import pseudo_header_checksum
from netsock.header.gso import segment_tcp, segment_udp, segments_to_forward, split_tcp
from netsock.header.checksum import complete_checksum
from netsock.stack import ManualClock
from netsock.tcpip import Address, ErrConnectStarted, ErrWouldBlock, FullAddress

from conftest import checksums_valid, gso_pair


@pytest.mark.parametrize("layer", [IP(src="192.0.2.1", dst="192.0.2.2", id=100),
                                   IPv6(src="2001:db8::1", dst="2001:db8::2")], ids=["v4", "v6"])
def test_a_super_segment_is_cut_into_checksummed_segments(layer) -> None:
    payload = bytes(range(256)) * 20   # 5120 bytes: three full 1448-byte segments and a 776-byte tail
    big = bytes(layer / TCP(sport=1, dport=2, seq=2**32 - 2000, flags="PAF") / Raw(payload))
    pieces = [(IPv6 if layer.version == 6 else IP)(p) for p in segment_tcp(big, 1448)]
    assert [len(p[Raw].load) for p in pieces] == [1448, 1448, 1448, 776]
    assert [p[TCP].seq for p in pieces] == [(2**32 - 2000 + i * 1448) % 2**32 for i in range(4)]  # across the wrap
    assert [str(p[TCP].flags) for p in pieces] == ["A", "A", "A", "FPA"]
    assert b"".join(p[Raw].load for p in pieces) == payload
    for p in pieces:
        raw = bytes(p)
        if layer.version == 4:
            assert checksums_valid(raw)
        else:
            recomputed = IPv6(raw)
            del recomputed[TCP].chksum
            assert IPv6(bytes(recomputed))[TCP].chksum == p[TCP].chksum
    if layer.version == 4:
        assert [p.id for p in pieces] == [100, 101, 102, 103]


def test_a_big_tcp_super_segment_splits_into_64_kb_ones_that_cut_as_the_whole_would() -> None:
    """What a link writes when the kernel refuses an IPv4 super-segment over 64 KB: pieces of whole
    segments, checksums partial, that the kernel's cutting turns into the very wire segments."""
    payload = bytes(range(256)) * 800    # 204,800 bytes: 141 full 1448-byte segments and a tail
    big = bytearray(bytes(IP(src="192.0.2.1", dst="192.0.2.2", id=65500, len=0)
                          / TCP(sport=1, dport=2, seq=2**32 - 5000, flags="CPA") / Raw(payload)))
    big[36:38] = pseudo_header_checksum(6, bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), 20 + len(payload)
                                        ).to_bytes(2, "big")   # partial, as the stack leaves it
    pieces = split_tcp(big, 1448, 65536)
    assert [len(piece) - 40 for piece in pieces] == [45 * 1448] * 3 + [len(payload) - 3 * 45 * 1448]
    assert [IP(piece).len for piece in pieces] == [len(piece) for piece in pieces]
    assert [str(IP(piece)[TCP].flags) for piece in pieces] == ["AC", "A", "A", "PA"]
    assert [wire for piece in pieces for wire in segment_tcp(piece, 1448)] == segment_tcp(big, 1448)
    for piece in pieces:
        frame = bytearray(piece)
        assert complete_checksum(memoryview(frame), 20, 16) and checksums_valid(bytes(frame))


def test_cwr_goes_on_the_first_piece_only() -> None:
    """As Linux's tcp_gso_segment: the congestion-window reduction is signalled once."""
    big = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1, dport=2, flags="CEPA") / Raw(bytes(3000)))
    assert [str(IP(p)[TCP].flags) for p in segment_tcp(big, 1000)] == ["AEC", "AE", "PAE"]


def test_a_super_segment_without_payload_is_one_segment() -> None:
    packet = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=1, dport=2, flags="FA", chksum=0))
    (piece,) = segment_tcp(packet, 1448)
    assert IPv6(piece)[TCP].flags == "FA"
    assert piece == bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=1, dport=2, flags="FA"))


_V4 = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1, dport=2) / Raw(bytes(3000)))


@pytest.mark.parametrize("packet, gso_size", [
    (b"", 1448),
    (b"\x50" + _V4[1:], 1448),                                                       # IP version 5
    (bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP() / Raw(bytes(3000))), 1448),
    (bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / TCP() / Raw(bytes(3000))), 1448),
    (_V4[:30], 1448),                                                                 # TCP header cut short
    (_V4[:32] + b"\x40" + _V4[33:], 1448),                                            # TCP data offset 4
    (_V4, 0),
], ids=["empty", "not IP", "UDP", "IPv6 extension header", "truncated", "TCP offset", "segment size 0"])
def test_what_is_not_a_tcp_super_segment_is_refused(packet: bytes, gso_size: int) -> None:
    with pytest.raises(ValueError):
        segment_tcp(packet, gso_size)


def test_tcp_hands_a_gso_link_super_segments_and_the_bytes_arrive() -> None:
    clock = ManualClock()
    stacks, links = gso_pair(clock)
    writes = []
    links[0].write_packet = (lambda original: lambda r, p, pkt: (writes.append(pkt.gso_size), original(r, p, pkt)))(
        links[0].write_packet)

    def pump() -> bool:
        moved = False
        for src, dst in ((links[0], links[1]), (links[1], links[0])):
            for info in src.drain():
                dst.inject(info.protocol, info.data)
                moved = True
        return moved

    server = stacks[1].new_endpoint(6, 0x0800)
    server.bind(FullAddress(0, b"", 80))
    server.listen(1)
    client = stacks[0].new_endpoint(6, 0x0800)
    with pytest.raises(ErrConnectStarted):
        client.connect(FullAddress(0, Address.parse("192.0.2.2"), 80))
    while pump():
        pass
    conn, _ = server.accept()
    data = bytes(range(256)) * 8192      # 2 MiB
    sent, received = 0, bytearray()
    while len(received) < len(data):
        try:
            sent += client.write(data[sent:sent + 65536]) if sent < len(data) else 0
        except ErrWouldBlock:
            pass
        if not pump():
            clock.advance(0.01)
        try:
            received += conn.read(1 << 20)
        except ErrWouldBlock:
            pass
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
    assert max(writes) == client.snd.mss, "data went out as super-segments cut at the MSS"
    assert len(writes) < len(data) // client.snd.mss // 10


def test_a_router_sends_a_super_segment_whole_only_to_a_link_that_cuts_it_into_fitting_pieces() -> None:
    big = bytes(IP(src="192.0.2.1", dst="198.51.100.2") / TCP(sport=1, dport=2, flags="PA") / Raw(bytes(5000)))
    assert segments_to_forward(big, 20, 1448, 1500, link_cuts=True) is None
    assert segments_to_forward(big, 20, 1448, 1500, link_cuts=False) == segment_tcp(big, 1448)
    assert segments_to_forward(big, 20, 1448, 1400, link_cuts=True) == segment_tcp(big, 1448)  # pieces too big
    with pytest.raises(ValueError):
        segments_to_forward(big[:30], 20, 1448, 1500, link_cuts=True)


@pytest.mark.parametrize("layer", [IP(src="192.0.2.1", dst="192.0.2.2", id=65534),
                                   IPv6(src="2001:db8::1", dst="2001:db8::2")], ids=["v4", "v6"])
def test_a_udp_super_datagram_is_cut_into_checksummed_datagrams(layer) -> None:
    payload = bytes(range(256)) * 17                # 4,352 bytes: three of 1,400 and one of 152
    big = bytes(layer / UDP(sport=4000, dport=5000, chksum=0x1234) / Raw(payload))
    pieces = [(IPv6 if layer.version == 6 else IP)(p) for p in segment_udp(big, 1400)]
    assert [len(p[Raw].load) for p in pieces] == [1400, 1400, 1400, 152]
    assert b"".join(p[Raw].load for p in pieces) == payload
    for index, piece in enumerate(pieces):
        assert (piece[UDP].sport, piece[UDP].dport, piece[UDP].len) == (4000, 5000, 8 + len(piece[Raw].load))
        if layer.version == 4:
            assert checksums_valid(bytes(piece))
            assert piece.id == (65534 + index) & 0xFFFF and piece.len == 28 + len(piece[Raw].load)
        else:
            recomputed = IPv6(bytes(piece))
            del recomputed[UDP].chksum
            assert IPv6(bytes(recomputed))[UDP].chksum == piece[UDP].chksum
            assert piece.plen == 8 + len(piece[Raw].load)


@pytest.mark.parametrize("packet", [b"", bytes(IP() / TCP()), bytes(IP() / UDP())[:27],
                                    bytes(IPv6() / IPv6ExtHdrHopByHop() / UDP())])
def test_what_is_not_a_udp_super_datagram_is_refused(packet: bytes) -> None:
    with pytest.raises(ValueError):
        segment_udp(packet, 1000)
