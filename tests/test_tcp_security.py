"""Segments nobody should be able to abuse: resets for closed ports (RFC 9293 §3.10.7.1), the blind
in-window attacks of RFC 5961, corrupt and malformed segments, and a hostile out-of-order stream."""

from __future__ import annotations

import dataclasses

import pytest
from tcp_context import (
    LOCAL_ADDR,
    OTHER_ADDR,
    PEER_ADDR,
    Opts,
    Seg,
    TCPContext,
    build,
    flags_of,
    icmp_unreachable,
    ipv4_packet,
    seq_add,
)

from netsock.tcpip import (
    ErrConnectionRefused,
    ErrConnectionReset,
    ErrConnectStarted,
    ErrHostUnreachable,
    ErrWouldBlock,
    FullAddress,
    SockOpt,
)
from netsock.transport.tcp import TCPState
from netsock.transport.tcp.receiver import MAX_OOO_SEGMENTS
from netsock.waiter import EventMask


def established(**kw) -> TCPContext:
    ctx = TCPContext()
    ctx.connect(**kw)
    ctx.ep.write(b"abc")
    ctx.absorb(ctx.sent())
    ctx.ack()
    ctx.send_data(b"xyz")
    ctx.sent()
    return ctx


# --- RST for segments to closed ports -----------------------------------------------------------------

def test_segment_with_ack_to_a_closed_port_gets_rst_seq_seg_ack():
    ctx = TCPContext()
    ctx.send("PA", seq=1000, ack=0xFFFFFFF0, payload=b"data", dst_port=9)
    rst = ctx.sent_one()
    assert (rst.flagstr, rst.seq, rst.ack, rst.src_port, rst.dst_port) == ("R", 0xFFFFFFF0, 0, 9, ctx.peer_port)
    assert rst.payload == b"" and rst.dst == PEER_ADDR
    assert ctx.stats.resets_sent.value == 1


@pytest.mark.parametrize("flags,payload,length", [("S", b"", 1), ("", b"abc", 3), ("SF", b"xy", 4), ("F", b"", 1)])
def test_segment_without_ack_to_a_closed_port_gets_rst_ack_of_its_length(flags, payload, length):
    ctx = TCPContext()
    ctx.send(flags, seq=0xFFFFFFFE, payload=payload, dst_port=9)
    rst = ctx.sent_one()
    # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, the length counting SYN and FIN, mod 2**32.
    assert (rst.flagstr, rst.seq, rst.ack) == ("RA", 0, (0xFFFFFFFE + length) % 2**32)


def test_rst_to_a_closed_port_is_never_answered():
    ctx = TCPContext()
    ctx.send("R", seq=5, dst_port=9)
    ctx.send("RA", seq=5, ack=7, dst_port=9)
    ctx.assert_quiet()


def test_bound_but_unconnected_port_is_closed():
    ctx = TCPContext()
    ep, _ = ctx.new_endpoint()
    ep.bind(FullAddress(0, b"", 8080))
    ctx.send("S", seq=1, dst_port=8080)
    assert ctx.sent_one().flagstr == "RA"


def test_corrupt_segment_is_dropped_and_counted_not_answered():
    ctx = TCPContext()
    ctx.send("S", seq=1, dst_port=9, bad_checksum=True)
    ctx.assert_quiet()
    assert ctx.stats.checksum_errors.value == 1 and ctx.stats.invalid_segments_received.value == 1


def test_corrupt_segment_on_a_connection_is_dropped():
    ctx = established()
    ctx.read_all()
    ctx.send_data(b"evil", bad_checksum=True)
    ctx.assert_quiet()
    with pytest.raises(ErrWouldBlock):
        ctx.ep.read(100)
    assert ctx.stats.checksum_errors.value == 1


@pytest.mark.parametrize("options", [b"\x02", b"\x08\x01\x00\x00", b"\x02\x05\x00\x00", b"\x03\x09" + b"\x00" * 2])
def test_malformed_options_drop_the_segment(options):
    ctx = established()
    before = ctx.stats.invalid_segments_received.value
    padded = options + b"\x00" * (-len(options) % 4)
    ctx.send("PA", payload=b"zzz", options=padded)
    ctx.assert_quiet()
    assert ctx.stats.invalid_segments_received.value == before + 1
    assert ctx.ep.state is TCPState.ESTABLISHED


@pytest.mark.parametrize("cut,offset_words", [(12, 5), (20, 4), (24, 7)])
def test_truncated_or_bad_offset_header_is_dropped_and_counted(cut, offset_words):
    ctx = TCPContext()
    tcp = bytearray(build(PEER_ADDR, LOCAL_ADDR, 1, 9, 0, 0, 0x02, 0, payload=b"\0" * 8)[20:20 + cut])
    if cut > 12:
        tcp[12] = offset_words << 4
    ctx.inject(ipv4_packet(PEER_ADDR, LOCAL_ADDR, bytes(tcp)))
    ctx.assert_quiet()
    assert ctx.stats.invalid_segments_received.value == 1


# --- RFC 5961 §3: RST --------------------------------------------------------------------------------

def test_rst_with_exact_sequence_number_resets():
    ctx = established()
    ctx.send("R", seq=ctx.nxt)
    assert ctx.ep.state is TCPState.CLOSED
    assert ctx.ep.read(10) == b"xyz"             # what arrived before the reset stays readable (Linux)
    with pytest.raises(ErrConnectionReset):
        ctx.ep.read(10)
    ctx.assert_quiet()


@pytest.mark.parametrize("offset", [1, 1000, 60000])
def test_in_window_rst_with_inexact_sequence_gets_challenge_ack(offset):
    ctx = established()
    ctx.send("R", seq=seq_add(ctx.nxt, offset))
    ack = ctx.sent_one()
    assert (ack.flagstr, ack.seq, ack.ack) == ("A", ctx.rcv_nxt, ctx.nxt)
    assert ctx.ep.state is TCPState.ESTABLISHED
    ctx.send("R", seq=ctx.nxt)                   # the real peer, told our RCV.NXT, resets exactly
    assert ctx.ep.state is TCPState.CLOSED


@pytest.mark.parametrize("offset", [-1, -70000, 2**20 + 1, 2**31])
def test_out_of_window_rst_is_ignored(offset):
    ctx = established()
    ctx.send("RA", seq=seq_add(ctx.nxt, offset))
    ctx.assert_quiet()
    assert ctx.ep.state is TCPState.ESTABLISHED


# --- RFC 5961 §4: SYN ---------------------------------------------------------------------------------

@pytest.mark.parametrize("offset", [0, 100, -5])
def test_syn_in_established_gets_challenge_ack_and_no_reset(offset):
    ctx = established()
    ctx.send("S", seq=seq_add(ctx.nxt, offset), ack=0, options=Opts(mss=1460))
    ack = ctx.sent_one()
    assert (ack.flagstr, ack.seq, ack.ack) == ("A", ctx.rcv_nxt, ctx.nxt)
    assert ctx.ep.state is TCPState.ESTABLISHED
    ctx.send_data(b"still here")
    assert ctx.read_all() == b"xyzstill here"


# --- RFC 5961 §5: ACK ---------------------------------------------------------------------------------

def test_ack_of_unsent_data_gets_challenge_ack_and_the_segment_is_dropped():
    ctx = established()
    ctx.read_all()
    ctx.send("PA", payload=b"forged", ack=seq_add(ctx.rcv_nxt, 5000))
    ack = ctx.sent_one()
    assert (ack.flagstr, ack.seq, ack.ack) == ("A", ctx.rcv_nxt, ctx.nxt)   # the data was not taken
    with pytest.raises(ErrWouldBlock):
        ctx.ep.read(100)
    assert ctx.ep.info().unacked == 0


def test_ack_far_below_the_window_is_challenged():
    ctx = established()
    ctx.read_all()
    ctx.send("PA", payload=b"old", ack=seq_add(ctx.rcv_nxt, -(2**20 + 100_000)))
    ack = ctx.sent_one()
    assert ack.ack == ctx.nxt
    with pytest.raises(ErrWouldBlock):
        ctx.ep.read(100)


def test_segment_from_another_host_does_not_reach_the_connection():
    ctx = established()
    ctx.send("R", seq=ctx.nxt, src=OTHER_ADDR)
    ctx.send("A", src=OTHER_ADDR)
    assert ctx.ep.state is TCPState.ESTABLISHED
    assert [(s.flagstr, s.dst) for s in ctx.sent()] == [("R", OTHER_ADDR)]   # not its connection: RST


# --- a hostile out-of-order stream ---------------------------------------------------------------------

def test_out_of_order_queue_is_bounded():
    ctx = established(opts=Opts(mss=1460, sack_perm=True))
    ep = ctx.ep
    ctx.read_all()
    base = ctx.nxt
    count = MAX_OOO_SEGMENTS + 500
    for i in range(count):                       # one byte every other byte: nothing ever merges
        ctx.send("A", seq=seq_add(base, 2 + 2 * i), payload=b"h")
    acks = ctx.sent()
    assert len(acks) == count and all(a.ack == base for a in acks)
    assert len(ep.rcv.ooo) == MAX_OOO_SEGMENTS
    assert ep.stats.receive_errors.receive_buffer_overflow.value == count - MAX_OOO_SEGMENTS
    # The connection still works: fill the stream from the start and the held bytes are delivered.
    ctx.send("A", seq=base, payload=b"s")
    got = ctx.read_all()
    assert got == b"s"                           # byte base + 1 is still missing
    ctx.send("A", seq=seq_add(base, 1), payload=b"t")
    assert ctx.read_all() == b"th"               # and the first held byte follows it


# --- ICMP errors (RFC 1122 §4.2.3.9, RFC 5927) ---------------------------------------------------------

def connecting() -> tuple[TCPContext, Seg]:
    ctx = TCPContext()
    ep, _ = ctx.new_endpoint()
    ctx.ep = ep
    with pytest.raises(ErrConnectStarted):
        ep.connect(FullAddress(0, PEER_ADDR, ctx.peer_port))
    return ctx, ctx.sent_one()


def test_icmp_port_unreachable_fails_a_connect_at_once():
    ctx, syn = connecting()
    ctx.inject(icmp_unreachable(syn, code=3))
    assert ctx.ep.state is TCPState.CLOSED
    assert isinstance(ctx.ep.get_sock_opt(SockOpt.ERROR), ErrConnectionRefused)
    assert len(ctx.stack.timers) == 0 and len(ctx.stack.demux) == 0 and len(ctx.stack.ports) == 0


def test_icmp_quoting_a_sequence_number_not_in_flight_is_ignored():
    ctx, syn = connecting()
    forged = dataclasses.replace(syn, raw=syn.raw[:24] + (seq_add(syn.seq, 100_000)).to_bytes(4, "big"))
    ctx.inject(icmp_unreachable(forged, code=3))
    assert ctx.ep.state is TCPState.SYN_SENT            # a blind attacker cannot guess the ISS
    assert ctx.ep.get_sock_opt(SockOpt.ERROR) is None


def test_icmp_host_unreachable_is_a_soft_error_on_an_established_connection():
    ctx = established()
    ctx.ep.write(b"out")
    (seg,) = ctx.sent()
    ctx.inject(icmp_unreachable(seg, code=1))
    assert ctx.ep.state is TCPState.ESTABLISHED
    assert not ctx.ep.readiness(EventMask.ERR), "soft: nothing to report while the connection lives"
    ctx.absorb([seg])
    ctx.ack()
    ctx.ep.write(b"more")
    assert ctx.absorb(ctx.sent()) == b"more"


def test_a_timeout_after_a_soft_icmp_error_reports_that_error():
    ctx = established()
    ctx.ep.write(b"out")
    (seg,) = ctx.sent()
    ctx.inject(icmp_unreachable(seg, code=1))
    ctx.clock.advance(3600)                   # every retransmission unanswered
    assert ctx.ep.state is TCPState.CLOSED
    assert ctx.ep.read(10) == b"xyz"
    with pytest.raises(ErrHostUnreachable):   # EHOSTUNREACH, not ETIMEDOUT, as Linux
        ctx.ep.read(10)


def test_icmp_fragmentation_needed_lowers_the_mss():
    ctx = established()
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.DELAY, 0)
    ep.write(b"p" * 1460)
    (seg,) = ctx.sent()
    ctx.inject(icmp_unreachable(seg, code=4, mtu=1200))
    assert ep.info().snd_mss == 1160
    ctx.absorb([seg])
    ctx.ack()
    ep.write(b"q" * 2000)
    assert [len(s.payload) for s in ctx.sent()] == [1160, 840]


def test_sack_blocks_still_fit_in_a_path_mtu_lowered_by_icmp():
    ctx = established(opts=Opts(mss=1460, sack_perm=True))
    ep = ctx.ep
    ep.set_sock_opt(SockOpt.DELAY, 0)
    ep.write(b"p" * 1460)
    (seg,) = ctx.sent()
    ctx.inject(icmp_unreachable(seg, code=4, mtu=1200))
    ctx.absorb([seg])
    ctx.ack()
    ctx.send("PA", seq=seq_add(ctx.nxt, 100), payload=b"later")     # out of order: the stack SACKs it
    ctx.sent()
    ep.write(b"q" * 3000)
    segs = ctx.sent()
    assert [len(s.payload) for s in segs] == [1160, 1160, 680]
    assert all(len(s.raw) <= 1200 for s in segs)
    assert [bool(s.options.sack) for s in segs] == [False, False, True]  # only beside the short one


def test_with_ip_recverr_a_soft_icmp_error_is_reported_at_once():
    """IP_RECVERR: the host unreachable is the next read's error (once), the reader woken for it; the
    connection lives on, and a timeout later would say ETIMEDOUT (Linux sets sk_err, not sk_err_soft)."""
    ctx = established()
    ctx.read_all()
    ctx.ep.set_sock_opt(SockOpt.RECEIVE_ERRORS, True)
    ctx.ep.write(b"out")
    (seg,) = ctx.sent()
    ctx.inject(icmp_unreachable(seg, code=1))
    assert ctx.ep.readiness(EventMask.IN | EventMask.ERR) == EventMask.IN | EventMask.ERR
    with pytest.raises(ErrHostUnreachable):
        ctx.ep.read(10)
    assert ctx.ep.get_sock_opt(SockOpt.ERROR) is None
    with pytest.raises(ErrWouldBlock):
        ctx.ep.read(10)
    assert ctx.ep.state is TCPState.ESTABLISHED and ctx.ep.soft_error is None
    ctx.absorb([seg])
    ctx.ack()
    ctx.ep.write(b"more")
    assert ctx.absorb(ctx.sent()) == b"more"


# --- RFC 5082's generalized TTL security (IP_MINTTL) ---------------------------------------------------

def test_ip_minttl_drops_segments_from_further_away():
    """A peer one hop away sends with TTL 255: with IP_MINTTL 255 a segment with TTL 254 (a forger further
    off) is dropped unanswered and counted; one with 255 is taken. ICMP errors are held to it too."""
    ctx = established()
    ctx.read_all()
    ctx.ep.set_sock_opt(SockOpt.MIN_TTL, 255)
    forged = build(ctx.peer, LOCAL_ADDR, ctx.peer_port, ctx.port, ctx.nxt, ctx.rcv_nxt, flags_of("PA"),
                   ctx.window, Opts(ts=(ctx.tsval(), ctx.ts_recent)).encode() if ctx.ts_ok else b"", b"forged",
                   ttl=254)
    ctx.inject(forged)
    assert ctx.sent() == [] and ctx.read_all() == b""
    assert ctx.ep.stats.receive_errors.filtered.value == 1
    ctx.inject(build(ctx.peer, LOCAL_ADDR, ctx.peer_port, ctx.port, ctx.nxt, ctx.rcv_nxt, flags_of("PA"),
                     ctx.window, Opts(ts=(ctx.tsval(), ctx.ts_recent)).encode() if ctx.ts_ok else b"", b"near",
                     ttl=255))
    assert ctx.read_all() == b"near"
    ctx.ep.write(b"out")
    seg = ctx.sent()[-1]
    ctx.inject(icmp_unreachable(seg, code=3))            # TTL 64: not from the neighbour
    assert ctx.ep.soft_error is None and ctx.ep.stats.receive_errors.filtered.value == 2
