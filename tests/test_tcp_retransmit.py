"""Loss recovery: the retransmission timer (RFC 6298), fast retransmit and NewReno (RFC 5681,
RFC 6582), SACK-based recovery (RFC 6675) and its window (PRR, RFC 6937), and giving up."""

from __future__ import annotations

import math

import pytest

from netsock.tcpip import ErrClosedForSend, ErrConnectStarted, ErrTimeout, FullAddress, SockOpt
from netsock.transport.tcp import TCPState
from netsock.waiter import EventMask
from tcp_context import FIN, RST, Opts, TCPContext, seq_add

MSS = 1460


def established(rtt: float = 0.01, **kw) -> TCPContext:
    ctx = TCPContext()
    ctx.connect(rtt=rtt, **kw)
    ctx.ep.set_sock_opt(SockOpt.DELAY, 0)
    return ctx


def retransmission_times(ctx: TCPContext, seq: int, until: float, step: float = 0.05) -> list[float]:
    """Times (from now) at which the segment starting at ``seq`` is sent, none of them answered."""
    start = ctx.clock.now()
    times = []
    while ctx.clock.now() - start < until:
        ctx.advance(step)
        times += [round(s.time - start, 9) for s in ctx.sent() if s.seq == seq and s.payload]
    return times


# --- the retransmission timer ---------------------------------------------------------------------

def test_initial_rto_is_one_second():
    ctx = TCPContext()
    ep, _ = ctx.new_endpoint()
    with pytest.raises(ErrConnectStarted):
        ep.connect(FullAddress(0, ctx.peer, ctx.peer_port))
    syn = ctx.sent_one()
    assert ep.info().rto == 1.0
    ctx.advance(0.999)
    ctx.assert_quiet()
    ctx.advance(0.001)
    again = ctx.sent_one()
    assert again.seq == syn.seq and again.time - syn.time == pytest.approx(1.0)


def test_rto_after_a_retransmitted_syn_is_three_seconds():
    """RFC 6298 §5.7: no RTT sample from a handshake whose SYN timed out, and the RTO restarts at 3 s."""
    ctx = TCPContext()
    ep, _ = ctx.new_endpoint()
    with pytest.raises(ErrConnectStarted):
        ep.connect(FullAddress(0, ctx.peer, ctx.peer_port))
    syn = ctx.sent_one()
    ctx.advance(1.0)
    assert ctx.sent_one().seq == syn.seq
    ctx.advance(0.5)
    ctx.port, ctx.iss, ctx.nxt, ctx.rcv_nxt = syn.src_port, syn.seq, 5000, seq_add(syn.seq, 1)
    ctx.send("SA", seq=4999, options=Opts(mss=MSS))
    ctx.sent_one()
    assert ep.state is TCPState.ESTABLISHED
    info = ep.info()
    assert info.rtt == 0 and info.rto == pytest.approx(3.0)
    ep.write(b"d" * 100)
    first = ctx.sent_one()
    assert retransmission_times(ctx, first.seq, 3.5) == [pytest.approx(3.0)]


def test_rto_has_a_200_ms_floor():
    ctx = established(rtt=0.001)
    assert ctx.ep.info().rto == pytest.approx(0.2)
    ctx.ep.write(b"x" * 100)
    seg = ctx.sent_one()
    assert retransmission_times(ctx, seg.seq, 0.25, step=0.01) == [pytest.approx(0.2)]


def test_rtt_estimator_follows_rfc_6298():
    ctx = established(rtt=0.4)
    ep = ctx.ep
    info = ep.info()
    assert (info.rtt, info.rttvar, info.rto) == (pytest.approx(0.4), pytest.approx(0.2), pytest.approx(1.2))
    ep.write(b"x" * 100)
    ctx.absorb(ctx.sent())
    ctx.advance(0.2)
    ctx.ack()
    info = ep.info()
    # RTTVAR = 3/4 * 0.2 + 1/4 * |0.4 - 0.2|; SRTT = 7/8 * 0.4 + 1/8 * 0.2; RTO = SRTT + 4 * RTTVAR.
    assert info.rttvar == pytest.approx(0.2) and info.rtt == pytest.approx(0.375)
    assert info.rto == pytest.approx(1.175) and info.min_rtt == pytest.approx(0.2)


def test_rto_backs_off_exponentially_up_to_the_maximum():
    ctx = established(rtt=0.001)
    ctx.ep.max_retries = 100
    ctx.ep.write(b"x" * 100)
    seg = ctx.sent_one()
    times = retransmission_times(ctx, seg.seq, 700, step=0.1)
    intervals = [b - a for a, b in zip([0.0] + times, times)]
    assert intervals == pytest.approx([0.2 * 2**i for i in range(10)] + [120.0] * 4)


def test_karn_no_rtt_sample_from_a_retransmitted_segment():
    ctx = established(rtt=0.1)
    ep = ctx.ep
    before = ep.info()
    ep.write(b"x" * 100)
    ctx.sent()
    ctx.advance(0.31)                                  # RTO 0.3: retransmitted
    ctx.absorb(ctx.sent())
    ctx.advance(0.25)
    ctx.ack()                                          # ambiguous: the original or the retransmission?
    after = ep.info()
    assert (after.rtt, after.rttvar) == (before.rtt, before.rttvar)
    assert after.rto == pytest.approx(0.6)             # still backed off (RFC 6298 §5.7)
    ep.write(b"y" * 100)                               # a fresh segment gives a sample again
    ctx.absorb(ctx.sent())
    ctx.advance(0.1)
    ctx.ack()
    info = ep.info()
    assert info.rtt == pytest.approx(0.1) and info.rttvar == pytest.approx(0.0375)
    assert info.rto == pytest.approx(0.25)


def test_timeout_retransmits_from_the_first_unacknowledged_segment_in_slow_start():
    ctx = established(rtt=0.001)
    ep = ctx.ep
    data = bytes(range(256)) * 40
    ep.write(data[:5 * MSS])
    segs = ctx.sent()
    assert len(segs) == 5
    ctx.advance(0.2)
    (rtx,) = ctx.sent()
    assert (rtx.seq, rtx.payload) == (segs[0].seq, segs[0].payload)   # cwnd is one segment
    assert ep.info().cwnd == 1
    ctx.absorb([rtx])
    ctx.ack()
    following = ctx.sent()                             # slow start: two more, resending what was lost
    assert [s.seq for s in following] == [segs[1].seq, segs[2].seq]
    assert ctx.absorb(following) == data[MSS:3 * MSS]


def test_ack_of_new_data_restarts_the_timer():
    ctx = established(rtt=0.001)
    ep = ctx.ep
    ep.write(b"a" * 100)
    first = ctx.sent_one()
    ctx.advance(0.15)
    ep.write(b"b" * 100)
    second = ctx.sent_one()
    ctx.absorb([first])
    ctx.ack()                                          # RFC 6298 §5.3: restart for what remains
    ctx.advance(0.19)
    ctx.assert_quiet()
    ctx.advance(0.02)
    assert ctx.sent_one().seq == second.seq


def test_acks_after_a_timeout_are_numbered_from_the_highest_sequence_sent():
    """After a timeout the sender goes back to resend from SND.UNA; its ACKs must still carry the
    highest sequence number sent, or a peer that already holds the data finds them unacceptable and
    ignores their acknowledgment (two such sides deadlock)."""
    ctx = established(rtt=0.001)
    ep = ctx.ep
    ep.write(b"d" * 5 * MSS)
    segs = ctx.sent()
    ctx.advance(0.2)
    (rtx,) = ctx.sent()
    assert rtx.seq == segs[0].seq
    ctx.send_data(b"peer data")
    ack = ctx.sent_one()
    assert (ack.flagstr, ack.seq, ack.ack) == ("A", segs[-1].end, ctx.nxt)


def test_retransmissions_give_up_with_timeout_and_reset():
    ctx = established(rtt=0.001)
    ep = ctx.ep
    ep.write(b"x" * 100)
    seg = ctx.sent_one()
    start = ctx.clock.now()
    sent = []
    while ep.state is not TCPState.CLOSED and ctx.clock.now() - start < 5000:
        ctx.advance(1)
        sent += ctx.sent()
    rtx = [s for s in sent if s.payload]
    assert len(rtx) == 15                              # tcp_retries2
    assert all(s.seq == seg.seq for s in rtx)
    rst = sent[-1]
    assert rst.flags & RST and rst.seq == seg.end
    assert ctx.stats.timeouts.value == 16
    assert ep.readiness(EventMask.ERR) == EventMask.ERR
    assert isinstance(ep.get_sock_opt(SockOpt.ERROR), ErrTimeout)
    with pytest.raises(ErrClosedForSend):   # SO_ERROR reported the timeout; writing now is EPIPE (Linux)
        ep.write(b"more")
    assert len(ctx.stack.timers) == 0 and len(ctx.stack.demux) == 0 and len(ctx.stack.ports) == 0


# --- fast retransmit and NewReno ---------------------------------------------------------------------

def ten_segments(ctx: TCPContext) -> list:
    ctx.ep.write(bytes(i & 0xFF for i in range(10 * MSS)))
    segs = ctx.sent()
    assert [len(s.payload) for s in segs] == [MSS] * 10
    return segs


def test_fast_retransmit_on_the_third_duplicate_ack_and_newreno_partial_ack():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.CONGESTION_CONTROL, "reno")
    s = ten_segments(ctx)
    # Segments 2 and 5 are lost; the peer ACKs 0-1, then duplicates for 3, 4, 6, 7, 8, 9.
    ctx.ack(ack=s[2].seq)
    ctx.ack(ack=s[2].seq)
    ctx.ack(ack=s[2].seq)
    ctx.assert_quiet()
    ctx.ack(ack=s[2].seq)                              # the third duplicate
    (rtx,) = ctx.sent()
    assert (rtx.seq, rtx.payload) == (s[2].seq, s[2].payload)
    assert ctx.stats.fast_retransmit.value == 1 and ctx.stats.fast_recovery.value == 1
    info = ep.info()
    assert (info.ssthresh, info.cwnd) == (4, 7)        # half of 8 in flight; + 3 for the dupacks
    for _ in range(3):
        ctx.ack(ack=s[2].seq)
    ctx.assert_quiet()                                 # nothing new to send, nothing else to resend
    assert ep.info().cwnd == 10
    ctx.ack(ack=s[5].seq)                              # partial ACK: the next hole is lost too
    (rtx,) = ctx.sent()
    assert (rtx.seq, rtx.payload) == (s[5].seq, s[5].payload)
    assert ep.info().cwnd == 8                         # deflated by the 3 segments ACKed, + 1
    ctx.ack(ack=s[9].end)                              # everything: recovery is over
    info = ep.info()
    assert info.unacked == 0 and info.total_retransmits == 2
    # RFC 6582 §3.2 step 6: min(ssthresh, max(FlightSize, SMSS) + SMSS).
    assert info.cwnd == 2
    ctx.assert_quiet()
    assert ctx.stats.timeouts.value == 0


def test_window_updates_and_data_segments_are_not_duplicate_acks():
    ctx = established()
    s = ten_segments(ctx)
    ctx.ack(ack=s[1].seq)
    ctx.ack(ack=s[1].seq, window=60000)               # a window update
    ctx.ack(ack=s[1].seq, window=50000)
    ctx.send_data(b"x", ack=s[1].seq, window=50000)    # carries data
    ctx.send_data(b"y", ack=s[1].seq, window=50000)
    assert all(not seg.payload for seg in ctx.sent())
    assert ctx.stats.fast_retransmit.value == 0


def test_no_second_fast_retransmit_for_the_same_loss_window():
    """RFC 6582 §3.2 step 1: duplicate ACKs that do not cover ``recover`` start no new recovery."""
    ctx = established()
    s = ten_segments(ctx)
    for _ in range(4):
        ctx.ack(ack=s[0].seq)
    assert [seg.seq for seg in ctx.sent()] == [s[0].seq]
    ctx.ack(ack=s[9].end)
    assert ctx.stats.fast_retransmit.value == 1


# --- SACK recovery ----------------------------------------------------------------------------------

def test_sack_recovery_retransmits_only_the_holes():
    ctx = established(opts=Opts(mss=MSS, sack_perm=True))
    ep = ctx.ep
    s = ten_segments(ctx)
    lost = {1, 4}
    retransmitted = []
    sacked: list[tuple[int, int]] = []
    ctx.ack(ack=s[1].seq)
    for i in range(2, 10):
        if i in lost:
            continue
        if sacked and sacked[-1][1] == s[i].seq:
            sacked[-1] = (sacked[-1][0], s[i].end)
        else:
            sacked.append((s[i].seq, s[i].end))
        blocks = tuple(reversed(sacked))[:4]
        ctx.ack(ack=s[1].seq, options=Opts(sack=blocks))
        retransmitted += [seg.seq for seg in ctx.sent() if seg.payload]
    assert retransmitted == [s[1].seq, s[4].seq]       # the holes, in order, and never a SACKed segment
    assert ctx.stats.sack_recovery.value == 1
    ctx.ack(ack=s[4].seq, options=Opts(sack=((s[5].seq, s[9].end),)))
    ctx.ack(ack=s[9].end)
    assert ep.info().unacked == 0
    ctx.assert_quiet()
    assert ctx.stats.timeouts.value == 0


def prr_flight(ctx: TCPContext, segments: int) -> list:
    """``segments`` in flight with a window of exactly that, more data waiting behind them."""
    ctx.ep.snd.cwnd = segments
    ctx.ep.write(b"p" * (2 * segments * MSS))
    s = ctx.sent()
    assert len(s) == segments
    return s


@pytest.mark.parametrize("rack", [True, False], ids=["RACK", "RFC 6675"])
def test_recovery_sends_in_proportion_to_what_the_peer_receives(rack: bool):
    """RFC 6937's PRR: with 20 in flight, CUBIC's ssthresh is 14, and while more than that is in
    flight each ACK lets out ceil(14 * delivered / 20) minus what went out already: 7 segments for
    every 10 the peer receives, evenly, instead of silence until the pipe drains to 14 and a window's
    worth afterwards. The recovery ends with the window at ssthresh."""
    ctx = established(opts=Opts(mss=MSS, sack_perm=True))
    ctx.proto.rack_loss_detection = rack
    snd = ctx.ep.snd
    s = prr_flight(ctx, 20)
    ctx.advance(0.01)
    sent = []
    for i in range(1, 20):
        ctx.ack(ack=s[0].seq, options=Opts(sack=((s[1].seq, s[i].end),)))
        sent.append(sum(1 for seg in ctx.sent() if seg.payload))
    entry = 2               # the third ACK starts recovery (the first two: limited transmit, one each)
    assert sent[:entry] == [1, 1] and ctx.stats.sack_recovery.value == 1
    proportional = [math.ceil(14 * k / 20) - math.ceil(14 * (k - 1) / 20) for k in range(1, 11)]
    assert sent[entry:entry + 10] == proportional       # 1, 1, 1, 0, 1, 1, 0, 1, 1, 0
    assert snd.ssthresh == 14 and snd.cwnd == 14


def test_after_heavy_loss_recovery_grows_back_no_faster_than_slow_start():
    """Half the flight is lost: the one ACK that SACKs the other half leaves nothing in flight, far
    below ssthresh. PRR's slow-start bound lets out as many as that ACK delivered (10), not the 14
    ssthresh would allow at once."""
    ctx = established(opts=Opts(mss=MSS, sack_perm=True))
    s = prr_flight(ctx, 20)
    ctx.advance(0.01)
    ctx.ack(ack=s[0].seq, options=Opts(sack=((s[10].seq, s[19].end),)))
    out = [seg for seg in ctx.sent() if seg.payload]
    assert [seg.seq for seg in out] == [seg.seq for seg in s[:10]]     # the holes, lowest first
    assert ctx.ep.snd.ssthresh == 14


def test_sack_blocks_outside_the_window_are_ignored():
    ctx = established(opts=Opts(mss=MSS, sack_perm=True))
    s = ten_segments(ctx)
    bogus = ((seq_add(s[9].end, 1000), seq_add(s[9].end, 2000)), (seq_add(s[0].seq, -5000), s[0].seq))
    for _ in range(2):
        ctx.ack(ack=s[0].seq, options=Opts(sack=bogus))
    ctx.assert_quiet()
    assert ctx.stats.fast_retransmit.value == 0


def test_lost_fin_is_retransmitted():
    ctx = established(rtt=0.001)
    ep = ctx.ep
    ep.close()
    fin = ctx.sent_one()
    ctx.advance(0.2)
    again = ctx.sent_one()
    assert (again.ctl, again.seq) == ("FA", fin.seq)
    ctx.rcv_nxt = seq_add(fin.seq, 1)
    ctx.ack()
    assert ep.state is TCPState.FIN_WAIT2


def test_lost_fin_with_data_resends_the_data_and_the_fin():
    ctx = established(rtt=0.001)
    ep = ctx.ep
    ep.write(b"tail")
    ep.close()
    segs = ctx.sent()
    assert ctx.absorb(segs) == b"tail" and segs[-1].flags & FIN
    ctx.advance(0.2)
    (again,) = ctx.sent()
    assert (again.payload, again.ctl, again.seq) == (b"tail", "FA", segs[0].seq)


def test_retransmission_that_takes_along_newer_data_advances_snd_max():
    """A timeout resends from SND.UNA as much as a segment holds, which may include bytes written
    after the first transmission (held back by Nagle meanwhile): the peer's ACK of them is valid."""
    ctx = TCPContext()
    ctx.connect(rtt=0.001)
    ep = ctx.ep
    ep.write(b"a" * 100)
    first = ctx.sent_one()
    ep.write(b"b" * 50)
    ctx.assert_quiet()                                 # Nagle: one small segment in flight at a time
    ctx.advance(0.2)
    (rtx,) = ctx.sent()
    assert (rtx.seq, rtx.payload) == (first.seq, b"a" * 100 + b"b" * 50)
    ctx.absorb([rtx])
    ctx.ack()
    ctx.assert_quiet()                                 # accepted: no challenge ACK
    info = ep.info()
    assert info.unacked == 0 and ep.get_sock_opt(SockOpt.SEND_QUEUE_SIZE) == 0
    ep.write(b"c")
    assert ctx.absorb(ctx.sent()) == b"c"


# --- restarting after idle (RFC 5681 §4.1) --------------------------------------------------------

def grown_to(ctx: TCPContext, cwnd: int) -> None:
    """Slow start, every segment acknowledged at once, until cwnd reaches ``cwnd``; nothing left in flight."""
    while ctx.ep.info().cwnd < cwnd:
        ctx.ep.write(bytes(ctx.ep.info().cwnd * MSS))
        ctx.absorb(ctx.sent())
        ctx.ack()
    ctx.assert_quiet()


@pytest.mark.parametrize("cc", ["reno", "cubic"])
@pytest.mark.parametrize(("idle", "expected"), [
    (0.19, 40),     # under the RTO (0.2 s): the window stands
    (0.35, 20),     # past it: halved once for each RTO beyond the first ...
    (0.55, 10),     # ... twice ...
    (5.0, 10),      # ... down to the initial window, never below it
])
def test_a_write_after_idle_restarts_from_a_smaller_window(cc: str, idle: float, expected: int):
    ctx = established(rtt=0.01)
    ctx.ep.set_sock_opt(SockOpt.CONGESTION_CONTROL, cc)
    grown_to(ctx, 40)
    assert ctx.ep.info().cwnd == 40 and ctx.ep.info().rto == pytest.approx(0.2)
    ctx.advance(idle)
    ctx.ep.write(bytes(60 * MSS))
    assert len(ctx.sent()) == expected
    assert ctx.ep.info().cwnd == expected


def test_a_restart_keeps_three_quarters_of_the_window_as_ssthresh():
    ctx = established(rtt=0.01)
    ctx.proto.frto = False      # (the originals' late ACK would show the timeout needless: see test_tcp_undo)
    ctx.ep.set_sock_opt(SockOpt.CONGESTION_CONTROL, "reno")
    first = ten_segments(ctx)
    ctx.advance(0.2)                                   # a timeout: ssthresh 5, cwnd 1
    ctx.sent()
    ctx.absorb(first)                                  # the originals arrived after all
    ctx.ack()
    grown_to(ctx, 8)                                   # slow start to 5, then one a round trip
    assert (ctx.ep.info().ssthresh, ctx.ep.info().cwnd) == (5, 8)
    ctx.advance(1.0)
    ctx.ep.write(bytes(MSS))
    info = ctx.ep.info()
    assert (info.ssthresh, info.cwnd) == (8 // 2 + 8 // 4, 8)     # under the initial window: kept


def test_a_window_update_after_idle_is_not_a_restart():
    """Only the application's writes restart (Linux checks as it queues new data)."""
    ctx = established(rtt=0.01)
    grown_to(ctx, 40)
    ctx.advance(1.0)
    ctx.ack(window=65535)                              # a bare window update
    assert ctx.ep.info().cwnd == 40
