"""Data transfer (RFC 9293 §3.8): sequence accounting, wraparound, when ACKs are sent (RFC 5681 §4.2,
RFC 1122 §4.2.3.2), Nagle, cork and autocorking, super-segments (the link's GSO size, BIG TCP, scattered
payloads), zero windows and persist probes, silly-window avoidance."""

from __future__ import annotations

import hashlib
import random

import pytest
from scapy.layers.inet import IP, TCP

from netsock.header.gso import segment_tcp
from netsock.link.channel import ChannelEndpoint
from netsock.header.checksum import complete_checksum
from netsock.stack.interfaces import LinkCapabilities
from netsock.stack.packet_buffer import PacketBuffer
from netsock.tcpip import ErrTimeout, ErrWouldBlock, SockOpt, WriteOptions
from netsock.transport.tcp import TCPState
from netsock.waiter import EventMask

from conftest import checksums_valid
from tcp_context import ACK, MOD, Opts, TCPContext, seq_add, seq_diff

ALL_OPTS = Opts(mss=1460, ws=3, sack_perm=True, ts=(77, 0))


def established(**kw) -> TCPContext:
    ctx = TCPContext()
    ctx.connect(**kw)
    return ctx


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# --- sequence accounting --------------------------------------------------------------------------

def test_sending_numbers_every_byte_exactly():
    ctx = established()
    ep = ctx.ep
    data = payload(10_000)
    assert ep.write(data) == len(data)
    segs = ctx.sent()
    expected_seq = seq_add(ctx.iss, 1)
    for seg in segs:
        assert seg.seq == expected_seq and seg.ack == ctx.nxt and seg.flags & ACK
        expected_seq = seq_add(expected_seq, len(seg.payload))
    assert [len(s.payload) for s in segs] == [1460] * 6      # 1240 bytes wait behind Nagle
    assert ctx.absorb(segs) == data[:8760]
    ctx.ack()
    last = ctx.sent_one()
    assert (last.seq, len(last.payload), last.flagstr) == (expected_seq, 1240, "PA")
    ctx.absorb([last])
    ctx.ack()
    assert ep.info().unacked == 0 and ep.get_sock_opt(SockOpt.SEND_QUEUE_SIZE) == 0
    ctx.assert_quiet()


def test_receiving_acknowledges_every_byte_exactly():
    ctx = established()
    ep = ctx.ep
    data = payload(3000, 1)
    for chunk in (data[:1460], data[1460:2920], data[2920:]):
        ctx.send_data(chunk)
        ack = ctx.sent_one()
        assert (ack.flagstr, ack.seq, ack.ack) == ("A", ctx.rcv_nxt, ctx.nxt)
    assert ep.get_sock_opt(SockOpt.RECEIVE_QUEUE_SIZE) == 3000
    assert ep.peek(10) == data[:10]
    assert ep.read(1000) + ep.read(5000) == data
    with pytest.raises(ErrWouldBlock):
        ep.read(1)


def test_retransmitted_and_overlapping_data_is_delivered_once():
    ctx = established()
    data = payload(3000, 2)
    base = ctx.nxt
    ctx.send("PA", seq=base, payload=data[:1000])
    ctx.send("PA", seq=base, payload=data[:1000])            # duplicate
    ctx.send("PA", seq=seq_add(base, 500), payload=data[500:2000])   # overlaps
    ctx.send("PA", seq=seq_add(base, 2500), payload=data[2500:])     # out of order
    ctx.send("PA", seq=seq_add(base, 1500), payload=data[1500:2600])  # fills and overlaps both sides
    acks = ctx.sent()
    assert acks[-1].ack == seq_add(base, 3000)
    assert ctx.read_all() == data


@pytest.mark.parametrize("stack_iss,peer_iss", [(MOD - 3000, MOD - 2000), (MOD - 1, MOD - 1), (MOD - 70000, 5)])
def test_transfer_across_the_sequence_wrap_in_both_directions(stack_iss, peer_iss):
    ctx = established(stack_iss=stack_iss, peer_iss=peer_iss, opts=ALL_OPTS)
    ep = ctx.ep
    outbound = payload(200_000, 3)
    inbound = payload(150_000, 4)
    # Stack to peer, the peer ACKing each batch.
    received = bytearray()
    offset = 0
    while len(received) < len(outbound):
        if offset < len(outbound):
            offset += ep.write(outbound[offset:])
        segs = ctx.sent()
        for seg in segs:
            assert seq_diff(seg.seq, stack_iss) >= 1 or seg.seq == ctx.rcv_nxt
        received += ctx.absorb(segs)
        ctx.ack()
    assert bytes(received) == outbound
    assert seq_diff(ctx.rcv_nxt, seq_add(stack_iss, 1 + len(outbound))) == 0
    # Peer to stack, one MSS at a time (less the timestamp option), read as it comes.
    got = bytearray()
    for start in range(0, len(inbound), 1448):
        ctx.send_data(inbound[start:start + 1448])
        got += ctx.read_all()
    assert hashlib.sha256(got).digest() == hashlib.sha256(inbound).digest()
    ctx.advance(1)
    acks = ctx.sent()
    assert acks[-1].ack == ctx.nxt == seq_add(peer_iss, 1 + len(inbound))
    assert ep.info().total_retransmits == 0


# --- when ACKs go out -------------------------------------------------------------------------------

def exhaust_quickacks(ctx: TCPContext) -> None:
    """Quick-ack mode ACKs the first segments at once (Linux: 16); use them up."""
    for _ in range(16):
        ctx.send_data(b"q")
        assert ctx.sent_one().ack == ctx.nxt
    ctx.read_all()


def test_quickack_mode_at_start_acks_every_segment():
    ctx = established()
    for i in range(16):
        ctx.send_data(b"small")
        ack = ctx.sent_one()
        assert ack.ack == ctx.nxt, i
    ctx.send_data(b"small")
    ctx.assert_quiet()                                       # quick-ack mode is over: delayed


def test_delayed_ack_after_two_full_segments():
    ctx = established()
    exhaust_quickacks(ctx)
    ctx.send_data(b"a" * 1460)
    ctx.assert_quiet()
    ctx.send_data(b"b" * 1460)
    ack = ctx.sent_one()                                     # RFC 5681 §4.2: every second full segment
    assert ack.ack == ctx.nxt


def test_delayed_ack_after_two_full_segments_with_timestamps():
    ctx = established(opts=Opts(mss=1460, ts=(1, 0)))
    exhaust_quickacks(ctx)
    ctx.send_data(b"a" * 1448)                               # a full segment beside a timestamp option
    ctx.assert_quiet()
    ctx.send_data(b"b" * 1448)
    assert ctx.sent_one().ack == ctx.nxt


def test_delayed_ack_timer_acks_a_lone_segment():
    ctx = established()
    exhaust_quickacks(ctx)
    ctx.send_data(b"lonely")
    ctx.advance(0.039)
    ctx.assert_quiet()
    ctx.advance(0.001)
    ack = ctx.sent_one()
    assert ack.ack == ctx.nxt
    ctx.advance(1)
    ctx.assert_quiet()


def test_delayed_ack_rides_on_data_going_back():
    ctx = established()
    exhaust_quickacks(ctx)
    ctx.send_data(b"request")
    ctx.ep.write(b"response")
    seg = ctx.sent_one()
    assert seg.payload == b"response" and seg.ack == ctx.nxt
    ctx.advance(0.1)                                         # past the delayed-ACK timer, short of the RTO
    ctx.assert_quiet()                                       # the piggybacked ACK cancelled the timer


def test_quick_ack_option_acks_every_segment():
    ctx = established()
    exhaust_quickacks(ctx)
    ctx.ep.set_sock_opt(SockOpt.QUICK_ACK, 1)
    for _ in range(3):
        ctx.send_data(b"x")
        assert ctx.sent_one().ack == ctx.nxt


def test_out_of_order_segment_is_acked_at_once_with_the_old_ack():
    ctx = established()
    exhaust_quickacks(ctx)
    expected = ctx.nxt
    ctx.send("PA", seq=seq_add(ctx.nxt, 100), payload=b"later")
    ack = ctx.sent_one()
    assert ack.ack == expected                               # a duplicate ACK for the sender's fast retransmit
    ctx.send_data(b"x" * 100)
    assert ctx.sent_one().ack == seq_add(expected, 105)      # filling the hole is ACKed at once too


def test_a_batch_of_segments_read_at_once_gets_one_ack():
    ctx = established()                                      # quick-ack mode: each alone would be ACKed
    with ctx.event():
        for piece in (b"one", b"two", b"three"):
            ctx.send_data(piece)
        assert ctx.sent() == []                              # nothing yet: the event is not over
    ack = ctx.sent_one()
    assert ack.ack == ctx.nxt


def test_a_reply_written_in_the_same_event_carries_the_ack():
    ctx = established()
    with ctx.event():
        ctx.send_data(b"request")
        assert ctx.ep.read(100) == b"request"
        ctx.ep.write(b"response")
    seg = ctx.sent_one()                                     # no separate pure ACK
    assert seg.payload == b"response" and seg.ack == ctx.nxt


def test_a_reply_from_a_task_started_by_the_events_wake_ups_still_carries_the_ack():
    """A server woken by a new connection spawns a task for it, which then answers: the wake-up is
    one deferred call, the task's start a second; the owed ACK waits for both."""
    ctx = established()

    def serve() -> None:
        assert ctx.ep.read(100) == b"request"
        ctx.ep.write(b"response")

    with ctx.event():
        ctx.send_data(b"request")
        ctx.clock.call_soon(ctx.clock.call_soon, serve)     # woken, then spawning the task that answers
    seg = ctx.sent_one()                                     # no pure ACK before the answer
    assert seg.payload == b"response" and seg.ack == ctx.nxt


def test_the_fin_is_acked_by_our_own_fin_when_the_application_closes_at_once():
    ctx = established()
    with ctx.event():
        ctx.send_fin()
        assert ctx.ep.read(100) == b""
        ctx.ep.close()
    fin = ctx.sent_one()
    assert fin.flagstr == "FA" and fin.ack == ctx.nxt


def test_out_of_order_segments_in_one_batch_are_each_acked_at_once():
    ctx = established()
    expected = ctx.nxt
    with ctx.event():
        for i in range(3):
            ctx.send("PA", seq=seq_add(ctx.nxt, 100 * (i + 1)), payload=b"z" * 100)
        dupacks = ctx.sent()                                 # before the event ends: fast retransmit needs all three
    assert [seg.ack for seg in dupacks] == [expected] * 3
    assert ctx.ep.info().rcv_ooopack == 3                    # (TCP_INFO's tcpi_rcv_ooopack)


def test_an_owed_ack_is_not_sent_after_the_connection_is_reset():
    ctx = established()
    with ctx.event():
        ctx.send_data(b"data")
        ctx.send("R")
    ctx.assert_quiet()


def test_reading_from_a_saturated_window_sends_no_update():
    ctx = established()                                      # no window scaling: the 16-bit field is the limit
    ctx.send_data(b"x" * 1000)
    ctx.sent()
    assert ctx.ep.read(1000) == b"x" * 1000
    ctx.assert_quiet()


# --- Nagle and cork ---------------------------------------------------------------------------------

def test_nagle_holds_a_small_segment_while_one_is_unacknowledged():
    ctx = established()
    ep = ctx.ep
    ep.write(b"a" * 100)
    first = ctx.sent_one()
    assert first.payload == b"a" * 100                       # nothing in flight: goes at once
    ep.write(b"b" * 100)
    ep.write(b"c" * 100)
    ctx.assert_quiet()
    ctx.absorb([first])
    ctx.ack()
    second = ctx.sent_one()
    assert second.payload == b"b" * 100 + b"c" * 100 and second.seq == seq_add(first.seq, 100)


def test_nagle_sends_full_segments_at_once():
    ctx = established()
    ep = ctx.ep
    ep.write(b"a" * 100)
    ctx.sent_one()
    ep.write(b"b" * 3000)
    assert [len(s.payload) for s in ctx.sent()] == [1460, 1460]   # 80 bytes wait


def test_nodelay_sends_small_segments_at_once():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.DELAY, 0)
    assert ep.get_sock_opt(SockOpt.DELAY) == 0
    for chunk in (b"a" * 10, b"b" * 10, b"c" * 10):
        ep.write(chunk)
        assert ctx.sent_one().payload == chunk


def test_turning_nagle_off_flushes_what_it_held():
    ctx = established()
    ep = ctx.ep
    ep.write(b"a")
    ctx.sent()
    ep.write(b"b")
    ctx.assert_quiet()
    ep.set_sock_opt(SockOpt.DELAY, 0)
    assert ctx.sent_one().payload == b"b"


def test_cork_sends_only_full_segments_and_nagle_applies_after_uncorking():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.CORK, 1)
    ep.write(b"a" * 100)
    ctx.assert_quiet()
    ep.write(b"b" * 2000)
    seg = ctx.sent_one()
    assert seg.payload == b"a" * 100 + b"b" * 1360
    ep.set_sock_opt(SockOpt.CORK, 0)
    ctx.assert_quiet()                                       # a full segment is unacknowledged: Nagle holds the rest
    ctx.absorb([seg])
    ctx.ack()
    assert ctx.sent_one().payload == b"b" * 640


def test_uncorking_with_nodelay_flushes_at_once():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.DELAY, 0)
    ep.set_sock_opt(SockOpt.CORK, 1)
    ep.write(b"a" * 100)
    ep.write(b"b" * 100)
    ctx.assert_quiet()                                       # cork overrides TCP_NODELAY, as on Linux
    ep.set_sock_opt(SockOpt.CORK, 0)
    assert ctx.sent_one().payload == b"a" * 100 + b"b" * 100


def test_writes_made_while_data_is_in_flight_leave_together_when_the_writer_yields():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.DELAY, 0)
    with ctx.event():
        ep.write(b"a" * 100)
        assert ctx.sent_one().payload == b"a" * 100           # nothing in flight: at once
        ep.write(b"b" * 100)
        ep.write(b"c" * 100)
        ctx.assert_quiet()                                   # autocorked while the writer runs
    assert ctx.sent_one().payload == b"b" * 100 + b"c" * 100


def test_a_write_that_fills_a_whole_transmission_is_not_autocorked():
    ctx = TCPContext(link=ChannelEndpoint(size=1 << 16, gso=True, cut_super_segments=False))
    ctx.connect(opts=Opts(mss=1460, ws=7))
    ctx.ack()
    ctx.ep.snd.cwnd = 1000
    with ctx.event():
        ctx.ep.write(payload(100))
        assert len(ctx.link.drain()) == 1                    # nothing in flight: at once
        ctx.ep.write(payload(1000))
        assert not ctx.link.drain()                          # short of a super-segment: corked
        ctx.ep.write(payload(70_000))
        # A full super-segment is there: it leaves now, while its bytes are hot; so do the whole
        # segments behind it (Nagle holds the short tail).
        assert [len(packet.data) - 40 for packet in ctx.link.drain()] == [64_240, 5_840]


def test_without_autocorking_each_write_leaves_at_once():
    ctx = established()
    ctx.proto.autocorking = False
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.DELAY, 0)
    with ctx.event():
        for chunk in (b"a" * 10, b"b" * 10, b"c" * 10):
            ep.write(chunk)
            assert ctx.sent_one().payload == chunk


class BigTCPChannel(ChannelEndpoint):
    """A link that takes IPv4 super-segments of up to 192 KB, as a TUN does on a kernel with BIG TCP."""

    def gso_max_size(self, network_protocol: int, remote: bytes = b"") -> int:
        return 3 * 65536 if network_protocol == 0x0800 else super().gso_max_size(network_protocol, remote)


@pytest.mark.parametrize("stack_iss", [1000, MOD - 250_000], ids=["", "across the sequence wrap"])
@pytest.mark.parametrize("link_class, largest", [(ChannelEndpoint, 64240), (BigTCPChannel, 195640)])
def test_super_segments_fill_the_links_gso_max_size(link_class: type[ChannelEndpoint], largest: int,
                                                    stack_iss: int):
    ctx = TCPContext(link=link_class(size=1 << 16, gso=True, cut_super_segments=False))
    ctx.connect(opts=Opts(mss=1460, ws=7), stack_iss=stack_iss)
    ctx.ack()                                                # a scaled window: 8 MB
    ctx.ep.snd.cwnd = 1000                                   # (past slow start)
    ctx.ep.set_sock_opt(SockOpt.DELAY, 0)                    # (the short tail too)
    data = payload(400_000)
    ctx.ep.write(data)
    packets = ctx.link.drain()
    sizes = [len(packet.data) - 20 - 20 for packet in packets]
    assert sizes[0] == largest and sum(sizes) == 400_000     # whole segments (1460 bytes), the last one short
    assert [packet.gso_size for packet in packets] == [1460] * (len(packets) - 1) + [0]   # (a lone segment: 0)
    offsets = [sum(sizes[:index]) for index in range(len(sizes))]
    assert [int.from_bytes(packet.data[24:28], "big") for packet in packets] == \
        [seq_add(stack_iss + 1, offset) for offset in offsets]
    for packet in packets:
        # Beyond 64 KB the IPv4 total length says 0 (the packet's own length counts: BIG TCP).
        total = int.from_bytes(packet.data[2:4], "big")
        assert total == (len(packet.data) if len(packet.data) <= 65535 else 0)
    # Cut as the kernel cuts them, they are the stream, segment by segment (the wrap included).
    wire = [IP(piece) for packet in packets for piece in segment_tcp(packet.data, 1460)]
    assert b"".join(bytes(segment[TCP].payload) for segment in wire) == data
    assert [segment[TCP].seq for segment in wire] == [seq_add(stack_iss + 1, n * 1460) for n in range(len(wire))]
    assert all(segment.flags == "DF" for segment in wire)    # TCP always sets DF (path MTU discovery), as Linux


class ScatterChannel(ChannelEndpoint):
    """A link that writes scattered payloads; it notes how many pieces each packet's payload came in."""

    def __init__(self) -> None:
        super().__init__(size=1 << 16, gso=True, cut_super_segments=False,
                         capabilities=LinkCapabilities.SCATTER_GATHER)
        self.pieces: list[int] = []

    def write_packet(self, remote_link_address: bytes, protocol: int, pkt: PacketBuffer) -> None:
        self.pieces.append(1 + len(pkt.tail))
        super().write_packet(remote_link_address, protocol, pkt)


def test_a_super_segment_spanning_writes_reaches_a_scatter_gather_link_in_their_pieces():
    link = ScatterChannel()
    ctx = TCPContext(link=link)
    ctx.connect(opts=Opts(mss=1460, ws=7))
    ctx.ack()
    ctx.ep.snd.cwnd = 1000
    writes = [payload(20_000, seed) for seed in range(4)]
    link.pieces.clear()
    with ctx.event():
        for data in writes:
            ctx.ep.write(data)
    packets = ctx.link.drain()
    sent = b"".join(packet.data[40:] for packet in packets)
    assert sent == b"".join(writes)[:len(sent)]
    # The first write's whole segments at once (nothing was in flight), then the rest of it and the
    # next three, autocorked: 41 segments from four writes, in four pieces (Nagle holds the short tail).
    assert [len(packet.data) - 40 for packet in packets] == [18_980, 59_860] and link.pieces == [1, 4]
    for packet in packets:
        frame = bytearray(packet.data)
        assert complete_checksum(memoryview(frame), 20, 16) and checksums_valid(bytes(frame))


def test_write_with_more_waits_for_the_next_write():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.DELAY, 0)
    ep.write(b"header ", WriteOptions(more=True))
    ctx.assert_quiet()
    ep.write(b"body")
    assert ctx.sent_one().payload == b"header body"


def test_full_send_buffer_blocks_and_reports_writable_when_acked():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.SEND_BUFFER_SIZE, 8192)
    assert ep.write(b"x" * 10_000) == 8192
    assert not ep.readiness(EventMask.OUT)
    with pytest.raises(ErrWouldBlock):
        ep.write(b"y")
    ctx.absorb(ctx.sent())
    ctx.ack()
    assert ep.readiness(EventMask.OUT) == EventMask.OUT


# --- zero window and persist -------------------------------------------------------------------------

def zero_window(ctx: TCPContext, data: bytes) -> None:
    """The stack fills the peer's 2-segment window, which the peer ACKs with a zero window."""
    ctx.ep.write(data)
    segs = ctx.sent()
    assert [len(s.payload) for s in segs] == [1460, 1460]
    ctx.absorb(segs)
    ctx.ack(window=0)
    ctx.assert_quiet()


def test_zero_window_probes_back_off_and_continue_while_answered():
    ctx = established(window=2920)
    data = payload(10_000, 5)
    zero_window(ctx, data)
    rto = ctx.ep.info().rto
    assert rto == pytest.approx(0.2)
    intervals = []
    last = ctx.clock.now()
    for _ in range(20):                                      # more than max_retries: answered, it goes on
        for _ in range(100_000):
            ctx.advance(0.5)
            segs = ctx.sent()
            if segs:
                break
        (probe,) = segs
        assert probe.seq == ctx.rcv_nxt and probe.payload == data[2920:2921]
        intervals.append(probe.time - last)
        last = probe.time
        ctx.ack(window=0)                                    # still closed; the probe byte is not taken
    expected = [0.2 * 2**i for i in range(10)] + [120.0] * 10   # backoff capped at the maximum RTO
    assert intervals == pytest.approx(expected)
    assert ctx.ep.state is TCPState.ESTABLISHED
    # The window opens: the transfer resumes where it stopped.
    ctx.ack(window=65535)
    rest = ctx.receive_all()
    assert rest == data[2920:]


def test_zero_window_probe_whose_byte_is_taken():
    ctx = established(window=2920)
    data = payload(5000, 6)
    zero_window(ctx, data)
    ctx.advance(0.2)
    probe = ctx.sent_one()
    assert ctx.absorb([probe]) == data[2920:2921]
    ctx.ack(window=0)                                        # took the byte, closed again
    ctx.advance(0.4)
    probe = ctx.sent_one()
    assert probe.seq == ctx.rcv_nxt and probe.payload == data[2921:2922]
    ctx.ack(window=65535)
    assert ctx.receive_all() == data[2921:]


def test_unanswered_zero_window_probes_give_up():
    ctx = established(window=2920)
    zero_window(ctx, payload(5000, 7))
    probes = 0
    for _ in range(100_000):
        ctx.advance(1)
        probes += len([s for s in ctx.sent() if s.payload])
        if ctx.ep.state is TCPState.CLOSED:
            break
    assert probes == 15                                      # max_retries (Linux tcp_retries2)
    with pytest.raises(ErrTimeout):
        ctx.ep.read(1)


# --- receiver silly-window avoidance ----------------------------------------------------------------

def test_receiver_offers_no_tiny_windows():
    ctx = TCPContext()
    ep, ctx.wq = ctx.new_endpoint()
    ep.set_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE, 4096)
    syn = ctx.connect(ep=ep)
    assert syn.window == 4096
    data = payload(4096, 8)
    for start in range(0, 4096, 1460):
        ctx.send_data(data[start:start + 1460])
    acks = ctx.sent()
    assert acks[-1].ack == ctx.nxt and acks[-1].window == 0
    assert ep.read(1000) == data[:1000]
    ctx.assert_quiet()                                       # 1000 bytes free: too little to announce
    ctx.send("A", payload=b"?")                              # a probe: answered, the window still shut
    ack = ctx.sent_one()
    assert (ack.ack, ack.window) == (ctx.nxt, 0)
    assert ep.read(1047) == data[1000:2047]
    ctx.assert_quiet()
    assert ep.read(1) == data[2047:2048]                     # half the buffer free: now it is worth it
    update = ctx.sent_one()
    assert (update.ack, update.window) == (ctx.nxt, 2048)
    assert ep.get_sock_opt(SockOpt.MODERATE_RECEIVE_BUFFER) == 0   # a size set by the user stays


def test_peer_window_limits_what_is_sent():
    ctx = established(window=4380)
    ctx.ep.write(payload(10_000, 9))
    assert [len(s.payload) for s in ctx.sent()] == [1460] * 3
    ctx.ack(ack=seq_add(ctx.rcv_nxt, 1460), window=4380)    # one segment ACKed: the window slides by one
    assert [len(s.payload) for s in ctx.sent()] == [1460]


def test_fin_arriving_before_the_data_it_follows():
    ctx = established()
    base = ctx.nxt
    ctx.send("FPA", seq=seq_add(base, 5), payload=b"world")
    assert ctx.sent_one().ack == base
    assert ctx.ep.state is TCPState.ESTABLISHED
    ctx.send("PA", seq=base, payload=b"hello")
    assert ctx.sent_one().ack == seq_add(base, 11)        # the data and the FIN
    assert ctx.ep.state is TCPState.CLOSE_WAIT
    assert ctx.read_all() == b"helloworld"
    assert ctx.ep.read(10) == b""


def test_data_beyond_the_offered_window_is_trimmed():
    ctx = TCPContext()
    ep, ctx.wq = ctx.new_endpoint()
    ep.set_sock_opt(SockOpt.RECEIVE_BUFFER_SIZE, 4096)
    ctx.connect(ep=ep)
    data = payload(5000, 10)
    ctx.send("PA", payload=data[:1400])
    ctx.send("PA", seq=seq_add(ctx.nxt, 1400), payload=data[1400:2800])
    ctx.send("PA", seq=seq_add(ctx.nxt, 2800), payload=data[2800:])   # runs 904 bytes past the window
    acks = ctx.sent()
    assert (acks[-1].ack, acks[-1].window) == (seq_add(ctx.nxt, 4096), 0)
    assert ctx.read_all() == data[:4096]


def test_waiters_are_told_about_readable_and_writable():
    ctx = established()
    events = []
    ctx.wq.register(events.append, EventMask.IN | EventMask.OUT)
    ctx.send_data(b"ding")
    assert EventMask.IN in events[-1]
    ctx.ep.set_sock_opt(SockOpt.SEND_BUFFER_SIZE, 4096)
    ctx.ep.write(b"x" * 4096)
    events.clear()
    ctx.absorb(ctx.sent())
    ctx.ack()
    assert any(EventMask.OUT in e for e in events)


def test_close_flushes_data_held_by_nagle_with_the_fin():
    ctx = established()
    ep = ctx.ep
    ep.write(b"a" * 100)
    ctx.sent()
    ep.write(b"b" * 50)
    ctx.assert_quiet()
    ep.close()
    seg = ctx.sent_one()
    assert seg.payload == b"b" * 50 and seg.ctl == "FA"


def test_fin_waits_behind_a_zero_window_and_is_probed():
    ctx = established(window=1460)
    ep = ctx.ep
    ep.write(b"a" * 1460)
    ctx.absorb(ctx.sent())
    ctx.ack(window=0)
    ep.write(b"b" * 10)
    ep.close()
    ctx.assert_quiet()
    ctx.advance(0.2)
    probe = ctx.sent_one()
    assert probe.seq == ctx.rcv_nxt and probe.payload == b"b"
    ctx.ack(window=1000)
    rest = ctx.sent_one()
    assert rest.payload == b"b" * 10 and rest.ctl == "FA"


def test_read_into_fills_a_buffer():
    ctx = established()
    ctx.send_data(b"0123456789")
    buffer = bytearray(4)
    assert ctx.ep.read_into(buffer) == 4 and buffer == b"0123"
    big = bytearray(100)
    assert ctx.ep.read_into(memoryview(big)) == 6 and big[:6] == b"456789"
    with pytest.raises(ErrWouldBlock):
        ctx.ep.read_into(big)


def test_sender_silly_window_avoidance_waits_then_the_override_timeout_sends_what_fits():
    """RFC 9293 §3.8.6.2.1: with nothing in flight and a usable window below both the MSS and half
    the largest window offered, the sender waits; when the override timeout fires it sends what the
    window takes (not a one-byte probe: the window is open)."""
    ctx = established(window=4096)
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.DELAY, 0)
    data = payload(10_000, 11)
    ep.write(data)
    segs = ctx.sent()
    assert [len(s.payload) for s in segs] == [1460, 1460]    # 1176 bytes of window left: too little
    ctx.absorb(segs)
    ctx.ack(window=1176)
    ctx.assert_quiet()
    ctx.advance(0.2)
    seg = ctx.sent_one()
    assert (seg.seq, seg.payload) == (ctx.rcv_nxt, data[2920:4096])
    ctx.absorb([seg])
    ctx.ack(window=4096)
    assert ctx.absorb(ctx.sent()) == data[4096:4096 + 2920]


# --- SO_TIMESTAMP: when the bytes read arrived ----------------------------------------------------

def stamped_read(ctx: TCPContext, count: int) -> tuple[bytes, float]:
    """A read and how long before now the stamp it carries says its bytes came."""
    data = ctx.ep.read(count)
    return data, round((ctx.clock.now_ns() - ctx.ep.read_stamp) / 1e9, 3)


def test_a_read_is_stamped_with_the_last_segment_it_took_bytes_from() -> None:
    """Segments read as they come each carry their own arrival; a segment that finds the bytes before it
    unread joins their stamp (Linux coalesces it into their skb); a peek is stamped without using it up."""
    ctx = established()
    ctx.ep.set_sock_opt(SockOpt.TIMESTAMP, True)
    ctx.send_data(b"one")
    ctx.advance(0.1)
    assert stamped_read(ctx, 100) == (b"one", 0.1)
    ctx.send_data(b"two")
    ctx.advance(0.1)
    ctx.send_data(b"three")
    ctx.advance(0.1)
    assert ctx.ep.peek(2) == b"tw" and ctx.ep.read_stamp == ctx.clock.now_ns() - 100_000_000
    assert stamped_read(ctx, 3) == (b"two", 0.1)           # the record of "twothree": when "three" came
    assert stamped_read(ctx, 100) == (b"three", 0.1)


def test_a_segment_held_out_of_order_keeps_its_arrival_when_the_hole_fills() -> None:
    """B comes 0.2 s before A, the segment in front of it: the read of both is stamped with B's arrival, as
    Linux merges the held skb, stamp and all, into the one that filled the hole — not with the hole's
    filling."""
    ctx = established()
    ctx.ep.set_sock_opt(SockOpt.TIMESTAMP, True)
    ctx.send("PA", seq=seq_add(ctx.nxt, 1), payload=b"B")
    ctx.advance(0.2)
    ctx.send_data(b"A")
    ctx.nxt = seq_add(ctx.nxt, 1)
    ctx.advance(0.1)
    assert stamped_read(ctx, 100) == (b"AB", 0.3)
