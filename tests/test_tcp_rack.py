"""RACK (RFC 8985 §6) against a scripted peer: losses found by time — a segment still missing a round
trip (and a reordering allowance) after one sent later was delivered is lost. Each case is also run
with RACK off (RFC 6675's count of three SACKed segments) to show what it changes: a lost
retransmission is resent without waiting for the RTO, a loss with fewer than three segments above it
is resent after a quarter of a round trip, and once the path has shown reordering, three SACKed
segments are no longer a loss until the allowance has passed. Then the record keeping itself."""

from __future__ import annotations

import struct

import pytest

from netsock.adapter.socket import _tcp_info
from netsock.link.fault import FaultConfig
from netsock.tcpip import ErrWouldBlock, SockOpt
from netsock.tcpip.stats import TCPStats
from netsock.transport.tcp.rack import LOST, RACK, RETRANSMITTED, SACKED
from tcp_context import Opts, Pair, TCPContext, seq_add, transfer

MSS = 1460
OPTS = Opts(mss=MSS, sack_perm=True)
RTT = 0.05


def established(rack: bool = True, stack_iss: int | None = None) -> TCPContext:
    ctx = TCPContext()
    ctx.proto.rack_loss_detection = rack
    ctx.proto.tail_loss_probes = False      # (probes would blur which mechanism resent what)
    ctx.connect(opts=OPTS, rtt=RTT, stack_iss=stack_iss)
    return ctx


def flight(ctx: TCPContext, segments: int) -> list:
    ctx.ep.write(bytes(range(256)) * (segments * MSS // 256) + b"x" * (segments * MSS % 256))
    sent = ctx.sent()
    assert [len(s.payload) for s in sent] == [MSS] * segments
    return sent


def sack(ctx: TCPContext, ack: int, *blocks: tuple[int, int]) -> None:
    ctx.ack(ack=ack, options=Opts(sack=blocks))


def resent(ctx: TCPContext) -> list[int]:
    return [s.seq for s in ctx.sent() if s.payload]


@pytest.mark.parametrize("stack_iss", [None, (1 << 32) - 3 * MSS], ids=["", "across the wrap"])
def test_a_lost_retransmission_is_resent_without_the_rto(stack_iss: int | None) -> None:
    """Segment 0 is lost, and so is its fast retransmission. Data sent after the retransmission is
    SACKed a round trip later: RACK then knows the retransmission is overdue and sends it again.
    RFC 6675 alone has to wait for the RTO."""
    outcome = {}
    for rack in (True, False):
        ctx = established(rack, stack_iss)
        ctx.ep.snd.cwnd = 20
        s = flight(ctx, 12)
        ctx.advance(RTT)
        blocks = []
        for i in range(1, 5):      # four SACKed above the hole: fast retransmission either way
            blocks = [(s[1].seq, s[i].end)]
            sack(ctx, s[0].seq, *blocks)
        assert resent(ctx)[:1] == [s[0].seq]
        assert ctx.stats.sack_recovery.value == 1
        ctx.ep.write(b"n" * (2 * MSS))          # new data goes out behind the (lost) retransmission
        for i in range(5, 12):
            sack(ctx, s[0].seq, (s[1].seq, s[i].end))
        newer = [seg for seg in ctx.sent() if seg.payload and seg.seq not in (s[0].seq,)]
        assert newer, "recovery sent new data"
        start = ctx.clock.now()
        ctx.advance(RTT)                        # a round trip later the new data is SACKed, not segment 0
        sack(ctx, s[0].seq, (s[1].seq, newer[-1].end))
        again = resent(ctx)
        while s[0].seq not in again and ctx.clock.now() - start < 2:
            ctx.advance(0.005)
            again = resent(ctx)
        outcome[rack] = (round(ctx.clock.now() - start, 3), ctx.stats.timeouts.value,
                         ctx.stats.lost_retransmits.value)
        sack(ctx, seq_add(newer[-1].end, 0))
        assert ctx.ep.info().unacked == 0
    assert outcome[True] == (RTT, 0, 1)         # resent on the SACK that showed it overdue
    assert outcome[False][0] > 0.2 and outcome[False][1:] == (1, 0)    # the 200 ms minimum RTO


def test_a_loss_with_one_segment_sacked_above_it_is_resent_after_a_quarter_round_trip() -> None:
    """The third of four segments is lost: only one is SACKed above it, no duplicate ACK count gets
    to three. RACK resends it when the reordering allowance (min RTT / 4) has passed after the
    SACK; RFC 6675 alone waits for the RTO."""
    when = {}
    for rack in (True, False):
        ctx = established(rack)
        s = flight(ctx, 4)
        ctx.advance(RTT)
        sack(ctx, s[2].seq, (s[3].seq, s[3].end))
        ctx.assert_quiet()
        start = ctx.clock.now()
        while not resent(ctx):
            ctx.advance(0.001)
        when[rack] = ctx.clock.now() - start
        assert ctx.stats.timeouts.value == (0 if rack else 1)
        sack(ctx, s[3].end)
        assert ctx.ep.info().unacked == 0
    assert RTT / 4 <= when[True] < RTT / 4 + 0.002
    assert when[False] > 0.2


def reordering_seen(ctx: TCPContext) -> None:
    """Show the sender reordering: segment 0 of a flight arrives after segment 1 (the peer SACKs 1,
    then acknowledges both at once, before the allowance has run out)."""
    s = flight(ctx, 2)
    ctx.advance(RTT)
    sack(ctx, s[0].seq, (s[1].seq, s[1].end))
    ctx.advance(0.001)
    sack(ctx, s[1].end)
    ctx.assert_quiet()


def test_after_reordering_three_sacked_segments_wait_for_the_allowance() -> None:
    """Once reordering has been seen, three SACKed segments above a hole are not yet a loss: here the
    late segment arrives 5 ms later (within min RTT / 4) and nothing is resent. RFC 6675 resends at
    the third duplicate ACK."""
    spurious = {}
    for rack in (True, False):
        ctx = established(rack)
        reordering_seen(ctx)
        assert not rack or ctx.ep.snd.rack.reordering_seen
        s = flight(ctx, 5)
        ctx.advance(RTT)
        for i in range(1, 5):
            sack(ctx, s[0].seq, (s[1].seq, s[i].end))
        ctx.advance(0.005)
        sack(ctx, s[4].end)
        spurious[rack] = ctx.stats.retransmits.value
    assert spurious == {True: 0, False: 1}


def test_after_reordering_a_real_loss_is_still_resent_once_the_allowance_passes() -> None:
    ctx = established()
    reordering_seen(ctx)
    s = flight(ctx, 5)
    ctx.advance(RTT)
    for i in range(1, 5):
        sack(ctx, s[0].seq, (s[1].seq, s[i].end))
    assert not resent(ctx)
    start = ctx.clock.now()
    while not (again := resent(ctx)):
        ctx.advance(0.001)
    assert again == [s[0].seq] and RTT / 4 <= ctx.clock.now() - start < RTT / 4 + 0.002
    assert ctx.stats.sack_recovery.value == 1 and ctx.stats.timeouts.value == 0


def test_a_dsack_widens_the_allowance_once_per_round_trip() -> None:
    ctx = established()
    rack = ctx.ep.snd.rack
    s = flight(ctx, 5)
    ctx.advance(RTT)
    for i in range(1, 5):
        sack(ctx, s[0].seq, (s[1].seq, s[i].end))
    assert resent(ctx) == [s[0].seq]        # no reordering seen yet: resent at once
    ctx.ep.write(b"n" * MSS)
    newer = ctx.sent()[-1]
    # The original was only late: the peer reports the retransmission as a duplicate, twice within the
    # round trip (the new segment not yet acknowledged), then once more in the next one.
    for _ in range(2):
        sack(ctx, s[4].end, (s[0].seq, s[0].end))
    assert ctx.stats.dsacks_received.value == ctx.ep.info().dsack_dups == 2
    assert rack.reo_wnd_mult == 2           # one round trip, one step
    sack(ctx, newer.end, (s[0].seq, s[0].end))
    assert rack.reo_wnd_mult == 3
    snd = ctx.ep.snd
    assert rack.reo_wnd(snd.srtt, snd.min_rtt, False, False) == pytest.approx(min(3 * snd.min_rtt / 4, snd.srtt))


def test_records_go_with_the_data_they_describe() -> None:
    """Nothing is kept for acknowledged data, and a connection's records go with it."""
    ctx = established()
    snd = ctx.ep.snd
    for _ in range(3):
        snd.cwnd = 20
        s = flight(ctx, 6)
        ctx.advance(RTT)
        sack(ctx, s[0].seq, (s[2].seq, s[5].end))
        sack(ctx, s[5].end)
        ctx.sent()
    assert snd.rack.records == [] and snd.rack.sacked_bytes == 0
    ctx.ep.close()
    fin = ctx.sent_one()
    ctx.rcv_nxt = fin.end
    ctx.send_fin()
    assert ctx.sent_one().ack == ctx.nxt        # TIME-WAIT: the endpoint, its sender and records are gone
    assert snd.rack is None


def timed_out(ctx: TCPContext) -> list:
    """Let the retransmission timer fire; what went out before it is dropped, what it sent returned."""
    ctx.sent()
    while not ctx.stats.timeouts.value:
        ctx.advance(0.01)
    return [s for s in ctx.sent() if s.payload]


@pytest.mark.parametrize("rack", [True, False], ids=["RACK", "RFC 6675"])
@pytest.mark.parametrize("stack_iss", [None, (1 << 32) - 3 * MSS], ids=["", "across the wrap"])
def test_after_a_timeout_only_what_the_peer_did_not_sack_is_resent(rack: bool, stack_iss: int | None) -> None:
    """As Linux (tcp_timeout_mark_lost): the timeout resends the holes, not the four segments the peer
    holds; before, the SACKs were forgotten and all six went again."""
    ctx = established(rack, stack_iss)
    s = flight(ctx, 6)
    sack(ctx, s[0].seq, (s[2].seq, s[5].end))
    assert [seg.seq for seg in timed_out(ctx)] == [s[0].seq]         # the window is one segment
    ctx.ack(ack=s[1].seq, options=Opts(sack=((s[2].seq, s[5].end),)))
    assert [(seg.seq, len(seg.payload)) for seg in ctx.sent()] == [(s[1].seq, MSS)]    # not s[2] after it
    ctx.ack(ack=s[5].end)
    ctx.assert_quiet()
    assert ctx.ep.snd.una == ctx.ep.snd.max and ctx.stats.sack_reneging.value == 0
    info = ctx.ep.info()        # (TCP_INFO: every resent segment was a full one)
    assert (info.total_rto, info.total_rto_recoveries, info.bytes_retrans) == (1, 1, MSS * info.total_retransmits)
    if rack:
        assert ctx.ep.snd.rack.records == []


def test_after_a_timeout_rack_keeps_the_sacked_records() -> None:
    ctx = established()
    s = flight(ctx, 4)
    sack(ctx, s[0].seq, (s[2].seq, s[3].end))
    timed_out(ctx)
    rack = ctx.ep.snd.rack
    assert [r[3] for r in rack.records] == [RETRANSMITTED, LOST, SACKED, SACKED]   # (the first resent by the RTO)


@pytest.mark.parametrize("rack", [True, False], ids=["RACK", "RFC 6675"])
def test_a_peer_that_reneged_on_its_sacks_gets_everything_again(rack: bool) -> None:
    """The peer SACKed 2-5, then acknowledged up to 2 only: it dropped them (RFC 2018 §8). A timeout
    half a round trip later forgets the SACKs and 2-5 are resent (Linux's tcp_check_sack_reneging,
    TCPSACKReneging)."""
    ctx = established(rack)
    s = flight(ctx, 6)
    sack(ctx, s[0].seq, (s[2].seq, s[5].end))
    ctx.sent()
    ctx.ack(ack=s[2].seq)
    acked = ctx.clock.now()
    assert [seg.seq for seg in timed_out(ctx)] == [s[2].seq]
    assert ctx.clock.now() - acked <= RTT / 2 + 0.01       # (timed_out's steps are 10 ms)
    assert ctx.stats.sack_reneging.value == 1 and ctx.ep.snd.sack.sacked_bytes() == 0
    ctx.ack(ack=s[3].seq)
    assert [seg.seq for seg in ctx.sent()] == [s[3].seq, s[4].seq]


def test_tcp_info_counts_sacked_lost_and_resent_segments() -> None:
    ctx = established()
    s = flight(ctx, 7)
    ctx.advance(RTT)
    sack(ctx, s[0].seq, (s[3].seq, s[6].end))       # 0, 1 and 2 missing under four SACKed
    assert resent(ctx)[:1] == [s[0].seq]
    info = ctx.ep.info()
    assert info.sacked == 4 and info.lost + info.resent == 3 and info.resent >= 1
    fields = struct.unpack_from("8B24I", _tcp_info(ctx.ep))
    assert fields[8 + 5:8 + 8] == (info.sacked, info.lost, info.resent)     # tcpi_sacked, _lost, _retrans


# --- the records ----------------------------------------------------------------------------------

def test_a_super_segment_is_one_record_until_cut() -> None:
    rack = RACK()
    rack.sent(1, 1 + 10 * MSS, 0.0, False)
    assert rack.records == [[1, 1 + 10 * MSS, 0.0, 0, 1]]
    assert rack.sacked(1 + 4 * MSS, 1 + 6 * MSS, 0.05, 0.05) == 2 * MSS
    assert [(r[0], r[1], r[3]) for r in rack.records] == [
        (1, 1 + 4 * MSS, 0), (1 + 4 * MSS, 1 + 6 * MSS, SACKED), (1 + 6 * MSS, 1 + 10 * MSS, 0)]
    # Within one transmission the lower pieces count as sent first: the first is overdue, the last not.
    assert rack.detect_loss(0.05, 0.0) == (1, 0, 0.0)
    assert [r[3] for r in rack.records] == [LOST, SACKED, 0]
    assert rack.pipe() == 4 * MSS
    rack.sent(1, 1 + MSS, 0.06, True)
    assert [(r[0], r[1], r[3]) for r in rack.records[:2]] == [(1, 1 + MSS, RETRANSMITTED), (1 + MSS, 1 + 4 * MSS, LOST)]
    assert rack.pipe() == 5 * MSS
    rack.acked(1 + 5 * MSS, 0.1, 0.05)
    assert rack.records == [[1 + 5 * MSS, 1 + 6 * MSS, 0.0, SACKED, 1], [1 + 6 * MSS, 1 + 10 * MSS, 0.0, 0, 1]]
    assert rack.sacked_bytes == MSS


def test_a_retransmission_delivered_sooner_than_a_round_trip_is_not_a_sample() -> None:
    """Its delivery is the original's (RFC 8985 §6.2 step 2): RACK's clock does not move on it."""
    rack = RACK()
    rack.sent(1, 1 + MSS, 0.0, False)
    rack.sent(1 + MSS, 1 + 2 * MSS, 0.0, False)
    rack.sent(1, 1 + MSS, 0.04, True)
    rack.acked(1 + MSS, 0.045, 0.05)            # 5 ms after the retransmission, min RTT 50 ms
    assert rack.order == 0 and rack.rtt == 0.0


def test_a_retransmission_answered_with_the_originals_timestamp_is_not_a_sample() -> None:
    """A queue on the path delays the original past min RTT after its retransmission: the ACK echoing the
    original's timestamp tells its delivery from the retransmission's (RFC 8985 §6.2 step 2). Taken for
    the retransmission's (as it must be when the ACK echoes the retransmission), it marks lost the five
    segments sent between the two and still queued around one that overtook them."""
    mss = MSS - 12                              # (the timestamp option's room)
    for echo_original, marked_lost in ((True, 0), (False, 5)):
        ctx = TCPContext()
        ctx.proto.tail_loss_probes = False
        ctx.connect(opts=Opts(mss=MSS, sack_perm=True, ts=(1000, 0)), rtt=RTT, stack_iss=(1 << 32) - 4 * mss)
        ctx.ep.snd.cwnd = 20
        ctx.ep.write(b"x" * (10 * mss))
        s = ctx.sent()
        ctx.advance(RTT)
        ctx.ack(ack=s[0].seq, options=Opts(sack=((s[1].seq, s[3].end),), ts=(ctx.tsval(), s[3].options.ts[0])))
        retransmission = ctx.sent_one()         # three SACKed above it, no reordering seen: lost at once
        assert retransmission.seq == s[0].seq
        ctx.advance(RTT + 0.01)                 # the original arrives behind a queue and fills the hole
        echoed = (s[0] if echo_original else retransmission).options.ts[0]
        ctx.ack(ack=s[4].seq, options=Opts(sack=((s[6].seq, s[6].end),), ts=(ctx.tsval(), echoed)))
        _, lost, resent_in_flight = ctx.ep.snd.rack.segments(mss)
        assert lost + resent_in_flight == marked_lost


# --- end to end -----------------------------------------------------------------------------------

MB = 1 << 20
REORDERING = FaultConfig(reorder=0.05, reorder_hold=0.003, delay=0.01)
LOSSY_AND_REORDERING = FaultConfig(loss=0.02, reorder=0.05, reorder_hold=0.003, delay=0.01)


def transfer_stats(faults: FaultConfig, rack: bool, seed: int = 2) -> tuple[float, TCPStats]:
    """1 MB from one stack to another over ``faults`` (20 ms round trips): the simulated seconds it
    took and the sender's counters."""
    pair = Pair(faults, seed=seed)
    for node in (pair.a, pair.b):
        node.proto.rack_loss_detection = rack
    elapsed, _, _ = transfer(pair, MB, 0)
    return elapsed, pair.a.proto.tcp_stats


def test_reordering_is_not_taken_for_loss() -> None:
    """5 % of the segments are held 3 ms (a quarter of the 20 ms round trip is 5 ms): RACK resends none.
    RFC 6675 resends what three segments overtook, and each of those recoveries is found needless (the
    peer's next ACK echoes the timestamp of the original, then its D-SACK reports the copy) and undone."""
    _, with_rack = transfer_stats(REORDERING, True)
    _, without = transfer_stats(REORDERING, False)
    assert with_rack.retransmits.value == 0 and with_rack.sack_recovery.value == 0
    assert without.retransmits.value > 10 and without.dsacks_received.value > 5
    assert without.spurious_recovery.value == without.sack_recovery.value > 2


def test_loss_and_reordering_recover_with_fewer_retransmissions() -> None:
    """Over four seeds of 2 % loss and 5 % reordering: RACK resends a third as much, and almost nothing
    needlessly (RFC 6675's needless resends are undone quickly, so it is about as fast)."""
    totals = {}
    for rack in (True, False):
        runs = [transfer_stats(LOSSY_AND_REORDERING, rack, seed) for seed in range(1, 5)]
        totals[rack] = (sum(stats.retransmits.value for _, stats in runs),
                        sum(stats.dsacks_received.value for _, stats in runs))
    (rack_resent, rack_needless), (resent, needless) = totals[True], totals[False]
    assert rack_resent < resent / 2 and rack_needless < needless / 10, totals


# --- TCP_INFO's delivery rate and congestion state -------------------------------------------------

def rounds(ctx: TCPContext, count: int) -> list[int]:
    """``count`` round trips in which the peer acknowledges the whole flight at once, one RTT after it left;
    the segments in each flight."""
    flights = []
    for _ in range(count):
        s = [seg for seg in ctx.sent() if seg.payload]
        flights.append(len(s))
        ctx.advance(RTT)
        ctx.ack(ack=s[-1].end)
    return flights


def test_the_delivery_rate_is_a_round_trips_segments_over_its_time() -> None:
    """With the window always full, each sample is the segments of one flight over the round trip (Linux's
    tcp_rate.c): the first flight's, sent when nothing was in the air, is application-limited (as every
    first write after idle is), the later ones are not, and replace it."""
    ctx = established()
    ctx.ep.write(bytes(100 * MSS))
    flights = rounds(ctx, 3)
    info = ctx.ep.info()
    assert not info.app_limited
    assert info.delivery_rate == pytest.approx(flights[-1] * MSS / RTT, rel=1e-6)
    fields = struct.unpack_from("8B24I4Q6IQ3Q2I", _tcp_info(ctx.ep))
    assert fields[7] & 1 == 0 and fields[42] == int(info.delivery_rate)     # tcpi_delivery_rate, bytes/s
    assert (info.delivered, info.data_segs_out) == (1 + sum(flights), sum(flights) + len(ctx.sent()))
    assert info.chrono == pytest.approx([3 * RTT, 0, 0])                     # data to send all along, still


def test_a_small_write_is_an_application_limited_sample() -> None:
    ctx = established()
    ctx.ep.write(b"question")
    ctx.advance(RTT)
    ctx.ack(ack=ctx.sent()[-1].end)
    ctx.advance(1.0)
    info = ctx.ep.info()
    assert info.app_limited and info.delivery_rate == pytest.approx(MSS / RTT, rel=1e-6)
    assert info.chrono == pytest.approx([RTT, 0, 0]) and info.delivered == 2
    assert info.last_data_sent == pytest.approx(1.0 + RTT) and info.last_ack_received == pytest.approx(1.0)


def test_the_congestion_state_is_linuxs() -> None:
    """Open; Disorder once something is SACKed above a hole; Recovery once it is resent; Loss after a
    timeout, until an ACK makes progress; each duplicate ACK, probe and backoff counted as Linux's."""
    ctx = established()
    s = flight(ctx, 7)
    assert ctx.ep.info().ca_state == 0
    ctx.advance(RTT)
    sack(ctx, s[0].seq, (s[1].seq, s[1].end))
    assert ctx.ep.info().ca_state == 1
    sack(ctx, s[0].seq, (s[1].seq, s[6].end))
    assert ctx.ep.info().ca_state == 3
    ctx.sent()
    while not ctx.ep.snd.retransmits:
        ctx.advance(0.05)
    info = ctx.ep.info()
    assert (info.ca_state, info.backoff, info.retransmits, info.probes) == (4, 1, 1, 0)
    ctx.advance(0.1)
    ctx.ack(ack=s[6].end)
    info = ctx.ep.info()
    assert info.ca_state == 0 and 0.1 <= info.total_rto_time <= 0.15 + 1e-9     # (the timeout came in the last 50 ms)


def test_zero_window_probes_are_probes_not_retransmissions() -> None:
    ctx = established()
    ctx.ep.write(b"a" * MSS)
    ctx.ack(ack=ctx.sent()[-1].end, window=0)
    ctx.ep.write(b"b" * MSS)
    while not any(seg.payload for seg in ctx.sent()):
        ctx.advance(0.1)
    info = ctx.ep.info()
    assert (info.probes, info.backoff, info.retransmits) == (1, 1, 0)


def test_time_held_back_by_the_peers_window_and_by_the_send_buffer_is_told_apart() -> None:
    """Linux's chronograph: a zero window makes the time RWND_LIMITED until it opens; a writer out of room
    with all it wrote sent makes it SNDBUF_LIMITED until room frees; the rest, while anything is to be sent
    or acknowledged, is BUSY (TCP_INFO's tcpi_busy_time is the three together)."""
    ctx = established()
    ctx.ep.write(b"a" * MSS)
    ctx.advance(RTT)
    ctx.ack(ack=ctx.sent()[-1].end, window=0)
    ctx.ep.write(b"b" * MSS)
    ctx.advance(1.0)
    probe = [seg for seg in ctx.sent() if seg.payload][-1]
    ctx.ack(ack=probe.seq, window=65535)
    ctx.advance(RTT)
    ctx.ack(ack=ctx.sent()[-1].end)
    assert ctx.ep.info().chrono == pytest.approx([2 * RTT, 1.0, 0], abs=0.002)
    ctx.ep.set_sock_opt(SockOpt.SEND_BUFFER_SIZE, 4096)
    ctx.ep.set_sock_opt(SockOpt.DELAY, False)       # (TCP_NODELAY: Nagle would hold the last bytes back,
    ctx.ep.snd.cwnd = 40                            # and a window left small by the probing the others)
    with pytest.raises(ErrWouldBlock):
        while True:
            ctx.ep.write(b"c" * 1000)
    last = [seg for seg in ctx.sent() if seg.payload][-1]     # (all of it went: the window and cwnd take it)
    assert last.end == ctx.ep.snd.wire(ctx.ep.snd.buffer.end)
    ctx.advance(0.02)
    ctx.ack(ack=last.end)
    assert ctx.ep.info().chrono == pytest.approx([2 * RTT, 1.0, 0.02], abs=0.002)


@pytest.mark.parametrize("thin", [True, False])
def test_a_thin_streams_timeouts_do_not_back_off_with_thin_linear_timeouts(thin: bool) -> None:
    """TCP_THIN_LINEAR_TIMEOUTS: one segment in flight and lost again and again is resent an RTO after each of
    its first six timeouts too, then backs off as usual (Linux's tcp_retransmit_timer); without it, at once."""
    ctx = established()
    ctx.ep.set_sock_opt(SockOpt.TCP_THIN_LINEAR_TIMEOUTS, thin)
    assert ctx.ep.get_sock_opt(SockOpt.TCP_THIN_LINEAR_TIMEOUTS) == int(thin)
    ctx.ep.write(b"lost")
    times = []
    while len(times) < 9:
        times += [seg.time for seg in ctx.sent() if seg.payload]
        ctx.advance(0.01)
    gaps = [round((b - a) / ctx.ep.snd._base_rto(), 1) for a, b in zip(times, times[1:])]
    assert gaps == ([1.0] * 7 + [2.0] if thin else [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])


def test_tcp_rto_max_caps_the_backoff() -> None:
    """TCP_RTO_MAX_MS: the timer doubles up to the socket's ceiling, not Linux's 120 s."""
    ctx = established()
    ctx.ep.set_sock_opt(SockOpt.TCP_RTO_MAX, 1.0)
    ctx.ep.write(b"lost")
    times = []
    while len(times) < 7:
        times += [seg.time for seg in ctx.sent() if seg.payload]
        ctx.advance(0.01)
    assert [round(b - a, 2) for a, b in zip(times, times[1:])] == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
