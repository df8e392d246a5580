"""TCP connection establishment (RFC 9293 §3.5): active, passive and simultaneous open, failures,
the listen queues, and SYN cookies (RFC 4987 §3.6)."""

from __future__ import annotations

import struct

import pytest

from netsock.tcpip import (ErrAlreadyConnected, ErrAlreadyConnecting, ErrConnectionRefused, ErrConnectStarted,
                           ErrTimeout, ErrWouldBlock, FullAddress, SockOpt)
from netsock.transport.tcp import TCPState
from netsock.transport.tcp.endpoint import SOMAXCONN
from netsock.transport.tcp import endpoint as tcp_endpoint
from netsock.waiter import EventMask
from tcp_context import (ACK, PEER_ADDR, PEER_PORT, RST, SYN, TCPContext, Opts, seq_add)

FULL_OPTS = Opts(mss=1460, ws=2, sack_perm=True, ts=(5000, 0))


def start_connect(ctx: TCPContext, port: int = PEER_PORT):
    ep, _ = ctx.new_endpoint()
    with pytest.raises(ErrConnectStarted):
        ep.connect(FullAddress(0, PEER_ADDR, port))
    return ep


# --- active open ----------------------------------------------------------------------------------

def test_active_open_syn_carries_mss_ws_sackperm_ts_in_linux_order():
    ctx = TCPContext()
    ep = start_connect(ctx)
    syn = ctx.sent_one()
    assert syn.flags == SYN and syn.ack == 0 and syn.dst_port == PEER_PORT
    assert syn.window == 65535                       # a SYN's window is never scaled
    tsval = syn.options.ts[0]
    assert syn.options == Opts(mss=1500 - 40, ws=7, sack_perm=True, ts=(tsval, 0))
    # MSS, SACK-permitted in front of the timestamp, NOP + window scale: 20 bytes, as Linux writes them.
    assert syn.raw_options == struct.pack("!BBHBBBBIIBBBB", 2, 4, 1460, 4, 2, 8, 10,
                                          tsval, 0, 1, 3, 3, 7)
    assert ep.state is TCPState.SYN_SENT
    assert not ep.readiness(EventMask.OUT | EventMask.IN)
    with pytest.raises(ErrAlreadyConnecting):
        ep.connect(FullAddress(0, PEER_ADDR, PEER_PORT))
    with pytest.raises(ErrWouldBlock):
        ep.write(b"early")


def test_active_open_completes_with_exact_ack_and_reports_connected_once():
    ctx = TCPContext()
    syn = ctx.connect(peer_iss=1_000_000, opts=FULL_OPTS)
    ep = ctx.ep
    assert ep.state is TCPState.ESTABLISHED
    assert ep.readiness(EventMask.OUT) == EventMask.OUT
    assert ep.get_sock_opt(SockOpt.ERROR) is None
    assert ep.connect(FullAddress(0, PEER_ADDR, PEER_PORT)) is None     # the connect() that reports success
    with pytest.raises(ErrAlreadyConnected):
        ep.connect(FullAddress(0, PEER_ADDR, PEER_PORT))
    assert ep.get_remote_address() == FullAddress(0, PEER_ADDR, PEER_PORT)
    assert ep.get_local_address().port == syn.src_port
    assert ctx.stats.active_connection_openings.value == 1
    assert ctx.stats.current_established.value == 1


def test_active_open_without_peer_options_uses_none():
    ctx = TCPContext()
    ctx.connect(opts=Opts())
    ctx.ep.set_sock_opt(SockOpt.DELAY, 0)
    ctx.ep.write(b"x" * 1000)
    segs = ctx.sent()
    # No MSS option: RFC 9293 §3.7.1 default of 536; no timestamps, no SACK, windows unscaled.
    assert [len(s.payload) for s in segs] == [536, 464]
    assert all(s.raw_options == b"" and s.window == 65535 for s in segs)   # 1 MiB buffer: the field saturates


# --- passive open ---------------------------------------------------------------------------------

def test_passive_open_syn_ack_answers_the_options_offered():
    ctx = TCPContext()
    listener = ctx.listen()
    ctx.nxt = 3_000_000
    ctx.send("S", options=FULL_OPTS, ack=0)
    synack = ctx.sent_one()
    assert synack.flagstr == "SA" and synack.ack == 3_000_001 and synack.window == 65535
    assert synack.options == Opts(mss=1460, ws=7, sack_perm=True, ts=(synack.options.ts[0], 5000))
    with pytest.raises(ErrWouldBlock):
        listener.accept()
    assert not listener.readiness(EventMask.IN)
    ctx.nxt = 3_000_001
    ctx.rcv_nxt = seq_add(synack.seq, 1)
    ctx.send("A", options=Opts(ts=(5001, synack.options.ts[0])))
    assert listener.readiness(EventMask.IN) == EventMask.IN
    ep, _ = listener.accept()
    assert ep.state is TCPState.ESTABLISHED
    assert ep.get_remote_address() == FullAddress(0, PEER_ADDR, PEER_PORT)
    assert ctx.stats.passive_connection_openings.value == 1
    ctx.assert_quiet()


def test_passive_open_offers_only_what_the_peer_offered():
    ctx = TCPContext()
    ctx.listen()
    ctx.send("S", options=Opts(mss=1000), ack=0)
    synack = ctx.sent_one()
    assert synack.options == Opts(mss=1460)          # our MSS, no WS / SACK-permitted / TS in reply


def test_syn_ack_is_retransmitted_with_backoff_and_on_a_repeated_syn():
    ctx = TCPContext()
    ctx.listen()
    ctx.nxt = 42
    ctx.send("S", options=Opts(mss=1460), ack=0)
    first = ctx.sent_one()
    ctx.advance(0.999)
    ctx.assert_quiet()
    ctx.advance(0.001)
    again = ctx.sent_one()
    assert (again.flagstr, again.seq, again.ack) == ("SA", first.seq, 43)
    ctx.advance(1.999)
    ctx.assert_quiet()
    ctx.advance(0.001)
    assert ctx.sent_one().seq == first.seq           # 1 s, then 2 s: RFC 6298 backoff
    ctx.send("S", options=Opts(mss=1460), ack=0)     # the peer's retransmitted SYN: our SYN-ACK was lost
    assert (ctx.sent_one().flagstr, ctx.stats.retransmits.value) == ("SA", 2)
    # The ACK finally arrives: the connection is accepted.
    ctx.nxt, ctx.rcv_nxt = 43, seq_add(first.seq, 1)
    ctx.ack()
    ep, _ = ctx.listener.accept()
    assert ep.state is TCPState.ESTABLISHED


def test_half_open_connection_is_dropped_after_syn_ack_retries():
    ctx = TCPContext()
    listener = ctx.listen()
    ctx.send("S", options=Opts(mss=1460), ack=0)
    synacks = []
    for _ in range(200):
        ctx.advance(1)
        synacks += ctx.sent()
    assert len(synacks) == 1 + 6                     # the SYN-ACK and syn_retries retransmissions
    assert not listener.listener.pending
    assert len(ctx.stack.demux) == 1 and len(ctx.stack.timers) == 0


def test_syn_retries_exhausted_fail_connect_with_timeout():
    ctx = TCPContext()
    ep = start_connect(ctx)
    first = ctx.sent_one()
    times = []
    start = ctx.clock.now()
    for _ in range(2000):
        ctx.advance(0.5)
        for seg in ctx.sent():
            assert seg.flags == SYN and seg.seq == first.seq
            times.append(ctx.clock.now() - start)
        if ep.state is TCPState.CLOSED:
            break
    assert times == [1, 3, 7, 15, 31, 63]            # 6 retries, RTO doubling from 1 s
    assert ctx.clock.now() - start == 127            # and one more doubled RTO before giving up
    assert ep.readiness(EventMask.ALL) & (EventMask.ERR | EventMask.OUT) == EventMask.ERR | EventMask.OUT
    assert isinstance(ep.get_sock_opt(SockOpt.ERROR), ErrTimeout)
    assert ctx.stats.failed_connection_attempts.value == 1
    assert len(ctx.stack.timers) == 0 and len(ctx.stack.demux) == 0 and len(ctx.stack.ports) == 0


def test_rst_in_syn_sent_refuses_the_connection():
    ctx = TCPContext()
    ep = start_connect(ctx)
    syn = ctx.sent_one()
    ctx.port = syn.src_port
    ctx.send("R", seq=0, ack=0)                          # no ACK: ignored (RFC 9293 §3.10.7.3)
    ctx.send("RA", seq=0, ack=seq_add(syn.seq, 2))      # unacceptable ACK: ignored
    assert ep.state is TCPState.SYN_SENT
    ctx.assert_quiet()
    ctx.send("RA", seq=0, ack=seq_add(syn.seq, 1))
    assert ep.state is TCPState.CLOSED
    assert ep.readiness(EventMask.ERR) == EventMask.ERR
    assert isinstance(ep.get_sock_opt(SockOpt.ERROR), ErrConnectionRefused)
    ctx.assert_quiet()
    assert len(ctx.stack.timers) == 0 and len(ctx.stack.demux) == 0 and len(ctx.stack.ports) == 0


def test_syn_ack_with_a_bad_ack_in_syn_sent_gets_a_reset():
    ctx = TCPContext()
    ep = start_connect(ctx)
    syn = ctx.sent_one()
    ctx.port = syn.src_port
    ctx.send("SA", seq=500, ack=seq_add(syn.seq, 77))
    rst = ctx.sent_one()
    assert (rst.flagstr, rst.seq) == ("R", seq_add(syn.seq, 77))   # <SEQ=SEG.ACK><CTL=RST>
    assert ep.state is TCPState.SYN_SENT


def test_simultaneous_open():
    """RFC 9293 Figure 7: both SYNs cross, both SYN-ACKs cross, both sides are ESTABLISHED."""
    ctx = TCPContext()
    ep = start_connect(ctx)
    syn = ctx.sent_one()
    ctx.port = syn.src_port
    ctx.send("S", seq=300, ack=0, options=Opts(mss=1460))
    synack = ctx.sent_one()
    assert ep.state is TCPState.SYN_RCVD
    assert (synack.flagstr, synack.seq, synack.ack) == ("SA", syn.seq, 301)   # our ISS again, their SYN ACKed
    ctx.send("SA", seq=300, ack=seq_add(syn.seq, 1), options=Opts(mss=1460))
    assert ep.state is TCPState.ESTABLISHED
    for seg in ctx.sent():
        assert (seg.flagstr, seg.seq, seg.ack) == ("A", seq_add(syn.seq, 1), 301)
    ctx.nxt, ctx.rcv_nxt = 301, seq_add(syn.seq, 1)
    ctx.send_data(b"hello")
    assert ctx.read_all(ep) == b"hello"
    ctx.advance(5)                                   # no SYN-ACK retransmission pending
    assert all(seg.flagstr == "A" for seg in ctx.sent())


# --- listen queues and SYN cookies ------------------------------------------------------------------

def handshake(ctx: TCPContext, peer_port: int, peer_iss: int = 1000) -> int:
    """A full handshake from ``peer_port``; returns the stack's ISS."""
    ctx.send("S", src_port=peer_port, seq=peer_iss, ack=0, options=Opts(mss=1460))
    synack = ctx.sent_one()
    ctx.send("A", src_port=peer_port, seq=peer_iss + 1, ack=seq_add(synack.seq, 1))
    return synack.seq


def test_accept_queue_holds_backlog_plus_one_connections_and_a_full_queue_holds_syns_until_accept():
    ctx = TCPContext()
    listener = ctx.listen(backlog=1)                 # Linux's sk_acceptq_is_full: backlog + 1 fit
    handshake(ctx, 1001)
    handshake(ctx, 1002)
    assert len(listener.listener.accepted) == 2
    ctx.send("S", src_port=1003, seq=1000, ack=0, options=Opts(mss=1460))
    ctx.assert_quiet()                                # accept queue full: the SYN waits (Linux drops it)
    assert (ctx.stats.listen_overflow_held.value, ctx.stats.listen_overflow_syn_drop.value) == (1, 0)
    first, _ = listener.accept()
    assert first.get_remote_address().port == 1001
    synack = ctx.sent_one()                           # room again: the held SYN is answered
    assert (synack.flagstr, synack.dst_port, synack.ack) == ("SA", 1003, 1001)
    ctx.send("A", src_port=1003, seq=1001, ack=seq_add(synack.seq, 1))
    ports = [listener.accept()[0].get_remote_address().port for _ in range(2)]
    assert ports == [1002, 1003]
    with pytest.raises(ErrWouldBlock):
        listener.accept()


def test_held_segments_are_bounded_and_beyond_that_dropped_as_linux_drops_them(monkeypatch):
    monkeypatch.setattr(tcp_endpoint, "HELD_SEGMENTS", 2)
    ctx = TCPContext()
    listener = ctx.listen(backlog=0)
    handshake(ctx, 1001)
    for port in (1002, 1003, 1004):
        ctx.send("S", src_port=port, seq=1000, ack=0, options=Opts(mss=1460))
    ctx.assert_quiet()
    assert (ctx.stats.listen_overflow_held.value, ctx.stats.listen_overflow_syn_drop.value) == (2, 1)
    listener.accept()
    assert [seg.dst_port for seg in ctx.sent()] == [1002, 1003]   # room again: the held SYNs, oldest first


def test_listen_backlog_is_capped_at_somaxconn_and_zero_still_takes_a_connection():
    ctx = TCPContext()
    listener = ctx.listen(backlog=1 << 20)
    assert listener.listener.backlog == SOMAXCONN == 4096
    listener.listen(0)                               # listen again: only the backlog changes
    handshake(ctx, 1001)
    ctx.send("S", src_port=1002, seq=1000, ack=0, options=Opts(mss=1460))
    ctx.assert_quiet()                               # one connection waits: the accept queue is full
    assert listener.accept()[0].get_remote_address().port == 1001


def test_ack_with_accept_queue_full_waits_for_accept_to_complete_the_handshake():
    ctx = TCPContext()
    listener = ctx.listen(backlog=1)
    ctx.send("S", src_port=1001, seq=1000, ack=0, options=Opts(mss=1460))
    synack1 = ctx.sent_one()
    handshake(ctx, 1002)
    handshake(ctx, 1003)
    ctx.send("A", src_port=1001, seq=1001, ack=seq_add(synack1.seq, 1), payload=b"GET /")
    assert (ctx.stats.listen_overflow_held.value, ctx.stats.listen_overflow_ack_drop.value) == (1, 0)
    assert len(listener.listener.accepted) == 2
    listener.accept()
    ack = ctx.sent_one()                              # the held ACK (and its data) processed: acknowledged
    assert (ack.dst_port, ack.ack) == (1001, 1006)
    endpoints = [listener.accept()[0] for _ in range(2)]
    assert [ep.get_remote_address().port for ep in endpoints] == [1003, 1001]
    assert endpoints[1].read(100) == b"GET /"


def test_syn_queue_full_answers_with_a_cookie_and_its_ack_creates_the_connection():
    ctx = TCPContext()
    listener = ctx.listen(backlog=1)
    for port in (1001, 1002):                        # two handshakes left half-open fill the SYN queue (backlog + 1)
        ctx.send("S", src_port=port, seq=1000, ack=0, options=Opts(mss=1460))
        ctx.sent_one()
    ctx.send("S", src_port=1003, seq=7000, ack=0, options=FULL_OPTS)
    cookie = ctx.sent_one()
    assert cookie.flagstr == "SA" and cookie.ack == 7001
    assert cookie.options.mss == 1460 and cookie.options.ts is None   # no state: no options kept
    assert ctx.stats.listen_overflow_syn_cookie_sent.value == 1
    assert len(listener.listener.pending) == 2
    ctx.peer_port, ctx.nxt, ctx.rcv_nxt = 1003, 7001, seq_add(cookie.seq, 1)
    ctx.send_data(b"GET /")                          # the cookie ACK may carry data
    assert ctx.stats.listen_overflow_syn_cookie_rcvd.value == 1
    ep, _ = listener.accept()
    assert ep.state is TCPState.ESTABLISHED and ep.get_remote_address().port == 1003
    assert ctx.read_all(ep) == b"GET /"
    ctx.sent()
    ep.set_sock_opt(SockOpt.DELAY, 0)
    ep.write(b"r" * 3000)
    segs = ctx.sent()
    # The MSS the cookie encoded is used: full 1460-byte segments, not the 536 default.
    assert [len(s.payload) for s in segs] == [1460, 1460, 80]
    assert segs[0].seq == seq_add(cookie.seq, 1) and segs[0].ack == 7006


def test_forged_cookie_ack_gets_a_reset_and_is_counted():
    ctx = TCPContext()
    listener = ctx.listen(backlog=2)
    ctx.send("A", src_port=2000, seq=5000, ack=0x12345678)
    rst = ctx.sent_one()
    assert (rst.flagstr, rst.seq) == ("R", 0x12345678)
    assert ctx.stats.listen_overflow_invalid_syn_cookie_rcvd.value == 1
    assert ctx.stats.listen_overflow_syn_cookie_rcvd.value == 0
    with pytest.raises(ErrWouldBlock):
        listener.accept()


def test_stale_cookie_is_rejected():
    ctx = TCPContext()
    listener = ctx.listen(backlog=0)                 # one half-open handshake fills the SYN queue
    ctx.send("S", src_port=1001, seq=1000, ack=0, options=Opts(mss=1460))
    ctx.sent_one()
    ctx.send("S", src_port=1003, seq=7000, ack=0, options=Opts(mss=1460))
    cookie = ctx.sent_one()
    ctx.advance(64 * 4)                              # several cookie-clock ticks later
    ctx.sent()
    ctx.send("A", src_port=1003, seq=7001, ack=seq_add(cookie.seq, 1))
    assert [s.flagstr for s in ctx.sent()] == ["R"]
    assert ctx.stats.listen_overflow_invalid_syn_cookie_rcvd.value == 1
    with pytest.raises(ErrWouldBlock):
        listener.accept()


def test_closing_a_listener_resets_queued_connections():
    ctx = TCPContext()
    listener = ctx.listen(backlog=4)
    iss = handshake(ctx, 1001, peer_iss=1000)
    listener.close()
    rst = ctx.sent_one()
    assert rst.flags & RST and rst.flags & ACK and rst.seq == seq_add(iss, 1) and rst.dst_port == 1001
    assert len(ctx.stack.demux) == 0 and len(ctx.stack.ports) == 0 and len(ctx.stack.timers) == 0


def test_rst_in_syn_rcvd_abandons_the_handshake_and_the_listener_carries_on():
    ctx = TCPContext()
    listener = ctx.listen()
    ctx.send("S", seq=1000, ack=0, options=Opts(mss=1460))
    ctx.sent_one()
    ctx.send("R", seq=1001)
    assert not listener.listener.pending
    assert len(ctx.stack.timers) == 0
    ctx.advance(5)
    ctx.assert_quiet()                               # no SYN-ACK retransmissions
    handshake(ctx, ctx.peer_port, peer_iss=50_000)
    assert listener.accept()[0].state is TCPState.ESTABLISHED


def test_close_while_connecting_releases_everything_silently():
    ctx = TCPContext()
    ep = start_connect(ctx)
    ctx.sent_one()
    ep.close()
    assert ep.state is TCPState.CLOSED
    ctx.advance(10)
    ctx.assert_quiet()
    assert len(ctx.stack.timers) == 0 and len(ctx.stack.demux) == 0 and len(ctx.stack.ports) == 0


def test_listener_wakes_its_waiters_when_a_connection_is_ready():
    ctx = TCPContext()
    listener, wq = ctx.new_endpoint()
    listener.bind(FullAddress(0, b"", 80))
    listener.listen(4)
    ctx.listener = listener
    events = []
    wq.register(events.append, EventMask.IN)
    handshake(ctx, 1001)
    assert events and EventMask.IN in events[-1]


def test_retransmitted_syn_ack_after_our_lost_ack_is_acked_again():
    ctx = TCPContext()
    ctx.connect(peer_iss=9000)
    ctx.send("SA", seq=9000, options=Opts(mss=1460))
    ack = ctx.sent_one()
    assert (ack.flagstr, ack.seq, ack.ack) == ("A", ctx.rcv_nxt, 9001)
    assert ctx.ep.state is TCPState.ESTABLISHED


# --- TCP_DEFER_ACCEPT ---------------------------------------------------------------------------------

def defer_handshake(ctx: TCPContext, timeouts: int) -> None:
    """The peer's SYN to a listener deferring ``timeouts`` SYN-ACK timeouts, and its bare ACK."""
    ctx.listen().set_sock_opt(SockOpt.TCP_DEFER_ACCEPT, timeouts)
    ctx.nxt = 789_000
    ctx.send("S", options=Opts(mss=1460), ack=0)
    synack = ctx.sent_one()
    ctx.nxt, ctx.rcv_nxt = seq_add(789_000, 1), seq_add(synack.seq, 1)
    ctx.ack()


def test_defer_accept_waits_for_data_before_the_connection_can_be_accepted():
    ctx = TCPContext()
    defer_handshake(ctx, 3)
    with pytest.raises(ErrWouldBlock):
        ctx.listener.accept()                       # the bare ACK completed nothing
    ctx.assert_quiet()
    ctx.send_data(b"GET / HTTP/1.0\r\n\r\n")
    ep, _ = ctx.listener.accept()
    assert ep.read(100) == b"GET / HTTP/1.0\r\n\r\n"


def test_defer_accept_gives_up_waiting_after_its_timeouts_and_accepts_on_the_next_ack():
    """No SYN-ACK while the peer is known to have ACKed, until the deferral nearly ends; then one, and
    the ACK it draws completes the connection (Linux's syn_ack_recalc and tcp_check_req)."""
    ctx = TCPContext()
    defer_handshake(ctx, 3)                         # timeouts at 1, 3 and 7 s
    ctx.advance(1.05)
    ctx.assert_quiet()                              # the first two: no SYN-ACK
    ctx.advance(2.0)
    ctx.assert_quiet()
    ctx.advance(4.0)
    [again] = ctx.sent()                            # the third: the last chance
    assert again.flagstr == "SA"
    ctx.ack()
    ep, _ = ctx.listener.accept()
    assert ep.state is TCPState.ESTABLISHED
