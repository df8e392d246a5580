"""D-SACK (RFC 2883) from the receiver, against a scripted peer: a segment received again — wholly old, partly
old, or out of order and held already — is reported once, as the first SACK block of the ACK it draws, so
that the sender learns its retransmission was spurious (Linux's undo, RFC 8985's reordering window, TLP's
verdict). Only when SACK was negotiated."""

from __future__ import annotations

import pytest

from tcp_context import Opts, TCPContext, seq_add

SACK_OPTS = Opts(mss=1460, sack_perm=True, ts=(1, 0))


def established(opts: Opts = SACK_OPTS) -> TCPContext:
    ctx = TCPContext()
    ctx.connect(opts=opts)
    return ctx


def send(ctx: TCPContext, seq: int, payload: bytes) -> None:
    ctx.send("PA", seq=seq, payload=payload)


def test_an_old_duplicate_is_reported_once() -> None:
    ctx = established()
    start = ctx.nxt
    ctx.send_data(b"a" * 1000)
    ctx.sent()
    send(ctx, start, b"a" * 1000)                    # again: wholly old
    ack = ctx.sent_one()
    assert ack.ack == seq_add(start, 1000) and ack.options.sack == ((start, seq_add(start, 1000)),)
    ctx.send_data(b"b" * 10)
    ctx.advance(0.5)
    assert all(not seg.options.sack for seg in ctx.sent())      # reported once


def test_the_old_part_of_a_partly_new_segment_is_reported() -> None:
    ctx = established()
    start = ctx.nxt
    ctx.send_data(b"a" * 1000)
    ctx.sent()
    send(ctx, seq_add(start, 500), b"a" * 500 + b"n" * 500)    # half old, half new
    ctx.nxt = seq_add(start, 1500)
    ctx.advance(0.5)
    acks = ctx.sent()
    assert acks[0].ack == seq_add(start, 1500)
    assert acks[0].options.sack == ((seq_add(start, 500), seq_add(start, 1000)),)


def test_a_duplicate_held_out_of_order_comes_first_then_the_sack_blocks() -> None:
    ctx = established()
    start = ctx.nxt
    later = seq_add(start, 2000)
    send(ctx, later, b"z" * 500)                     # beyond a hole
    first = ctx.sent_one()
    assert first.ack == start and first.options.sack == ((later, seq_add(later, 500)),)
    send(ctx, later, b"z" * 500)                     # the same again
    again = ctx.sent_one()
    assert again.options.sack == ((later, seq_add(later, 500)), (later, seq_add(later, 500)))


@pytest.mark.parametrize("opts", [Opts(mss=1460, ts=(1, 0))], ids=["no SACK"])
def test_nothing_without_sack(opts: Opts) -> None:
    ctx = established(opts)
    start = ctx.nxt
    ctx.send_data(b"a" * 1000)
    ctx.sent()
    send(ctx, start, b"a" * 1000)
    assert ctx.sent_one().options.sack == ()
