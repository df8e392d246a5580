"""Tail loss probes (RFC 8985 §7, Linux's TLP) against a scripted peer: when the last segments of a
flight go unanswered for two round trips, the sender sends one new segment, or the last one again,
instead of waiting for the retransmission timer; the probe's ACK tells whether something was lost (the
window then comes down) or, with a D-SACK, that nothing was. Only with SACK, outside recovery, one probe
at a time, and never later than the RTO."""

from __future__ import annotations

import pytest

from tcp_context import Opts, TCPContext

MSS = 1448          # 1460 less the timestamp option
SACK_OPTS = Opts(mss=1460, sack_perm=True, ts=(1, 0))
RTT = 0.05


def established(opts: Opts = SACK_OPTS) -> TCPContext:
    ctx = TCPContext()
    ctx.connect(opts=opts, rtt=RTT)
    return ctx


def flight(ctx: TCPContext, segments: int) -> list:
    ctx.ep.write(b"d" * (segments * MSS))
    sent = ctx.sent()
    assert len(sent) == segments and all(len(s.payload) == MSS for s in sent)
    return sent


def test_the_last_segment_is_probed_after_two_round_trips_not_an_rto() -> None:
    ctx = established()
    sent = flight(ctx, 4)
    ctx.advance(0.01)
    ctx.ack(ack=sent[1].end)        # the peer has three, but its ACK of the third is lost, and the fourth
    ctx.assert_quiet()
    ctx.advance(2 * ctx.ep.snd.srtt + 0.0025)   # PTO = 2 SRTT + 2 ms, from the ACK that re-armed it
    probe = ctx.sent_one()
    assert probe.seq == sent[3].seq and probe.payload == sent[3].payload
    assert ctx.stats.loss_probes.value == 1 and ctx.stats.timeouts.value == 0
    cwnd = ctx.ep.snd.cwnd
    ctx.ack(ack=sent[3].end)        # acknowledges the probe (or the original: the next ACK will tell)
    assert ctx.stats.loss_probe_recoveries.value == 0
    ctx.ep.write(b"m" * MSS)
    more = ctx.sent_one()
    ctx.ack(ack=more.end)           # beyond the probe, no duplicate in between: it repaired a loss
    assert ctx.stats.loss_probe_recoveries.value == 1 and ctx.ep.snd.cwnd < cwnd
    assert ctx.ep.snd.tlp_high == -1


def test_a_duplicate_ack_for_the_probe_means_nothing_was_lost() -> None:
    """Only the ACKs were slow: the ACK of everything, then the peer's duplicate ACK for the second copy
    (a peer without D-SACK): no loss, the window stays."""
    ctx = established()
    sent = flight(ctx, 3)
    ctx.advance(2 * ctx.ep.snd.srtt + 0.0025)
    assert ctx.sent_one().seq == sent[2].seq
    cwnd = ctx.ep.snd.cwnd
    ctx.ack(ack=sent[2].end)
    ctx.ack(ack=sent[2].end)
    ctx.ep.write(b"m" * MSS)
    ctx.ack(ack=ctx.sent_one().end)
    assert ctx.stats.loss_probe_recoveries.value == 0 and ctx.ep.snd.cwnd >= cwnd


def test_new_data_is_the_probe_when_the_window_takes_it() -> None:
    ctx = established()
    ctx.ep.snd.cwnd = 2                         # two in flight, more written
    ctx.ep.write(b"n" * (4 * MSS))
    sent = ctx.sent()
    assert len(sent) == 2
    ctx.advance(2 * RTT + 0.0025)
    probe = ctx.sent_one()
    assert probe.seq == sent[1].end and len(probe.payload) == MSS      # beyond cwnd, as RFC 8985 allows
    ctx.ack(ack=probe.end)
    assert ctx.stats.loss_probe_recoveries.value == 0 and ctx.ep.snd.tlp_high == -1


def test_a_dsack_for_the_probe_means_nothing_was_lost() -> None:
    ctx = established()
    sent = flight(ctx, 3)
    ctx.advance(2 * RTT + 0.0025)
    probe = ctx.sent_one()
    assert probe.seq == sent[2].seq
    cwnd = ctx.ep.snd.cwnd
    # Everything had arrived (only the ACKs were slow): the peer reports the probe as a duplicate.
    ctx.send("A", ack=sent[2].end, options=Opts(ts=(ctx.tsval(), ctx.ts_recent), sack=((probe.seq, probe.end),)))
    assert ctx.stats.loss_probe_recoveries.value == 0 and ctx.ep.snd.cwnd >= cwnd


def test_one_segment_in_flight_allows_for_a_delayed_ack() -> None:
    """With one segment in flight the probe waits 2 SRTT + 200 ms (its ACK may be delayed): here the RTO,
    at 200 ms, comes first, and no probe goes."""
    ctx = established()
    sent = flight(ctx, 1)
    assert 2 * ctx.ep.snd.srtt + 0.2 > ctx.ep.snd.rto
    ctx.advance(ctx.ep.snd.rto + 0.001)
    assert ctx.sent_one().seq == sent[0].seq
    assert ctx.stats.loss_probes.value == 0 and ctx.stats.timeouts.value == 1


def test_then_the_rto_if_the_probe_is_not_answered() -> None:
    ctx = established()
    sent = flight(ctx, 3)
    ctx.advance(2 * RTT + 0.0025)
    assert ctx.sent_one().seq == sent[2].seq
    ctx.advance(0.1)
    ctx.assert_quiet()                          # one probe only
    ctx.advance(ctx.ep.snd.rto)
    rto = ctx.sent()
    assert rto and rto[0].seq == sent[0].seq and ctx.stats.timeouts.value == 1


@pytest.mark.parametrize("opts", [Opts(mss=1460, ts=(1, 0)), SACK_OPTS], ids=["no SACK", "disabled"])
def test_no_probe_without_sack_or_when_turned_off(opts: Opts) -> None:
    ctx = established(opts)
    ctx.proto.tail_loss_probes = opts.sack_perm is False     # (the SACK case turns them off)
    sent = flight(ctx, 3)
    ctx.advance(2 * RTT + 0.0025 + 0.05)
    ctx.assert_quiet()
    ctx.advance(ctx.ep.snd.rto)
    assert ctx.sent()[0].seq == sent[0].seq and ctx.stats.loss_probes.value == 0


def test_a_probe_repairs_the_tail_of_a_lossy_transfer_faster_than_the_rto() -> None:
    """The peer's last ACKs are all lost: with probes the data is through after two round trips and a
    bit, without them after the 200 ms minimum RTO."""
    times = {}
    for probes in (True, False):
        ctx = established()
        ctx.proto.tail_loss_probes = probes
        sent = flight(ctx, 4)
        start = ctx.clock.now()
        ctx.ack(ack=sent[1].end)
        while True:
            ctx.advance(0.001)
            again = [s for s in ctx.sent() if s.seq == sent[3].seq or s.seq == sent[2].seq]
            if again:
                times[probes] = ctx.clock.now() - start
                break
        assert ctx.ep.snd.una < ctx.ep.snd.max
    assert times[True] < 0.11 < 0.2 <= times[False]
