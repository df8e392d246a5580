"""TCP pacing (SO_MAX_PACING_RATE) as Linux's internal pacing does it: once the option is set, each
transmission from the eleventh data segment on leaves its length (TCP header included) at the pacing rate
after the one before; the rate is the window over the smoothed RTT (twice that in the first half of slow
start, 1.2 times after), at most the option's. Against the scripted peer, where every departure time is
exact, and between two stacks, where a paced transfer takes as long as its bytes at the rate. The socket
calls, compared with the kernel's, are in test_adapter_pacing.py."""

from __future__ import annotations

import pytest

from netsock.link.channel import ChannelEndpoint
from netsock.tcpip import SockOpt
from netsock.transport.tcp import TCPState
from netsock.tcpip.options import UNLIMITED_PACING_RATE

from tcp_context import Pair, Stream, TCPContext

SEGMENT = 1460 + 20     # the scripted peer announces an MSS of 1,460 and no timestamps: a segment's bytes
RATE = SEGMENT * 100    # bytes a second: one segment every 10 ms


def paced(rate: int = RATE, link: ChannelEndpoint | None = None) -> TCPContext:
    """An established connection (10 ms round trip) whose endpoint has SO_MAX_PACING_RATE ``rate``."""
    ctx = TCPContext(link=link)
    ctx.connect(rtt=0.01)
    ctx.ep.set_sock_opt(SockOpt.MAX_PACING_RATE, rate)
    return ctx


def test_the_first_ten_data_segments_leave_at_once_and_each_later_one_a_segment_at_the_rate_after():
    ctx = paced()
    start = ctx.clock.now()
    ctx.ep.write(bytes(1460 * 14))
    first = ctx.sent()
    assert [s.time for s in first] == [start] * 10       # (the initial window, too)
    ctx.absorb(first)
    ctx.ack()
    assert ctx.sent() == []         # the window has room for the rest; the pacing holds the eleventh
    times = []
    for _ in range(4):
        ctx.advance(0.0099)
        assert ctx.sent() == []
        ctx.advance(0.0001)
        seg = ctx.sent_one()
        assert len(seg.payload) == 1460
        ctx.absorb([seg])
        times.append(seg.time - start)
    assert times == pytest.approx([0.01, 0.02, 0.03, 0.04])
    ctx.ack()
    ctx.advance(1)
    assert ctx.sent() == []
    assert ctx.ep.info().pacing_rate == RATE and ctx.ep.info().max_pacing_rate == RATE


def test_a_sender_that_comes_late_makes_up_half_a_gap_at_most():
    """Linux's credit for OS jitter: the next departure is a gap after this one, less the time this one was
    late, up to half the gap."""
    ctx = paced()
    ctx.ep.write(bytes(1460 * 10))
    ctx.absorb(ctx.sent())
    ctx.ack()
    start = ctx.clock.now()         # the tenth went now: the next may go 10 ms later
    ctx.advance(0.03)               # ... but comes 20 ms late: the one after it 5 ms after it
    ctx.ep.write(bytes(1460 * 3))
    assert [s.time - start for s in ctx.sent()] == pytest.approx([0.03])
    ctx.advance(0.0049)
    assert ctx.sent() == []
    ctx.advance(0.0001)
    assert [s.time - start for s in ctx.sent()] == pytest.approx([0.035])
    ctx.advance(0.01)               # on time now: a whole gap
    assert [s.time - start for s in ctx.sent()] == pytest.approx([0.045])


def test_without_the_option_nothing_is_paced():
    ctx = TCPContext()
    ctx.connect(rtt=0.01)
    ctx.ep.write(bytes(1460 * 14))
    ctx.absorb(ctx.sent())
    ctx.ack()
    assert len(ctx.sent()) == 4
    assert ctx.ep.snd.pacing_timer is None


def test_the_pacing_stays_once_set_at_the_rate_the_window_and_round_trip_give():
    """Setting the option back to no limit does not stop the pacing (Linux's sk_pacing_status stays NEEDED):
    it goes on at the window over the round trip, twice that in slow start: the gap after the tenth segment
    at a window of 10 segments of 1,460 bytes a 10 ms, the later ones at the window of 20 the ACK opened (and
    the smoothed RTT its sample of 0 ms lowered)."""
    ctx = paced()
    ctx.ep.set_sock_opt(SockOpt.MAX_PACING_RATE, UNLIMITED_PACING_RATE)
    ctx.ep.write(bytes(1460 * 14))
    ctx.absorb(ctx.sent())
    start = ctx.clock.now()
    ctx.ack()
    assert ctx.sent() == []
    ctx.advance(0.01)
    times = [s.time - start for s in ctx.sent()]
    first, later = SEGMENT / (1460 * 10 * 2 / 0.01), SEGMENT / (1460 * 20 * 2 / ctx.ep.snd.srtt)
    assert times == pytest.approx([first, first + later, first + 2 * later, first + 3 * later])


def test_a_paced_super_segment_carries_about_a_millisecond_at_the_rate():
    """With a GSO link a transmission takes up to 64 KB; paced, only what the rate moves in 1/1024 s (two
    segments at least), as Linux's tcp_tso_autosize."""
    rate = 1460 * 4 * 1024      # four segments a millisecond (below what the window and RTT give)
    ctx = paced(rate, link=ChannelEndpoint(size=1 << 16, mtu=1500, gso=True))  # (which cuts them for the test)
    ctx.ep.write(bytes(1460 * 40))
    first = ctx.sent()
    assert len(first) == 10 and len({s.time for s in first}) == 1      # the first ten: one super-segment
    ctx.absorb(first)
    ctx.ack()
    ctx.advance(0.01)
    segs = ctx.sent()
    departures = [s.time for s in segs]
    assert ctx.ep.snd.pacing_rate() == rate
    assert len(segs) == 20 and [departures.count(t) for t in sorted(set(departures))] == [4] * 5


def test_a_connection_that_ends_while_paced_leaves_no_timer():
    ctx = paced()
    ctx.ep.write(bytes(1460 * 14))
    ctx.absorb(ctx.sent())
    ctx.ack()
    assert ctx.ep.snd.pacing_timer.armed
    ctx.send("R")
    assert ctx.ep.state is TCPState.CLOSED
    assert len(ctx.stack.timers) == 0


def test_a_connection_inherits_its_listeners_rate():
    ctx = TCPContext()
    ctx.listen().set_sock_opt(SockOpt.MAX_PACING_RATE, RATE)
    ctx.accept(rtt=0.01)
    assert ctx.ep.pacing and ctx.ep.get_sock_opt(SockOpt.MAX_PACING_RATE) == RATE


@pytest.mark.parametrize("rate", [250_000, 1_000_000])
def test_a_paced_transfer_between_two_stacks_takes_its_bytes_at_the_rate(rate: int):
    """Without pacing the transfer takes no simulated time at all (the wire has no delay)."""
    pair = Pair()
    client, server = pair.connect()
    client.set_sock_opt(SockOpt.MAX_PACING_RATE, rate)
    stream = Stream(client, server, 500_000, seed=1)
    elapsed = pair.run(lambda: stream.eof, stream.step, tick=0.001)
    stream.check()
    segments = -(-500_000 // client.snd.mss)
    wire_bytes = 500_000 + segments * (20 + client.option_bytes())
    assert elapsed == pytest.approx(wire_bytes / rate, rel=0.05)
