"""TCP Fast Open (RFC 7413): a server's cookies and the data it takes with a SYN, a client's cookie cache
and the data it sends with one, what each does when the other side or the network says no, and two
stacks doing it to each other from sequence numbers just below 2**32."""

from __future__ import annotations

import pytest

from netsock.link.fault import FaultConfig
from netsock.tcpip import (ErrAlreadyConnected, ErrConnectionReset, ErrConnectStarted, ErrInvalidOptionValue,
                           ErrNotSupported, ErrWouldBlock, FullAddress, SockOpt)
from netsock.transport.tcp import TCPState
from netsock.transport.tcp.protocol import FAST_OPEN_CACHE_SIZE, FAST_OPEN_CLIENT, FAST_OPEN_SERVER
from netsock.waiter import EventMask
from tcp_context import LOCAL_ADDR, MOD, PEER_ADDR, PEER_PORT, Opts, Pair, TCPContext, seq_add

REQUEST = b"GET / HTTP/1.0\r\n\r\n"
RESPONSE = b"HTTP/1.0 200 OK\r\n\r\nhello"
BOTH = FAST_OPEN_CLIENT | FAST_OPEN_SERVER
IN_OUT = EventMask.IN | EventMask.OUT


# --- the server ------------------------------------------------------------------------------------

def fast_open_server(queue: int = 16) -> tuple[TCPContext, bytes]:
    """A stack listening with a TCP_FASTOPEN queue and server Fast Open on; the cookie its peer should
    present."""
    ctx = TCPContext()
    ctx.proto.fast_open = BOTH
    ctx.listen().set_sock_opt(SockOpt.TCP_FAST_OPEN, queue)
    return ctx, ctx.proto.fast_open_cookie(PEER_ADDR, LOCAL_ADDR)


def syn(ctx: TCPContext, cookie: bytes | None, data: bytes = REQUEST, port: int = PEER_PORT, iss: int = 5000):
    """The peer's SYN from ``port`` with ``data`` and Fast Open's option; returns the stack's SYN-ACK."""
    ctx.peer_port = port
    ctx.nxt = iss
    ctx.send("S", options=Opts(mss=1460, fast_open=cookie), payload=data, ack=0)
    synack = ctx.sent_one()
    assert synack.flagstr == "SA", synack
    ctx.iss = synack.seq
    ctx.rcv_nxt = seq_add(synack.seq, 1)
    return synack


def test_a_cookie_request_is_answered_with_a_cookie_and_the_syns_data_waits():
    ctx, cookie = fast_open_server()
    synack = syn(ctx, b"")
    assert len(cookie) == 8 and synack.options.fast_open == cookie
    assert synack.ack == 5001                           # the data is not taken: the client sends it again
    assert ctx.stats.fast_open_cookie_requests.value == 1 and ctx.stats.fast_open_passive.value == 0
    with pytest.raises(ErrWouldBlock):
        ctx.listener.accept()                           # an ordinary handshake, not yet complete
    ctx.nxt = 5001
    ctx.send_data(REQUEST)
    ep, _ = ctx.listener.accept()
    assert ctx.read_all(ep) == REQUEST


def test_a_valid_cookie_delivers_the_data_and_the_connection_before_the_handshake_completes():
    ctx, cookie = fast_open_server()
    synack = syn(ctx, cookie)
    assert synack.ack == 5001 + len(REQUEST)            # the SYN-ACK acknowledges the data
    assert synack.options.fast_open is None             # (the client has its cookie)
    ep, _ = ctx.listener.accept()                       # at once, in SYN-RCVD
    assert ep.state is TCPState.SYN_RCVD
    assert ep.readiness(IN_OUT) == IN_OUT
    assert ep.read(100) == REQUEST
    assert ep.write(RESPONSE) == len(RESPONSE)
    # The answer leaves within the first round trip, ahead of the client's ACK (RFC 7413 §4.2.2).
    data = [seg for seg in ctx.sent() if seg.payload]
    assert [(seg.seq, seg.payload) for seg in data] == [(seq_add(synack.seq, 1), RESPONSE)]
    ctx.nxt = 5001 + len(REQUEST)
    ctx.rcv_nxt = seq_add(ctx.rcv_nxt, len(RESPONSE))
    ctx.ack()
    assert ep.state is TCPState.ESTABLISHED
    stats = ctx.stats
    assert (stats.fast_open_passive.value, stats.passive_connection_openings.value) == (1, 1)
    assert ctx.listener.listener.fast_open_pending == 0
    assert not ep.snd.buffer and ep.snd.una == ep.snd.max


def test_a_wrong_cookie_gets_the_right_one_and_an_ordinary_handshake():
    ctx, cookie = fast_open_server()
    synack = syn(ctx, bytes(8))
    assert synack.ack == 5001 and synack.options.fast_open == cookie
    assert ctx.stats.fast_open_passive_fail.value == 1
    with pytest.raises(ErrWouldBlock):
        ctx.listener.accept()


def test_without_server_fast_open_the_option_is_ignored():
    """Linux's default net.ipv4.tcp_fastopen (1) is client-only, and so is netsock's."""
    ctx = TCPContext()
    assert ctx.proto.fast_open == FAST_OPEN_CLIENT
    ctx.listen().set_sock_opt(SockOpt.TCP_FAST_OPEN, 16)
    cookie = ctx.proto.fast_open_cookie(PEER_ADDR, LOCAL_ADDR)
    for offered in (b"", cookie):
        synack = syn(ctx, offered, iss=7000)
        assert synack.ack == 7001 and synack.options.fast_open is None
    stats = ctx.stats
    assert stats.fast_open_passive.value == 0
    assert stats.fast_open_cookie_requests.value == 1      # (counted all the same, as Linux counts it)


def test_a_full_fast_open_queue_turns_valid_cookies_to_ordinary_handshakes_until_one_completes():
    ctx, cookie = fast_open_server(queue=1)
    first = syn(ctx, cookie, port=40001)
    assert first.ack == 5001 + len(REQUEST)
    assert syn(ctx, cookie, port=40002).ack == 5001        # the queue's one place is taken
    assert ctx.stats.fast_open_listen_overflow.value == 1
    ctx.peer_port, ctx.nxt, ctx.rcv_nxt = 40001, 5001 + len(REQUEST), seq_add(first.seq, 1)
    ctx.ack()                                               # the first handshake completes: its place is free
    assert syn(ctx, cookie, port=40003).ack == 5001 + len(REQUEST)
    assert ctx.stats.fast_open_passive.value == 2


def test_a_reset_before_the_handshake_completes_reaches_the_accepted_connection():
    ctx, cookie = fast_open_server(queue=1)
    syn(ctx, cookie)
    ep, _ = ctx.listener.accept()
    ctx.nxt = 5001 + len(REQUEST)
    ctx.send("R")
    assert ep.read(100) == REQUEST                          # what came stays readable, then the error
    with pytest.raises(ErrConnectionReset):
        ep.read(100)
    assert ctx.listener.listener.fast_open_pending == 0
    assert syn(ctx, cookie, port=40009).ack == 5001 + len(REQUEST)     # the place was given back


def test_an_answer_sent_before_a_lost_syn_ack_is_resent_once_the_handshake_completes():
    ctx, cookie = fast_open_server()
    synack = syn(ctx, cookie)
    ep, _ = ctx.listener.accept()
    ep.read(100)
    ep.write(RESPONSE)
    assert [seg.payload for seg in ctx.sent() if seg.payload] == [RESPONSE]
    ctx.advance(1.0)                                        # neither reached the client: the SYN-ACK again
    again = ctx.sent_one()
    assert again.flagstr == "SA" and again.seq == synack.seq and not again.payload
    ctx.nxt = 5001 + len(REQUEST)
    ctx.ack()                                               # the client has the SYN-ACK only
    assert ep.state is TCPState.ESTABLISHED
    resent = [seg for seg in ctx.sent() if seg.payload]
    if not resent:
        ctx.advance(3.0)
        resent = [seg for seg in ctx.sent() if seg.payload]
    assert [(seg.seq, seg.payload) for seg in resent] == [(seq_add(synack.seq, 1), RESPONSE)]


# --- the client ------------------------------------------------------------------------------------

def fast_open_connect(ctx: TCPContext):
    ep, _ = ctx.new_endpoint()
    ep.connect(FullAddress(0, PEER_ADDR, PEER_PORT), fast_open=True)
    return ep


def answer(ctx: TCPContext, stack_syn, acked: int, cookie: bytes | None = None, iss: int = 900_000) -> None:
    """The peer's SYN-ACK to ``stack_syn``, acknowledging ``acked`` bytes of its data."""
    ctx.port = stack_syn.src_port
    ctx.iss = stack_syn.seq
    ctx.nxt = iss
    ctx.send("SA", seq=iss, ack=seq_add(stack_syn.seq, 1 + acked), options=Opts(mss=1460, fast_open=cookie))
    ctx.nxt = iss + 1
    ctx.rcv_nxt = seq_add(stack_syn.seq, 1 + acked)


def with_cookie(cookie: bytes = b"12345678") -> TCPContext:
    ctx = TCPContext()
    ctx.proto.remember_fast_open_cookie(PEER_ADDR, cookie, 1460)
    return ctx


def test_the_first_connection_asks_for_a_cookie_and_keeps_the_one_it_gets():
    ctx = TCPContext()
    ep, _ = ctx.new_endpoint()
    with pytest.raises(ErrConnectStarted):
        ep.connect(FullAddress(0, PEER_ADDR, PEER_PORT), fast_open=True)
    request = ctx.sent_one()
    assert request.options.fast_open == b"" and not request.payload
    answer(ctx, request, 0, cookie=b"abcdefgh")
    assert ep.state is TCPState.ESTABLISHED
    assert ctx.proto.fast_open_cookies == {PEER_ADDR: (b"abcdefgh", 1460)}
    assert ctx.stats.fast_open_active.value == ctx.stats.fast_open_active_fail.value == 0


def test_with_a_cookie_connect_returns_at_once_and_the_first_write_rides_on_the_syn():
    ctx = with_cookie()
    ep = fast_open_connect(ctx)
    ctx.assert_quiet()                                      # nothing until there is data to carry
    assert ep.state is TCPState.SYN_SENT and ep.readiness(IN_OUT) == EventMask.OUT
    with pytest.raises(ErrAlreadyConnected):
        ep.connect(FullAddress(0, PEER_ADDR, PEER_PORT))    # (connect already said yes: Linux's EISCONN)
    assert ep.write(REQUEST) == len(REQUEST)
    first = ctx.sent_one()
    assert first.flagstr == "S" and first.payload == REQUEST and first.options.fast_open == b"12345678"
    assert not ep.readiness(IN_OUT)
    with pytest.raises(ErrWouldBlock):
        ep.write(b"more")                                   # the rest waits for the handshake
    answer(ctx, first, len(REQUEST))
    assert ep.state is TCPState.ESTABLISHED
    assert [seg.flagstr for seg in ctx.sent()] == ["A"]     # nothing to resend
    assert ctx.stats.fast_open_active.value == 1 and ep.snd.una == ep.snd.max == 1 + len(REQUEST)
    ep.write(b"more")
    assert [(seg.seq, seg.payload) for seg in ctx.sent()] == [(seq_add(first.seq, 1 + len(REQUEST)), b"more")]


def test_syn_data_the_server_does_not_take_is_resent_at_once():
    ctx = with_cookie()
    ep = fast_open_connect(ctx)
    ep.write(REQUEST)
    first = ctx.sent_one()
    answer(ctx, first, 0, cookie=b"newcooki")               # a server that refused the cookie gives another
    assert ep.state is TCPState.ESTABLISHED
    data = [seg for seg in ctx.sent() if seg.payload]
    assert [(seg.seq, seg.payload) for seg in data] == [(seq_add(first.seq, 1), REQUEST)]
    assert ctx.stats.fast_open_active_fail.value == 1
    assert ctx.proto.fast_open_cookies[PEER_ADDR] == (b"newcooki", 1460)


def test_a_syn_carries_what_fits_beside_the_largest_options_in_the_peers_mss():
    ctx = with_cookie()
    ep = fast_open_connect(ctx)
    assert ep.write(bytes(5000)) == 1460 - 40
    assert len(ctx.sent_one().payload) == 1420


def syn_with_data_timed_out():
    """A Fast Open SYN with REQUEST, unanswered for a second: (context, endpoint, that SYN, the one resent)."""
    ctx = with_cookie()
    ep = fast_open_connect(ctx)
    ep.write(REQUEST)
    first = ctx.sent_one()
    ctx.advance(1.0)
    return ctx, ep, first, ctx.sent_one()


def test_a_lost_syn_with_data_is_resent_without_it():
    ctx, _, first, again = syn_with_data_timed_out()
    assert again.flagstr == "S" and again.seq == first.seq and not again.payload
    assert again.options.fast_open == b"12345678"
    answer(ctx, again, 0)
    data = [seg for seg in ctx.sent() if seg.payload]
    assert [(seg.seq, seg.payload) for seg in data] == [(seq_add(first.seq, 1), REQUEST)]


def test_the_original_syns_data_acknowledged_after_a_resent_syn_counts():
    ctx, ep, first, _ = syn_with_data_timed_out()
    answer(ctx, first, len(REQUEST))                        # the first SYN arrived after all
    assert ep.state is TCPState.ESTABLISHED and ep.snd.una == 1 + len(REQUEST)
    assert [seg.flagstr for seg in ctx.sent()] == ["A"]


def test_syn_data_across_the_sequence_number_wrap():
    ctx = with_cookie()
    ctx.fix_isn(MOD - 3)
    ep = fast_open_connect(ctx)
    ep.write(REQUEST)
    first = ctx.sent_one()
    assert first.seq == MOD - 3
    answer(ctx, first, len(REQUEST))
    assert ep.state is TCPState.ESTABLISHED and ep.snd.una == 1 + len(REQUEST)
    ctx.sent()
    ep.write(b"next")
    assert [(seg.seq, seg.payload) for seg in ctx.sent()] == [((MOD - 3 + 1 + len(REQUEST)) % MOD, b"next")]


def test_tcp_fastopen_connect_is_checked_as_linux_checks_it():
    ctx = with_cookie()
    ep, _ = ctx.new_endpoint()
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.TCP_FAST_OPEN_CONNECT, 2)
    ep.set_sock_opt(SockOpt.TCP_FAST_OPEN_CONNECT, 1)
    assert ep.get_sock_opt(SockOpt.TCP_FAST_OPEN_CONNECT) == 1
    assert ep.connect(FullAddress(0, PEER_ADDR, PEER_PORT)) is None      # deferred: the cookie is known
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.TCP_FAST_OPEN_CONNECT, 0)                # not before connect
    ctx.proto.fast_open = 0
    other, _ = ctx.new_endpoint()
    with pytest.raises(ErrNotSupported):
        other.set_sock_opt(SockOpt.TCP_FAST_OPEN_CONNECT, 1)
    with pytest.raises(ErrConnectStarted):
        other.connect(FullAddress(0, PEER_ADDR, PEER_PORT), fast_open=True)
    assert ctx.sent()[-1].options.fast_open is None         # client Fast Open off: an ordinary SYN


def test_the_cookie_cache_forgets_the_oldest_peer_first():
    proto = TCPContext().proto
    for n in range(FAST_OPEN_CACHE_SIZE + 1):
        proto.remember_fast_open_cookie(n.to_bytes(4, "big"), b"cookie!!", 1460)
    assert len(proto.fast_open_cookies) == FAST_OPEN_CACHE_SIZE and bytes(4) not in proto.fast_open_cookies


# --- two stacks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("isn", [None, MOD - 2])
def test_two_stacks_answer_the_second_request_within_one_round_trip(isn):
    pair = Pair(FaultConfig(delay=0.01))                    # 10 ms each way
    for node in (pair.a, pair.b):
        node.proto.fast_open = BOTH
        if isn is not None:
            node.proto.initial_numbers = lambda *args: (isn, isn)
    listener, _ = pair.b.new_endpoint()
    listener.bind(FullAddress(0, b"", 80))
    listener.set_sock_opt(SockOpt.TCP_FAST_OPEN, 8)
    listener.listen(8)
    times = []
    for _ in range(2):
        start = pair.clock.now()
        client, _ = pair.a.new_endpoint()
        try:
            client.connect(FullAddress(0, pair.b.address, 80), fast_open=True)
        except ErrConnectStarted:
            pair.run(lambda: client.state is TCPState.ESTABLISHED)
        client.write(REQUEST)
        got: list[bytes] = []
        server: list = []

        def serve() -> None:
            if not server:
                try:
                    server.append(listener.accept()[0])
                except ErrWouldBlock:
                    return
            try:
                if server[0].read(100) == REQUEST:
                    server[0].write(RESPONSE)
            except ErrWouldBlock:
                pass
            try:
                got.append(client.read(100))
            except ErrWouldBlock:
                pass

        pair.run(lambda: RESPONSE in got, serve)
        times.append(pair.clock.now() - start)
        client.close()
        server[0].close()
    # The first request waits for a handshake, the second (SYN with it, SYN-ACK and the answer) does not.
    assert times[0] >= 0.04 and times[1] < 0.03, times
    assert pair.a.proto.tcp_stats.fast_open_active.value == 1
    assert pair.b.proto.tcp_stats.fast_open_passive.value == 1
    assert pair.b.proto.tcp_stats.fast_open_cookie_requests.value == 1
    listener.close()
    pair.run(lambda: not len(pair.a.stack.demux) and not len(pair.b.stack.demux), tick=1.0, limit=300)
    for node in (pair.a, pair.b):
        assert len(node.stack.timers) == 0 and len(node.stack.ports) == 0


def test_a_connection_closed_before_its_handshake_completes_finishes_cleanly():
    """The application answers and closes while the client's ACK is still on its way: the FIN follows the
    answer, and everything goes once the client has both and closes too."""
    ctx, cookie = fast_open_server()
    synack = syn(ctx, cookie)
    ep, _ = ctx.listener.accept()
    ep.read(100)
    ep.write(RESPONSE)
    ep.close()
    sent = ctx.sent()
    assert b"".join(seg.payload for seg in sent) == RESPONSE and sent[-1].flags & 0x01     # the answer, then FIN
    ctx.nxt = 5001 + len(REQUEST)
    ctx.rcv_nxt = seq_add(synack.seq, 2 + len(RESPONSE))
    ctx.ack()
    ctx.send_fin()
    assert ctx.sent_one().flagstr == "A"
    assert ctx.connection_state() is TCPState.TIME_WAIT
    assert ep.state is TCPState.CLOSED and ctx.listener.listener.fast_open_pending == 0


# --- without cookies, and with a listener's own key ---------------------------------------------------

def test_a_listener_needing_no_cookie_takes_the_data_of_any_syn_that_carries_some():
    ctx, _ = fast_open_server()
    ctx.listener.set_sock_opt(SockOpt.TCP_FAST_OPEN_NO_COOKIE, 1)
    synack = syn(ctx, None)                                 # data, and no option at all
    assert synack.ack == 5001 + len(REQUEST) and synack.options.fast_open is None
    ep, _ = ctx.listener.accept()
    assert ep.read(100) == REQUEST
    assert syn(ctx, None, data=b"", port=40001).ack == 5001     # nothing to take: an ordinary handshake
    assert ctx.stats.fast_open_passive.value == 1


def test_a_client_needing_no_cookie_sends_its_data_with_the_first_syn():
    ctx = TCPContext()
    ep, _ = ctx.new_endpoint()
    ep.set_sock_opt(SockOpt.TCP_FAST_OPEN_NO_COOKIE, 1)
    assert ep.connect(FullAddress(0, PEER_ADDR, PEER_PORT), fast_open=True) is None
    assert ep.write(bytes(5000)) == 1460 - 40               # the path's MSS, no peer's being known
    first = ctx.sent_one()
    assert first.flagstr == "S" and len(first.payload) == 1420 and first.options.fast_open is None
    answer(ctx, first, 1420)
    assert ep.state is TCPState.ESTABLISHED and ctx.stats.fast_open_active.value == 1
    assert ctx.proto.fast_open_cookies == {}
    with pytest.raises(ErrInvalidOptionValue):
        ep.set_sock_opt(SockOpt.TCP_FAST_OPEN_NO_COOKIE, 0)     # (only before connect or listen)


def test_a_listeners_key_makes_its_cookies_and_its_backup_still_opens():
    ctx, default_cookie = fast_open_server()
    old, new = bytes(range(16)), bytes(range(16, 32))
    ctx.listener.set_sock_opt(SockOpt.TCP_FAST_OPEN_KEY, old)
    old_cookie = ctx.proto.fast_open_cookie(PEER_ADDR, LOCAL_ADDR, old)
    assert syn(ctx, default_cookie).ack == 5001             # the stack's own key no longer counts
    assert syn(ctx, b"", port=40001).options.fast_open == old_cookie
    # The key rotates: the new one first, the old one kept as the backup.
    ctx.listener.set_sock_opt(SockOpt.TCP_FAST_OPEN_KEY, new + old)
    assert ctx.listener.get_sock_opt(SockOpt.TCP_FAST_OPEN_KEY) == new + old
    synack = syn(ctx, old_cookie, port=40002)
    assert synack.ack == 5001 + len(REQUEST)                # taken, and the current cookie handed out
    assert synack.options.fast_open == ctx.proto.fast_open_cookie(PEER_ADDR, LOCAL_ADDR, new)
    stats = ctx.stats
    assert (stats.fast_open_passive.value, stats.fast_open_passive_alt_key.value,
            stats.fast_open_passive_fail.value) == (1, 1, 1)
    with pytest.raises(ErrInvalidOptionValue):
        ctx.listener.set_sock_opt(SockOpt.TCP_FAST_OPEN_KEY, bytes(8))
