"""TCP MD5 signatures (RFC 2385, TCP_MD5SIG) on the wire, against a scripted peer that signs and checks
with its own code written from the RFC: a listener with a key for the peer answers a signed SYN with a
signed SYN-ACK and no timestamps; every segment of the connection is signed; segments with a wrong
signature or none are dropped and counted; resets — the connection's and the listener's stateless one —
are signed too. (tests/test_socket_options_linux.py has the socket option; integration/test_tcp_md5.py
the kernel as the peer.)"""

from __future__ import annotations

import hashlib
import struct

import pytest

from netsock.tcpip import ErrWouldBlock, SockOpt

from tcp_context import LOCAL_ADDR, PEER_ADDR, PEER_PORT, STACK_PORT, Opts, Seg, TCPContext, build, internet_checksum

KEY = b"bgp session key"
ROOM = bytes(16)        # the digest's place before it is computed


def rfc2385(src: bytes, dst: bytes, segment: bytes, key: bytes) -> bytes:
    """RFC 2385 §2.0: MD5 of the pseudo-header, the TCP header without options and with a zero checksum,
    the segment data and the key."""
    header_length = (segment[12] >> 4) * 4
    pseudo = src + dst + bytes((0, 6)) + struct.pack("!H", len(segment))
    return hashlib.md5(pseudo + segment[:16] + b"\0\0" + segment[18:20] + segment[header_length:] + key).digest()


def signed(packet: bytes, key: bytes) -> bytes:
    """An IPv4 packet whose TCP options begin with an MD5 option, its digest and checksum filled in."""
    ihl = (packet[0] & 15) * 4
    segment = bytearray(packet[ihl:])
    assert segment[20:24] == b"\x01\x01\x13\x12"
    segment[24:40] = rfc2385(packet[12:16], packet[16:20], bytes(segment), key)
    segment[16:18] = b"\0\0"
    pseudo = sum(struct.unpack("!4H", packet[12:20])) + 6 + len(segment)
    struct.pack_into("!H", segment, 16, internet_checksum(bytes(segment), pseudo))
    return packet[:ihl] + bytes(segment)


def signature_ok(seg: Seg, key: bytes) -> bool:
    return seg.options.md5 == rfc2385(seg.src, seg.dst, seg.raw[20:], key)


@pytest.fixture
def ctx() -> TCPContext:
    """A listener with KEY for the peer; every segment the peer sends through ``send`` is signed with it."""
    ctx = TCPContext()
    ctx.listen().set_md5_key(PEER_ADDR, 32, KEY)
    inject = ctx.inject
    ctx.inject = lambda raw: inject(signed(raw, KEY))   # type: ignore[method-assign]
    ctx.raw_inject = inject                            # type: ignore[attr-defined]
    return ctx


def handshake(ctx: TCPContext) -> Seg:
    ctx.nxt = 1000
    ctx.send("S", options=Opts(mss=1460, sack_perm=True, ts=(5, 0), md5=ROOM), ack=0)    # (40 bytes)
    synack = ctx.sent_one()
    ctx.nxt = 1001
    ctx.rcv_nxt = (synack.seq + 1) % (1 << 32)
    ctx.send("A", options=Opts(md5=ROOM))
    assert ctx.listener is not None
    ctx.ep, ctx.wq = ctx.listener.accept()
    return synack


def test_a_signed_handshake_and_data(ctx: TCPContext) -> None:
    synack = handshake(ctx)
    assert synack.flagstr == "SA" and signature_ok(synack, KEY)
    # The signature and SACK leave no room for timestamps (Linux's tcp_synack_options).
    assert synack.options.ts is None and synack.options.sack_perm and synack.options.mss == 1460
    assert ctx.ep.snd.mss == 1460 - 20      # each segment carries the signature
    ctx.send_data(b"hello", options=Opts(md5=ROOM))
    assert ctx.ep.read(100) == b"hello"
    ctx.ep.write(b"signed reply")
    ctx.advance(0.5)
    for seg in ctx.sent():
        assert signature_ok(seg, KEY), seg
        if seg.payload:
            assert seg.payload == b"signed reply"
    tcp = ctx.stats
    assert (tcp.md5_failure.value, tcp.md5_not_found.value, tcp.md5_unexpected.value) == (0, 0, 0)


@pytest.mark.parametrize("options, counter", [(Opts(md5=b"x" * 16), "md5_failure"), (Opts(), "md5_not_found")])
def test_a_wrong_or_missing_signature_is_dropped(ctx: TCPContext, options: Opts, counter: str) -> None:
    handshake(ctx)
    ctx.raw_inject(build(PEER_ADDR, LOCAL_ADDR, PEER_PORT, STACK_PORT, ctx.nxt, ctx.rcv_nxt, 0x18, 65535,
                         options.encode(), b"forged"))
    with pytest.raises(ErrWouldBlock):
        ctx.ep.read(100)
    ctx.assert_quiet()      # not even an ACK for it
    assert getattr(ctx.stats, counter).value == 1


def test_a_peer_without_a_key_cannot_connect() -> None:
    ctx = TCPContext()
    ctx.listen().set_md5_key(PEER_ADDR, 32, KEY)
    ctx.nxt = 1000
    ctx.send("S", options=Opts(mss=1460), ack=0)
    ctx.assert_quiet()
    assert ctx.stats.md5_not_found.value == 1


def test_resets_are_signed(ctx: TCPContext) -> None:
    handshake(ctx)
    # A listener's stateless reset, for an ACK of no connection from the peer (it has a key for it).
    ctx.send("A", src_port=PEER_PORT + 1, seq=5, ack=7, options=Opts(md5=ROOM))
    reset = ctx.sent_one()
    assert reset.flagstr == "R" and reset.seq == 7 and signature_ok(reset, KEY)
    # The connection's own, when it is aborted.
    ctx.ep.set_sock_opt(SockOpt.LINGER, 0)
    ctx.ep.close()
    reset = ctx.sent_one()
    assert reset.ctl in ("R", "RA") and signature_ok(reset, KEY)


def test_a_signed_segment_to_a_closed_port_gets_a_reset_signed_with_the_listeners_key(ctx: TCPContext) -> None:
    """BGP's case (Linux's tcp_v4_send_reset): the connection is gone here, the peer still sends from port 179
    (STACK_PORT here), where a listener of ours holds its key: the reset is signed with it, and only for a
    segment signed with it."""
    ctx.send("A", src_port=STACK_PORT, dst_port=40999, seq=5, ack=7, options=Opts(md5=ROOM))
    reset = ctx.sent_one()
    assert reset.flagstr == "R" and reset.seq == 7 and reset.dst_port == STACK_PORT and signature_ok(reset, KEY)
    ctx.raw_inject(signed(build(PEER_ADDR, LOCAL_ADDR, STACK_PORT, 40999, 5, 7, 0x10, 1000,
                                Opts(md5=ROOM).encode(), b""), b"another key"))
    ctx.assert_quiet()          # a wrong signature gets no answer
    ctx.send("A", src_port=STACK_PORT + 1, dst_port=40999, seq=5, ack=7, options=Opts(md5=ROOM))
    ctx.assert_quiet()          # nor one from a port no listener of ours holds a key on
