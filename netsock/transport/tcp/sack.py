"""Selective acknowledgment: the sender's scoreboard (RFC 6675) and the receiver's block list (RFC 2018 §4).

Sequence numbers are wire values mod 2**32. The scoreboard stores its ranges as plain int offsets
from a base sequence number (the cumulative ACK once ``delete`` has been called), so ordering,
bisecting and merging are ordinary integer operations and stay correct across the wrap; the base
moves with every cumulative ACK.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate

from ...seqnum import seq_add, seq_le, seq_lt, seq_sub

MAX_RANGES = 64
"""Ranges a scoreboard keeps at most (see SACKScoreboard)."""


class SACKScoreboard:
    """What the peer has selectively acknowledged above snd_una (sender side, RFC 6675 §3-§5).

    Ranges are kept sorted, disjoint and non-adjacent (touching blocks merge). Memory is bounded:
    a peer that SACKs every other byte would otherwise make the scoreboard grow with the window,
    so at most ``max_ranges`` ranges are kept and the highest are dropped beyond that. Forgetting
    a SACK only costs a needless retransmission (a sender must keep SACKed data anyway, because
    the receiver may renege, RFC 2018 §8), and the lowest ranges are the ones that decide what
    recovery retransmits next.

    ``insert`` trusts its caller to have checked each block against [snd_una, snd_max]. ``smss``
    and ``dup_thresh`` are plain attributes: the sender may update SMSS after a path MTU change.
    """

    __slots__ = ("smss", "dup_thresh", "max_ranges", "_base", "_floor_known", "_starts", "_ends", "_sacked",
                 "_prefix")

    def __init__(self, smss: int, dup_thresh: int = 3, *, max_ranges: int = MAX_RANGES) -> None:
        self.smss = smss
        self.dup_thresh = dup_thresh
        self.max_ranges = max_ranges
        self._base = 0                  # sequence number that offset 0 stands for
        self._floor_known = False       # is _base the cumulative ACK (set by delete)?
        self._starts: list[int] = []    # range i is [_starts[i], _ends[i]) in offsets from _base
        self._ends: list[int] = []
        self._sacked = 0
        self._prefix: list[int] | None = None   # _prefix[i]: bytes in ranges 0..i-1 (built lazily for pipe)

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"<SACKScoreboard {self.ranges()}>"

    def clear(self) -> None:
        """Forget everything, as when the receiver has reneged (dropped data it SACKed, RFC 2018 §8)."""
        self._starts.clear()
        self._ends.clear()
        self._sacked = 0
        self._floor_known = False
        self._prefix = None

    def insert(self, start: int, end: int) -> None:
        """Record the SACK block [start, end), merging it with the ranges it overlaps or touches.

        The part of a block below the cumulative ACK (the last ``delete``) is ignored; empty and
        inverted blocks are ignored.
        """
        starts, ends = self._starts, self._ends
        if not starts and not self._floor_known:
            self._base = start
        s = seq_sub(start, self._base)
        e = seq_sub(end, self._base)
        if e <= s:
            return
        if s < 0:
            if self._floor_known:
                if e <= 0:
                    return
                s = 0
            else:   # no cumulative ACK seen yet: the lowest block seen so far is the reference
                self._rebase(start)
                e -= s
                s = 0
        i = bisect_left(ends, s)            # ranges before i end below s, without touching it
        j = bisect_right(starts, e, i)      # ranges i..j-1 start at or before e: they touch [s, e)
        if i < j:
            s = min(s, starts[i])
            e = max(e, ends[j - 1])
            self._sacked -= sum(ends[i:j]) - sum(starts[i:j])
        starts[i:j] = (s,)
        ends[i:j] = (e,)
        self._sacked += e - s
        if len(starts) > self.max_ranges:
            cut = self.max_ranges
            self._sacked -= sum(ends[cut:]) - sum(starts[cut:])
            del starts[cut:], ends[cut:]
        self._prefix = None

    def delete(self, upto: int) -> None:
        """The cumulative ACK moved to ``upto``: forget what lies below it (trimming a range it cuts)."""
        shift = seq_sub(upto, self._base)
        if self._floor_known and shift <= 0:
            return      # an old ACK: it reveals nothing new
        self._floor_known = True
        if self._starts:
            starts, ends = self._starts, self._ends
            gone = bisect_right(ends, shift)
            if gone:
                self._sacked -= sum(ends[:gone]) - sum(starts[:gone])
                del starts[:gone], ends[:gone]
            if starts and starts[0] < shift:
                self._sacked -= shift - starts[0]
                starts[0] = shift
            self._rebase(upto)
            self._prefix = None
        self._base = upto

    def is_sacked(self, start: int, end: int) -> bool:
        """Every sequence number in [start, end) has been SACKed (vacuously true when empty)."""
        length = seq_sub(end, start)
        if length <= 0:
            return length == 0
        s = seq_sub(start, self._base)
        i = bisect_right(self._starts, s) - 1
        return i >= 0 and self._ends[i] >= s + length

    def is_lost(self, seq: int) -> bool:
        """RFC 6675 IsLost(SeqNum): DupThresh discontiguous SACKed ranges lie above ``seq``, or more
        than (DupThresh - 1) * SMSS SACKed bytes do. A SACKed ``seq`` has arrived: never lost.
        """
        off = seq_sub(seq, self._base)
        i = bisect_right(self._starts, off)     # ranges i.. lie above seq
        if i and self._ends[i - 1] > off:
            return False
        return i <= self._lost_index()

    def sacked_bytes(self) -> int:
        return self._sacked

    def sacked_below(self, seq: int) -> int:
        """SACKed bytes below ``seq`` (at or above the cumulative ACK)."""
        return self._sacked_below(seq_sub(seq, self._base))

    def unsacked_from(self, seq: int, end: int) -> tuple[int, int]:
        """The first stretch [s, e) of [seq, end) that is not SACKed (s == e == end when there is none):
        what resending after a timeout sends next, past what the peer holds."""
        off, stop = seq_sub(seq, self._base), seq_sub(end, self._base)
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, off) - 1       # the range holding off, or the last one below it
        if i >= 0 and ends[i] > off:
            off = ends[i]
        following = starts[i + 1] if i + 1 < len(starts) else stop
        off = min(off, stop)
        return seq_add(self._base, off), seq_add(self._base, max(off, min(following, stop)))

    def highest_sacked(self) -> int | None:
        """End of the highest SACKed range, or None when nothing is SACKed."""
        return seq_add(self._base, self._ends[-1]) if self._ends else None

    def ranges(self) -> list[tuple[int, int]]:
        """The SACKed ranges as (start, end) sequence numbers, lowest first."""
        base = self._base
        return [(seq_add(base, s), seq_add(base, e)) for s, e in zip(self._starts, self._ends)]

    def next_seg(self, high_rxt: int, snd_una: int, snd_nxt: int, mss: int) -> tuple[int, int] | None:
        """RFC 6675 NextSeg() rule 1: the lost, un-SACKed [s, s + len) to retransmit next, or None.

        ``high_rxt`` is one past the highest byte retransmitted in this recovery (snd_una when
        nothing has been), so s >= high_rxt. The segment is at most ``mss`` long and stops at the
        next SACKed range. Rules 2-4 (new data, rescue retransmission) need the send buffer: they
        are the sender's.
        """
        lost = self._lost_index()
        if lost < 0:
            return None
        starts, ends = self._starts, self._ends
        una = seq_sub(snd_una, self._base)
        nxt = una + max(seq_sub(snd_nxt, snd_una), 0)
        s = una + max(seq_sub(high_rxt, snd_una), 0)
        i = bisect_right(starts, s)
        if i and ends[i - 1] > s:       # s was SACKed: the first candidate is just past its range
            s = ends[i - 1]
        # Un-SACKed bytes below the start of range ``lost`` are exactly the lost ones (see _lost_index).
        if s >= min(starts[lost], nxt):
            return None
        end = min(s + mss, starts[bisect_right(starts, s)], nxt)
        return seq_add(self._base, s), seq_add(self._base, end)

    def pipe(self, snd_una: int, snd_nxt: int, high_rxt: int, mss: int) -> int:
        """RFC 6675 SetPipe(): an estimate of the bytes in flight in [snd_una, snd_nxt).

        The space is cut into ``mss``-sized segments from snd_una. A segment counts its un-SACKed
        bytes once if it is not lost and once more if it has been retransmitted, both judged at its
        first un-SACKed byte S1: (a) not IsLost(S1), (b) S1 < high_rxt (one past the highest byte
        retransmitted, so RFC 6675's S1 <= HighRxt). Fully SACKed segments count nothing.

        Computed in O(ranges), not per segment. Un-SACKed bytes are lost exactly when they lie below
        one boundary L (the start of the range found by ``_lost_index``): IsLost only depends on the
        ranges above a byte, and those only shrink as the byte rises. So a segment is lost iff its
        S1 < L, and retransmitted iff its S1 < high_rxt; both are "S1 below a bound X". With U(X)
        the un-SACKed bytes of the segments whose S1 is below X (``_segments_below``, a few prefix
        sums over the ranges): pipe = U(snd_nxt) - U(L) + U(high_rxt).
        """
        flight = seq_sub(snd_nxt, snd_una)
        if flight <= 0:
            return 0
        una = seq_sub(snd_una, self._base)
        nxt = una + flight
        lost = self._lost_index()
        lost_below = min(max(self._starts[lost], una), nxt) if lost >= 0 else una
        rxt_below = una + min(max(seq_sub(high_rxt, snd_una), 0), flight)
        return (self._segments_below(nxt, una, nxt, mss) - self._segments_below(lost_below, una, nxt, mss)
                + self._segments_below(rxt_below, una, nxt, mss))

    def _rebase(self, new_base: int) -> None:
        """Make offset 0 stand for ``new_base`` (at or below every range)."""
        shift = seq_sub(new_base, self._base)
        self._starts[:] = [s - shift for s in self._starts]    # in place: callers hold the lists
        self._ends[:] = [e - shift for e in self._ends]
        self._base = new_base

    def _lost_index(self) -> int:
        """Index of the highest range whose start bounds the lost bytes, -1 if nothing is lost.

        An un-SACKed byte below range i has ranges i.. above it. Their count and their bytes only
        grow as i falls, so the byte is lost iff i <= the highest i meeting either IsLost condition.
        Scanning down from the top finds it within dup_thresh steps.
        """
        starts, ends = self._starts, self._ends
        n = len(starts)
        limit = (self.dup_thresh - 1) * self.smss
        above = 0
        for i in range(n - 1, -1, -1):
            above += ends[i] - starts[i]
            if n - i >= self.dup_thresh or above > limit:
                return i
        return -1

    def _sacked_below(self, x: int) -> int:
        """SACKed bytes below offset x."""
        prefix = self._prefix
        if prefix is None:
            prefix = self._prefix = [0, *accumulate(e - s for s, e in zip(self._starts, self._ends))]
        i = bisect_left(self._ends, x)      # ranges before i end at or below x
        below = prefix[i]
        if i < len(self._starts) and self._starts[i] < x:
            below += x - self._starts[i]
        return below

    def _segments_below(self, x: int, una: int, nxt: int, mss: int) -> int:
        """Un-SACKed bytes of the segments of [una, nxt) (``mss`` each, from una) whose first
        un-SACKed byte is below offset x (una <= x <= nxt)."""
        if x <= una:
            return 0
        sacked_una = self._sacked_below(una)
        if x >= nxt:
            return nxt - una - (self._sacked_below(nxt) - sacked_una)
        seg = una + (x - una) // mss * mss      # the segment holding x: only it can be split by x
        sacked_seg = self._sacked_below(seg)
        counted = seg - una - (sacked_seg - sacked_una)
        if x - seg > self._sacked_below(x) - sacked_seg:   # it has an un-SACKed byte below x
            seg_end = min(seg + mss, nxt)
            counted += seg_end - seg - (self._sacked_below(seg_end) - sacked_seg)
        return counted


def update_sack_blocks(blocks: list[tuple[int, int]], start: int, end: int, rcv_nxt: int,
                       max_blocks: int = 4) -> list[tuple[int, int]]:
    """The receiver's SACK blocks after out-of-order data [start, end) arrived (RFC 2018 §4).

    The block holding the new data comes first, then the previously reported blocks, most recent
    first; blocks merged into the new one, and those at or below ``rcv_nxt``, go. An empty or
    already acknowledged [start, end) (a segment that advanced rcv_nxt) only prunes the list.
    ``blocks`` is as returned by an earlier call: disjoint and non-adjacent, which lets one pass
    merge everything that touches the new data. A receiver can keep more blocks than fit in an
    option (3 beside timestamps) so that data filling a gap still merges with a block no longer sent.
    Only differences between sequence numbers are compared, so wire values and unwrapped ones both work.
    """
    if seq_lt(start, rcv_nxt):
        start = rcv_nxt
    fresh = seq_lt(start, end)
    kept: list[tuple[int, int]] = []
    for s, e in blocks:
        if seq_le(e, rcv_nxt):
            continue
        if seq_lt(s, rcv_nxt):
            s = rcv_nxt
        if fresh and seq_le(s, end) and seq_le(start, e):
            if seq_lt(s, start):
                start = s
            if seq_lt(end, e):
                end = e
        else:
            kept.append((s, e))
    if fresh:
        kept.insert(0, (start, end))
    return kept[:max_blocks]
