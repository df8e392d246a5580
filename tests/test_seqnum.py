"""Sequence-number arithmetic modulo 2**32, across the wrap."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st

from netsock.seqnum import in_range, in_window, overlap, seq_add, seq_ge, seq_gt, seq_le, seq_lt, seq_sub

SETTINGS = settings(max_examples=200, deadline=None)
MOD = 2**32
TOP = MOD - 1
HALF = 2**31

values = st.integers(0, TOP)
near_wrap = st.integers(0, 40).map(lambda k: (TOP - 20 + k) % MOD)     # ..., 2**32 - 1, 0, 1, ...
seqs = values | near_wrap
distances = st.integers(-(HALF - 1), HALF - 1)                          # where the ordering is defined


def int32(v: int) -> int:
    return struct.unpack("!i", (v % MOD).to_bytes(4, "big"))[0]


def test_ordering_across_the_wrap():
    assert seq_lt(TOP, 0) and seq_lt(TOP - 5, 3)
    assert seq_gt(0, TOP) and seq_gt(3, TOP - 5)
    assert not seq_lt(0, TOP) and not seq_gt(TOP, 0)
    assert seq_le(TOP, 0) and seq_le(7, 7) and not seq_le(0, TOP)
    assert seq_ge(0, TOP) and seq_ge(7, 7) and not seq_ge(TOP, 0)
    assert not seq_lt(7, 7) and not seq_gt(7, 7)


def test_at_half_the_space_apart_each_is_less_than_the_other_as_in_netstack():
    assert seq_lt(0, HALF) and seq_lt(HALF, 0)
    assert seq_sub(0, HALF) == seq_sub(HALF, 0) == -HALF


@SETTINGS
@given(a=seqs, d=distances)
def test_ordering_follows_the_signed_distance(a, d):
    b = seq_add(a, d)
    assert 0 <= b <= TOP and b == (a + d) % MOD
    assert seq_sub(b, a) == d and seq_sub(a, b) == -d
    assert seq_lt(a, b) == (d > 0) == seq_gt(b, a)
    assert seq_le(a, b) == (d >= 0) == seq_ge(b, a)


@SETTINGS
@given(a=seqs, b=seqs)
def test_lt_is_netstacks_int32_comparison(a, b):
    assert seq_lt(a, b) == (int32(a - b) < 0)
    assert seq_le(a, b) == (a == b or int32(a - b) < 0)
    assert -HALF <= seq_sub(a, b) < HALF and seq_sub(a, b) == int32(a - b)


def test_add_wraps_both_ways():
    assert seq_add(TOP, 1) == 0
    assert seq_add(TOP, 10) == 9
    assert seq_add(0, -1) == TOP
    assert seq_add(5, MOD) == 5


def test_window_spanning_the_wrap():
    first = MOD - 10
    inside = [(first + k) % MOD for k in range(20)]
    assert all(in_window(v, first, 20) for v in inside)
    assert not in_window(10, first, 20)
    assert not in_window(first - 1, first, 20)
    assert not in_window(first, first, 0)
    assert in_window(first - 1, first, MOD)     # the whole space


@SETTINGS
@given(first=seqs, size=st.integers(0, 48), offset=st.integers(-24, 72))
def test_in_window_and_in_range_match_enumeration(first, size, offset):
    v = (first + offset) % MOD
    expected = v in {(first + k) % MOD for k in range(size)}
    assert in_window(v, first, size) == expected
    assert in_range(v, first, seq_add(first, size)) == expected


def test_range_spanning_the_wrap():
    assert in_range(TOP, TOP - 1, 2) and in_range(0, TOP - 1, 2) and in_range(1, TOP - 1, 2)
    assert not in_range(2, TOP - 1, 2) and not in_range(TOP - 2, TOP - 1, 2)
    assert not in_range(5, 5, 5)


def _members(start: int, size: int) -> set[int]:
    return {(start + k) % MOD for k in range(size)}


@SETTINGS
@given(a=seqs, a_size=st.integers(0, 24), offset=st.integers(-32, 32), b_size=st.integers(0, 24))
def test_overlap_matches_enumeration(a, a_size, offset, b_size):
    b = seq_add(a, offset)
    expected = bool(_members(a, a_size) & _members(b, b_size))
    assert overlap(a, a_size, b, b_size) == expected == overlap(b, b_size, a, a_size)


@pytest.mark.parametrize("a, a_size, b, b_size, expected", [
    (TOP - 4, 10, 2, 3, True),          # contains, across the wrap
    (TOP - 4, 5, 0, 5, False),          # adjacent at the wrap
    (TOP - 4, 6, 0, 5, True),           # one number in common: 0
    (10, 0, 5, 10, False),              # an empty range inside another
    (0, HALF + 10, HALF, 100, True),    # beyond the 2**31 limit of the orderings
])
def test_overlap_cases(a, a_size, b, b_size, expected):
    assert overlap(a, a_size, b, b_size) is expected
