"""Receive coalescing (link.gro): what Linux's GRO merges is merged into a super-segment that cuts back
into exactly the frames that came (so nothing is lost or changed on the way through a router), and
everything else passes through unchanged and in order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from netsock.header.checksum import checksum, combine, pseudo_header_checksum
from netsock.header.gso import segment_tcp
from netsock.link.gro import coalesce

V4 = IP(src="192.0.2.1", dst="192.0.2.2", id=100, flags="DF")
V6 = IPv6(src="2001:db8::1", dst="2001:db8::2")
ETHERNET = bytes.fromhex("020000000002" "020000000001" "0800")
TS = [("NOP", None), ("NOP", None), ("Timestamp", (1000, 2000))]


def wire(layer=V4, size: int = 5000, mss: int = 1448, seq: int = 1, ack: int = 7, window: int = 500,
         flags: str = "PA", options=TS, sport: int = 40000, ident: int = 100) -> list[bytes]:
    """The wire segments a sender's GSO makes of ``size`` bytes (seq/ack/window/options as given; IPv4
    identifications counting up from ``ident``)."""
    if layer is V4:
        layer = IP(src=V4.src, dst=V4.dst, id=ident, flags="DF")
    payload = (bytes(range(256)) * (size // 256 + 2))[seq % 256:seq % 256 + size]
    packet = layer / TCP(sport=sport, dport=80, seq=seq, ack=ack, flags=flags, window=window, options=options)
    return segment_tcp(bytes(packet / Raw(payload)), mss)


def outputs(frames: list[bytes], link: int = 0) -> list[tuple[bytes, int]]:
    return [(bytes(pkt.data), pkt.gso_size) for pkt in coalesce(frames, link)]


@pytest.mark.parametrize("layer", [V4, V6], ids=["v4", "v6"])
def test_a_run_of_one_flow_becomes_one_super_segment_that_cuts_back_into_the_same_frames(layer) -> None:
    frames = wire(layer, 5000, 1448)
    [(merged, gso_size)] = outputs(frames)
    assert gso_size == 1448 and len(frames) == 4
    assert segment_tcp(merged, gso_size) == frames
    parsed = (IP if layer is V4 else IPv6)(merged)
    assert len(parsed[Raw].load) == 5000 and str(parsed[TCP].flags) == "PA"
    if layer is V4:
        assert checksum(merged[:20]) == 0xFFFF and parsed.len == len(merged)
    # The TCP checksum is partial, as a GSO super-segment's: the pseudo-header sum alone.
    src, dst = (merged[12:16], merged[16:20]) if layer is V4 else (merged[8:24], merged[24:40])
    header = 20 if layer is V4 else 40
    assert int.from_bytes(merged[header + 16:header + 18], "big") == pseudo_header_checksum(
        6, src, dst, len(merged) - header)


def test_ethernet_frames_keep_their_link_header() -> None:
    frames = wire(V4, 3000, 1000)
    [(merged, gso_size)] = outputs([ETHERNET + f for f in frames], link=14)
    assert merged[:14] == ETHERNET and segment_tcp(merged[14:], gso_size) == frames


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 65_000), min_size=1, max_size=3), mss=st.integers(200, 1460),
       v6=st.booleans(), seq=st.integers(0, 2**32 - 1), timestamps=st.booleans())
def test_any_transfer_is_merged_losslessly_within_the_ip_length_limit(sizes, mss, v6, seq, timestamps) -> None:
    frames: list[bytes] = []
    for size in sizes:          # back-to-back super-segments of one stream
        frames += wire(V6 if v6 else V4, size, mss, seq=seq, options=TS if timestamps else [], flags="A",
                       ident=100 + len(frames))
        seq = (seq + size) % 2**32
    merged = outputs(frames)
    cut = [piece for data, gso_size in merged for piece in (segment_tcp(data, gso_size) if gso_size else [data])]
    assert cut == frames
    assert all(len(data) <= 65535 + (40 if v6 else 0) for data, _ in merged)


def test_runs_end_at_a_short_or_pushed_segment_and_a_new_one_starts() -> None:
    first = wire(size=2500, mss=1000)                       # 1000, 1000, 500 (PSH): ends the run
    second = wire(size=2000, mss=1000, seq=2501, ident=103)  # continues the stream: a new run
    merged = outputs(first + second)
    assert [(len(data) - 52, gso) for data, gso in merged] == [(2500, 1000), (2000, 1000)]


@pytest.mark.parametrize("change", [
    {"ack": 8}, {"window": 501}, {"options": [("NOP", None), ("NOP", None), ("Timestamp", (1001, 2000))]},
    {"sport": 40001}, {"seq": 3000}, {"ident": 200},
], ids=["ack", "window", "timestamp", "other flow", "gap", "IPv4 identification"])
def test_segments_that_differ_in_what_must_match_are_not_merged(change) -> None:
    first = wire(size=1000, mss=1000, flags="A")
    other = wire(**{"size": 1000, "mss": 1000, "seq": 1001, "ident": 101, **change})
    assert outputs(first + other) == [(first[0], 0), (other[0], 0)]


@pytest.mark.parametrize("flags", ["SA", "FA", "RA", "UA", "A"], ids=["SYN", "FIN", "RST", "URG", "pure ACK"])
def test_segments_with_other_flags_or_no_payload_pass_through(flags) -> None:
    data = wire(size=2000, mss=1000, flags="A")
    odd = bytes(V4 / TCP(sport=40000, dport=80, seq=2001, ack=7, flags=flags, window=500, options=TS)
                / Raw(b"" if flags == "A" else b"x"))
    assert outputs([*data, odd])[-1] == (odd, 0)


def test_what_the_stack_must_judge_passes_through_unchanged() -> None:
    good = wire(size=3000, mss=1000, flags="A")
    bad_tcp = bytearray(good[1])
    bad_tcp[-1] ^= 0xFF                                     # payload corrupted: TCP's checksum fails
    bad_ip = bytearray(good[1])
    bad_ip[8] -= 1                                          # TTL changed, header checksum not updated
    options = bytes(IP(src="192.0.2.1", dst="192.0.2.2", options=[b"\x01\x01\x01\x00"])
                    / TCP(sport=40000, dport=80, seq=1001, ack=7, flags="A", window=500, options=TS)
                    / Raw(bytes(1000)))
    fragment = bytes(IP(src="192.0.2.1", dst="192.0.2.2", flags="MF")
                     / TCP(sport=40000, dport=80, seq=1001, ack=7, flags="A", window=500, options=TS)
                     / Raw(bytes(1000)))
    for odd in (bytes(bad_tcp), bytes(bad_ip), options, fragment, b"\x45" + bytes(10), b""):
        assert outputs([good[0], odd, good[2]]) == [(good[0], 0), (odd, 0), (good[2], 0)]
    tcp = bad_tcp[20:]
    assert combine(pseudo_header_checksum(6, bad_tcp[12:16], bad_tcp[16:20], len(tcp)), checksum(tcp)) != 0xFFFF
