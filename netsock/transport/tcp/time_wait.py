"""TIME-WAIT without the connection, as Linux's inet_timewait_sock.

Once both FINs are through, the endpoint (buffers, timers, congestion and SACK state, waiter queue,
statistics) has nothing left to do but wait out 2*MSL (RFC 9293 §3.6), so it hands over to a small
record that takes its place in the demultiplexer and keeps its port reservation until the wait is
over. The record holds only what TIME-WAIT still needs: both sides' next sequence numbers, the
window we last offered, the peer's latest timestamp and our timestamp clock's offset. A server that
closes first (HTTP/1.0) keeps one per request for a minute: at a thousand requests a second that is
sixty thousand of them.

What arrives meanwhile is handled as RFC 9293 §3.10.7.4 asks of TIME-WAIT: a retransmitted FIN is
ACKed again and restarts the wait; old duplicates (PAWS, RFC 7323 §5) and other unacceptable
segments get an ACK; an exact RST ends the wait (as Linux without tcp_rfc1337), an inexact one or an
acknowledgment of something never sent gets a challenge ACK (RFC 5961); a SYN of a new incarnation
(RFC 6191) ends it and goes to the listener.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...header import tcp
from ...stack.registration import ControlType, TransportEndpoint
from . import md5
from .segment import ACK, FIN, RST, SYN, Segment, parse_segment
from .state import TCPState

if TYPE_CHECKING:
    from ...stack.demux import TransportEndpointID
    from ...stack.packet_buffer import PacketBuffer
    from .protocol import TCPProtocol

MASK = 0xFFFFFFFF
# How far the sequence numbers of a connection reopened from TIME-WAIT start beyond the old one's
# (Linux's tw_snd_nxt + 65535 + 2): none of its old segments can then pass for a new one.
REOPEN_ISS_GAP = 65537


def _after(a: int, b: int) -> int:
    """a - b in sequence space (mod 2**32, as a signed 32-bit number)."""
    d = (a - b) & MASK
    return d - (1 << 32) if d & 0x80000000 else d


class TimeWait(TransportEndpoint):
    """One connection in TIME-WAIT: its 4-tuple is ``id`` (local port, local address, remote port,
    remote address), sequence numbers are wire values."""

    state = TCPState.TIME_WAIT

    __slots__ = ("proto", "net_proto", "nic", "id", "reservation", "rcv_nxt", "rcv_wnd", "window", "snd_nxt",
                 "max_wnd", "ts_recent", "ts_offset", "ttl", "tos", "timeout", "timer", "md5_key")

    def __init__(self, proto: TCPProtocol, net_proto: int, nic: int, id: TransportEndpointID,
                 reservation: tuple[Any, ...] | None, *, rcv_nxt: int, rcv_wnd: int, window: int, snd_nxt: int,
                 max_wnd: int, ts_recent: int | None, ts_offset: int, ttl: int, tos: int, timeout: float,
                 md5_key: bytes | None = None) -> None:
        self.proto = proto
        self.net_proto = net_proto
        self.nic = nic                      # the NIC the endpoint was bound to (0: any), as registered
        self.id = id
        self.reservation = reservation      # the endpoint's port reservation (None: the listener's port)
        self.rcv_nxt = rcv_nxt              # the peer's FIN + 1
        self.rcv_wnd = rcv_wnd              # bytes from rcv_nxt we offered: the acceptability test's window
        self.window = window                # the window field of our ACKs
        self.snd_nxt = snd_nxt              # our FIN + 1, acknowledged
        self.max_wnd = max_wnd              # the largest window the peer offered (RFC 5961 §5's bound)
        self.ts_recent = ts_recent          # the peer's latest TSval; None: no timestamps on this connection
        self.ts_offset = ts_offset
        self.ttl = ttl
        self.tos = tos
        self.timeout = timeout
        self.md5_key = md5_key              # TCP_MD5SIG's key for the peer: ACKs signed, segments checked
        self.timer = proto.stack.timers.timer(self._release)
        self.timer.reset(timeout)

    def handle_packet(self, pkt: PacketBuffer, src: bytes, dst: bytes, src_port: int, dst_port: int) -> None:
        proto = self.proto
        seg = parse_segment(pkt, src, dst, proto.tcp_stats, proto.verify_checksums(pkt.nic_id))
        if seg is not None and (not proto.md5_in_use or md5.accepts(self.md5_key, seg, pkt.transport_header,
                                                                   proto.tcp_stats)):
            self.handle_segment(seg)

    def handle_segment(self, seg: Segment) -> None:
        """A segment parsed already (from handle_packet, or one a listener held)."""
        proto = self.proto
        flags = seg.flags
        offset = _after(seg.seq, self.rcv_nxt)
        ts = seg.options.timestamp
        if flags & SYN and not flags & (ACK | RST):
            if self._new_incarnation(offset, ts):
                self._reopen(seg)
            else:
                self._challenge_ack(seg)
            return
        ts_recent = self.ts_recent
        if ts_recent is not None and ts is not None and not flags & RST and (ts[0] - ts_recent) & 0x80000000:
            self._send_ack(seg)     # PAWS: an old duplicate
            return
        length = len(seg.data) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        window = self.rcv_wnd
        if length == 0:
            acceptable = offset == 0 if window <= 0 else 0 <= offset < window
        else:
            acceptable = window > 0 and (0 <= offset < window or 0 <= offset + length - 1 < window)
        if not acceptable:
            if flags & RST:
                return
            if flags & FIN:
                self.timer.reset(self.timeout)      # the peer's FIN again: our ACK was lost
            self._send_ack(seg)
            return
        if flags & RST:
            if offset == 0:
                proto.tcp_stats.resets_received.increment()
                self._release()
            else:
                self._challenge_ack(seg)
            return
        if flags & SYN:
            self._challenge_ack(seg)    # RFC 5961 §4
            return
        if not flags & ACK:
            return
        if ts_recent is not None and ts is not None and offset <= 0:
            self.ts_recent = ts[0]
        ack = _after(seg.ack, self.snd_nxt)
        if ack > 0 or ack < -max(self.max_wnd, 1):
            self._challenge_ack(seg)    # RFC 5961 §5: acknowledges what we never sent, or far too old

    def _new_incarnation(self, offset: int, ts: tuple[int, int] | None) -> bool:
        """RFC 6191: may this SYN open a new connection? Yes if its timestamp is newer than the
        last one seen (or equal, with a higher sequence number); without timestamps on either
        incarnation, if its sequence number is beyond the old connection's."""
        if self.ts_recent is not None and ts is not None and self.proto.timestamps_enabled:
            newer = _after(ts[0], self.ts_recent)
            return newer > 0 or (newer == 0 and offset > 0)
        return offset > 0

    def _reopen(self, seg: Segment) -> None:
        """End TIME-WAIT and hand the SYN to the listener, which opens the new connection from it
        (or, with no listener, the SYN is answered as one for no connection)."""
        self._release()
        stack = self.proto.stack
        for ep in stack.demux.lookup(self.net_proto, self.proto.number, seg.nic_id, seg.src, seg.dst,
                                     seg.src_port, seg.dst_port) or ():
            if ep.state is TCPState.LISTEN:  # type: ignore[attr-defined]
                ep.guarded(ep._listen_segment, seg, (self.snd_nxt + REOPEN_ISS_GAP) & MASK)  # type: ignore[attr-defined]
                return
        self.proto.reply_reset(seg)

    def _send_ack(self, seg: Segment) -> None:
        if self.ts_recent is not None:
            tsval = (int(self.proto.stack.clock.now() * 1000) + self.ts_offset) & MASK
            options = tcp.encode_options((tsval, self.ts_recent))
        else:
            options = b""
        self.proto.send_stateless(seg, self.snd_nxt, self.rcv_nxt, ACK, self.window, options, ttl=self.ttl,
                                  tos=self.tos, md5_key=self.md5_key)

    def _challenge_ack(self, seg: Segment) -> None:
        if self.proto.challenge_ack_allowed():
            self._send_ack(seg)

    def _release(self) -> None:
        """TIME-WAIT is over: the 4-tuple and the port are free again."""
        self.timer.close()
        stack = self.proto.stack
        stack.demux.unregister((self.net_proto,), self.proto.number, self.id, self, self.nic)
        if self.reservation is not None:
            stack.ports.release(*self.reservation)
            self.reservation = None

    def abort(self) -> None:
        """The stack is closing: the wait ends now (TIME-WAIT has nothing to reset)."""
        self._release()

    def handle_control_packet(self, kind: ControlType, info: int, pkt: PacketBuffer) -> None:
        """ICMP errors: nothing left to tell anyone about."""

    def __repr__(self) -> str:
        return f"<TimeWait {self.id}>"
