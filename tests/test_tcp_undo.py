"""Undoing a needless recovery or timeout, against a scripted peer: the window goes back to where it was
when every retransmission comes back as a duplicate (D-SACK, Linux's tcp_try_undo_dsack), or when the
first ACK after them echoes a timestamp older than the first retransmission — the original got through
(the Eifel detection, RFC 3522, Linux's tcp_packet_delayed) — or, after a timeout, when the peer
acknowledges data that was never resent (F-RTO, RFC 5682). A retransmission that repaired a loss
undoes nothing."""

from __future__ import annotations

import pytest

from tcp_context import Opts, TCPContext, seq_add

MSS = 1460
OPTS = Opts(mss=MSS, sack_perm=True)
TS_MSS = MSS - 12       # the timestamp option's room
TS_OPTS = Opts(mss=MSS, sack_perm=True, ts=(1, 0))
RTT = 0.05


def established(rack: bool = True, opts: Opts = OPTS) -> TCPContext:
    ctx = TCPContext()
    ctx.proto.rack_loss_detection = rack
    ctx.proto.tail_loss_probes = False
    ctx.connect(opts=opts, rtt=RTT)
    return ctx


def flight(ctx: TCPContext, segments: int, mss: int = MSS) -> list:
    ctx.ep.write(b"u" * (segments * mss))
    sent = ctx.sent()
    assert [len(s.payload) for s in sent] == [mss] * segments
    return sent


def sack(ctx: TCPContext, ack: int, *blocks: tuple[int, int], echo: int | None = None) -> None:
    """An ACK with ``blocks``; with timestamps on, echoing ``echo`` (default: the latest TSval seen)."""
    ts = None if not ctx.ts_ok else (ctx.tsval(), ctx.ts_recent if echo is None else echo)
    ctx.ack(ack=ack, options=Opts(sack=blocks, ts=ts))


def resent(ctx: TCPContext) -> list[int]:
    return [s.seq for s in ctx.sent() if s.payload]


# --- by D-SACK ------------------------------------------------------------------------------------

@pytest.mark.parametrize("rack", [True, False], ids=["RACK", "RFC 6675"])
def test_a_recovery_whose_retransmissions_were_all_duplicates_is_undone(rack: bool) -> None:
    """Segment 0 was only late: the sender resends it on four SACKs and lowers its window; the original
    arrives, then the copy, which the peer reports with a D-SACK: the reduction is undone."""
    ctx = established(rack)
    snd = ctx.ep.snd
    snd.cwnd = 20
    s = flight(ctx, 5)
    cwnd, ssthresh = snd.cwnd, snd.ssthresh
    ctx.advance(RTT)
    for i in range(1, 5):
        sack(ctx, s[0].seq, (s[1].seq, s[i].end))
    assert resent(ctx) == [s[0].seq] and snd.cwnd < cwnd
    sack(ctx, s[4].end)                                     # the original
    sack(ctx, s[4].end, (s[0].seq, s[0].end))               # the copy: a duplicate
    assert ctx.stats.dsack_undos.value == 1
    assert (snd.cwnd, snd.ssthresh, snd.recovery) == (cwnd, ssthresh, False)


def test_a_recovery_that_repaired_a_loss_is_not_undone() -> None:
    """Two segments were resent; only one comes back as a duplicate: the other repaired a loss."""
    ctx = established()
    snd = ctx.ep.snd
    snd.cwnd = 20
    s = flight(ctx, 6)
    ctx.advance(RTT)
    for i in range(2, 6):
        sack(ctx, s[0].seq, (s[2].seq, s[i].end))
    assert resent(ctx) == [s[0].seq, s[1].seq]
    sack(ctx, s[5].end, (s[0].seq, s[0].end))               # 0 was late (a duplicate), 1 was lost
    assert ctx.stats.dsack_undos.value == 0 and snd.cwnd < 20


# --- by timestamps --------------------------------------------------------------------------------

@pytest.mark.parametrize("rack", [True, False], ids=["RACK", "RFC 6675"])
def test_an_ack_echoing_the_originals_timestamp_undoes_the_recovery(rack: bool) -> None:
    """Segment 0 was late, not lost: the ACK its arrival draws echoes its own timestamp, older than the
    retransmission's, and the recovery is undone at once — no D-SACK needed."""
    ctx = established(rack, TS_OPTS)
    snd = ctx.ep.snd
    snd.cwnd = 20
    s = flight(ctx, 5, TS_MSS)
    cwnd, ssthresh = snd.cwnd, snd.ssthresh
    ctx.advance(RTT)
    for i in range(1, 5):
        sack(ctx, s[0].seq, (s[1].seq, s[i].end), echo=s[i].options.ts[0])
    assert resent(ctx) == [s[0].seq] and snd.cwnd < cwnd
    ctx.advance(0.002)
    sack(ctx, s[4].end, echo=s[0].options.ts[0])            # the original filled the hole
    assert ctx.stats.spurious_recovery.value == 1 and ctx.stats.dsack_undos.value == 0
    assert (snd.cwnd, snd.ssthresh, snd.recovery) == (cwnd, ssthresh, False)


def test_an_ack_echoing_the_retransmissions_timestamp_undoes_nothing() -> None:
    ctx = established(True, TS_OPTS)
    snd = ctx.ep.snd
    snd.cwnd = 20
    s = flight(ctx, 5, TS_MSS)
    ctx.advance(RTT)
    for i in range(1, 5):
        sack(ctx, s[0].seq, (s[1].seq, s[i].end), echo=s[i].options.ts[0])
    (retransmission,) = [seg for seg in ctx.sent() if seg.payload]
    ctx.advance(RTT)
    sack(ctx, s[4].end, echo=retransmission.options.ts[0])  # the retransmission filled it: a real loss
    assert ctx.stats.spurious_recovery.value == 0 and snd.cwnd < 20


def test_a_timeout_answered_by_the_original_is_undone_and_nothing_more_is_resent() -> None:
    """A delay spike longer than the RTO: the timer resends segment 0 and collapses the window; then the
    ACK for the originals arrives, echoing their timestamp. The timeout is undone — window and ssthresh
    back — and the rest of the flight is not sent again (go-back-N stops)."""
    ctx = established(True, TS_OPTS)
    snd = ctx.ep.snd
    snd.cwnd = 10
    s = flight(ctx, 4, TS_MSS)
    cwnd, ssthresh = snd.cwnd, snd.ssthresh
    while not ctx.stats.timeouts.value:
        ctx.advance(0.01)
    assert resent(ctx) == [s[0].seq] and snd.cwnd == 1
    sack(ctx, s[1].end, echo=s[0].options.ts[0])            # the delayed originals' ACK
    assert ctx.stats.spurious_rto_recovery.value == 1
    assert (snd.cwnd, snd.ssthresh) == (cwnd, ssthresh) and snd.nxt == snd.max
    assert not resent(ctx)                                  # segments 2 and 3 are on their way already
    sack(ctx, s[3].end, echo=s[2].options.ts[0])
    assert ctx.ep.info().unacked == 0 and ctx.stats.retransmits.value == 1


# --- after a timeout, without timestamps: F-RTO ------------------------------------------------------

def timed_out(ctx: TCPContext, segments: int, more: int = 0) -> list:
    """``segments`` in flight (and ``more`` written behind them), the first resent by the RTO."""
    ctx.ep.snd.cwnd = segments
    ctx.ep.write(b"u" * ((segments + more) * MSS))
    s = ctx.sent()
    assert len(s) == segments
    while not ctx.stats.timeouts.value:
        ctx.advance(0.01)
    assert resent(ctx) == [s[0].seq]
    return s


def test_an_ack_of_data_never_resent_shows_the_timeout_needless() -> None:
    """F-RTO (RFC 5682 §3): the ACK after the timeout covers segment 1, which was never resent: the
    originals had arrived, the timeout is undone — the window back, nothing more resent."""
    ctx = established(True, OPTS)
    snd = ctx.ep.snd
    s = timed_out(ctx, 4)
    sack(ctx, s[1].end)
    assert ctx.stats.spurious_rto_recovery.value == 1 and snd.nxt == snd.max
    assert snd.cwnd >= 4 and snd.ssthresh > 4        # back where they were (and grown by this ACK)
    assert not resent(ctx)
    sack(ctx, s[3].end)
    assert ctx.ep.info().unacked == 0 and ctx.stats.retransmits.value == 1


def test_after_an_ambiguous_ack_new_data_goes_out_to_find_out() -> None:
    """The first ACK covers only the resent segment: it cannot tell. Two new segments go out instead of
    segment 1 again; the ACK that then covers segment 1 (never resent) shows the timeout needless."""
    ctx = established(True, OPTS)
    snd = ctx.ep.snd
    s = timed_out(ctx, 4, more=2)
    sack(ctx, s[0].end)
    probe = [seg for seg in ctx.sent() if seg.payload]
    assert [seg.seq for seg in probe] == [s[3].end, seq_add(s[3].end, MSS)]      # new data, not segment 1
    sack(ctx, s[2].end)
    assert ctx.stats.spurious_rto_recovery.value == 1 and snd.cwnd >= 4 and snd.ssthresh > 4
    assert not resent(ctx)


def test_when_only_the_new_data_is_acknowledged_the_loss_was_real() -> None:
    """After the ambiguous ACK and the two new segments, the peer SACKs the new ones and still waits for
    segment 1: it was lost; resending goes on from there."""
    ctx = established(True, OPTS)
    s = timed_out(ctx, 4, more=2)
    sack(ctx, s[0].end)
    probe = [seg for seg in ctx.sent() if seg.payload]
    sack(ctx, s[0].end, (probe[0].seq, probe[1].end))
    assert ctx.stats.spurious_rto_recovery.value == 0 and ctx.ep.snd.frto == 0
    assert resent(ctx)[:1] == [s[1].seq]


def test_without_f_rto_an_ack_does_not_undo_a_timeout() -> None:
    ctx = established(True, OPTS)
    ctx.proto.frto = False
    snd = ctx.ep.snd
    s = timed_out(ctx, 4)
    sack(ctx, s[1].end)
    assert ctx.stats.spurious_rto_recovery.value == 0 and snd.cwnd < 4     # slow start from 1
    assert resent(ctx)[:1] == [s[2].seq]                                    # and on with resending
