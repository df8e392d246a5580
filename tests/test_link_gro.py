"""Receive coalescing (link.gro): what Linux's GRO merges is merged into a super-segment that cuts back
into exactly the frames that came (so nothing is lost or changed on the way through a router), and
everything else passes through unchanged and in order. Each test runs on the pure-Python reference and
on the C implementation (native/gro.c, where built), and a property test holds the two to identical
output for any batch, malformed frames included."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from netsock.header.checksum import checksum, combine, pseudo_header_checksum
from netsock.header.gso import segment_tcp
from netsock.link import gro

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


IMPLEMENTATIONS = {"python": gro.py_coalesce}
if gro.coalesce is not gro.py_coalesce:
    IMPLEMENTATIONS["native"] = gro.coalesce
both = pytest.mark.parametrize("coalesce", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())


def outputs(coalesce, frames: list[bytes], link: int = 0) -> list[tuple[bytes, int]]:
    return [(bytes(pkt.data), pkt.gso_size) for pkt in coalesce(frames, link)]


@pytest.mark.parametrize("layer", [V4, V6], ids=["v4", "v6"])
@both
def test_a_run_of_one_flow_becomes_one_super_segment_that_cuts_back_into_the_same_frames(coalesce, layer) -> None:
    frames = wire(layer, 5000, 1448)
    [(merged, gso_size)] = outputs(coalesce, frames)
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


def test_a_batch_keeps_super_segments_that_came_whole_in_their_place() -> None:
    before, after = wire(V4, 3000, 1000, seq=1), wire(V4, 2000, 1000, seq=60001)
    whole = b"super-segment"          # passed on as it came, not parsed
    out = [(bytes(pkt.data), pkt.gso_size) for pkt in gro.coalesce_batch([*before, (whole, 1000), *after])]
    assert out == [*outputs(gro.coalesce, before), (whole, 1000), *outputs(gro.coalesce, after)]
    assert [size for _, size in out] == [1000, 1000, 1000]


@both
def test_ethernet_frames_keep_their_link_header(coalesce) -> None:
    frames = wire(V4, 3000, 1000)
    [(merged, gso_size)] = outputs(coalesce, [ETHERNET + f for f in frames], link=14)
    assert merged[:14] == ETHERNET and segment_tcp(merged[14:], gso_size) == frames


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 65_000), min_size=1, max_size=3), mss=st.integers(200, 1460),
       v6=st.booleans(), seq=st.integers(0, 2**32 - 1), timestamps=st.booleans())
@both
def test_any_transfer_is_merged_losslessly_within_the_ip_length_limit(coalesce, sizes, mss, v6, seq,
                                                                      timestamps) -> None:
    frames: list[bytes] = []
    for size in sizes:          # back-to-back super-segments of one stream
        frames += wire(V6 if v6 else V4, size, mss, seq=seq, options=TS if timestamps else [], flags="A",
                       ident=100 + len(frames))
        seq = (seq + size) % 2**32
    merged = outputs(coalesce, frames)
    cut = [piece for data, gso_size in merged for piece in (segment_tcp(data, gso_size) if gso_size else [data])]
    assert cut == frames
    assert all(len(data) <= 65535 + (40 if v6 else 0) for data, _ in merged)


@both
def test_runs_end_at_a_short_or_pushed_segment_and_a_new_one_starts(coalesce) -> None:
    first = wire(size=2500, mss=1000)                       # 1000, 1000, 500 (PSH): ends the run
    second = wire(size=2000, mss=1000, seq=2501, ident=103)  # continues the stream: a new run
    merged = outputs(coalesce, first + second)
    assert [(len(data) - 52, gso) for data, gso in merged] == [(2500, 1000), (2000, 1000)]


@pytest.mark.parametrize("change", [
    {"ack": 8}, {"window": 501}, {"options": [("NOP", None), ("NOP", None), ("Timestamp", (1001, 2000))]},
    {"sport": 40001}, {"seq": 3000}, {"ident": 200},
], ids=["ack", "window", "timestamp", "other flow", "gap", "IPv4 identification"])
@both
def test_segments_that_differ_in_what_must_match_are_not_merged(coalesce, change) -> None:
    first = wire(size=1000, mss=1000, flags="A")
    other = wire(**{"size": 1000, "mss": 1000, "seq": 1001, "ident": 101, **change})
    assert outputs(coalesce, first + other) == [(first[0], 0), (other[0], 0)]


@pytest.mark.parametrize("flags", ["SA", "FA", "RA", "UA", "A"], ids=["SYN", "FIN", "RST", "URG", "pure ACK"])
@both
def test_segments_with_other_flags_or_no_payload_pass_through(coalesce, flags) -> None:
    data = wire(size=2000, mss=1000, flags="A")
    odd = bytes(V4 / TCP(sport=40000, dport=80, seq=2001, ack=7, flags=flags, window=500, options=TS)
                / Raw(b"" if flags == "A" else b"x"))
    assert outputs(coalesce, [*data, odd])[-1] == (odd, 0)


@both
def test_what_the_stack_must_judge_passes_through_unchanged(coalesce) -> None:
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
        assert outputs(coalesce, [good[0], odd, good[2]]) == [(good[0], 0), (odd, 0), (good[2], 0)]
    tcp = bad_tcp[20:]
    assert combine(pseudo_header_checksum(6, bad_tcp[12:16], bad_tcp[16:20], len(tcp)), checksum(tcp)) != 0xFFFF


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@both
def test_a_run_stops_where_the_ip_length_field_would_overflow(coalesce, v6) -> None:
    # 65535 IP bytes (IPv4 total length) or payload bytes (IPv6) exactly: 5 pieces of 13099 (v4: 40
    # header bytes) or 13103 (v6: 20 TCP header bytes); one byte more does not fit.
    size = 13103 if v6 else 13099
    layer = V6 if v6 else V4
    frames = wire(layer, 5 * size, size, options=[], flags="A") + wire(layer, 1, options=[], flags="A",
                                                                        seq=1 + 5 * size, ident=105)
    [(merged, gso_size), last] = outputs(coalesce, frames)
    assert len(merged) == 65535 + (40 if v6 else 0) and gso_size == size and last == (frames[-1], 0)


# --- the C implementation against the reference, on any batch ------------------------------------------

SRC4, DST4 = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
SRC6, DST6 = bytes.fromhex("20010db8" + "0" * 23 + "1"), bytes.fromhex("20010db8" + "0" * 23 + "2")
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def segment(v6: bool, sport: int, seq: int, ident: int, payload: bytes, flags: int, options: bytes, ack: int = 7,
            window: int = 500, frag: int = 0x4000, ip_options: bytes = b"") -> bytearray:
    """A TCP segment with correct checksums, built directly (scapy is too slow for thousands of batches)."""
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, 80, seq, ack, (20 + len(options)) // 4 << 4, flags, window, 0, 0)
                    + options + payload)
    if v6:
        ip = bytearray(struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + SRC6 + DST6)
    else:
        ip = bytearray(struct.pack("!BBHHHBBH", 0x45 + len(ip_options) // 4, 0, 20 + len(ip_options) + len(tcp),
                                   ident, frag, 64, 6, 0) + SRC4 + DST4 + ip_options)
    return refresh_checksums(ip + tcp, 0)


def refresh_checksums(frame: bytearray, link: int) -> bytearray:
    """Make the IP and TCP checksums right for what the headers now say, as far as they are in the frame."""
    ip = memoryview(frame)[link:]
    if len(ip) >= 20 and ip[0] >> 4 == 4:
        header = (ip[0] & 0xF) * 4
        total = int.from_bytes(ip[2:4], "big")
        if 20 <= header <= min(total, len(ip)):
            ip[10:12] = b"\0\0"
            ip[10:12] = (~checksum(ip[:header]) & 0xFFFF).to_bytes(2, "big")
        src, dst = ip[12:16], ip[16:20]
    elif len(ip) >= 40 and ip[0] >> 4 == 6:
        header, total, src, dst = 40, 40 + int.from_bytes(ip[4:6], "big"), ip[8:24], ip[24:40]
    else:
        return frame
    tcp = ip[header:total]
    if header <= total <= len(ip) and len(tcp) >= 20:
        tcp[16:18] = b"\0\0"
        total_sum = combine(pseudo_header_checksum(6, bytes(src), bytes(dst), len(tcp)), checksum(tcp))
        tcp[16:18] = (~total_sum & 0xFFFF).to_bytes(2, "big")
    return frame


TIMESTAMPS = [b"", bytes.fromhex("0101080a000003e8000007d0"), bytes.fromhex("0101080a000003e9000007d0")]


# Header bytes the rules look at (offsets in the IP header; in the TCP header after it).
FIELDS_V4 = [1, 4, 5, 6, 7, 8, 12, 15, 16, 19]             # TOS, identification, flags/offset, TTL, addresses
FIELDS_V6 = [0, 1, 2, 3, 7, 8, 23, 24, 39]                  # traffic class, flow label, hop limit, addresses
FIELDS_TCP = [0, 1, 2, 3, 4, 7, 8, 11, 12, 13, 14, 15, 20, 23, 31]  # ports, seq, ack, offset, flags, window, options


@st.composite
def batches(draw) -> tuple[list[bytes], int]:
    """A batch of one flow's mergeable segments (IPv4 or IPv6, behind any link header) with, here and
    there, a segment that differs from them in one of the ways the rules look at: another flow, size,
    flags or options, a header field, a bad checksum, truncated, padded, garbage, IPv4 options or a
    fragment, an IPv6 extension header."""
    link = draw(st.sampled_from([0, 14, 3]))
    link_header = draw(st.sampled_from([ETHERNET[:link], b"\xff" * link]))
    flows = [(False, 40000), (False, 40001), (True, 40000)]
    main = draw(st.sampled_from([0, 2]))
    seqs = [draw(st.sampled_from([1, 2**32 - 1500])) for _ in flows]
    idents = [draw(st.sampled_from([1, 0xFFFF])) for _ in flows]
    size = draw(st.sampled_from([1000, 1448, 13099, 16000]))     # the large ones reach the IP length limit
    frames: list[bytes] = []
    for _ in range(draw(st.integers(1, 30))):
        flow, length, flags, options = main, size, ACK, TIMESTAMPS[1]
        change = draw(st.sampled_from(["none"] * 16 + [
            "flow", "length", "flags", "options", "corrupt", "field", "field", "truncate", "pad", "garbage",
            "header checksum", "ip options", "fragment", "extension header"]))
        if change == "flow":
            flow = draw(st.sampled_from([0, 1, 2]))
        elif change == "length":
            length = draw(st.sampled_from([size // 2, size + 1, 0, 1]))
        elif change == "flags":
            flags = draw(st.sampled_from([ACK | PSH, SYN, ACK | FIN, ACK | RST, ACK | URG, ACK | 0x40, ACK | 0x80,
                                          PSH]))
        elif change == "options":
            options = draw(st.sampled_from(TIMESTAMPS))
        v6, sport = flows[flow]
        payload = bytes([seqs[flow] & 0xFF]) * length
        seq, ident = seqs[flow], idents[flow]
        seqs[flow] = (seq + length) % 2**32
        idents[flow] = (ident + 1) & 0xFFFF
        frame = bytearray(link_header + segment(v6, sport, seq, ident, payload, flags, options))
        if change == "corrupt":                     # a checksum fails
            frame[draw(st.integers(0, len(frame) - 1))] ^= draw(st.integers(1, 255))
        elif change == "field":                     # a header field changed, checksums made right again
            ip_header = 40 if v6 else 20
            offsets = [*range(link), *(link + i for i in (FIELDS_V6 if v6 else FIELDS_V4)),
                       *(link + ip_header + i for i in FIELDS_TCP)]
            frame[draw(st.sampled_from(offsets))] ^= draw(st.sampled_from([1, 0x80, 0xFF]))
            refresh_checksums(frame, link)
        elif change == "truncate":
            frame = frame[:draw(st.integers(0, len(frame)))]
        elif change == "pad":                       # link padding after the IP packet
            frame += bytes(draw(st.integers(1, 20)))
        elif change == "garbage":
            frame = bytearray(draw(st.binary(max_size=80)))
        elif change == "header checksum" and not v6:     # TCP's checksum still right
            frame[link + 10] ^= draw(st.integers(1, 255))
        elif change == "ip options" and not v6:
            frame = link_header + segment(v6, sport, seq, ident, payload, flags, options, ip_options=b"\1\1\1\0")
        elif change == "fragment" and not v6:      # DF with MF or an offset
            frame = link_header + segment(v6, sport, seq, ident, payload, flags, options,
                                          frag=draw(st.sampled_from([0x6000, 0x4001, 0x4100])))
        elif change == "extension header" and v6:   # a next header other than TCP
            frame[link + 6] = 0
        frames.append(bytes(frame))
    return frames, link


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.data_too_large, HealthCheck.too_slow])
@given(batch=batches())
def test_the_c_implementation_coalesces_any_batch_exactly_as_the_reference(batch) -> None:
    frames, link = batch
    assert outputs(gro.coalesce, frames, link) == outputs(gro.py_coalesce, frames, link)
