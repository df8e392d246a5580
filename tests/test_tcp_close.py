"""TCP connection release (RFC 9293 §3.6): FIN exchanges, half-close, TIME-WAIT, aborts, and that
everything a connection held is released when it ends."""

from __future__ import annotations

import gc

import pytest

from netsock.tcpip import (ErrClosedForSend, ErrConnectionReset, ErrConnectStarted, ErrPortInUse, ErrWouldBlock,
                           FullAddress, ShutdownFlags, SockOpt)
from netsock.transport.tcp import TCPEndpoint, TCPState
from netsock.transport.tcp.time_wait import TimeWait
from netsock.waiter import EventMask
from tcp_context import LOCAL_ADDR, MOD, RST, Opts, TCPContext, seq_add


def released(ctx: TCPContext) -> bool:
    """Nothing left behind: no armed timer, no demux entry, no port reservation."""
    return len(ctx.stack.timers) == 0 and len(ctx.stack.demux) == 0 and len(ctx.stack.ports) == 0


def established(**kw) -> TCPContext:
    ctx = TCPContext()
    ctx.connect(**kw)
    return ctx


def test_active_close_fin_wait_time_wait_and_release_after_the_configured_duration():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.TCP_TIME_WAIT_TIMEOUT, 5.0)
    ep.close()
    fin = ctx.sent_one()
    assert (fin.ctl, fin.seq, fin.ack) == ("FA", ctx.rcv_nxt, ctx.nxt)
    assert ep.state is TCPState.FIN_WAIT1
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.ack()
    assert ep.state is TCPState.FIN_WAIT2
    ctx.send_fin()
    ack = ctx.sent_one()
    assert (ack.flagstr, ack.seq, ack.ack) == ("A", ctx.rcv_nxt, ctx.nxt)
    # The endpoint is done (CLOSED, as Linux's socket after tcp_time_wait); the connection waits in TIME-WAIT.
    assert ep.state is TCPState.CLOSED and ctx.connection_state() is TCPState.TIME_WAIT
    ctx.advance(4.0)
    # A retransmitted FIN is ACKed again and restarts the 2MSL wait (RFC 9293 §3.10.7.4).
    ctx.send("FA", seq=seq_add(ctx.nxt, -1))
    assert [(s.flagstr, s.seq, s.ack) for s in ctx.sent()] == [("A", ctx.rcv_nxt, ctx.nxt)]
    ctx.advance(4.999)
    assert ctx.connection_state() is TCPState.TIME_WAIT
    assert len(ctx.stack.ports) == 1 and len(ctx.stack.demux) == 1
    ctx.advance(0.001)
    assert ctx.connection_state() is None
    assert released(ctx)
    ctx.send("A")                                # the connection is gone: a RST answers
    assert ctx.sent_one().flagstr == "R"


def test_time_wait_duration_is_a_stack_option_too():
    ctx = TCPContext()
    ctx.proto.set_option(SockOpt.TCP_TIME_WAIT_TIMEOUT, 2.5)
    ctx.connect()
    ctx.ep.close()
    ctx.sent()
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.send_fin()
    assert ctx.connection_state() is TCPState.TIME_WAIT
    ctx.advance(2.49)
    assert ctx.connection_state() is TCPState.TIME_WAIT
    ctx.advance(0.01)
    assert ctx.connection_state() is None and released(ctx)


def test_passive_close_close_wait_last_ack():
    ctx = established()
    ep = ctx.ep
    ctx.send_data(b"bye", flags="FPA")
    ack = ctx.sent_one()
    assert ack.ack == ctx.nxt
    assert ep.state is TCPState.CLOSE_WAIT
    assert ep.readiness(EventMask.IN | EventMask.RDHUP) == EventMask.IN | EventMask.RDHUP
    assert ep.read(100) == b"bye"
    assert ep.read(100) == b""                       # EOF
    ep.write(b"last words")
    assert ctx.absorb(ctx.sent()) == b"last words"
    ep.close()
    fin = ctx.sent_one()
    assert (fin.ctl, fin.seq) == ("FA", ctx.rcv_nxt)
    assert ep.state is TCPState.LAST_ACK
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.ack()
    assert ep.state is TCPState.CLOSED
    assert released(ctx)                             # the passive closer has no TIME-WAIT


def test_simultaneous_close_goes_through_closing():
    ctx = established()
    ep = ctx.ep
    ep.close()
    fin = ctx.sent_one()
    ctx.send("FA")                                   # the peer's FIN crosses ours: it does not ACK it
    ctx.nxt = seq_add(ctx.nxt, 1)
    ack = ctx.sent_one()
    assert (ack.flagstr, ack.seq, ack.ack) == ("A", seq_add(fin.seq, 1), ctx.nxt)
    assert ep.state is TCPState.CLOSING
    ctx.rcv_nxt = seq_add(fin.seq, 1)
    ctx.ack()
    assert ctx.connection_state() is TCPState.TIME_WAIT and ep.state is TCPState.CLOSED
    ctx.assert_quiet()                               # (their FIN was ACKed when it came)


def test_fin_acked_together_with_the_peers_fin_goes_straight_to_time_wait():
    ctx = established()
    ctx.ep.close()
    ctx.sent_one()
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.send_fin()
    assert ctx.connection_state() is TCPState.TIME_WAIT
    assert ctx.sent_one().ack == ctx.nxt


def test_shutdown_write_sends_fin_and_reading_still_works():
    ctx = established()
    ep = ctx.ep
    ep.write(b"request")
    ctx.absorb(ctx.sent())
    ctx.ack()
    ep.shutdown(ShutdownFlags.WRITE)
    fin = ctx.sent_one()
    assert (fin.ctl, fin.seq) == ("FA", ctx.rcv_nxt)
    with pytest.raises(ErrClosedForSend):
        ep.write(b"more")
    assert ep.readiness(EventMask.OUT)      # Linux's tcp_poll: writable, so a writer learns of EPIPE at once
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.ack()
    assert ep.state is TCPState.FIN_WAIT2
    ctx.send_data(b"response part 1, ")
    ctx.send_data(b"part 2")
    assert ep.read(1000) == b"response part 1, part 2"
    ctx.send_fin()
    assert ep.read(1000) == b""
    assert ctx.connection_state() is TCPState.TIME_WAIT


def test_shutdown_read_reports_eof_and_discards_but_acknowledges_later_data():
    ctx = established()
    ep = ctx.ep
    ctx.send_data(b"unread")
    ctx.sent()
    ep.shutdown(ShutdownFlags.READ)
    assert ep.readiness(EventMask.IN) == EventMask.IN
    assert ep.read(100) == b""
    ctx.send_data(b"x" * 1000)
    acks = ctx.sent()
    assert acks and acks[-1].ack == ctx.nxt          # accepted and thrown away, not left unacknowledged
    assert ep.read(100) == b""
    ep.write(b"still sending")                       # the other direction is untouched
    assert ctx.absorb(ctx.sent()) == b"still sending"


def test_linger_zero_close_sends_rst():
    ctx = established()
    ep = ctx.ep
    ep.write(b"pending")
    ctx.sent()
    ep.set_sock_opt(SockOpt.LINGER, 0)
    ep.close()
    rst = ctx.sent_one()
    assert rst.flags & RST and rst.seq == seq_add(ctx.rcv_nxt, 7)   # <SEQ=SND.NXT><CTL=RST>
    assert ep.state is TCPState.CLOSED and released(ctx)
    assert ctx.stats.established_resets.value == 1


def test_close_with_unread_data_sends_rst():
    ctx = established()
    ep = ctx.ep
    ctx.send_data(b"never read")
    ctx.sent()
    ep.close()
    rst = ctx.sent_one()
    assert rst.flags & RST and rst.seq == ctx.rcv_nxt
    assert ep.state is TCPState.CLOSED and released(ctx)


def test_data_arriving_after_close_gets_rst():
    ctx = established()
    ep = ctx.ep
    ep.close()
    fin = ctx.sent_one()
    ctx.send_data(b"too late")
    rst = ctx.sent_one()
    assert rst.flags & RST and rst.seq == seq_add(fin.seq, 1)
    assert ep.state is TCPState.CLOSED and released(ctx)


def test_orphaned_fin_wait2_times_out():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.TCP_LINGER_TIMEOUT, 3.0)
    ep.close()
    ctx.sent_one()
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.ack()
    assert ep.state is TCPState.FIN_WAIT2
    ctx.advance(2.99)
    assert ep.state is TCPState.FIN_WAIT2
    ctx.advance(0.01)
    assert ep.state is TCPState.CLOSED and released(ctx)
    ctx.send_fin()                                   # the peer's FIN, too late: nobody owns it
    assert ctx.sent_one().flagstr == "R"


def test_half_closed_fin_wait2_is_not_timed_out_while_the_socket_is_open():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.TCP_LINGER_TIMEOUT, 3.0)
    ep.shutdown(ShutdownFlags.WRITE)
    ctx.sent_one()
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.ack()
    ctx.advance(100)
    assert ep.state is TCPState.FIN_WAIT2
    ctx.send_data(b"late but welcome")
    assert ep.read(100) == b"late but welcome"


def test_rst_on_established_connection_reports_reset_once():
    ctx = established()
    ep = ctx.ep
    ctx.send("RA")
    assert ep.state is TCPState.CLOSED
    assert ep.readiness(EventMask.ALL) & (EventMask.ERR | EventMask.HUP | EventMask.IN) == \
        EventMask.ERR | EventMask.HUP | EventMask.IN
    with pytest.raises(ErrConnectionReset):
        ep.read(10)
    assert ep.read(10) == b""
    ctx.assert_quiet()
    assert released(ctx)
    assert ctx.stats.established_resets.value == 1 and ctx.stats.resets_received.value == 1
    assert ctx.stats.current_established.value == 0


def test_a_connection_aborted_by_a_wakeup_of_the_ack_being_processed_ends_cleanly():
    """Waiters run inside the stack's processing: one woken by the send space an ACK frees may end
    the connection before that ACK's processing is over."""
    ctx = established()
    ep = ctx.ep
    ep.write(b"x" * 100)
    ctx.absorb(ctx.sent())
    ctx.wq.register(lambda mask: ep.state is TCPState.CLOSED or ep.abort(), EventMask.OUT)
    ctx.ack()
    assert ep.state is TCPState.CLOSED
    assert [s.ctl for s in ctx.sent()] == ["RA"]
    assert released(ctx)


def test_ten_thousand_connections_leave_nothing_behind():
    """Open and close 10,000 connections through a listener on the same stack (the stack talks to
    itself), let TIME-WAIT run out, and check no timer, demux entry or port reservation is left."""
    ctx = TCPContext()
    ctx.proto.set_option(SockOpt.TCP_TIME_WAIT_TIMEOUT, 1.0)
    listener = ctx.listen(backlog=64)
    server_addr = FullAddress(0, LOCAL_ADDR, ctx.port)
    for i in range(10_000):
        client, _ = ctx.new_endpoint()
        try:
            client.connect(server_addr)
        except ErrConnectStarted:
            pass
        server, _ = listener.accept()
        assert client.state is TCPState.ESTABLISHED
        client.write(b"ping")
        assert server.read(10) == b"ping"
        if i % 2:                                    # alternate which side closes first
            client.close()
            server.close()
        else:
            server.close()
            client.close()
        if i % 1000 == 999:
            ctx.advance(0.5)
    listener.close()
    ctx.advance(2.0)
    assert ctx.link.stats.tx_packets.value == 0      # all of it stayed inside the stack
    assert len(ctx.stack.timers) == 0
    assert len(ctx.stack.demux) == 0
    assert len(ctx.stack.ports) == 0
    assert ctx.stats.current_established.value == 0
    assert ctx.stats.active_connection_openings.value == ctx.stats.passive_connection_openings.value == 10_000


def test_new_syn_for_a_connection_in_time_wait_opens_a_new_one():
    """A SYN with a higher sequence number for a connection in TIME-WAIT opens a new one (RFC 9293
    §3.10.7.4, as Linux does) instead of being answered with the old connection's ACK."""
    ctx = TCPContext()
    ctx.accept(peer_iss=1000, opts=Opts(mss=1460))
    ep = ctx.ep
    ep.close()
    ctx.sent()
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.send_fin()
    ctx.sent()
    assert ctx.connection_state() is TCPState.TIME_WAIT
    ctx.send("S", seq=500_000, ack=0, options=Opts(mss=1460))
    synack = ctx.sent_one()
    assert synack.flagstr == "SA" and synack.ack == 500_001
    # Our new ISN lies beyond everything the old connection sent (as Linux picks it).
    assert synack.seq == seq_add(ctx.rcv_nxt, 65537)
    assert ctx.connection_state() is TCPState.SYN_RCVD
    with pytest.raises(ErrWouldBlock):
        ctx.listener.accept()


# --- the TIME-WAIT record -------------------------------------------------------------------------

def in_time_wait(*, passive: bool = False, ts: bool = False, peer_iss: int = 789_000) -> TCPContext:
    """A connection the stack closed first, both FINs through: in TIME-WAIT. ``passive``: the stack
    accepted it (a server that closes first, as HTTP/1.0); ``ts``: timestamps were negotiated."""
    ctx = TCPContext()
    opts = Opts(mss=1460, ts=(5000, 0)) if ts else Opts(mss=1460)
    if passive:
        ctx.accept(opts=opts, peer_iss=peer_iss)
    else:
        ctx.connect(opts=opts, peer_iss=peer_iss)
    ctx.ep.close()
    assert ctx.sent_one().ctl == "FA"
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.send_fin()
    assert ctx.sent_one().ack == ctx.nxt
    assert ctx.connection_state() is TCPState.TIME_WAIT
    return ctx


def test_time_wait_acks_carry_timestamps_and_the_sockets_ttl():
    ctx = TCPContext()
    ctx.connect(opts=Opts(mss=1460, ts=(5000, 0)))
    ctx.ep.set_sock_opt(SockOpt.TTL, 9)
    ctx.ep.close()
    ctx.sent_one()
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    fin_tsval = ctx.tsval()
    ctx.send_fin()
    last_tsval = ctx.sent_one().options.ts[0]
    ctx.advance(1.0)
    ctx.send("FA", seq=seq_add(ctx.nxt, -1))
    ack = ctx.sent_one()
    assert (ack.flagstr, ack.seq, ack.ack, ack.ttl) == ("A", ctx.rcv_nxt, ctx.nxt, 9)
    # TS.Recent stays the FIN's: a segment wholly before what we ACKed does not move it (RFC 7323 §4.3).
    assert ack.options.ts == (seq_add(last_tsval, 1000), fin_tsval)


def test_an_old_duplicate_fin_is_answered_but_does_not_restart_time_wait():
    """PAWS (RFC 7323 §5) comes first: only the peer's FIN sent again restarts the wait."""
    ctx = in_time_wait(ts=True)
    ctx.advance(59.0)
    old = seq_add(ctx.tsval(), -59_001)
    ctx.send("FA", seq=seq_add(ctx.nxt, -1), options=Opts(ts=(old, ctx.ts_recent)))
    assert ctx.sent_one().ack == ctx.nxt
    ctx.advance(1.0)
    assert ctx.connection_state() is None and released(ctx)


@pytest.mark.parametrize("offset,ends,challenged", [(0, True, False), (1000, False, True), (-1, False, False),
                                                     (1 << 20, False, False)])
def test_rst_in_time_wait(offset, ends, challenged):
    """An exact RST ends TIME-WAIT (as Linux does without tcp_rfc1337); one inside the window but not
    exact gets a challenge ACK (RFC 5961 §3.2); one outside the window is ignored."""
    ctx = in_time_wait()
    ctx.send("R", seq=seq_add(ctx.nxt, offset))
    answers = ctx.sent()
    assert [(a.flagstr, a.seq, a.ack) for a in answers] == ([("A", ctx.rcv_nxt, ctx.nxt)] if challenged else [])
    assert ctx.connection_state() is (None if ends else TCPState.TIME_WAIT)
    assert released(ctx) is ends
    assert ctx.stats.resets_received.value == int(ends)


def test_time_wait_challenges_an_ack_of_data_never_sent():
    ctx = in_time_wait()
    ctx.send("A", ack=seq_add(ctx.rcv_nxt, 100))
    ack = ctx.sent_one()
    assert (ack.flagstr, ack.seq, ack.ack) == ("A", ctx.rcv_nxt, ctx.nxt)
    ctx.ack()                                        # a right one needs no answer
    ctx.assert_quiet()
    assert ctx.connection_state() is TCPState.TIME_WAIT


@pytest.mark.parametrize("ts_delta,seq_delta,peer_iss,reopens", [
    # Without timestamps, by sequence number (across the wrap too).
    (None, 1, 789_000, True), (None, 200_000, 789_000, True), (None, 0, 789_000, False),
    (None, -1, 789_000, False), (None, 20, MOD - 10, True), (None, -20, MOD - 10, False),
    # With them, by timestamp, then (timestamps equal) by sequence number.
    (1, -100_000, 789_000, True), (-1, 100_000, 789_000, False), (0, 1, 789_000, True), (0, -1, 789_000, False),
])
def test_a_syn_reopens_time_wait_as_rfc_6191_says(ts_delta, seq_delta, peer_iss, reopens):
    ctx = in_time_wait(passive=True, ts=ts_delta is not None, peer_iss=peer_iss)
    old_iss_gap = seq_add(ctx.rcv_nxt, 65537)
    syn_seq = seq_add(ctx.nxt, seq_delta)
    ts = None if ts_delta is None else (seq_add(ctx.tsval(), ts_delta), 0)
    ctx.send("S", seq=syn_seq, ack=0, options=Opts(mss=1460, ts=ts))
    answer = ctx.sent_one()
    if reopens:
        assert (answer.flagstr, answer.seq, answer.ack) == ("SA", old_iss_gap, seq_add(syn_seq, 1))
        assert ctx.connection_state() is TCPState.SYN_RCVD
    else:
        assert (answer.flagstr, answer.seq, answer.ack) == ("A", ctx.rcv_nxt, ctx.nxt)   # a challenge ACK
        assert ctx.connection_state() is TCPState.TIME_WAIT


def test_a_new_syn_for_time_wait_without_a_listener_gets_rst():
    """The active closer's TIME-WAIT ends for the new SYN, but nobody listens on its port."""
    ctx = in_time_wait()
    syn_seq = seq_add(ctx.nxt, 100)
    ctx.send("S", seq=syn_seq, ack=0, options=Opts(mss=1460))
    rst = ctx.sent_one()
    assert rst.flags & RST and rst.ack == seq_add(syn_seq, 1)
    assert ctx.connection_state() is None and released(ctx)


def test_time_wait_keeps_the_port_until_it_is_over():
    ctx = in_time_wait()
    ctx.ep, _ = ctx.new_endpoint()
    with pytest.raises(ErrPortInUse):
        ctx.ep.bind(FullAddress(0, b"", ctx.port))
    ctx.advance(60.0)
    ctx.ep.bind(FullAddress(0, b"", ctx.port))


def test_closing_the_stack_ends_time_wait():
    ctx = in_time_wait()
    ctx.stack.close()
    assert ctx.connection_state() is None and released(ctx)


def test_a_segment_queued_while_the_connection_ended_goes_to_its_time_wait():
    """Segments that arrive while the endpoint is busy wait for it; if the connection has gone to
    TIME-WAIT meanwhile, the record answers them (here: the peer's FIN, and that FIN again)."""
    ctx = established()
    ep = ctx.ep
    ep.close()
    ctx.sent_one()
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.ack()
    assert ep.state is TCPState.FIN_WAIT2

    def fin_twice() -> None:
        with ctx.event():
            ctx.send_fin()
            ctx.send("FA", seq=seq_add(ctx.nxt, -1))
        assert ctx.sent() == []                      # queued behind the busy endpoint

    ep.guarded(fin_twice)
    assert [(a.flagstr, a.ack) for a in ctx.sent()] == [("A", ctx.nxt)] * 2
    assert ctx.connection_state() is TCPState.TIME_WAIT


def test_finished_connections_are_freed_by_reference_counting():
    """No part of a finished connection refers back to it, so nothing waits for the cyclic GC: with
    it off, a thousand connections leave no endpoint behind, and TIME-WAIT only its small records."""
    def count(kind: type) -> int:
        return sum(isinstance(o, kind) for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        ctx = TCPContext()
        ctx.proto.set_option(SockOpt.TCP_TIME_WAIT_TIMEOUT, 1.0)
        listener = ctx.listen(backlog=64)
        endpoints, records = count(TCPEndpoint), count(TimeWait)
        for i in range(1000):
            client, _ = ctx.new_endpoint()
            try:
                client.connect(FullAddress(0, LOCAL_ADDR, ctx.port))
            except ErrConnectStarted:
                pass
            server, _ = listener.accept()
            client.write(b"ping")
            assert server.read(10) == b"ping"
            first, second = (client, server) if i % 2 else (server, client)
            first.close()
            second.close()
            ctx.clock.run_pending()                  # the event is over: ACKs owed meanwhile go
        del client, server, first, second
        assert count(TCPEndpoint) == endpoints
        assert count(TimeWait) == records + 1000     # one per connection, on the side that closed first
        ctx.advance(1.0)
        assert count(TimeWait) == records and released_but_listener(ctx)
    finally:
        gc.enable()


def released_but_listener(ctx: TCPContext) -> bool:
    return len(ctx.stack.timers) == 0 and len(ctx.stack.demux) == 1 and len(ctx.stack.ports) == 1
