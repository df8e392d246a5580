"""TCP header codec: layouts, option parsing rules, the 40-byte limit and the checksum."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from netsock.header import Malformed, tcp
from netsock.header.checksum import pseudo_header_checksum

SETTINGS = settings(max_examples=200, deadline=None)
u32 = st.integers(0, 0xFFFFFFFF)

# Linux's SYN (mss 1460, sackOK, TS val 123456 ecr 0, nop, wscale 7) from 192.0.2.1:40000 to
# 198.51.100.2:80, checksum as scapy computed it.
V4_SRC, V4_DST = bytes((192, 0, 2, 1)), bytes((198, 51, 100, 2))
V4_SYN = bytes.fromhex("9c400050fffffff000000000a002faf0e2140000"
                       "020405b40402080a0001e2400000000001030307")
# A PSH+ACK carrying "hello" with the aligned timestamp, 2001:db8::1:443 -> 2001:db8::2:50000.
V6_SRC, V6_DST = bytes.fromhex("20010db8" + "0" * 23 + "1"), bytes.fromhex("20010db8" + "0" * 23 + "2")
V6_DATA = bytes.fromhex("01bbc3500000000100000002801801f6105600000101080a0000000700000008") + b"hello"


def built(options: bytes = b"", **fields) -> bytearray:
    buf = bytearray(tcp.MIN_SIZE + len(options))
    tcp.build(buf, **{"src_port": 1, "dst_port": 2, "seq": 3, "ack": 4, "flags": tcp.ACK, "window": 5,
                      "options": options, **fields})
    return buf


# --- header ---------------------------------------------------------------------------------------


def test_parse_known_syn():
    hdr = tcp.parse(V4_SYN)
    assert hdr == tcp.TCPHeader(40000, 80, 0xFFFFFFF0, 0, 40, tcp.SYN, 64240, 0xE214, 0)
    assert tcp.parse_options(memoryview(V4_SYN)[tcp.MIN_SIZE:hdr.data_offset]) == \
        tcp.TCPOptions(mss=1460, window_scale=7, sack_permitted=True, timestamp=(123456, 0))


def test_build_reproduces_known_syn():
    options = tcp.encode_syn_options(1460, 7, True, (123456, 0))
    header = built(options, src_port=40000, dst_port=80, seq=0xFFFFFFF0, ack=0, flags=tcp.SYN, window=64240)
    tcp.set_checksum(header, tcp.compute_checksum(V4_SRC, V4_DST, header))
    assert header == V4_SYN


def test_build_into_the_middle_of_a_buffer():
    room = bytearray(100)
    view = memoryview(room)[40:72]
    tcp.build(view, src_port=0xFFFF, dst_port=0, seq=0xFFFFFFFF, ack=0x80000000, flags=0xFF, window=0xFFFF,
              urgent=0xFFFF, options=tcp.encode_options((1, 2)), checksum=0xBEEF)
    assert tcp.parse(view) == tcp.TCPHeader(0xFFFF, 0, 0xFFFFFFFF, 0x80000000, 32, 0xFF, 0xFFFF, 0xBEEF, 0xFFFF)
    assert not any(room[:40]) and not any(room[72:])


@pytest.mark.parametrize("flag", [tcp.FIN, tcp.SYN, tcp.RST, tcp.PSH, tcp.ACK, tcp.URG, tcp.ECE, tcp.CWR])
def test_each_flag_is_its_own_bit_of_byte_13(flag):
    header = built(flags=flag)
    assert header[13] == flag and tcp.parse(header).flags == flag
    assert header[12] == 0x50   # the reserved bits stay clear


def test_reserved_bits_do_not_disturb_the_offset():
    header = built(tcp.encode_options((1, 2)))
    header[12] |= 0x0F
    assert tcp.parse(header).data_offset == 32


@pytest.mark.parametrize("size", [1, 2, 3, 41, 44])
def test_build_rejects_options_that_do_not_fit_the_data_offset(size):
    with pytest.raises(ValueError):
        built(bytes(size))


def test_data_offset_checks():
    header = built(tcp.encode_options((1, 2)))
    assert tcp.parse(header[:31]) is Malformed.TRUNCATED
    for words in range(5):
        header[12] = words << 4
        assert tcp.parse(header) is Malformed.BAD_HEADER_LENGTH
    header[12] = 0xF0
    assert tcp.parse(header) is Malformed.TRUNCATED
    assert tcp.parse(header + bytes(28)).data_offset == tcp.MAX_SIZE


# --- options: layouts -----------------------------------------------------------------------------


@pytest.mark.parametrize("window_scale, sack_permitted, timestamp, expected", [
    (None, False, None, "020405b4"),
    (7, False, None, "020405b4" "01030307"),
    (None, True, None, "020405b4" "01010402"),
    (None, False, (1, 2), "020405b4" "0101080a0000000100000002"),
    (None, True, (1, 2), "020405b4" "0402080a0000000100000002"),
    (0, True, None, "020405b4" "01010402" "01030300"),
    (14, True, (1, 2), "020405b4" "0402080a0000000100000002" "0103030e"),
])
def test_syn_layouts_are_linuxs(window_scale, sack_permitted, timestamp, expected):
    assert tcp.encode_syn_options(1460, window_scale, sack_permitted, timestamp).hex() == expected


@pytest.mark.parametrize("timestamp, blocks, expected", [
    (None, [], ""),
    ((1, 2), [], "0101080a" "00000001" "00000002"),
    (None, [(3, 4)], "0101050a" "00000003" "00000004"),
    ((1, 2), [(3, 4), (5, 6)], "0101080a" "00000001" "00000002" "01010512" "00000003" "00000004" "00000005" "00000006"),
])
def test_data_layouts_are_linuxs(timestamp, blocks, expected):
    assert tcp.encode_options(timestamp, blocks).hex() == expected


@SETTINGS
@given(timestamp=st.none() | st.tuples(u32, u32), blocks=st.lists(st.tuples(u32, u32), max_size=10))
def test_encode_options_fits_in_40_bytes_keeping_the_first_blocks(timestamp, blocks):
    encoded = tcp.encode_options(timestamp, blocks)
    assert len(encoded) <= tcp.MAX_OPTIONS_SIZE and len(encoded) % 4 == 0
    kept = blocks[:3 if timestamp else 4]
    assert tcp.parse_options(encoded) == tcp.TCPOptions(timestamp=timestamp, sack_blocks=tuple(kept))
    if timestamp:   # aligned for receivers' fast paths: NOP NOP, then the option on a word boundary
        assert encoded[:4] == b"\x01\x01\x08\x0a"


@SETTINGS
@given(mss=st.integers(1, 0xFFFF), window_scale=st.none() | st.integers(0, 14), sack_permitted=st.booleans(),
       timestamp=st.none() | st.tuples(u32, u32))
def test_syn_options_round_trip(mss, window_scale, sack_permitted, timestamp):
    encoded = tcp.encode_syn_options(mss, window_scale, sack_permitted, timestamp)
    assert len(encoded) <= 20 and len(encoded) % 4 == 0
    assert tcp.parse_options(encoded) == tcp.TCPOptions(mss, window_scale, sack_permitted, timestamp)


# --- options: parsing rules -----------------------------------------------------------------------

MSS_1460 = b"\x02\x04\x05\xb4"
TS_1_2 = b"\x08\x0a" + struct.pack("!II", 1, 2)


def test_no_options():
    assert tcp.parse_options(b"") is tcp.NO_OPTIONS
    assert tcp.parse_options(b"\x00\x00\x00\x00") == tcp.NO_OPTIONS
    assert tcp.parse_options(b"\x01\x01\x01\x01") == tcp.NO_OPTIONS


def test_fast_path_agrees_with_the_general_one():
    aligned = b"\x01\x01" + TS_1_2
    assert tcp.parse_options(aligned) == tcp.parse_options(aligned + b"\x00\x00\x00\x00") == \
        tcp.parse_options(b"\x01" + TS_1_2 + b"\x01") == tcp.TCPOptions(timestamp=(1, 2))


def test_a_repeated_option_overrides_the_earlier_one_as_in_linux():
    area = MSS_1460 + b"\x02\x04\x02\x18" + b"\x03\x03\x02" + b"\x03\x03\x05" + b"\x01\x01" + TS_1_2 + \
        b"\x08\x0a" + bytes(7) + b"\x09"
    assert tcp.parse_options(area) == tcp.TCPOptions(mss=536, window_scale=5, timestamp=(0, 9))
    sacks = b"\x05\x0a" + struct.pack("!II", 1, 2) + b"\x05\x12" + struct.pack("!IIII", 3, 4, 5, 6)
    assert tcp.parse_options(sacks).sack_blocks == ((3, 4), (5, 6))


def test_mss_of_zero_is_ignored():
    assert tcp.parse_options(b"\x02\x04\x00\x00").mss is None
    assert tcp.parse_options(MSS_1460 + b"\x02\x04\x00\x00").mss == 1460


@pytest.mark.parametrize("shift, clamped", [(0, 0), (14, 14), (15, 14), (255, 14)])
def test_window_scale_is_clamped_to_14(shift, clamped):
    assert tcp.parse_options(bytes((tcp.OPT_WS, 3, shift))).window_scale == clamped


def test_unknown_kinds_are_skipped():
    md5 = bytes((19, 18)) + bytes(16)
    experimental_fast_open = bytes((254, 12, 0xF9, 0x89)) + bytes(8)     # (the pre-RFC 7413 form: not taken)
    assert tcp.parse_options(md5 + MSS_1460 + experimental_fast_open) == tcp.TCPOptions(mss=1460)


@pytest.mark.parametrize("option, cookie", [
    (b"\x22\x02", b""),                                         # a cookie request
    (b"\x22\x0a" + bytes(range(8)), bytes(range(8))),           # Linux's 8-byte cookie
    (b"\x22\x06" + b"abcd", b"abcd"), (b"\x22\x12" + bytes(16), bytes(16)),     # the shortest and longest
    (b"\x22\x05" + b"abc", None), (b"\x22\x14" + bytes(18), None),   # odd, or longer than 16: ignored
])
def test_fast_open_cookies_are_parsed_within_rfc_7413s_sizes(option, cookie):
    assert tcp.parse_options(MSS_1460 + option).fast_open == cookie


@pytest.mark.parametrize("cookie", [b"", bytes(range(8)), bytes(16)])
def test_fast_open_option_follows_the_others_padded_with_nops(cookie):
    options = tcp.encode_syn_options(1460, 7, True, (1, 2), cookie)
    assert len(options) % 4 == 0 and len(options) <= tcp.MAX_OPTIONS_SIZE
    assert options[20:22] == bytes((34, 2 + len(cookie))) and options[22:22 + len(cookie)] == cookie
    assert set(options[22 + len(cookie):]) <= {1}
    assert tcp.parse_options(options) == tcp.TCPOptions(1460, 7, True, (1, 2), (), cookie)


@pytest.mark.parametrize("area", [
    b"\x02\x03\x05", b"\x02\x05\x05\xb4\x00",                 # MSS of 3 and 5 bytes
    b"\x03\x02", b"\x03\x04\x07\x00",                         # window scale of 2 and 4
    b"\x04\x03\x00",                                          # SACK-permitted with content
    b"\x08\x09" + bytes(7), b"\x08\x0b" + bytes(9),           # timestamp of 9 and 11
    b"\x05\x02", b"\x05\x06" + bytes(4), b"\x05\x0e" + bytes(12),   # SACK of 0 and 0.5 and 1.5 blocks
])
def test_known_options_of_the_wrong_size_are_ignored(area):
    assert tcp.parse_options(area) == tcp.NO_OPTIONS


def test_nothing_after_end_of_list_is_read():
    assert tcp.parse_options(MSS_1460 + b"\x00" + b"\x03\x03\x07" + b"\x02\x00") == tcp.TCPOptions(mss=1460)


@pytest.mark.parametrize("area", [
    b"\x02",                      # kind without a length byte
    MSS_1460 + b"\x03",
    b"\x02\x00\x05\xb4",          # length 0 would loop forever
    b"\x02\x01\x05\xb4",          # length 1 would land inside the option
    b"\x02\x05\x05\xb4",          # runs past the area
    b"\x01\x01\x08\x0b" + bytes(8),
    b"\xfe\xff" + bytes(38),
])
def test_illegal_lengths_are_malformed(area):
    assert tcp.parse_options(area) is Malformed.BAD_OPTIONS


def test_four_sack_blocks_without_timestamps():
    blocks = ((0xFFFFFFF0, 0x10), (1, 2), (3, 4), (5, 6))
    encoded = tcp.encode_options(sack_blocks=blocks + ((7, 8),))
    assert len(encoded) == 36
    assert tcp.parse_options(encoded).sack_blocks == blocks


# --- checksum -------------------------------------------------------------------------------------


def test_checksum_known_vectors():
    pseudo = pseudo_header_checksum(tcp.PROTOCOL_NUMBER, V4_SRC, V4_DST, len(V4_SYN))
    assert tcp.checksum_valid(pseudo, (V4_SYN,))
    pseudo6 = pseudo_header_checksum(tcp.PROTOCOL_NUMBER, V6_SRC, V6_DST, len(V6_DATA))
    assert tcp.checksum_valid(pseudo6, (V6_DATA[:32], V6_DATA[32:]))
    header = bytearray(V6_DATA[:32])
    tcp.set_checksum(header, 0)
    assert tcp.compute_checksum(V6_SRC, V6_DST, header, V6_DATA[32:]) == 0x1056


@pytest.mark.parametrize("cut", range(len(V6_DATA) + 1))
def test_checksum_over_views_cut_anywhere(cut):
    pseudo = pseudo_header_checksum(tcp.PROTOCOL_NUMBER, V6_SRC, V6_DST, len(V6_DATA))
    assert tcp.checksum_valid(pseudo, (V6_DATA[:cut], memoryview(V6_DATA)[cut:]))


def test_checksum_detects_corruption_and_the_wrong_pseudo_header():
    corrupted = bytearray(V4_SYN)
    corrupted[5] ^= 0x01
    pseudo = pseudo_header_checksum(tcp.PROTOCOL_NUMBER, V4_SRC, V4_DST, len(V4_SYN))
    assert not tcp.checksum_valid(pseudo, (corrupted,))
    assert not tcp.checksum_valid(pseudo_header_checksum(tcp.PROTOCOL_NUMBER, V4_DST, V4_DST, len(V4_SYN)),
                                  (V4_SYN,))


@SETTINGS
@given(src=st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16), payload=st.binary(max_size=99),
       seq=u32, timestamp=st.tuples(u32, u32))
def test_computed_checksum_verifies(src, payload, seq, timestamp):
    dst = bytes(reversed(src))
    header = built(tcp.encode_options(timestamp), seq=seq)
    tcp.set_checksum(header, tcp.compute_checksum(src, dst, header, payload))
    pseudo = pseudo_header_checksum(tcp.PROTOCOL_NUMBER, src, dst, len(header) + len(payload))
    assert tcp.checksum_valid(pseudo, (header, payload))
