"""TCP connection release (RFC 9293 §3.6): FIN exchanges, half-close, TIME-WAIT, aborts, and that
everything a connection held is released when it ends."""

from __future__ import annotations

import pytest

from netsock.tcpip import (ErrClosedForSend, ErrConnectionReset, ErrConnectStarted, ErrWouldBlock, FullAddress,
                           ShutdownFlags, SockOpt)
from netsock.transport.tcp import TCPState
from netsock.waiter import EventMask
from tcp_context import LOCAL_ADDR, RST, Opts, TCPContext, seq_add


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
    assert ep.state is TCPState.TIME_WAIT
    ctx.advance(4.0)
    # A retransmitted FIN is ACKed again and restarts the 2MSL wait (RFC 9293 §3.10.7.4).
    ctx.send("FA", seq=seq_add(ctx.nxt, -1))
    assert [s.flagstr for s in ctx.sent()] == ["A"]
    ctx.advance(4.999)
    assert ep.state is TCPState.TIME_WAIT
    assert len(ctx.stack.ports) == 1 and len(ctx.stack.demux) == 1
    ctx.advance(0.001)
    assert ep.state is TCPState.CLOSED
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
    assert ctx.ep.state is TCPState.TIME_WAIT
    ctx.advance(2.49)
    assert ctx.ep.state is TCPState.TIME_WAIT
    ctx.advance(0.01)
    assert ctx.ep.state is TCPState.CLOSED and released(ctx)


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
    assert ep.state is TCPState.TIME_WAIT


def test_fin_acked_together_with_the_peers_fin_goes_straight_to_time_wait():
    ctx = established()
    ctx.ep.close()
    ctx.sent_one()
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, 1)
    ctx.send_fin()
    assert ctx.ep.state is TCPState.TIME_WAIT
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
    assert ep.state is TCPState.TIME_WAIT


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
    assert ep.state is TCPState.TIME_WAIT
    ctx.send("S", seq=500_000, ack=0, options=Opts(mss=1460))
    synack = ctx.sent_one()
    assert synack.flagstr == "SA" and synack.ack == 500_001
    assert ep.state is TCPState.CLOSED
    with pytest.raises(ErrWouldBlock):
        ctx.listener.accept()
