"""SACK: the sender's RFC 6675 scoreboard and the receiver's RFC 2018 block list, across the wrap.

The property tests model SACKed data as a set of byte offsets from snd_una and answer every
question by brute force over that set, so they share no logic with the scoreboard.
"""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given, settings, strategies as st

from netsock.transport.tcp.sack import MAX_RANGES, SACKScoreboard, update_sack_blocks

SETTINGS = settings(max_examples=200, deadline=None)
MOD = 2**32
SMSS = 1000

unas = st.integers(0, MOD - 1) | st.integers(MOD - 3000, MOD - 1) | st.just(MOD - 1000)


def at(una: int, off: int) -> int:
    return (una + off) % MOD


def board(una: int, *blocks: tuple[int, int], smss: int = SMSS) -> SACKScoreboard:
    """A scoreboard at cumulative ACK ``una`` holding ``blocks`` (offsets from una)."""
    sb = SACKScoreboard(smss)
    sb.delete(una)
    for s, e in blocks:
        sb.insert(at(una, s), at(una, e))
    return sb


def offsets(sb: SACKScoreboard, una: int) -> list[tuple[int, int]]:
    return [((s - una) % MOD, (e - una) % MOD) for s, e in sb.ranges()]


# --- merging ------------------------------------------------------------------------------------

def test_disjoint_blocks_stay_apart_and_sorted():
    sb = board(0, (5000, 6000), (1000, 2000), (3000, 4000))
    assert sb.ranges() == [(1000, 2000), (3000, 4000), (5000, 6000)]
    assert len(sb) == 3 and sb.sacked_bytes() == 3000 and sb.highest_sacked() == 6000


def test_overlapping_adjacent_and_contained_blocks_merge():
    sb = board(0, (1000, 2000), (3000, 4000))
    sb.insert(1500, 2500)                       # overlaps the first
    assert sb.ranges() == [(1000, 2500), (3000, 4000)]
    sb.insert(2500, 3000)                       # touches both: bridges the gap
    assert sb.ranges() == [(1000, 4000)]
    sb.insert(1200, 1300)                       # contained
    sb.insert(4000, 4100)                       # adjacent above
    sb.insert(900, 1000)                        # adjacent below
    assert sb.ranges() == [(900, 4100)] and sb.sacked_bytes() == 3200


def test_one_block_swallows_several_ranges():
    sb = board(0, (1000, 1100), (1200, 1300), (1400, 1500), (3000, 3100))
    sb.insert(1050, 1450)
    assert sb.ranges() == [(1000, 1500), (3000, 3100)] and sb.sacked_bytes() == 600


def test_empty_and_inverted_blocks_are_ignored():
    sb = board(0, (1000, 1000), (2000, 1500))
    assert len(sb) == 0 and sb.highest_sacked() is None and sb.sacked_bytes() == 0


def test_blocks_straddling_zero():
    una = MOD - 1000
    sb = board(una, (500, 1500), (1500, 2000), (-200, 100))     # the last one is trimmed to snd_una
    assert sb.ranges() == [(una, MOD - 900), (MOD - 500, 1000)]
    assert offsets(sb, una) == [(0, 100), (500, 2000)] and sb.sacked_bytes() == 1600
    assert sb.highest_sacked() == 1000
    assert sb.is_sacked(MOD - 1, 5) and sb.is_sacked(MOD - 500, 1000) and not sb.is_sacked(MOD - 501, 0)


def test_blocks_before_the_first_cumulative_ack_use_the_lowest_as_reference():
    sb = SACKScoreboard(SMSS)
    sb.insert(10, 20)
    sb.insert(MOD - 20, MOD - 10)               # below the first block, across the wrap
    sb.insert(0, 10)
    assert sb.ranges() == [(MOD - 20, MOD - 10), (0, 20)]
    sb.delete(MOD - 15)
    assert sb.ranges() == [(MOD - 15, MOD - 10), (0, 20)] and sb.sacked_bytes() == 25


# --- the cumulative ACK -------------------------------------------------------------------------

def test_delete_drops_ranges_below_and_trims_the_one_it_cuts():
    sb = board(0, (1000, 2000), (3000, 4000), (5000, 6000))
    sb.delete(3500)
    assert sb.ranges() == [(3500, 4000), (5000, 6000)] and sb.sacked_bytes() == 1500
    sb.delete(4000)
    assert sb.ranges() == [(5000, 6000)]
    sb.delete(3000)                             # an old ACK changes nothing
    assert sb.ranges() == [(5000, 6000)]
    sb.delete(7000)
    assert len(sb) == 0 and sb.sacked_bytes() == 0 and sb.highest_sacked() is None


def test_blocks_at_or_below_the_cumulative_ack_are_ignored_or_trimmed():
    sb = board(5000, (-1000, 0))                # a D-SACK of acknowledged data
    assert len(sb) == 0
    sb.insert(4500, 5500)
    assert sb.ranges() == [(5000, 5500)]


def test_delete_across_the_wrap():
    una = MOD - 1000
    sb = board(una, (100, 600), (900, 1400), (2000, 2500))
    sb.delete(200)                              # offset 1200
    assert sb.ranges() == [(200, 400), (1000, 1500)] and sb.sacked_bytes() == 700


def test_clear_forgets_everything():
    sb = board(0, (1000, 2000))
    sb.clear()
    assert len(sb) == 0 and sb.sacked_bytes() == 0 and not sb.is_lost(0)
    sb.insert(9000, 9100)
    assert sb.ranges() == [(9000, 9100)]


# --- IsLost -------------------------------------------------------------------------------------

def test_is_lost_with_dupthresh_discontiguous_ranges_above():
    sb = board(0, (2000, 3000), (4000, 5000))
    assert not sb.is_lost(0)                    # two ranges, 2000 bytes: not more than 2 * SMSS
    sb.insert(6000, 6001)
    assert sb.is_lost(0) and sb.is_lost(1000) and sb.is_lost(1999)
    assert not sb.is_lost(3000)                 # two ranges, 1001 bytes above
    assert not sb.is_lost(5000)
    assert not sb.is_lost(2500)                 # SACKed: it arrived


def test_is_lost_with_more_than_dupthresh_minus_one_smss_bytes_above():
    sb = board(0, (1000, 3000))
    assert not sb.is_lost(0)                    # exactly 2 * SMSS is not enough
    sb.insert(3000, 3001)
    assert sb.is_lost(0) and sb.is_lost(999)
    assert not sb.is_lost(3001)


def test_adjacent_blocks_are_one_range_for_is_lost():
    sb = board(0, (1000, 1100), (1100, 1200), (1200, 1300))
    assert not sb.is_lost(0)


def test_is_lost_honours_dup_thresh_and_smss():
    sb = SACKScoreboard(100, dup_thresh=2)
    sb.delete(0)
    sb.insert(500, 550)
    assert not sb.is_lost(0)
    sb.insert(600, 651)                         # two ranges
    assert sb.is_lost(0)
    sb.smss = 10                                # smaller segments: 101 bytes > 1 * SMSS
    sb.clear()
    sb.insert(500, 511)
    assert sb.is_lost(0)


def test_is_lost_across_the_wrap():
    una = MOD - 1000
    sb = board(una, (900, 1100), (1500, 2000), (2500, 3000), (3500, 3600))
    assert sb.is_lost(una) and sb.is_lost(MOD - 101) and sb.is_lost(100) and sb.is_lost(499)
    assert not sb.is_lost(MOD - 1) and not sb.is_lost(0)       # SACKed
    assert not sb.is_lost(1000)                 # two ranges, 600 bytes above


# --- NextSeg ------------------------------------------------------------------------------------

def test_next_seg_retransmits_holes_in_order_and_skips_sacked_data():
    sb = board(0, (1000, 2000), (3000, 3500), (4000, 5000), (6000, 6100))
    assert sb.next_seg(0, 0, 7000, SMSS) == (0, 1000)
    assert sb.next_seg(1000, 0, 7000, SMSS) == (2000, 3000)     # skips the SACKed [1000, 2000)
    assert sb.next_seg(1500, 0, 7000, SMSS) == (2000, 3000)
    assert sb.next_seg(2500, 0, 7000, SMSS) == (2500, 3000)     # after what was retransmitted
    assert sb.next_seg(3000, 0, 7000, SMSS) is None             # [3500, 4000): two ranges, 1100 bytes above


def test_next_seg_stops_at_mss_and_at_the_next_range():
    sb = board(0, (2500, 3500), (4000, 5100))
    assert sb.next_seg(0, 0, 6000, 800) == (0, 800)
    assert sb.next_seg(2000, 0, 6000, 800) == (2000, 2500)


def test_next_seg_without_loss_is_none():
    assert board(0).next_seg(0, 0, 5000, SMSS) is None
    assert board(0, (1000, 2000)).next_seg(0, 0, 5000, SMSS) is None


def test_next_seg_across_the_wrap():
    una = MOD - 1000
    sb = board(una, (500, 1000), (1500, 2000), (2500, 3000), (3500, 4000))
    assert sb.next_seg(una, una, at(una, 5000), SMSS) == (una, MOD - 500)
    assert sb.next_seg(MOD - 500, una, at(una, 5000), 2000) == (0, 500)
    assert sb.next_seg(500, una, at(una, 5000), SMSS) is None


# --- SetPipe ------------------------------------------------------------------------------------

def test_pipe_without_sack_counts_flight_and_retransmissions():
    sb = board(0)
    assert sb.pipe(0, 10000, 0, SMSS) == 10000
    assert sb.pipe(0, 10000, 1000, SMSS) == 11000
    assert sb.pipe(0, 10000, 1, SMSS) == 11000   # a retransmitted segment counts whole
    assert sb.pipe(0, 0, 0, SMSS) == 0


def test_pipe_follows_rfc6675():
    # Ten segments, 1, 3, 5 and 7 SACKed: 0 and 2 are lost (3 ranges above); 4, 6, 8, 9 are not.
    sb = board(0, (1000, 2000), (3000, 4000), (5000, 6000), (7000, 8000))
    assert sb.pipe(0, 10000, 0, SMSS) == 4000
    assert sb.pipe(0, 10000, 1000, SMSS) == 5000    # segment 0 retransmitted
    assert sb.pipe(0, 10000, 3000, SMSS) == 6000    # 0 and 2 retransmitted
    assert sb.pipe(0, 10000, 5000, SMSS) == 7000    # 4 as well, though not lost: counted twice


def test_pipe_of_a_partly_sacked_segment_counts_its_unsacked_bytes():
    sb = board(0, (500, 1000), (1500, 2500), (3000, 3100))
    # Segments [0,1000) [1000,2000) [2000,3000) [3000,4000): S1 = 0, 1000, 2500, 3100.
    assert sb.pipe(0, 4000, 0, SMSS) == 500 + 500 + 900
    assert sb.pipe(0, 4000, 600, SMSS) == 500 + 500 + 500 + 900


# Reference model: the SACKed offsets as a set, everything answered by brute force.

def reference_ranges(sacked: set[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for off in sorted(sacked):
        if runs and runs[-1][1] == off:
            runs[-1] = (runs[-1][0], off + 1)
        else:
            runs.append((off, off + 1))
    return runs


def reference_is_lost(sacked: set[int], off: int, smss: int, dup_thresh: int = 3) -> bool:
    if off in sacked:
        return False
    above = sorted(o for o in sacked if o > off)
    discontiguous = sum(1 for k, o in enumerate(above) if k == 0 or above[k - 1] != o - 1)
    return discontiguous >= dup_thresh or len(above) > (dup_thresh - 1) * smss


def reference_lost(sacked: set[int], flight: int, smss: int, dup_thresh: int = 3) -> list[int]:
    """Every lost offset below ``flight``, lowest first, counting SACKed runs and bytes from the top down."""
    runs = above = 0
    lost = []
    for off in range(max(flight, *sacked, 0), -1, -1):
        if off in sacked:
            above += 1
            runs += off + 1 not in sacked
        elif off < flight and (runs >= dup_thresh or above > (dup_thresh - 1) * smss):
            lost.append(off)
    return lost[::-1]


def reference_pipe(sacked: set[int], flight: int, high_rxt: int, mss: int, smss: int) -> int:
    """RFC 6675 SetPipe, one mss-sized segment at a time from snd_una, judged at its first un-SACKed byte."""
    pipe = 0
    for seg in range(0, flight, mss):
        unsacked = [o for o in range(seg, min(seg + mss, flight)) if o not in sacked]
        if not unsacked:
            continue
        s1 = unsacked[0]
        if not reference_is_lost(sacked, s1, smss):
            pipe += len(unsacked)
        if s1 < high_rxt:
            pipe += len(unsacked)
    return pipe


def reference_next_seg(sacked: set[int], flight: int, high_rxt: int, mss: int, smss: int) -> tuple[int, int] | None:
    for s in range(max(high_rxt, 0), flight):
        if s not in sacked and reference_is_lost(sacked, s, smss):
            end = s
            while end < min(s + mss, flight) and end not in sacked:
                end += 1
            return s, end
    return None


@st.composite
def scoreboards(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, int]], int]:
    """(una, flight, SACK blocks as offsets from una within the flight, smss)."""
    una = draw(unas)
    flight = draw(st.integers(1, 4000))
    blocks = draw(st.lists(st.tuples(st.integers(1, flight - 1), st.integers(1, 400)), max_size=12)
                  if flight > 1 else st.just([]))
    smss = draw(st.sampled_from([100, 300, 536, 1000]))
    return una, flight, [(s, min(s + n, flight)) for s, n in blocks], smss


def model(blocks: list[tuple[int, int]]) -> set[int]:
    return {o for s, e in blocks for o in range(s, e)}


@SETTINGS
@given(case=scoreboards(), ack_first=st.booleans())
def test_scoreboard_matches_the_byte_model(case, ack_first):
    una, flight, blocks, smss = case
    sb = SACKScoreboard(smss)
    if ack_first:
        sb.delete(una)
    for s, e in blocks:
        sb.insert(at(una, s), at(una, e))
    if not ack_first:
        sb.delete(una)
    sacked = model(blocks)
    runs = reference_ranges(sacked)
    assert offsets(sb, una) == runs and len(sb) == len(runs)
    assert sb.sacked_bytes() == len(sacked)
    assert sb.highest_sacked() == (at(una, runs[-1][1]) if runs else None)
    probes = {0, flight - 1, *(o for s, e in runs for o in (s - 1, s, e - 1, e))} - {-1}
    for off in probes:
        assert sb.is_lost(at(una, off)) == reference_is_lost(sacked, off, smss), off
    for s, e in runs:
        assert sb.is_sacked(at(una, s), at(una, e)) and not sb.is_sacked(at(una, s - 1), at(una, e))
        assert not sb.is_sacked(at(una, s), at(una, e + 1))
    for off in probes | {flight}:
        assert sb.sacked_below(at(una, off)) == sum(1 for o in sacked if o < off)
        for end in (off, (off + flight) // 2 + 1, flight):
            if end < off:
                continue
            first = next((o for o in range(off, end) if o not in sacked), end)     # the reference: byte by byte
            last = next((o for o in range(first, end) if o in sacked), end)
            assert sb.unsacked_from(at(una, off), at(una, end)) == (at(una, first), at(una, last)), (off, end)


@SETTINGS
@given(case=scoreboards(), mss=st.integers(1, 1500), rxt=st.integers(-100, 4000))
def test_pipe_and_next_seg_match_the_per_segment_reference(case, mss, rxt):
    una, flight, blocks, smss = case
    sb = board(una, *blocks, smss=smss)
    sacked = model(blocks)
    high_rxt = min(rxt, flight)
    nxt = at(una, flight)
    assert sb.pipe(una, nxt, at(una, high_rxt), mss) == reference_pipe(sacked, flight, high_rxt, mss, smss)
    expected = reference_next_seg(sacked, flight, high_rxt, mss, smss)
    got = sb.next_seg(at(una, high_rxt), una, nxt, mss)
    assert got == (expected and (at(una, expected[0]), at(una, expected[1])))


@SETTINGS
@given(case=scoreboards(), mss=st.integers(100, 1500))
def test_recovery_retransmits_every_lost_byte_once(case, mss):
    """Driving NextSeg as RFC 6675 §5 does covers exactly the lost un-SACKed bytes, in order."""
    una, flight, blocks, smss = case
    sb = board(una, *blocks, smss=smss)
    sacked = model(blocks)
    high_rxt, sent = una, []
    while (seg := sb.next_seg(high_rxt, una, at(una, flight), mss)) is not None:
        start, end = ((seg[0] - una) % MOD, (seg[1] - una) % MOD)
        assert 0 < end - start <= mss
        sent.extend(range(start, end))
        high_rxt = seg[1]
    assert sent == reference_lost(sacked, flight, smss)


# --- bounded memory -----------------------------------------------------------------------------

def test_a_flood_of_disjoint_blocks_keeps_the_lowest_ranges():
    sb = board(0)
    blocks = [(2 * k, 2 * k + 1) for k in range(20000)]
    random.Random(6675).shuffle(blocks)
    for s, e in blocks:
        sb.insert(s, e)
    assert len(sb) == MAX_RANGES
    assert sb.ranges() == [(2 * k, 2 * k + 1) for k in range(MAX_RANGES)]
    assert sb.sacked_bytes() == MAX_RANGES
    kept = set(range(0, 2 * MAX_RANGES, 2))
    assert sb.pipe(0, 40000, 0, 100) == reference_pipe(kept, 40000, 0, 100, SMSS)
    assert sb.next_seg(0, 0, 40000, SMSS) == (1, 2)


@SETTINGS
@given(blocks=st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 40)), max_size=200),
       cap=st.integers(1, 8))
def test_bounded_scoreboard_stays_consistent(blocks, cap):
    sb = SACKScoreboard(SMSS, max_ranges=cap)
    sb.delete(MOD - 1500)
    for s, n in blocks:
        sb.insert(at(MOD - 1500, s), at(MOD - 1500, s + n))
        assert len(sb) <= cap
    runs = offsets(sb, MOD - 1500)
    assert sb.sacked_bytes() == sum(e - s for s, e in runs)
    assert all(e < s2 for (_, e), (s2, _) in pairwise(runs))      # sorted, disjoint, not touching


# --- the receiver's blocks (RFC 2018 §4) ----------------------------------------------------------

@pytest.mark.parametrize("base", [0, MOD - 6000])     # also with the data straddling sequence number 0
def test_rfc2018_section5_case3(base):
    """RFC 2018 §5 case 3: segments of 500 from 5000; the 2nd, 4th, 6th and 8th are dropped."""
    def s(v: int) -> int:
        return (v + base) % MOD

    def expect(*edges: int) -> list[tuple[int, int]]:
        return [(s(a), s(b)) for a, b in zip(edges[::2], edges[1::2])]

    rcv_nxt = s(5500)                           # the first segment arrived in order
    blocks = update_sack_blocks([], s(5000), s(5500), rcv_nxt)
    assert blocks == []
    blocks = update_sack_blocks(blocks, s(6000), s(6500), rcv_nxt)
    assert blocks == expect(6000, 6500)
    blocks = update_sack_blocks(blocks, s(7000), s(7500), rcv_nxt)
    assert blocks == expect(7000, 7500, 6000, 6500)
    blocks = update_sack_blocks(blocks, s(8000), s(8500), rcv_nxt)
    assert blocks == expect(8000, 8500, 7000, 7500, 6000, 6500)
    blocks = update_sack_blocks(blocks, s(6500), s(7000), rcv_nxt)       # the 4th, out of order
    assert blocks == expect(6000, 7500, 8000, 8500)
    rcv_nxt = s(7500)                           # the 2nd arrives: the ACK jumps over 6000-7500
    blocks = update_sack_blocks(blocks, s(5500), s(6000), rcv_nxt)
    assert blocks == expect(8000, 8500)


def test_most_recent_blocks_are_kept_and_the_oldest_dropped():
    blocks: list[tuple[int, int]] = []
    for k in range(1, 6):
        blocks = update_sack_blocks(blocks, 1000 * k, 1000 * k + 100, 0, max_blocks=4)
    assert blocks == [(5000, 5100), (4000, 4100), (3000, 3100), (2000, 2100)]
    blocks = update_sack_blocks(blocks, 3050, 3200, 0, max_blocks=4)    # a block reported again moves first
    assert blocks == [(3000, 3200), (5000, 5100), (4000, 4100), (2000, 2100)]


def test_new_data_bridging_blocks_merges_them():
    blocks = [(3000, 3100), (1000, 1100), (2000, 2100)]
    assert update_sack_blocks(blocks, 1100, 2000, 0) == [(1000, 2100), (3000, 3100)]
    assert update_sack_blocks(blocks, 900, 3200, 0) == [(900, 3200)]


def test_blocks_below_rcv_nxt_are_dropped_or_trimmed():
    blocks = [(3000, 3100), (1000, 1100), (2000, 2100)]
    assert update_sack_blocks(blocks, 3050, 3050, 2050) == [(3000, 3100), (2050, 2100)]
    assert update_sack_blocks(blocks, 500, 2200, 2200) == [(3000, 3100)]
    assert update_sack_blocks(blocks, 2150, 2500, 2100) == [(2150, 2500), (3000, 3100)]


@SETTINGS
@given(base=unas, arrivals=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 6)), max_size=40),
       max_blocks=st.sampled_from([3, 4, 64]))
def test_receiver_blocks_match_the_out_of_order_queue(base, arrivals, max_blocks):
    """Segments (in units of 100 bytes) arrive in any order; the blocks always describe the queue."""
    rcv_nxt, held, blocks = 0, set(), []
    for first, n in arrivals:
        before = blocks
        seg = set(range(first, first + n))
        held |= seg
        while rcv_nxt in held:
            rcv_nxt += 1
        start, end = (base + 100 * first) % MOD, (base + 100 * (first + n)) % MOD
        blocks = update_sack_blocks(blocks, start, end, (base + 100 * rcv_nxt) % MOD, max_blocks)
        units = [(((s - base) % MOD) // 100, ((e - base) % MOD) // 100) for s, e in blocks]
        assert len(units) <= max_blocks
        for s, e in units:
            assert rcv_nxt < s < e and all(u in held for u in range(s, e))
        spans = sorted(units)
        assert all(e < s2 for (_, e), (s2, _) in pairwise(spans))
        if first + n > rcv_nxt:                 # out of order: the first block holds the new data
            s, e = units[0]
            assert s <= first and first + n <= e
            if max_blocks == 64:                # nothing forgotten: it is the whole contiguous run
                assert s - 1 not in held and e not in held
        else:                                   # in order: the blocks it reached are acknowledged now
            assert blocks == [(s, e) for s, e in before if (e - base) % MOD > 100 * rcv_nxt]
