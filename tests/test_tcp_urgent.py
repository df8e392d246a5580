"""TCP urgent data (RFC 9293 §3.8.5) as Linux keeps it (RFC 6093 §3.4): the urgent pointer points just
past the urgent byte, only the last urgent byte counts, and unless SO_OOBINLINE the byte leaves the
stream to be read alone with MSG_OOB. Both directions, against the scripted peer; the same program
against the Linux kernel is integration/test_dropin_urgent.py."""

from __future__ import annotations

import pytest

from netsock.link.channel import ChannelEndpoint
from netsock.tcpip import ErrInvalidEndpointState, ErrNotConnected, ErrWouldBlock, SockOpt, WriteOptions
from netsock.waiter import EventMask

from tcp_context import MOD, URG, Opts, TCPContext, seq_add

OOB = WriteOptions(oob=True)


def established(**kw) -> TCPContext:
    ctx = TCPContext()
    ctx.connect(**kw)
    return ctx


def ready(ctx: TCPContext) -> set[str]:
    mask = ctx.ep.readiness(EventMask.IN | EventMask.PRI)
    return {name for name, bit in (("in", EventMask.IN), ("pri", EventMask.PRI)) if mask & bit}


def send_urgent(ctx: TCPContext, before: bytes, urgent: bytes, after: bytes = b"") -> None:
    """The peer sends ``before``, then ``urgent`` (one byte) marked urgent, then ``after``."""
    ctx.send_data(before)
    ctx.send_data(urgent, "UPA", urgent=1)  # points just past the byte: its segment's length
    if after:
        ctx.send_data(after)


# --- sending ------------------------------------------------------------------------------------------

def test_an_oob_write_marks_its_last_byte_and_every_segment_before_it_points_there():
    ctx = established()
    ctx.ep.write(b"hello")
    [hello] = ctx.sent()
    assert not hello.flags & URG
    ctx.absorb([hello])
    ctx.ack()
    ctx.ep.write(b"x" * 3000 + b"!", OOB)
    segs = ctx.sent()
    assert [len(s.payload) for s in segs] == [1460, 1460, 81]
    end = seq_add(segs[-1].seq, 81)           # just past b"!"
    for seg in segs:
        assert seg.flags & URG and seg.urgent == (end - seg.seq) % MOD
    assert ctx.absorb(segs) == b"x" * 3000 + b"!"


def test_urgent_mode_lasts_until_the_urgent_byte_is_acknowledged():
    ctx = established()
    ctx.ep.write(b"!", OOB)
    [urgent] = ctx.sent()
    assert urgent.flags & URG and urgent.urgent == 1
    ctx.advance(1.5)                          # not acknowledged: the retransmissions are urgent too
    retransmissions = ctx.sent()
    assert retransmissions and all(seg.seq == urgent.seq and seg.flags & URG and seg.urgent == 1
                                   for seg in retransmissions)
    ctx.absorb(retransmissions[:1])
    ctx.ack()
    ctx.ep.write(b"after")
    [after] = ctx.sent()
    assert not after.flags & URG and after.urgent == 0


def test_a_pointer_beyond_64k_is_sent_as_the_most_the_field_holds():
    ctx = established(opts=Opts(mss=1460, ws=7))
    ctx.window = 2000                           # (scaled: 256 KB)
    ctx.ack()
    ctx.sent()
    ctx.ep.write(b"y" * 100_000 + b"!", OOB)
    first = ctx.sent()[0]
    assert first.flags & URG and first.urgent == 0xFFFF       # RFC 6093 §4: "further than I can say"


def test_urgent_segments_go_one_by_one_not_as_super_segments():
    """A super-segment's pieces would all copy its urgent pointer: Linux sends MSG_OOB without TSO.
    After urgent mode, super-segments again."""
    ctx = TCPContext(link=ChannelEndpoint(size=1 << 16, gso=True, cut_super_segments=False))
    ctx.connect(opts=Opts(mss=1460, ws=7))
    ctx.ack()
    ctx.ep.snd.cwnd = 1000
    ctx.ep.write(b"z" * 5000 + b"!", OOB)
    ctx.clock.run_pending()
    packets = ctx.link.drain()
    assert [len(packet.data) - 40 for packet in packets] == [1460, 1460, 1460, 621]
    assert not any(packet.gso_size for packet in packets)
    ctx.nxt, ctx.rcv_nxt = ctx.nxt, seq_add(ctx.rcv_nxt, 5001)
    ctx.ack()
    ctx.ep.write(b"w" * 20_000)
    ctx.clock.run_pending()
    assert [len(packet.data) - 40 for packet in ctx.link.drain()] == [18_980]     # (Nagle holds the tail)


# --- receiving ----------------------------------------------------------------------------------------

def test_the_urgent_byte_is_read_alone_and_reads_stop_at_it():
    ctx = established()
    send_urgent(ctx, b"hello", b"!", b"world")
    assert ready(ctx) == {"in", "pri"}
    assert not ctx.ep.at_mark()
    assert ctx.ep.read(100) == b"hello"               # stops just before the mark
    assert ctx.ep.at_mark()
    assert ctx.ep.read_urgent(peek=True) == b"!"
    assert ctx.ep.read_urgent() == b"!"
    with pytest.raises(ErrInvalidEndpointState):
        ctx.ep.read_urgent()                          # once only
    assert ready(ctx) == {"in"}
    assert ctx.ep.read(100) == b"world"               # the urgent byte is not in the stream
    assert not ctx.ep.at_mark()


def test_an_urgent_byte_never_read_out_of_band_is_skipped_and_then_gone():
    ctx = established()
    send_urgent(ctx, b"hello", b"!", b"world")
    assert ctx.ep.read(100) == b"hello"
    assert ctx.ep.read(100) == b"world"
    with pytest.raises(ErrInvalidEndpointState):
        ctx.ep.read_urgent()


def test_only_the_urgent_byte_left_is_not_readable_in_band():
    """Linux's tcp_poll: at the mark, out of line, the urgent byte alone does not make the socket
    readable; read past it, nothing is left."""
    ctx = established()
    ctx.send_data(b"!", "UPA", urgent=1)
    assert ready(ctx) == {"pri"}
    with pytest.raises(ErrWouldBlock):
        ctx.ep.read(100)
    with pytest.raises(ErrInvalidEndpointState):
        ctx.ep.read_urgent()                          # the read went past it


def test_peek_stops_at_the_mark_and_skips_the_byte_without_consuming():
    ctx = established()
    send_urgent(ctx, b"ab", b"!", b"cd")
    assert ctx.ep.peek(100) == b"ab"
    assert ctx.ep.read(100) == b"ab"
    assert ctx.ep.peek(100) == b"cd"
    assert ctx.ep.read_urgent() == b"!"
    assert ctx.ep.read(100) == b"cd"


def test_inline_the_byte_stays_in_the_stream():
    ctx = established()
    ctx.ep.set_sock_opt(SockOpt.OUT_OF_BAND_INLINE, True)
    send_urgent(ctx, b"12", b"3", b"45")
    assert ready(ctx) == {"in", "pri"}
    assert ctx.ep.read(100) == b"12"                  # reads still stop at the mark
    with pytest.raises(ErrInvalidEndpointState):
        ctx.ep.read_urgent()
    assert ctx.ep.read(100) == b"345"


def test_a_pointer_ahead_of_its_byte_waits_for_it():
    ctx = established()
    ctx.send_data(b"ab", "UPA", urgent=5)             # the urgent byte is the stream's fifth
    assert ready(ctx) == {"in"}
    with pytest.raises(ErrWouldBlock):
        ctx.ep.read_urgent()                          # not yet (never a wait)
    ctx.send_data(b"cdef")
    assert ready(ctx) == {"in", "pri"}
    assert ctx.ep.read_urgent() == b"e"
    assert ctx.ep.read(100) == b"abcd"
    assert ctx.ep.read(100) == b"f"


def test_a_pointer_that_comes_after_its_byte_finds_it_queued():
    ctx = established()
    ctx.send_data(b"hello!")
    ctx.send("UA", urgent=0)                          # a bare ACK pointing just past b"!"
    assert ready(ctx) == {"in", "pri"}
    assert ctx.ep.read_urgent() == b"!"
    assert ctx.ep.read(100) == b"hello"


def test_a_later_urgent_byte_replaces_the_first_which_stays_data():
    ctx = established()
    send_urgent(ctx, b"a", b"!")
    send_urgent(ctx, b"b", b"?", b"c")
    assert ctx.ep.read_urgent() == b"?"
    assert ctx.ep.read(100) == b"a!b"                 # the old byte is ordinary data now
    assert ctx.ep.read(100) == b"c"


def test_a_new_pointer_drops_the_old_byte_at_the_read_position():
    ctx = established()
    send_urgent(ctx, b"a", b"!")
    assert ctx.ep.read(100) == b"a"                   # at the mark, the byte unread
    send_urgent(ctx, b"b", b"?", b"c")
    assert ctx.ep.read(100) == b"b"                   # (Linux: the old byte left the stream)
    assert ctx.ep.read_urgent() == b"?"
    assert ctx.ep.read(100) == b"c"


def test_an_urgent_byte_that_never_comes_reads_as_end_of_stream_after_fin():
    ctx = established()
    ctx.send_data(b"ab", "UPA", urgent=10)
    ctx.send_fin()
    assert ctx.ep.read(100) == b"ab"
    assert ctx.ep.read_urgent() == b""


def test_urgent_reads_on_a_listener_or_a_fresh_endpoint():
    ctx = TCPContext()
    with pytest.raises(ErrNotConnected):
        ctx.listen().read_urgent()
    fresh, _ = ctx.new_endpoint()
    with pytest.raises(ErrInvalidEndpointState):
        fresh.read_urgent()


def test_urgent_data_across_the_sequence_wrap():
    ctx = established(peer_iss=MOD - 3)
    send_urgent(ctx, b"wrap", b"!", b"ped")
    assert ctx.ep.read(100) == b"wrap"
    assert ctx.ep.read_urgent() == b"!"
    assert ctx.ep.read(100) == b"ped"
