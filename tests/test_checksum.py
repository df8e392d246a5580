"""The Internet checksum: native and pure-Python sums against an independent reference (so the two
agree with each other), known vectors, scatter-gather sums, pseudo-headers and RFC 1624 incremental
update.

Every test runs on the pure-Python path; those that take an implementation also run on the native
one when it was built. CI sets NETSOCK_REQUIRE_NATIVE=1 so a silently failed C build shows up.
"""

from __future__ import annotations

import os
import random
import sys
from array import array
from collections.abc import Callable
from unittest import mock

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

import netsock.header.checksum as cs
from netsock.tcpip.address import Address

Checksum = Callable[..., int]

IMPLEMENTATIONS: dict[str, Checksum] = {"pure": cs.py_checksum}
if cs.USING_NATIVE:
    IMPLEMENTATIONS["native"] = cs.checksum

implementations = pytest.mark.parametrize("impl", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())


def reference_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 §2(C) ("deferred carries") as written: add the big-endian 16-bit words, then fold."""
    words = array("H", data + b"\x00" * (len(data) & 1))
    if sys.byteorder == "little":
        words.byteswap()
    total = initial + sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def word_at(data: bytes | bytearray, offset: int) -> int:
    return int.from_bytes(data[offset:offset + 2], "big")


def set_word(data: bytearray, offset: int, value: int) -> None:
    data[offset:offset + 2] = value.to_bytes(2, "big")


# Lengths spread evenly over 0..70000 (hypothesis' own binary() stays short), plus short
# structured inputs where the corner cases live.
big_buffers = st.builds(lambda n, seed: random.Random(seed).randbytes(n),
                        st.integers(0, 70000), st.integers(0, 2**32 - 1))
buffers = st.one_of(st.binary(max_size=300), big_buffers)
folded_sums = st.integers(0, 0xFFFF)

# The same bytes as each buffer type the stack passes, including a view at an odd address.
AS_BUFFER_TYPES = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": memoryview,
    "unaligned-view": lambda data: memoryview(b"\xaa" + data)[1:],
}
as_buffer_types = pytest.mark.parametrize("as_buffer", AS_BUFFER_TYPES.values(), ids=AS_BUFFER_TYPES.keys())


def test_dispatch_matches_the_build() -> None:
    if cs.USING_NATIVE:
        from netsock import _native

        assert cs.checksum is not cs.py_checksum
        assert _native.lib.ns_checksum(b"\x12\x34", 2, 0) == 0x1234
    else:
        assert cs.checksum is cs.py_checksum
    if os.environ.get("NETSOCK_REQUIRE_NATIVE") == "1":
        assert cs.USING_NATIVE, "netsock._native was not built or does not import"


@implementations
@as_buffer_types
@given(data=buffers, initial=folded_sums)
@example(data=b"", initial=0)
@example(data=b"", initial=0x1234)
@example(data=bytes(70000), initial=0)
@example(data=b"\xff" * 70001, initial=0)  # the sum is 0 mod 0xffff: must come out as 0xffff
@example(data=b"\xff" * 2, initial=0xFFFF)
@example(data=b"\x01", initial=0xFEFF)
def test_matches_reference(impl: Checksum, as_buffer: Callable[[bytes], object], data: bytes, initial: int) -> None:
    assert impl(as_buffer(data), initial) == reference_sum(data, initial)


@implementations
def test_rfc1071_example(impl: Checksum) -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert impl(data) == 0xDDF2
    assert ~impl(data) & 0xFFFF == 0x220D
    # Byte-order independence (RFC 1071 §2(B)): swapping every pair swaps the sum's bytes.
    swapped = bytes.fromhex("0100 03f2 f5f4 f7f6")
    assert impl(swapped) == 0xF2DD


@implementations
def test_real_ipv4_header(impl: Checksum) -> None:
    header = bytearray.fromhex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")
    assert impl(header) == 0xFFFF  # verifies with the checksum field included
    set_word(header, 10, 0)
    assert ~impl(header) & 0xFFFF == 0xB861


@implementations
def test_against_scapy_ipv4_and_udp(impl: Checksum) -> None:
    from scapy.layers.inet import IP, UDP

    packet = IP(bytes(IP(src="192.0.2.1", dst="198.51.100.7", ttl=61, id=0x1C46) / UDP(sport=4321, dport=53)
                      / b"netsock checksum"))
    raw = bytes(packet)
    ip_header, segment = raw[:20], raw[20:]
    assert ~impl(ip_header[:10] + b"\0\0" + ip_header[12:]) & 0xFFFF == packet[IP].chksum
    with mock.patch.object(cs, "checksum", impl):
        pseudo = cs.pseudo_header_checksum(17, ip_header[12:16], ip_header[16:20], len(segment))
    assert ~impl(segment[:6] + b"\0\0" + segment[8:], pseudo) & 0xFFFF == packet[UDP].chksum


@implementations
def test_against_scapy_ipv6_udp(impl: Checksum) -> None:
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6

    packet = IPv6(bytes(IPv6(src="2001:db8::1", dst="2001:db8:0:1::2") / UDP(sport=5353, dport=9)
                        / b"an odd-length payload"))
    raw = bytes(packet)
    segment = raw[40:]
    with mock.patch.object(cs, "checksum", impl):
        pseudo = cs.pseudo_header_checksum(17, raw[8:24], raw[24:40], len(segment))
    assert ~impl(segment[:6] + b"\0\0" + segment[8:], pseudo) & 0xFFFF == packet[UDP].chksum


@st.composite
def split_buffers(draw: st.DrawFn) -> tuple[bytes, list[bytes | memoryview]]:
    """A buffer and the same bytes cut at random points (empty and odd-length pieces included)."""
    data = draw(st.one_of(st.binary(max_size=400), big_buffers))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    as_view = draw(st.lists(st.booleans(), min_size=len(pieces), max_size=len(pieces)))
    return data, [memoryview(p) if v else p for p, v in zip(pieces, as_view)]


@implementations
@given(case=split_buffers(), initial=folded_sums)
@example(case=(b"\x01\x02\x03", [b"\x01", b"", b"\x02", b"\x03"]), initial=0)
@example(case=(b"\xff\xff\xff", [b"\xff", b"\xff\xff"]), initial=0)
def test_checksum_views_equals_concatenation(impl: Checksum, case: tuple[bytes, list], initial: int) -> None:
    data, pieces = case
    with mock.patch.object(cs, "checksum", impl):
        assert cs.checksum_views(pieces, initial) == reference_sum(data, initial)


@implementations
@given(src=st.binary(min_size=4, max_size=4), dst=st.binary(min_size=4, max_size=4),
       protocol=st.integers(0, 255), length=st.integers(0, 0xFFFF))
def test_ipv4_pseudo_header(impl: Checksum, src: bytes, dst: bytes, protocol: int, length: int) -> None:
    # RFC 793 §3.1: source, destination, zero, protocol, TCP/UDP length.
    pseudo = src + dst + bytes((0, protocol)) + length.to_bytes(2, "big")
    with mock.patch.object(cs, "checksum", impl):
        assert cs.pseudo_header_checksum(protocol, Address(src), Address(dst), length) == reference_sum(pseudo)


@implementations
@given(src=st.binary(min_size=16, max_size=16), dst=st.binary(min_size=16, max_size=16),
       protocol=st.integers(0, 255), length=st.integers(0, 2**32 - 1))
@example(src=bytes(16), dst=bytes(16), protocol=58, length=0x0001_0000)  # a jumbogram length
def test_ipv6_pseudo_header(impl: Checksum, src: bytes, dst: bytes, protocol: int, length: int) -> None:
    # RFC 8200 §8.1: source, destination, 32-bit upper-layer length, 3 zero bytes, next header.
    pseudo = src + dst + length.to_bytes(4, "big") + bytes(3) + bytes((protocol,))
    with mock.patch.object(cs, "checksum", impl):
        assert cs.pseudo_header_checksum(protocol, Address(src), Address(dst), length) == reference_sum(pseudo)


CHECKSUM_OFFSET = 10  # where IPv4 keeps its header checksum


def header_checksum(header: bytes | bytearray) -> int:
    """The checksum field value from a full recomputation (field taken as zero)."""
    zeroed = bytearray(header)
    set_word(zeroed, CHECKSUM_OFFSET, 0)
    return ~reference_sum(bytes(zeroed)) & 0xFFFF


@given(words=st.lists(st.integers(0, 0xFFFF), min_size=10, max_size=30), index=st.integers(0, 29),
       new_word=st.integers(0, 0xFFFF))
def test_incremental_update_equals_recomputation(words: list[int], index: int, new_word: int) -> None:
    header = bytearray(b"".join(w.to_bytes(2, "big") for w in words))  # IPv4-like: 20..60 bytes
    header[0] = 0x45
    offset = 2 * (index % len(words))
    assume(offset != CHECKSUM_OFFSET)
    set_word(header, CHECKSUM_OFFSET, header_checksum(header))
    old_checksum, old_word = word_at(header, CHECKSUM_OFFSET), word_at(header, offset)

    set_word(header, offset, new_word)
    # Only an all-zero header recomputes to -0 (0xffff) where eqn. 3 gives +0; no IPv4 header is one.
    assume(any(header[:CHECKSUM_OFFSET] + header[CHECKSUM_OFFSET + 2:]))
    assert cs.adjust_checksum(old_checksum, old_word.to_bytes(2, "big"), new_word.to_bytes(2, "big")) == \
        header_checksum(header)


def test_incremental_update_rfc1624_zero_corner() -> None:
    # RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 must give +0 (0x0000); the RFC 1141
    # formula (eqn. 2) gives -0 (0xffff) here. Build a real header with exactly those values.
    header = bytearray(20)
    set_word(header, 0, 0x4500)
    set_word(header, 2, 0x5555)
    # Choose word 4 so the remaining words sum to ~0xdd2f = 0x22d0 (mod 0xffff).
    set_word(header, 4, (0x22D0 - 0x4500 - 0x5555) % 0xFFFF)
    assert header_checksum(header) == 0xDD2F
    set_word(header, CHECKSUM_OFFSET, 0xDD2F)

    updated = cs.adjust_checksum(0xDD2F, b"\x55\x55", b"\x32\x85")
    set_word(header, 2, 0x3285)
    assert updated == header_checksum(header) == 0x0000
    set_word(header, CHECKSUM_OFFSET, updated)
    assert cs.checksum(header) == 0xFFFF  # and the updated header still verifies
