"""TCP options and socket options: window scaling and timestamps (RFC 7323), MSS (RFC 9293 §3.7.1,
RFC 6691), SACK blocks (RFC 2018), congestion control selection, keepalive (RFC 1122 §4.2.3.6),
TCP_INFO and the stack's TCP counters."""

from __future__ import annotations

import errno

import pytest

from netsock.tcpip import (ErrConnectStarted, ErrInvalidOptionValue, ErrTimeout, ErrWouldBlock, FullAddress, Route,
                           SockOpt)
from netsock.transport.tcp import TCPState
from netsock.waiter import EventMask
from tcp_context import MOD, NIC_ID, PEER, RST, Opts, TCPContext, seq_add

REMOTE = bytes([198, 51, 100, 1])


def established(ctx: TCPContext | None = None, **kw) -> TCPContext:
    ctx = ctx or TCPContext()
    ctx.connect(**kw)
    return ctx


# --- window scaling ---------------------------------------------------------------------------------

def test_advertised_window_is_shifted_by_our_scale():
    ctx = established(opts=Opts(mss=1460, ws=2))
    assert ctx.stack_ws == 7
    ctx.send_data(b"x" * 1000)
    ack = ctx.sent_one()
    # 1 MiB buffer less 1000 queued bytes, shifted by 7 and rounded up: the right edge of the
    # window never moves left (RFC 7323 §2.4).
    assert ack.window == -(-((1 << 20) - 1000) >> 7) == 8185
    assert ctx.ep.info().rcv_wnd == ack.window << 7


def test_peer_window_is_shifted_by_its_scale():
    ctx = established(opts=Opts(mss=1460, ws=2))
    ep = ctx.ep
    ctx.ack(window=1095)                              # 1095 << 2 = 4380 bytes: three segments
    assert ep.info().snd_wnd == 4380
    ep.write(b"z" * 10_000)
    assert [len(s.payload) for s in ctx.sent()] == [1460] * 3


def test_syn_ack_window_is_never_scaled():
    ctx = established(opts=Opts(mss=1460, ws=4), window=2920)
    assert ctx.ep.info().snd_wnd == 2920
    ctx.ep.write(b"z" * 10_000)
    assert [len(s.payload) for s in ctx.sent()] == [1460] * 2


def test_no_window_scaling_unless_both_offer_it():
    ctx = established(opts=Opts(mss=1460))
    ctx.ack(window=1000)
    assert ctx.ep.info().snd_wnd == 1000
    ctx.send_data(b"x" * 100)
    assert ctx.sent_one().window == 65535             # our window, unscaled, saturates the field


def test_window_scale_option_above_14_is_clamped():
    ctx = established(opts=Opts(mss=1460, ws=20))
    ctx.ack(window=1)
    assert ctx.ep.info().snd_wnd == 1 << 14           # RFC 7323 §2.3


# --- MSS ------------------------------------------------------------------------------------------

def test_syn_mss_follows_the_link_mtu():
    ctx = TCPContext(mtu=1400)
    syn = ctx.connect(opts=Opts(mss=1460))
    assert syn.options.mss == 1360
    ctx.ep.set_sock_opt(SockOpt.DELAY, 0)
    ctx.ep.write(b"m" * 3000)
    assert [len(s.payload) for s in ctx.sent()] == [1360, 1360, 280]


def test_syn_mss_follows_the_route_mtu():
    ctx = TCPContext(routes=[Route.parse("198.51.100.0/24", NIC_ID, PEER, mtu=1280)])
    ctx.peer = REMOTE
    syn = ctx.connect(opts=Opts(mss=1460))
    assert syn.dst == REMOTE and syn.options.mss == 1240
    ctx.ep.set_sock_opt(SockOpt.DELAY, 0)
    ctx.ep.write(b"m" * 2000)
    assert [len(s.payload) for s in ctx.sent()] == [1240, 760]


def test_peer_mss_limits_segments():
    ctx = established(opts=Opts(mss=536))
    ctx.ep.set_sock_opt(SockOpt.DELAY, 0)
    ctx.ep.write(b"m" * 1200)
    assert [len(s.payload) for s in ctx.sent()] == [536, 536, 128]


def test_tcp_maxseg_clamps_what_we_announce_and_send():
    ctx = TCPContext()
    ep, ctx.wq = ctx.new_endpoint()
    ep.set_sock_opt(SockOpt.MAX_SEG, 1000)
    syn = ctx.connect(ep=ep, opts=Opts(mss=1460))
    assert syn.options.mss == 1000
    assert ep.get_sock_opt(SockOpt.MAX_SEG) == 1000
    ep.set_sock_opt(SockOpt.DELAY, 0)
    ep.write(b"m" * 2500)
    assert [len(s.payload) for s in ctx.sent()] == [1000, 1000, 500]


@pytest.mark.parametrize("value", [1, 87, 65536])
def test_tcp_maxseg_rejects_out_of_range_values(value):
    ctx = TCPContext()
    ep, _ = ctx.new_endpoint()
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.MAX_SEG, value)


def test_timestamps_take_their_room_from_the_mss():
    ctx = established(opts=Opts(mss=1460, ts=(1, 0)))
    assert ctx.ep.info().snd_mss == 1448
    ctx.ep.set_sock_opt(SockOpt.DELAY, 0)
    ctx.ep.write(b"m" * 2000)
    assert [len(s.payload) for s in ctx.sent()] == [1448, 552]


def test_listener_mss_reaches_the_syn_ack_and_the_child():
    ctx = TCPContext()
    listener = ctx.listen()
    listener.set_sock_opt(SockOpt.MAX_SEG, 600)
    synack = ctx.accept(opts=Opts(mss=1460))
    assert synack.options.mss == 600
    ctx.ep.set_sock_opt(SockOpt.DELAY, 0)
    ctx.ep.write(b"m" * 1000)
    assert [len(s.payload) for s in ctx.sent()] == [600, 400]


# --- timestamps -------------------------------------------------------------------------------------

def test_timestamps_echo_the_peers_and_follow_our_clock():
    ctx = established(opts=Opts(mss=1460, ts=(1000, 0)))
    ep = ctx.ep
    ctx.send_data(b"a", options=Opts(ts=(2000, ctx.ts_recent)))
    first = ctx.sent_one()
    assert first.options.ts[1] == 2000
    ctx.advance(0.250)
    ctx.send_data(b"b", options=Opts(ts=(2250, ctx.ts_recent)))
    second = ctx.sent_one()
    assert second.options.ts == ((first.options.ts[0] + 250) % MOD, 2250)   # 1 ms ticks
    ep.write(b"data")
    seg = ctx.sent_one()
    assert seg.options.ts[1] == 2250 and seg.options.sack == ()


def test_ts_recent_is_not_taken_from_out_of_order_segments():
    """RFC 7323 §4.3: TS.Recent follows only segments at or below RCV.NXT (Last.ACK.sent)."""
    ctx = established(opts=Opts(mss=1460, ts=(1000, 0)))
    ctx.send("PA", seq=seq_add(ctx.nxt, 100), payload=b"later", options=Opts(ts=(9000, ctx.ts_recent)))
    assert ctx.sent_one().options.ts[1] == 1000
    ctx.send_data(b"now", options=Opts(ts=(1500, ctx.ts_recent)))
    assert ctx.sent_one().options.ts[1] == 1500


def test_paws_drops_a_segment_with_an_old_timestamp_and_acks():
    ctx = established(opts=Opts(mss=1460, ts=(1_000_000, 0)))
    ep = ctx.ep
    ctx.send_data(b"fresh", options=Opts(ts=(1_000_100, ctx.ts_recent)))
    ctx.sent()
    before = ctx.nxt
    ctx.send("PA", payload=b"stale", options=Opts(ts=(999_000, ctx.ts_recent)))
    ack = ctx.sent_one()
    assert ack.ack == before and ack.options.ts[1] == 1_000_100
    assert ctx.read_all() == b"fresh"
    ctx.send("R", options=Opts(ts=(5, ctx.ts_recent)))    # a RST is not subject to PAWS
    assert ep.state is TCPState.CLOSED


def test_paws_comparison_wraps():
    ctx = established(opts=Opts(mss=1460, ts=(MOD - 10, 0)))
    ctx.send_data(b"after the wrap", options=Opts(ts=(5, ctx.ts_recent)))
    ack = ctx.sent_one()
    assert ack.ack == ctx.nxt and ack.options.ts[1] == 5
    assert ctx.read_all() == b"after the wrap"


def test_paws_ignores_a_recent_timestamp_of_zero():
    """A peer whose SYN carried TSval 0 (some do) is not held to it: Linux's tcp_paws_check accepts any
    timestamp while TS.Recent is 0, which would otherwise reject half the clock's values."""
    ctx = established(opts=Opts(mss=1460, ts=(0, 0)))
    ctx.send_data(b"half the clock away", options=Opts(ts=(0x80000001, ctx.ts_recent)))
    assert ctx.sent_one().options.ts[1] == 0x80000001
    assert ctx.read_all() == b"half the clock away"


def test_no_timestamps_unless_both_offer_them():
    ctx = established(opts=Opts(mss=1460, sack_perm=True))
    ctx.ep.write(b"x")
    seg = ctx.sent_one()
    assert seg.options.ts is None and seg.raw_options == b""


# --- SACK -------------------------------------------------------------------------------------------

def test_sack_blocks_report_out_of_order_data_most_recent_first():
    ctx = established(opts=Opts(mss=1460, sack_perm=True, ts=(1, 0)))
    base = ctx.nxt

    def deliver(start: int, end: int) -> tuple:
        ctx.send("PA", seq=seq_add(base, start), payload=b"s" * (end - start))
        return ctx.sent_one().options.sack

    def block(start: int, end: int) -> tuple[int, int]:
        return seq_add(base, start), seq_add(base, end)

    assert deliver(2000, 3000) == (block(2000, 3000),)
    assert deliver(4000, 5000) == (block(4000, 5000), block(2000, 3000))
    assert deliver(6000, 7000) == (block(6000, 7000), block(4000, 5000), block(2000, 3000))
    # Three blocks fit beside the timestamp; the newest first, the oldest dropped (RFC 2018 §4).
    assert deliver(8000, 9000) == (block(8000, 9000), block(6000, 7000), block(4000, 5000))
    # Data joining two blocks: the merged block comes first.
    assert deliver(5000, 6000) == (block(4000, 7000), block(8000, 9000), block(2000, 3000))
    # The hole at the start filled: the ACK moves and the block it reached disappears.
    ctx.send("PA", seq=base, payload=b"s" * 2000)
    ack = ctx.sent_one()
    assert ack.ack == seq_add(base, 3000)
    assert ack.options.sack == (block(4000, 7000), block(8000, 9000))


def test_sack_blocks_across_the_sequence_wrap():
    ctx = established(peer_iss=MOD - 1500, opts=Opts(mss=1460, sack_perm=True))
    base = ctx.nxt
    ctx.send("PA", seq=seq_add(base, 1000), payload=b"w" * 1000)
    ack = ctx.sent_one()
    assert ack.ack == base and ack.options.sack == ((seq_add(base, 1000), seq_add(base, 2000)),)
    ctx.send("PA", seq=base, payload=b"w" * 1000)
    assert ctx.sent_one().options.sack == ()
    assert ctx.read_all() == b"w" * 2000


def test_duplicate_segment_below_the_ack_is_acked_with_a_dsack_block_alone():
    """(Linux's, RFC 2883: the duplicate is reported; there is no out-of-order data to SACK.)"""
    ctx = established(opts=Opts(mss=1460, sack_perm=True))
    ctx.send_data(b"once")
    ctx.sent()
    ctx.send("PA", seq=seq_add(ctx.nxt, -4), payload=b"once")
    ack = ctx.sent_one()
    assert ack.ack == ctx.nxt and ack.options.sack == ((seq_add(ctx.nxt, -4), ctx.nxt),)


def test_no_sack_blocks_without_sack_permitted():
    ctx = established(opts=Opts(mss=1460))
    ctx.send("PA", seq=seq_add(ctx.nxt, 1000), payload=b"o" * 100)
    assert ctx.sent_one().options.sack == ()


# --- congestion control ----------------------------------------------------------------------------

def test_congestion_control_is_selectable_per_endpoint():
    ctx = established()
    ep = ctx.ep
    assert ep.get_sock_opt(SockOpt.AVAILABLE_CONGESTION_CONTROL) == "cubic reno"
    assert ep.get_sock_opt(SockOpt.CONGESTION_CONTROL) == "cubic"
    ep.set_sock_opt(SockOpt.CONGESTION_CONTROL, "reno")
    assert ep.get_sock_opt(SockOpt.CONGESTION_CONTROL) == "reno"
    assert ep.info().congestion_control == "reno" and ep.snd.cc.name == "reno"
    with pytest.raises(ErrInvalidOptionValue) as err:
        ep.set_sock_opt(SockOpt.CONGESTION_CONTROL, "vegas")
    assert err.value.errno == errno.EINVAL
    assert ep.get_sock_opt(SockOpt.CONGESTION_CONTROL) == "reno"


def test_congestion_control_default_is_a_stack_option():
    ctx = TCPContext()
    assert ctx.proto.get_option(SockOpt.AVAILABLE_CONGESTION_CONTROL) == "cubic reno"
    ctx.proto.set_option(SockOpt.CONGESTION_CONTROL, "reno")
    with pytest.raises(ErrInvalidOptionValue):
        ctx.proto.set_option(SockOpt.CONGESTION_CONTROL, "bbr")
    ctx.connect()
    assert ctx.ep.get_sock_opt(SockOpt.CONGESTION_CONTROL) == "reno"


# --- keepalive -------------------------------------------------------------------------------------

def keepalive(ctx: TCPContext, idle: float = 10, interval: float = 2, count: int = 3) -> None:
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.KEEPALIVE_IDLE, idle)
    ep.set_sock_opt(SockOpt.KEEPALIVE_INTERVAL, interval)
    ep.set_sock_opt(SockOpt.KEEPALIVE_COUNT, count)
    ep.set_sock_opt(SockOpt.KEEPALIVE_ENABLED, 1)


def test_keepalive_probes_after_idle_and_stops_when_answered():
    ctx = established()
    keepalive(ctx)
    assert ctx.ep.get_sock_opt(SockOpt.KEEPALIVE_ENABLED) == 1
    assert (ctx.ep.get_sock_opt(SockOpt.KEEPALIVE_IDLE), ctx.ep.get_sock_opt(SockOpt.KEEPALIVE_COUNT)) == (10, 3)
    start = ctx.clock.now()
    ctx.advance(9.99)
    ctx.assert_quiet()
    ctx.advance(0.01)
    probe = ctx.sent_one()
    # An old sequence number (SND.NXT - 1) with no data makes the peer answer with an ACK.
    assert (probe.flagstr, probe.seq, probe.ack, probe.payload) == ("A", seq_add(ctx.rcv_nxt, -1), ctx.nxt, b"")
    assert probe.time - start == pytest.approx(10)
    ctx.ack()
    ctx.advance(9.9)
    ctx.assert_quiet()                                # answered: the next probe waits a full idle time
    ctx.advance(0.2)
    assert ctx.sent_one().seq == seq_add(ctx.rcv_nxt, -1)


def test_traffic_postpones_keepalive():
    ctx = established()
    keepalive(ctx)
    ctx.advance(8)
    ctx.send_data(b"alive")
    ctx.sent()
    ctx.advance(9.9)
    ctx.assert_quiet()
    ctx.advance(0.2)
    assert len(ctx.sent()) == 1


def test_keepalive_enabled_on_an_idle_connection_probes_a_full_idle_time_later():
    """As Linux's: the timer starts when SO_KEEPALIVE is set, whenever the last segment came."""
    ctx = established()
    ctx.send_data(b"long ago")
    ctx.sent()
    ctx.advance(50)
    start = ctx.clock.now()
    keepalive(ctx)
    ctx.advance(9.99)
    ctx.assert_quiet()
    ctx.advance(0.01)
    assert ctx.sent_one().time - start == pytest.approx(10)


def test_keepalive_detects_a_dead_peer():
    ctx = established()
    keepalive(ctx)
    start = ctx.clock.now()
    probes = []
    for _ in range(100):
        ctx.advance(1)
        probes += ctx.sent()
    assert [round(p.time - start, 6) for p in probes if p.flagstr == "A"] == [10, 12, 14]
    rst = probes[-1]
    assert rst.flags & RST and round(rst.time - start, 6) == 16    # idle + count * interval
    ep = ctx.ep
    assert ep.state is TCPState.CLOSED
    assert ep.readiness(EventMask.ERR) == EventMask.ERR
    assert isinstance(ep.get_sock_opt(SockOpt.ERROR), ErrTimeout)
    assert ep.read(1) == b"", "SO_ERROR reported it: later reads see end of stream, as on Linux"
    assert len(ctx.stack.timers) == 0 and len(ctx.stack.demux) == 0 and len(ctx.stack.ports) == 0


@pytest.mark.parametrize("opt,value", [(SockOpt.KEEPALIVE_IDLE, 0), (SockOpt.KEEPALIVE_INTERVAL, -1),
                                       (SockOpt.KEEPALIVE_COUNT, 0), (SockOpt.KEEPALIVE_COUNT, 128)])
def test_keepalive_option_ranges(opt, value):
    ctx = TCPContext()
    ep, _ = ctx.new_endpoint()
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(opt, value)


def test_keepalive_set_on_a_listener_is_inherited():
    ctx = TCPContext()
    listener = ctx.listen()
    listener.set_sock_opt(SockOpt.KEEPALIVE_IDLE, 5)
    listener.set_sock_opt(SockOpt.KEEPALIVE_ENABLED, 1)
    ctx.accept()
    ctx.advance(5)
    assert ctx.sent_one().seq == seq_add(ctx.rcv_nxt, -1)


# --- TCP_INFO and counters --------------------------------------------------------------------------

def test_tcp_info_snapshot():
    ctx = established(opts=Opts(mss=1460, ws=7, sack_perm=True, ts=(1, 0)), rtt=0.1)
    ep = ctx.ep
    info = ep.get_sock_opt(SockOpt.TCP_INFO)
    assert info.state is TCPState.ESTABLISHED
    assert info.rtt == pytest.approx(0.1) and info.rttvar == pytest.approx(0.05)
    assert info.rto == pytest.approx(0.3) and info.min_rtt == pytest.approx(0.1)   # srtt + 4 * rttvar
    assert (info.snd_mss, info.rcv_mss) == (1448, 1448)
    assert (info.cwnd, info.ssthresh) == (10, 2**31 - 1)
    assert (info.retransmits, info.total_retransmits, info.unacked) == (0, 0, 0)
    assert info.snd_wnd == 65535 and info.congestion_control == "cubic"
    ep.write(b"x" * 3 * 1448)
    ctx.sent()
    info = ep.info()
    assert info.unacked == 3
    ctx.advance(0.21)                   # the tail loss probe, two round trips on: the last segment again
    ctx.sent()
    info = ep.info()
    assert (info.retransmits, info.total_retransmits, info.cwnd) == (0, 1, 10)
    ctx.advance(0.31)                   # then the RTO (float time: a hair over 0.3 s after the probe)
    ctx.sent()
    info = ep.info()
    assert (info.retransmits, info.total_retransmits, info.cwnd) == (1, 2, 1)
    assert info.rto == pytest.approx(0.6)


def test_stack_counters_follow_a_connection_life():
    ctx = TCPContext()
    stats = ctx.stats
    ctx.connect()
    ctx.ep.write(b"abc")
    ctx.absorb(ctx.sent())
    ctx.ack()
    ctx.send_data(b"def")
    ctx.sent()
    assert stats.active_connection_openings.value == 1
    assert stats.current_established.value == 1
    assert stats.segments_sent.value == 4             # SYN, ACK, data, ACK of data
    assert stats.valid_segments_received.value == 3   # SYN-ACK, ACK, data
    ctx.ep.write(b"ghi")
    ctx.sent()
    ctx.advance(0.2)
    ctx.sent()
    assert (stats.retransmits.value, stats.timeouts.value, stats.slow_start_retransmits.value) == (1, 1, 1)
    ctx.send("R")
    assert stats.resets_received.value == 1 and stats.established_resets.value == 1
    assert stats.current_established.value == 0
    ctx.send("A", dst_port=1)
    assert stats.resets_sent.value == 1
    ctx.send("A", bad_checksum=True)
    assert stats.checksum_errors.value == 1 and stats.invalid_segments_received.value == 1
    # Received: SYN-ACK, ACK, data, RST; sent: SYN, ACK, data, ACK, data, its retransmission.
    assert ctx.ep.stats.packets_received.value == 4 and ctx.ep.stats.packets_sent.value == 6


def test_connect_to_a_route_with_no_listener_counts_a_failed_attempt():
    ctx = TCPContext()
    ep, _ = ctx.new_endpoint()
    with pytest.raises(ErrConnectStarted):
        ep.connect(FullAddress(0, REMOTE, 80))
    syn = ctx.sent_one()
    ctx.peer, ctx.port = REMOTE, syn.src_port
    ctx.peer_port = 80
    ctx.send("RA", seq=0, ack=seq_add(syn.seq, 1))
    assert ctx.stats.failed_connection_attempts.value == 1


# --- TCP_USER_TIMEOUT, TCP_SYNCNT, TCP_LINGER2, TCP_WINDOW_CLAMP, TCP_NOTSENT_LOWAT, SO_RCVLOWAT ----------

def test_user_timeout_ends_a_connection_whose_data_stays_unacknowledged_that_long():
    """RFC 5482: the sender's say on how long data may wait, rather than the retry count."""
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.TCP_USER_TIMEOUT, 2.0)
    ep.write(b"unanswered")
    ctx.sent()
    ctx.advance(1.9)
    assert ep.state is TCPState.ESTABLISHED
    ctx.advance(0.15)                               # backed off to 3.0 s, the timer fires at 2 s instead
    assert ep.state is TCPState.CLOSED
    with pytest.raises(ErrTimeout):
        ep.read(10)


def test_user_timeout_counts_from_the_last_progress():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.TCP_USER_TIMEOUT, 2.0)
    for _ in range(4):                              # 4 s of traffic, each write acknowledged in 1 s
        ep.write(b"x")
        ctx.absorb(ctx.sent())
        ctx.advance(1.0)
        ctx.ack()
        ctx.sent()
    assert ep.state is TCPState.ESTABLISHED


def test_syn_count_bounds_the_connect_attempts():
    ctx = TCPContext()
    ep, _ = ctx.new_endpoint()
    ep.set_sock_opt(SockOpt.TCP_SYN_COUNT, 2)
    with pytest.raises(ErrConnectStarted):
        ep.connect(FullAddress(0, bytes(ctx.peer), 80))
    syns = ctx.sent()
    for _ in range(10):
        ctx.advance(8.0)
        syns += ctx.sent()
    assert [seg.flagstr for seg in syns] == ["S"] * 3      # the first and two retransmissions
    assert ep.state is TCPState.CLOSED


@pytest.mark.parametrize("value", [0, 128])
def test_syn_count_outside_1_to_127_is_refused(value):
    ep, _ = TCPContext().new_endpoint()
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.TCP_SYN_COUNT, value)


def test_negative_linger2_resets_an_orphan_as_it_reaches_fin_wait2():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.TCP_LINGER_TIMEOUT, -1)
    ep.close()
    fin = ctx.sent_one()
    ctx.absorb([fin])
    ctx.ack()
    assert [seg.flagstr for seg in ctx.sent()] == ["RA"]
    assert ep.state is TCPState.CLOSED


def test_window_clamp_bounds_the_window_offered():
    ctx = TCPContext()
    ep, ctx.wq = ctx.new_endpoint()
    ep.set_sock_opt(SockOpt.TCP_WINDOW_CLAMP, 5000)
    syn = ctx.connect(opts=Opts(mss=1460, ws=7), ep=ep)
    assert syn.window == 5000
    ctx.send_data(b"x" * 100)
    ack = ctx.sent_one()
    assert (ack.window << ctx.stack_ws) <= 5000 + (1 << ctx.stack_ws)    # (rounded up to the scale)
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.TCP_WINDOW_CLAMP, 0)    # only before connecting


def test_notsent_lowat_holds_writes_while_that_much_is_unsent():
    ctx = established(window=1000)
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.TCP_NOTSENT_LOWAT, 2000)
    assert ep.write(b"a" * 3000) == 3000              # 1000 go out (the window), 2000 wait
    assert not ep.readiness(EventMask.OUT)
    with pytest.raises(ErrWouldBlock):
        ep.write(b"b")
    ctx.absorb(ctx.sent())
    ctx.window = 4000
    ctx.ack()                                         # the rest can go: nothing unsent now
    ctx.absorb(ctx.sent())
    assert ep.readiness(EventMask.OUT) and ep.write(b"b") == 1


def test_rcvlowat_makes_a_socket_readable_from_that_many_bytes():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.RECEIVE_LOW_WATER, 10)
    ctx.send_data(b"12345")
    assert not ep.readiness(EventMask.IN)
    ctx.send_data(b"67890")
    assert ep.readiness(EventMask.IN)
    ctx.send_fin()
    assert ep.read(100) == b"1234567890" and ep.readiness(EventMask.IN)     # EOF is readable
