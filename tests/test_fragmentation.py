"""Fragment reassembly and fragmentation (netsock.network.fragmentation) on a manual clock."""

from __future__ import annotations

import random
import struct
import sys
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsock.network.fragmentation import (DATAGRAM_OVERHEAD, FRAGMENT_OVERHEAD, Reassembler, ReassemblyResult,
                                           fragment, split_packet)
from netsock.header.checksum import checksum, combine, pseudo_header_checksum
from netsock.stack.clock import ManualClock, TimerQueue
from netsock.stack.packet_buffer import PacketBuffer

R = ReassemblyResult
KEY = (b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x02", 0x1234, 17)
HEADER = bytes(range(20))   # stands in for the offset-0 fragment's IPv4 header


class Harness:
    def __init__(self, **options: object) -> None:
        self.clock = ManualClock()
        self.timers = TimerQueue(self.clock)
        self.expired: list[tuple[Hashable, bytes | None]] = []
        self.r: Reassembler[Hashable] = Reassembler(
            self.timers, on_timeout=lambda key, first: self.expired.append((key, first)),
            **options)  # type: ignore[arg-type]

    def send(self, offset: int, data: bytes, more: bool, key: Hashable = KEY) -> tuple[R, bytes | memoryview | None]:
        """Feed a fragment the way a link delivers it: a view past the header of its own frame buffer."""
        frame = bytearray(HEADER) + data
        return self.r.process(key, offset, more, memoryview(frame)[len(HEADER):],
                              HEADER if offset == 0 else None)

    def assert_empty(self) -> None:
        assert len(self.r) == 0 and self.r.memory_used == 0 and len(self.timers) == 0


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def pieces(data: bytes, mtu: int, header_room: int = 20) -> list[tuple[int, bytes, bool]]:
    return [(off, data[off:off + length], more) for off, length, more in fragment(len(data), header_room, mtu)]


# --- fragment() -------------------------------------------------------------------------------------


@given(length=st.integers(0, 70_000), header_room=st.integers(20, 120), extra=st.integers(8, 9000))
def test_fragment_cuts_fit_the_mtu_and_are_aligned(length: int, header_room: int, extra: int) -> None:
    mtu = header_room + extra
    cuts = fragment(length, header_room, mtu)
    step = extra & ~7
    assert len(cuts) == max(1, -(-length // step))      # as few as possible
    expected_offset = 0
    for i, (offset, size, more) in enumerate(cuts):
        assert offset == expected_offset and offset % 8 == 0
        assert header_room + size <= mtu
        assert more == (i < len(cuts) - 1)
        if more:
            assert size % 8 == 0 and size > 0
        expected_offset += size
    assert expected_offset == length


def test_fragment_examples() -> None:
    assert fragment(3000, 20, 1500) == [(0, 1480, True), (1480, 1480, True), (2960, 40, False)]
    assert fragment(2960, 20, 1500) == [(0, 1480, True), (1480, 1480, False)]
    assert fragment(1480, 20, 1500) == [(0, 1480, False)]
    assert fragment(0, 20, 1500) == [(0, 0, False)]
    assert fragment(100, 48, 1280)[0] == (0, 100, False)
    assert fragment(24, 20, 28) == [(0, 8, True), (8, 8, True), (16, 8, False)]


@pytest.mark.parametrize("header_room, mtu", [(20, 27), (20, 20), (60, 40), (48, 55)])
def test_fragment_refuses_an_mtu_without_room_for_8_bytes(header_room: int, mtu: int) -> None:
    with pytest.raises(ValueError):
        fragment(100, header_room, mtu)


def test_fragment_refuses_a_negative_length() -> None:
    with pytest.raises(ValueError):
        fragment(-1, 20, 1500)


# --- reassembly in any order ------------------------------------------------------------------------


def reassemble(h: Harness, frags: list[tuple[int, bytes, bool]]) -> bytes | memoryview | None:
    """Feed fragments in the given order; only the last one may complete the datagram."""
    for i, (offset, data, more) in enumerate(frags):
        status, result = h.send(offset, data, more)
        if i < len(frags) - 1:
            assert status in (R.PENDING, R.DUPLICATE) and result is None
    assert status is R.COMPLETE
    return result


@pytest.mark.parametrize("order", ["in order", "reverse", "last first", "middle out"])
def test_reassembly_in_fixed_orders(order: str) -> None:
    h = Harness()
    data = payload(7000)
    frags = pieces(data, 1500)
    if order == "reverse":
        frags.reverse()
    elif order == "last first":
        frags = frags[-1:] + frags[:-1]
    elif order == "middle out":
        frags = frags[2:3] + frags[1:2] + frags[3:] + frags[:1]
    assert reassemble(h, frags) == data
    assert h.r.stats.completed.value == 1 and h.expired == []
    h.assert_empty()


@settings(max_examples=150, deadline=None)
@given(mtu=st.integers(68, 2000), beyond=st.integers(1, 20_000), rnd=st.randoms(use_true_random=False),
       duplicates=st.integers(0, 5))
def test_reassembly_in_random_order_with_duplicates(mtu: int, beyond: int, rnd: random.Random,
                                                    duplicates: int) -> None:
    h = Harness(max_fragments_per_datagram=1000)
    length = mtu - 20 + beyond      # too long for one packet
    data = payload(length, length)
    frags = pieces(data, mtu)
    rnd.shuffle(frags)
    # Duplicates arrive any time before the fragment that completes the datagram.
    for _ in range(duplicates):
        frags.insert(rnd.randrange(len(frags)), rnd.choice(frags[:-1] or frags))
    assert reassemble(h, frags) == data
    stats = h.r.stats
    assert stats.completed.value == 1 and stats.duplicates.value == len(frags) - len(fragment(length, 20, mtu))
    h.assert_empty()


def test_largest_datagram_reassembles_and_one_byte_more_is_refused() -> None:
    h = Harness()
    data = payload(65535)
    assert reassemble(h, pieces(data, 1500)) == data
    h.assert_empty()
    assert h.send(65528, bytes(8), False) == (R.DROPPED_BAD_LENGTH, None)      # would end at 65536
    assert h.send(65528, bytes(8), True) == (R.DROPPED_BAD_LENGTH, None)
    assert h.r.stats.malformed.value == 2
    h.assert_empty()


def test_max_payload_is_configurable() -> None:
    h = Harness(max_payload=65535 - 20)
    assert h.send(65504, bytes(11), False)[0] is R.PENDING                     # ends at 65515
    assert h.send(65504, bytes(12), False, key="other")[0] is R.DROPPED_BAD_LENGTH


def test_atomic_fragment_is_whole_and_leaves_reassembly_alone() -> None:
    h = Harness()
    h.send(8, bytes(8), True)
    memory = h.r.memory_used
    data = memoryview(b"whole datagram")
    status, result = h.r.process(KEY, 0, False, data)
    assert status is R.COMPLETE and result is data      # not copied, not mixed with the datagram in progress
    assert len(h.r) == 1 and h.r.memory_used == memory


def test_duplicate_keeps_the_first_copy() -> None:
    h = Harness()
    assert h.send(0, b"A" * 8, True)[0] is R.PENDING
    assert h.send(0, b"B" * 8, True) == (R.DUPLICATE, None)
    assert not R.DUPLICATE.dropped
    assert h.send(16, b"C" * 3, False)[0] is R.PENDING
    assert h.send(16, b"D" * 3, False) == (R.DUPLICATE, None)
    assert h.send(8, b"E" * 8, True) == (R.COMPLETE, b"A" * 8 + b"E" * 8 + b"C" * 3)
    assert h.r.stats.duplicates.value == 2
    h.assert_empty()


# --- overlaps (RFC 5722) ----------------------------------------------------------------------------

HELD = (16, 48)   # a fragment held: bytes [16, 48)
OVERLAPS = {
    "partial from below": (8, 24),
    "partial from above": (40, 56),
    "contained": (24, 40),
    "containing": (8, 56),
    "same start, shorter": (16, 40),
    "same start, longer": (16, 56),
    "same end, later start": (24, 48),
    "same end, earlier start": (8, 48),
}


@pytest.mark.parametrize("held_first", [True, False], ids=["held first", "held second"])
@pytest.mark.parametrize("span", OVERLAPS.values(), ids=OVERLAPS.keys())
def test_any_overlap_abandons_the_datagram_and_its_later_fragments(span: tuple[int, int], held_first: bool) -> None:
    h = Harness()
    first, second = (HELD, span) if held_first else (span, HELD)
    assert h.send(first[0], bytes(first[1] - first[0]), True)[0] is R.PENDING
    status, result = h.send(second[0], bytes(second[1] - second[0]), True)
    assert status is R.DROPPED_OVERLAP and status.dropped and result is None
    assert h.r.stats.overlaps.value == 1
    assert h.r.memory_used == DATAGRAM_OVERHEAD        # only the tombstone is left
    # Fragments that would have completed the datagram are discarded until it times out.
    for offset, size, more in [(0, 64, True), (64, 4, False), (0, 16, True), (48, 16, True)]:
        assert h.send(offset, bytes(size), more) == (R.DROPPED_ABANDONED, None)
    assert h.r.stats.discarded.value == 4
    h.clock.advance(30)
    assert h.expired == [] and h.r.stats.timeouts.value == 0   # no ICMP about an abandoned datagram
    h.assert_empty()
    data = payload(68)
    assert reassemble(h, pieces(data, 60)) == data              # the key is usable again


def test_overlap_with_a_non_adjacent_fragment() -> None:
    h = Harness()
    for offset in (0, 16, 32):
        assert h.send(offset, bytes(8), True)[0] is R.PENDING
    assert h.send(8, bytes(32), True)[0] is R.DROPPED_OVERLAP


# --- the datagram's end -----------------------------------------------------------------------------

INCONSISTENT = {
    "two last fragments, different ends": [(32, 8, False), (40, 8, False)],
    "two last fragments, same start": [(32, 8, False), (32, 5, False)],
    "data beyond the last fragment": [(16, 8, False), (24, 8, True)],
    "last fragment before data held": [(32, 8, True), (8, 8, False)],
}


@pytest.mark.parametrize("frags", INCONSISTENT.values(), ids=INCONSISTENT.keys())
def test_fragments_disagreeing_on_the_end_abandon_the_datagram(frags: list[tuple[int, int, bool]]) -> None:
    h = Harness()
    (offset, size, more), (offset2, size2, more2) = frags
    assert h.send(0, bytes(8), True)[0] is R.PENDING
    assert h.send(offset, bytes(size), more)[0] is R.PENDING
    assert h.send(offset2, bytes(size2), more2) == (R.DROPPED_INCONSISTENT, None)
    assert h.r.stats.inconsistent.value == 1 and h.r.memory_used == DATAGRAM_OVERHEAD
    assert h.send(8, bytes(8), True)[0] is R.DROPPED_ABANDONED
    h.clock.advance(30)
    assert h.expired == []
    h.assert_empty()


@pytest.mark.parametrize("offset, size, more", [(8, 12, True), (8, 0, True), (8, 0, False), (65528, 9, False)],
                         ids=["unaligned", "empty", "empty last", "beyond 65535"])
def test_a_fragment_invalid_by_itself_is_dropped_alone(offset: int, size: int, more: bool) -> None:
    h = Harness()
    data = payload(40)
    frags = pieces(data, 36)
    assert h.send(*frags[0])[0] is R.PENDING
    assert h.send(offset, bytes(size), more) == (R.DROPPED_BAD_LENGTH, None)
    assert h.r.stats.malformed.value == 1
    assert reassemble(h, frags[1:]) == data


# --- timeouts ---------------------------------------------------------------------------------------


def test_timeout_reports_the_first_fragment_as_received() -> None:
    h = Harness()
    data = payload(4000)
    frags = pieces(data, 1500)
    for frag in frags[:-1]:
        h.send(*frag)
    h.clock.advance(29.9)
    assert h.expired == [] and len(h.timers) == 1
    h.clock.advance(0.1)
    assert h.expired == [(KEY, HEADER + data[:1480])]
    assert h.r.stats.timeouts.value == 1
    h.assert_empty()


def test_timeout_without_the_first_fragment_reports_none() -> None:
    h = Harness()
    h.send(1480, bytes(1480), True)
    h.send(2960, bytes(40), False)
    h.clock.advance(30)
    assert h.expired == [(KEY, None)]
    h.assert_empty()


def test_each_datagram_expires_30_s_after_its_first_fragment_with_one_timer() -> None:
    h = Harness()
    h.send(0, bytes(8), True, key="a")
    h.clock.advance(10)
    h.send(0, bytes(8), True, key="b")
    h.send(16, bytes(8), True, key="a")     # later fragments do not extend the deadline
    h.clock.advance(5)
    h.send(0, bytes(8), True, key="c")
    assert len(h.timers) == 1
    h.clock.advance(15)
    assert [k for k, _ in h.expired] == ["a"]
    h.clock.advance(10)
    assert [k for k, _ in h.expired] == ["a", "b"]
    assert h.send(8, bytes(8), False, key="c")[0] is R.COMPLETE
    h.assert_empty()
    h.clock.advance(60)
    assert len(h.expired) == 2


def test_completing_the_oldest_does_not_expire_the_others_early() -> None:
    h = Harness()
    h.send(0, bytes(8), True, key="old")
    h.clock.advance(10)
    h.send(0, bytes(8), True, key="young")
    assert h.send(8, bytes(1), False, key="old")[0] is R.COMPLETE
    h.clock.advance(25)
    assert h.expired == [] and len(h.timers) == 1
    h.clock.advance(5)
    assert [k for k, _ in h.expired] == ["young"]
    h.assert_empty()


def test_on_timeout_may_feed_fragments_back_in() -> None:
    clock = ManualClock()
    timers = TimerQueue(clock)
    seen: list[str] = []

    def on_timeout(key: str, first: bytes | None) -> None:
        seen.append(key)
        if key == "a":
            assert r.process("b", 0, True, bytes(8))[0] is R.PENDING

    r: Reassembler[str] = Reassembler(timers, on_timeout=on_timeout)
    r.process("a", 0, True, bytes(8))
    clock.advance(30)
    assert seen == ["a"] and len(r) == 1 and len(timers) == 1
    clock.advance(30)
    assert seen == ["a", "b"] and len(r) == 0 and len(timers) == 0 and r.memory_used == 0


# --- bounded memory ---------------------------------------------------------------------------------


def test_memory_counts_the_whole_buffer_a_fragment_pins() -> None:
    h = Harness()
    frame = bytearray(65536)
    view = memoryview(frame)[100:108]
    h.r.process(KEY, 8, True, view)
    assert h.r.memory_used == DATAGRAM_OVERHEAD + FRAGMENT_OVERHEAD + sys.getsizeof(view) + sys.getsizeof(frame)
    assert h.r.memory_used > 65536


def test_huge_offsets_cost_nothing_extra() -> None:
    far, near = Harness(), Harness()
    far.send(65520, bytes(8), True)
    near.send(8, bytes(8), True)
    assert far.r.memory_used == near.r.memory_used < 1000


def test_tiny_fragment_flood_is_cut_off() -> None:
    h = Harness()
    statuses = [h.send(offset, bytes(8), True)[0] for offset in range(0, 8000, 8)]
    assert statuses[:64] == [R.PENDING] * 64
    assert statuses[64] is R.DROPPED_TOO_MANY_FRAGMENTS
    assert statuses[65:] == [R.DROPPED_ABANDONED] * (1000 - 65)
    stats = h.r.stats
    assert stats.too_many_fragments.value == 1 and stats.discarded.value == 1000 - 65
    assert h.r.memory_used == DATAGRAM_OVERHEAD
    h.clock.advance(30)
    h.assert_empty()


def test_ten_thousand_incomplete_datagrams_stay_under_the_threshold() -> None:
    h = Harness()
    high, low = h.r.high_threshold, h.r.low_threshold
    total = 10_000
    for i in range(total):
        evicted_before = h.r.stats.evicted.value
        frame = memoryview(bytearray(1514))    # a received frame: Ethernet, IPv4 header, 1480 bytes of payload
        status, _ = h.r.process(i, 0, True, frame[34:], frame[14:34])
        assert status is R.PENDING             # an old datagram makes room, never the new one
        assert h.r.memory_used <= high
        if h.r.stats.evicted.value > evicted_before:
            assert h.r.memory_used <= low
        if i == total // 2:
            h.clock.advance(1)
    held = len(h.r)
    assert h.r.stats.evicted.value == total - held
    view = memoryview(bytearray(1514))[34:]
    cost = DATAGRAM_OVERHEAD + FRAGMENT_OVERHEAD + sys.getsizeof(view) + sys.getsizeof(view.obj) + \
        sys.getsizeof(bytes(20))
    assert h.r.memory_used == held * cost
    assert len(h.timers) == 1
    # The oldest were evicted: the newest still completes, the first one starts over.
    assert h.r.process(total - 1, 1480, False, bytes(1))[0] is R.COMPLETE
    assert h.r.process(0, 1480, False, bytes(1))[0] is R.PENDING
    h.clock.advance(30)
    assert h.r.stats.timeouts.value == held and len(h.expired) == held
    assert h.expired[0] == (total - held, bytes(20 + 1480))   # the oldest survivor, quoted
    assert h.expired[-1] == (0, None)
    h.assert_empty()


def test_a_datagram_larger_than_the_threshold_is_dropped() -> None:
    h = Harness(high_threshold=20_000, low_threshold=10_000)
    h.send(0, bytes(1480), True)
    fragment_cost = h.r.memory_used - DATAGRAM_OVERHEAD - sys.getsizeof(HEADER)
    fits = (20_000 - h.r.memory_used) // fragment_cost
    statuses = [h.send(offset, bytes(1480), True)[0] for offset in range(1480, 1480 * (fits + 3), 1480)]
    assert statuses == [R.PENDING] * fits + [R.DROPPED_MEMORY, R.PENDING]    # the last one starts over
    assert h.r.stats.evicted.value == 1 and len(h.r) == 1
    assert h.r.memory_used == DATAGRAM_OVERHEAD + fragment_cost and len(h.timers) == 1


def test_thresholds_are_checked() -> None:
    timers = TimerQueue(ManualClock())
    with pytest.raises(ValueError):
        Reassembler(timers, high_threshold=1000, low_threshold=2000)
    with pytest.raises(ValueError):
        Reassembler(timers, timeout=0)


def test_a_checksum_left_partial_for_the_device_is_completed_before_the_datagram_is_cut() -> None:
    """No device completes a checksum across fragments: split_packet does it first."""
    header = bytearray(struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x50, 0x10, 512, 0, 0))
    body = bytes(range(256)) * 10
    src, dst = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
    header[16:18] = pseudo_header_checksum(6, src, dst, len(header) + len(body)).to_bytes(2, "big")
    pkt = PacketBuffer(len(header), body)
    pkt.prepend(len(header))[:] = header
    pkt.csum_offset = 16
    pieces = split_packet(pkt, 20, 1000, 65515, 20)
    datagram = b"".join(bytes(piece.data) for piece, _, _ in pieces)
    assert len(pieces) == 3 and datagram[20:] == body
    assert combine(pseudo_header_checksum(6, src, dst, len(datagram)), checksum(datagram)) == 0xFFFF
