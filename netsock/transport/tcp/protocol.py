"""The TCP protocol object: stack-wide settings, initial sequence numbers, SYN cookies, Fast Open
cookies, and the answer to segments no endpoint owns (RST)."""

from __future__ import annotations

import hashlib
import struct
from typing import TYPE_CHECKING, Any, Callable

from ...header import tcp
from ...header.checksum import checksum, combine, pseudo_header_checksum
from ...stack.packet_buffer import PacketBuffer
from ...stack.registration import TransportProtocol, UnknownDestinationDisposition
from ...tcpip import TCP_PROTOCOL_NUMBER, Error, ErrInvalidOptionValue, ErrUnknownProtocolOption, SockOpt
from ...waiter import WaiterQueue
from . import congestion, md5
from .segment import ACK, RST, Segment, parse_segment
from .state import TCPState

if TYPE_CHECKING:
    from ...stack.nic import NIC
    from ...stack.route import Route
    from .endpoint import TCPEndpoint

PROTOCOL_NUMBER = TCP_PROTOCOL_NUMBER
MASK = 0xFFFFFFFF

# SYN cookies (RFC 4987 §3.6): the MSS the client asked for, to the nearest of these, rides in two bits.
COOKIE_MSS = (536, 1300, 1440, 1460)
COOKIE_PERIOD = 64.0     # seconds per tick of the cookie clock, as Linux
COOKIE_MAX_AGE = 2       # ticks a cookie stays valid

_PORTS = struct.Struct("!HH")

# Fast Open (RFC 7413): the bits of Linux's net.ipv4.tcp_fastopen that netsock honours.
FAST_OPEN_CLIENT = 0x1          # connections may send data with their SYN (MSG_FASTOPEN, TCP_FASTOPEN_CONNECT)
FAST_OPEN_SERVER = 0x2          # listeners with a TCP_FASTOPEN queue take data from a SYN with a valid cookie
FAST_OPEN_CLIENT_NO_COOKIE = 0x4        # ... clients send it without a cookie (as TCP_FASTOPEN_NO_COOKIE does)
FAST_OPEN_SERVER_NO_COOKIE = 0x200      # ... listeners take it without one
FAST_OPEN_COOKIE_SIZE = 8       # what we hand out, as Linux
FAST_OPEN_CACHE_SIZE = 1024     # peers whose cookie a client remembers (Linux keeps them in its TCP metrics)

OWED_ACK_HOPS = 3        # deferred calls between an event and the ACKs it owes (see TCPProtocol.owe_ack)


class TCPProtocol(TransportProtocol):
    number = PROTOCOL_NUMBER
    min_header_size = tcp.MIN_SIZE

    def __init__(self, stack) -> None:  # noqa: ANN001 - Stack (import cycle)
        super().__init__(stack)
        self.tcp_stats = stack.stats().tcp
        # Where a connection's ISN and timestamp offset come from: an attribute, so that a test may start
        # connections where it wants them (near 2**32) in the compiled module too.
        self.initial_numbers: Callable[[bytes, int, bytes, int], tuple[int, int]] = self.keyed_initial_numbers
        # Stack-wide defaults, each settable with set_option (netstack's TCP protocol options).
        self.send_buffer_size = 1 << 20
        self.receive_buffer_size = 1 << 20
        # What receive-buffer auto-tuning may grow to: Linux's default net.ipv4.tcp_rmem[2]. (4 MB
        # before; kernel -> netsock over an offloaded TUN, 512 MB, three alternated runs each: 4 MB
        # 1,904-2,119 MB/s, 6 MB 1,777-2,228, 16 MB 2,181-2,256.)
        self.max_receive_buffer_size = 6 << 20
        self.sack_enabled = True
        self.timestamps_enabled = True
        self.window_scaling = True
        self.time_wait_timeout = 60.0           # Linux's TCP_TIMEWAIT_LEN
        self.fin_wait2_timeout = 60.0           # net.ipv4.tcp_fin_timeout
        self.congestion_control = congestion.DEFAULT_ALGORITHM
        self.max_retries = 15                   # net.ipv4.tcp_retries2
        self.syn_retries = 6                    # net.ipv4.tcp_syn_retries
        self.syn_cookies = True
        self.tail_loss_probes = True            # RFC 8985's TLP (net.ipv4.tcp_early_retrans 3)
        self.rack_loss_detection = True         # RFC 8985's RACK (net.ipv4.tcp_recovery bit 1)
        self.thin_linear_timeouts = False       # TCP_THIN_LINEAR_TIMEOUTS for all (Linux's sysctl of the name)
        self.frto = True                        # RFC 5682's F-RTO (net.ipv4.tcp_frto)
        self.md5_in_use = False     # some endpoint has had a TCP_MD5SIG key: every segment is looked at since
        self.challenge_ack_limit = 1000         # per second, stack-wide (net.ipv4.tcp_challenge_ack_limit)
        self._challenge_window = 0
        self._challenges_sent = 0
        # Keyed once: a copy of this object hashes with the key already absorbed (half the cost of keying).
        self._keyed_hash = hashlib.blake2s(key=stack.secret, digest_size=8)
        self._owed_acks: list[TCPEndpoint] = []
        self.autocorking = True                 # net.ipv4.tcp_autocorking (see push_soon)
        self.fast_open = FAST_OPEN_CLIENT       # net.ipv4.tcp_fastopen, Linux's default: client only
        # A client's Fast Open cookies, by peer address, with the MSS the peer announced beside them.
        self.fast_open_cookies: dict[bytes, tuple[bytes, int]] = {}
        self._owed_pushes: list[TCPEndpoint] = []

    def new_endpoint(self, net_proto: int, waiter_queue: WaiterQueue) -> TCPEndpoint:
        from .endpoint import TCPEndpoint
        return TCPEndpoint(self, net_proto, waiter_queue)

    def owe_ack(self, ep: TCPEndpoint) -> None:
        """Acknowledge ``ep``'s received data once the stack has finished with the current event.

        Every segment of a batch read from a link at once asks for the same ACK, and an application
        woken by the data often answers at once: so the ACK is sent after the wake-ups the event
        scheduled have run, and a reply written meanwhile carries it instead. That takes
        OWED_ACK_HOPS deferred calls: the first lets the wake-ups queue up behind it, the next ones
        what those wake-ups schedule in turn (a waiter's wake-up is itself deferred, and a server
        spawns a task of its own for a connection it has just accepted). Linux gets the same from
        GRO and from piggybacking on replies; the peer sees no difference but fewer segments.
        """
        rcv = ep.rcv
        if rcv is None or rcv.ack_owed:
            return
        rcv.ack_owed = True
        if not self._owed_acks:
            self.stack.clock.call_soon(self._owed_ack_hop, OWED_ACK_HOPS - 1)
        self._owed_acks.append(ep)

    def _owed_ack_hop(self, hops_left: int) -> None:
        if hops_left:
            self.stack.clock.call_soon(self._owed_ack_hop, hops_left - 1)
        else:
            self._send_owed_acks()

    def _send_owed_acks(self) -> None:
        owed, self._owed_acks = self._owed_acks, []
        for ep in owed:
            rcv = ep.rcv
            if rcv is not None and rcv.ack_owed:
                rcv.ack_owed = False
                ep.guarded(ep.send_ack)

    def push_soon(self, ep: TCPEndpoint) -> None:
        """Send what ``ep``'s application wrote once it yields, not at each write (Linux's
        autocorking): while earlier data is still in flight, the ACK for it will not come before
        the writer yields anyway, and the writes made meanwhile leave together in as few (super-)
        segments as the windows allow, rather than one per write — an application writing 8 KB at
        a time would otherwise cost a segment's processing per 8 KB. Only what is short of a full
        transmission waits (as Linux corks only an skb short of its size goal): full ones leave at
        once, while their bytes are still in the cache. With nothing in flight a write is sent at
        once, so a request or reply is not delayed."""
        snd = ep.snd
        if snd is None or snd.push_owed:
            return
        snd.push_owed = True
        if not self._owed_pushes:
            self.stack.clock.call_soon(self._send_owed_pushes)
        self._owed_pushes.append(ep)

    def _send_owed_pushes(self) -> None:
        owed, self._owed_pushes = self._owed_pushes, []
        for ep in owed:
            snd = ep.snd
            if snd is not None and snd.push_owed:
                snd.push_owed = False
                ep.guarded(snd.send_data)

    def header_length(self, view: memoryview) -> int:
        return min((view[12] >> 4) * 4, len(view)) if len(view) > 12 else len(view)

    def parse_ports(self, view: memoryview) -> tuple[int, int] | None:
        return _PORTS.unpack_from(view) if len(view) >= 4 else None

    def verify_checksums(self, nic_id: int) -> bool:
        nic = self.stack.nics.get(nic_id)
        return nic is None or not nic.rx_checksum_offload

    # --- options ----------------------------------------------------------------------------------

    _OPTIONS = {SockOpt.SEND_BUFFER_SIZE: "send_buffer_size", SockOpt.RECEIVE_BUFFER_SIZE: "receive_buffer_size",
                SockOpt.TCP_TIME_WAIT_TIMEOUT: "time_wait_timeout", SockOpt.TCP_LINGER_TIMEOUT: "fin_wait2_timeout",
                SockOpt.CONGESTION_CONTROL: "congestion_control", SockOpt.MODERATE_RECEIVE_BUFFER: None,
                SockOpt.TCP_FAST_OPEN: "fast_open"}

    def set_option(self, option: SockOpt, value: Any) -> None:
        if option is SockOpt.CONGESTION_CONTROL and value not in congestion.available():
            raise ErrInvalidOptionValue()
        name = self._OPTIONS.get(option)
        if name is None:
            raise ErrUnknownProtocolOption()
        setattr(self, name, value)

    def get_option(self, option: SockOpt) -> Any:
        if option is SockOpt.AVAILABLE_CONGESTION_CONTROL:
            return " ".join(congestion.available())
        name = self._OPTIONS.get(option)
        if name is None:
            raise ErrUnknownProtocolOption()
        return getattr(self, name)

    def challenge_ack_allowed(self) -> bool:
        """RFC 5961 §7: at most ``challenge_ack_limit`` challenge ACKs per second."""
        window = int(self.stack.clock.now())
        if window != self._challenge_window:
            self._challenge_window = window
            self._challenges_sent = 0
        self._challenges_sent += 1
        return self._challenges_sent <= self.challenge_ack_limit

    # --- sequence numbers -------------------------------------------------------------------------

    def _secret_hash(self, data: bytes) -> int:
        """64 bits of a hash of ``data`` keyed with the stack's secret."""
        h = self._keyed_hash.copy()
        h.update(data)
        return int.from_bytes(h.digest(), "big")

    def keyed_initial_numbers(self, local: bytes, local_port: int, remote: bytes, remote_port: int) -> tuple[int, int]:
        """A connection's initial sequence number and timestamp offset, from one keyed hash of its 4-tuple.

        The ISN (RFC 6528) adds a 4 µs clock, so a new incarnation of a connection starts ahead of
        the old one and nobody can guess it. The offset hides our clock (RFC 7323 §7.1); being the
        same for every incarnation of the 4-tuple, it keeps their timestamps increasing, which is what
        lets a peer reopen a connection of ours from TIME-WAIT (RFC 6191).
        """
        h = self._secret_hash(local + remote + ((local_port << 16) | remote_port).to_bytes(4, "big"))
        return ((h >> 32) + int(self.stack.clock.now() * 250_000)) & MASK, h & MASK

    def _cookie_hash(self, seg: Segment, salt: int) -> int:
        key = (bytes(seg.src) + bytes(seg.dst) + seg.src_port.to_bytes(2, "big") + seg.dst_port.to_bytes(2, "big")
               + salt.to_bytes(4, "big"))
        return self._secret_hash(key) & MASK

    def syn_cookie(self, seg: Segment, peer_mss: int) -> int:
        """Our ISN for a SYN we keep no state for: hash(4-tuple) + their ISN + tick << 24 + (hash(4-tuple,
        tick) + MSS index) mod 2**24 — the construction of Linux and netstack."""
        index = max(i for i, m in enumerate(COOKIE_MSS) if m <= max(peer_mss, COOKIE_MSS[0]))
        tick = int(self.stack.clock.now() / COOKIE_PERIOD) & 0xFF
        low = (self._cookie_hash(seg, 0x100 | tick) + index) & 0xFFFFFF
        return (self._cookie_hash(seg, 0) + seg.seq + (tick << 24) + low) & MASK

    def check_syn_cookie(self, seg: Segment) -> int | None:
        """The MSS encoded in the cookie this ACK returns, or None if it is not one of ours (or too old)."""
        cookie = (seg.ack - 1) & MASK
        their_isn = (seg.seq - 1) & MASK
        value = (cookie - self._cookie_hash(seg, 0) - their_isn) & MASK
        tick = value >> 24
        now_tick = int(self.stack.clock.now() / COOKIE_PERIOD) & 0xFF
        if (now_tick - tick) & 0xFF > COOKIE_MAX_AGE:
            return None
        index = (value - self._cookie_hash(seg, 0x100 | tick)) & 0xFFFFFF
        return COOKIE_MSS[index] if index < len(COOKIE_MSS) else None

    def fast_open_cookie(self, client: bytes, server: bytes, key: bytes = b"") -> bytes:
        """The cookie a server gives ``client`` (RFC 7413 §4.1.2): a keyed hash of both addresses, so
        only the client it was given to can use it, and only towards this address; keyed with the
        stack's secret, or with ``key`` (a listener's TCP_FASTOPEN_KEY, 16 bytes)."""
        if key:
            return hashlib.blake2s(b"TFO" + client + server, key=key, digest_size=FAST_OPEN_COOKIE_SIZE).digest()
        return self._secret_hash(b"TFO" + client + server).to_bytes(FAST_OPEN_COOKIE_SIZE, "big")

    def remember_fast_open_cookie(self, server: bytes, cookie: bytes, mss: int) -> None:
        """A client keeps the cookie a server returned, for its next SYN; the oldest are forgotten first."""
        cache = self.fast_open_cookies
        cache.pop(server, None)
        if len(cache) >= FAST_OPEN_CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[server] = (cookie, mss)

    # --- segments nobody owns ---------------------------------------------------------------------

    def handle_unknown_destination_packet(self, nic: NIC, pkt: PacketBuffer, src: bytes,
                                          dst: bytes) -> UnknownDestinationDisposition:
        seg = parse_segment(pkt, src, dst, self.tcp_stats, self.verify_checksums(pkt.nic_id))
        if seg is None:
            return UnknownDestinationDisposition.MALFORMED
        if self.md5_in_use:
            carried = md5.find(pkt.transport_header[tcp.MIN_SIZE:])
            if carried is not None:
                key = self._listeners_md5_key(seg)
                if key is not None and md5.signed_with(key, seg, pkt.transport_header, carried):
                    self.reply_reset(seg, key)
                return UnknownDestinationDisposition.HANDLED
        self.reply_reset(seg)
        return UnknownDestinationDisposition.HANDLED

    def _listeners_md5_key(self, seg: Segment) -> bytes | None:
        """The key to sign the reset for a signed segment to no socket with: the one a listener here on the
        segment's *source* port holds for its sender, as Linux's tcp_v4_send_reset finds it — BGP's peers
        both listen on 179, so a session that died here was most likely opened to or from that port. The
        segment must carry that key's signature; without a key, no reset (an unsigned one would be dropped)."""
        group = self.stack.demux.lookup(self._net_proto(seg), PROTOCOL_NUMBER, seg.nic_id, seg.src, seg.dst,
                                        seg.dst_port, seg.src_port)
        for ep in group or ():
            if getattr(ep, "state", None) is TCPState.LISTEN and ep.md5_keys:
                return md5.best_key(ep.md5_keys, seg.src)
        return None

    def reply_reset(self, seg: Segment, md5_key: bytes | None = None) -> None:
        """RFC 9293 §3.10.7.1: answer a segment for no connection with RST (never a RST for a RST),
        signed with ``md5_key`` if the endpoint answering has one for the sender (TCP_MD5SIG)."""
        if seg.flags & RST:
            return
        if seg.flags & ACK:
            self.send_stateless(seg, seq=seg.ack, ack=0, flags=RST, md5_key=md5_key)
        else:
            self.send_stateless(seg, seq=0, ack=(seg.seq + seg.length) & MASK, flags=RST | ACK, md5_key=md5_key)

    def send_stateless(self, seg: Segment, seq: int, ack: int, flags: int, window: int = 0,
                       options: bytes = b"", route: Route | None = None, ttl: int = 0, tos: int = 0,
                       md5_key: bytes | None = None) -> None:
        """Send a segment back to where ``seg`` came from, without an endpoint (RST, SYN-cookie SYN-ACK,
        TIME-WAIT's ACKs); ``ttl`` 0 is the route's default; signed with ``md5_key`` (TCP_MD5SIG)."""
        if route is None:
            try:
                route = self.stack.find_route(0, seg.dst, seg.src, self._net_proto(seg))
            except Error:
                return
        if md5_key is not None:
            options = md5.PLACEHOLDER + options
        size = tcp.MIN_SIZE + len(options)
        pkt = PacketBuffer(route.max_header_length() + size)
        hdr = pkt.prepend(size)
        tcp.build(hdr, src_port=seg.dst_port, dst_port=seg.src_port, seq=seq, ack=ack, flags=flags, window=window,
                  options=options)
        if md5_key is not None:
            md5.sign(hdr, route.local_address, route.remote_address, b"", md5_key)
        total = combine(pseudo_header_checksum(PROTOCOL_NUMBER, route.local_address, route.remote_address, size),
                        checksum(hdr))
        tcp.set_checksum(hdr, ~total & 0xFFFF)
        try:
            route.write_packet(PROTOCOL_NUMBER, pkt, ttl or route.default_ttl(), tos)
        except Error:
            self.tcp_stats.segment_send_errors.increment()
            return
        self.tcp_stats.segments_sent.value += 1
        if flags & RST:
            self.tcp_stats.resets_sent.increment()

    @staticmethod
    def _net_proto(seg: Segment) -> int:
        return 0x0800 if len(seg.src) == 4 else 0x86DD
