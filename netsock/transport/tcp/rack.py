"""RACK: loss detection by time (RFC 8985 §6, Linux's tcp_recovery.c).

RFC 6675 calls a segment lost once three segments above it are SACKed. That misses what it cannot
count: a lost retransmission (nothing above it is ever SACKed again: it waits for the RTO), a loss among
the last two segments of a flight, and it mistakes reordering by more than three segments for loss.
RACK asks instead *when* each segment was sent: once a segment sent later has been delivered (ACKed or
SACKed), one sent earlier that is still missing after a round trip and a reordering allowance is lost.
The allowance (``reo_wnd``) is a quarter of the minimum RTT once reordering has been seen (and zero
before, in recovery or with three segments SACKed, so that the first loss is found as fast as RFC 6675
finds it); it grows with every round trip whose D-SACK says a retransmission was spurious.

This module keeps the per-transmission records RACK needs: ``[start, end, xmit_ts, flags, order]``
in the sender's unwrapped sequence space, in sequence order, covering what is sent and not yet
cumulatively acknowledged; a record is split where an ACK, a SACK or a retransmission cuts it. A
super-segment is one record until something cuts it. ``order`` numbers transmissions: which of two
was sent later is told by it, and within one (the pieces of a super-segment) by the sequence number,
not by the clock (RFC 8985's xmit_ts, with end_seq as the tie-break), since a retransmission may go
out within the clock's tick of the original it follows.
"""

from __future__ import annotations

SACKED = 1
LOST = 2
RETRANSMITTED = 4

REO_WND_PERSIST = 16        # recoveries without D-SACK before the allowance shrinks back (RFC 8985 §6.2)
MAX_REO_WND_MULT = 255      # (Linux keeps the multiplier in a byte)


class RACK:
    __slots__ = ("records", "transmissions", "order", "end_seq", "rtt", "fack", "reordering_seen", "reorderings",
                 "reo_wnd_mult", "reo_wnd_persist", "dsack_round")

    def __init__(self) -> None:
        self.records: list[list] = []
        self.transmissions = 0      # numbers the records' transmissions
        self.order = 0              # that of the most recently sent segment delivered (RACK.xmit_ts) ...
        self.end_seq = 0            # ... its end (RACK.end_seq) ...
        self.rtt = 0.0              # ... and the round trip it took (RACK.rtt)
        self.fack = 0               # the highest end delivered (RACK.fack)
        self.reordering_seen = False
        self.reorderings = 0        # deliveries found out of order (TCP_INFO's tcpi_reord_seen)
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = 0
        self.dsack_round: int | None = None

    # --- what was sent ----------------------------------------------------------------------------

    def sent(self, start: int, end: int, now: float, retransmission: bool) -> None:
        """[start, end) went out at ``now``: new data is a record of its own; a retransmission stamps
        the records it covers again (no longer lost; RETRANSMITTED, so their delivery is no RTT
        sample Karn would trust) and records the new bytes it may take along."""
        records = self.records
        self.transmissions = order = self.transmissions + 1
        if not records or start >= records[-1][1]:
            records.append([start, end, now, RETRANSMITTED if retransmission else 0, order])
            return
        last_end = records[-1][1]
        for rec in self._cut(start, min(end, last_end)):
            rec[2] = now
            rec[3] = (rec[3] & ~LOST) | RETRANSMITTED
            rec[4] = order
        if end > last_end:
            records.append([last_end, end, now, 0, order])

    def _cut(self, start: int, end: int) -> list[list]:
        """The records covering [start, end), split so that none reaches outside it."""
        records = self.records
        covered = []
        i = 0
        while i < len(records):
            rec = records[i]
            if rec[1] <= start:
                i += 1
                continue
            if rec[0] >= end:
                break
            if rec[0] < start:
                records.insert(i + 1, [start, rec[1], rec[2], rec[3], rec[4]])
                rec[1] = start
                i += 1
                continue
            if rec[1] > end:
                records.insert(i + 1, [end, rec[1], rec[2], rec[3], rec[4]])
                rec[1] = end
            covered.append(rec)
            i += 1
        return covered

    # --- what was delivered -----------------------------------------------------------------------

    def acked(self, una: int, now: float, min_rtt: float, echo_ms: int | None = None) -> None:
        """Everything below ``una`` arrived: its records go, each delivery noted (RFC 8985 §6.2 step 2).
        ``echo_ms``: when (stack clock, milliseconds) the segment whose timestamp the ACK echoes was sent."""
        records = self.records
        if len(records) == 1:
            rec = records[0]
            if rec[1] <= una and not rec[3]:
                # The common case, one transmission acknowledged whole: the latest delivered, beyond
                # anything delivered before (what _delivered concludes, without its tests).
                records.clear()
                self.order, self.end_seq, self.rtt, self.fack = rec[4], rec[1], now - rec[2], rec[1]
                return
        done = 0
        for rec in records:
            if rec[1] > una:
                if rec[0] < una:
                    rec[0] = una
                break
            done += 1
            if not rec[3] & SACKED:
                self._delivered(rec, now, min_rtt, echo_ms)
        if done:
            del records[:done]

    def sacked(self, start: int, end: int, now: float, min_rtt: float, echo_ms: int | None = None) -> int:
        """The peer holds [start, end): returns how many bytes of it are newly SACKed."""
        newly = 0
        for rec in self._cut(start, end):
            if not rec[3] & SACKED:
                rec[3] = (rec[3] | SACKED) & ~LOST
                newly += rec[1] - rec[0]
                self._delivered(rec, now, min_rtt, echo_ms)
        return newly

    def _delivered(self, rec: list, now: float, min_rtt: float, echo_ms: int | None) -> None:
        start, end, xmit_ts, flags, order = rec
        if flags & RETRANSMITTED and (now - xmit_ts < min_rtt or
                                      echo_ms is not None and echo_ms < int(xmit_ts * 1000)):
            # The original's delivery, not the retransmission's: sooner than any round trip, or answering a
            # timestamp older than the retransmission (a queue can delay the original past min_rtt).
            return
        if end > self.fack:
            self.fack = end
        elif not flags & RETRANSMITTED:
            self.reordering_seen = True     # sent before something delivered earlier (§6.2 step 3)
            self.reorderings += 1
        if order > self.order or (order == self.order and end > self.end_seq):
            self.order = order
            self.end_seq = end
            self.rtt = now - xmit_ts

    def dsack(self, una: int, nxt: int) -> None:
        """A D-SACK arrived: something was retransmitted needlessly. The reordering allowance grows,
        once per round trip (RFC 8985 §6.2 step 4)."""
        if self.dsack_round is not None and una >= self.dsack_round:
            self.dsack_round = None
        if self.dsack_round is None:
            self.dsack_round = nxt
            self.reo_wnd_mult = min(self.reo_wnd_mult + 1, MAX_REO_WND_MULT)
            self.reo_wnd_persist = REO_WND_PERSIST

    def recovery_ended(self) -> None:
        """A recovery ended: after REO_WND_PERSIST of them without a D-SACK the allowance is reset."""
        if self.reo_wnd_persist > 0:
            self.reo_wnd_persist -= 1
            if not self.reo_wnd_persist:
                self.reo_wnd_mult = 1

    # --- what is lost -----------------------------------------------------------------------------

    @property
    def sacked_bytes(self) -> int:
        """SACKed and still above the cumulative ACK (the sender's scoreboard counts the same)."""
        return sum(rec[1] - rec[0] for rec in self.records if rec[3] & SACKED)

    def reo_wnd(self, srtt: float, min_rtt: float, recovering: bool, dup_thresh_sacked: bool) -> float:
        """The reordering allowance: none before reordering was seen while recovering or with DupThresh
        segments SACKed (``dup_thresh_sacked``), else a quarter of the minimum RTT per step, at most SRTT."""
        if not self.reordering_seen and (recovering or dup_thresh_sacked):
            return 0.0
        return min(self.reo_wnd_mult * min_rtt / 4, srtt)

    def detect_loss(self, now: float, reo_wnd: float) -> tuple[int, int, float]:
        """Mark lost what was sent before the latest delivered segment and is overdue by RACK.rtt +
        ``reo_wnd`` (§6.2 step 5). Returns how many records were newly marked, how many of them
        were retransmissions, and how long until the latest of the others is overdue (0: none waits)."""
        order, end_seq = self.order, self.end_seq
        deadline = self.rtt + reo_wnd
        lost = lost_retransmissions = 0
        wait = 0.0
        for rec in self.records:
            if rec[3] & (SACKED | LOST):
                continue
            if rec[4] > order or (rec[4] == order and rec[1] >= end_seq):
                continue        # sent after the delivered one: nothing to conclude yet
            remaining = rec[2] + deadline - now
            if remaining <= 0:
                rec[3] |= LOST
                lost += 1
                if rec[3] & RETRANSMITTED:
                    lost_retransmissions += 1
            elif remaining > wait:
                wait = remaining
        return lost, lost_retransmissions, wait

    def first_lost(self) -> list | None:
        """The lowest record marked lost (the next to retransmit)."""
        for rec in self.records:
            if rec[3] & LOST:
                return rec
        return None

    def segments(self, mss: int) -> tuple[int, int, int]:
        """For TCP_INFO, in segments of ``mss`` bytes: SACKed, lost (not yet resent), and resent and
        in flight (Linux's sacked_out, lost_out, retrans_out)."""
        sacked = lost = resent = 0
        for start, end, _, flags, _ in self.records:
            count = (end - start + mss - 1) // mss
            if flags & SACKED:
                sacked += count
            elif flags & LOST:
                lost += count
            elif flags & RETRANSMITTED:
                resent += count
        return sacked, lost, resent

    def pipe(self) -> int:
        """Bytes in flight: sent, not delivered and not lost (a retransmission is in flight once)."""
        return sum(rec[1] - rec[0] for rec in self.records if not rec[3] & (SACKED | LOST))

    def found_in_flight(self) -> None:
        """The timeout was spurious: what it presumed lost is on its way after all."""
        for rec in self.records:
            rec[3] &= ~LOST

    def timed_out(self, reneged: bool) -> None:
        """The RTO fired: everything in flight that the peer has not SACKed is presumed lost; with
        ``reneged`` (it dropped what it SACKed) everything is, and its SACKs are forgotten."""
        for rec in self.records:
            if reneged or not rec[3] & SACKED:
                rec[3] = (rec[3] & ~SACKED) | LOST
