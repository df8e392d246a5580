"""A TCP endpoint: the RFC 9293 state machine and the netstack endpoint API.

Everything an endpoint does runs on the stack's one thread, but not always from the top: sending a
segment over a loopback path can deliver the peer's answer before the send returns. Like Linux
with its socket backlog, an endpoint that is busy queues segments that arrive meanwhile and
processes them when the outer operation is done, so its state is never seen half-updated.
"""

from __future__ import annotations

import functools
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from ...header import tcp
from ...header.checksum import checksum, combine, pseudo_header_checksum
from ...ports import PortFlags
from ...stack.bpf import Filter
from ...stack.demux import TransportEndpointID, reuseport_program
from ...stack.interfaces import LinkCapabilities
from ...stack.packet_buffer import PacketBuffer, new_flow_hash
from ...stack.registration import ControlType, TransportEndpoint, socket_route
from ...tcpip import (DEFAULT_WRITE_OPTIONS, ErrAlreadyBound, ErrAlreadyConnected, ErrAlreadyConnecting,
                      ErrBadLocalAddress, ErrClosedForSend, ErrConnectionAborted, ErrConnectionRefused,
                      ErrConnectionReset, ErrConnectStarted, ErrHostDown, ErrHostUnreachable, ErrInvalidEndpointState,
                      ErrInvalidOptionValue, ErrNetworkUnreachable, ErrNotConnected, ErrNotPermitted,
                      ErrNotSupported, ErrPortInUse, ErrTimeout, ErrUnknownProtocolOption, ErrWouldBlock, Error,
                      FullAddress, ShutdownFlags, SockOpt, TransportEndpointStats, WriteOptions)
from ...tcpip.options import PMTUDISC_DONT, PMTUDISC_OMIT, PMTUDISC_SETS_DF, PMTUDISC_WANT, UNLIMITED_PACING_RATE
from ...tcpip.stats import StatCounter
from ...waiter import EventMask, WaiterQueue
from ..datagram import QueuedError, TransmitStamp, ZeroCopyCompletion, queued_error
from . import congestion, md5
from .receiver import ACK_LATER, ACK_NOW, ACK_SOON, DELAYED_ACK_TIMEOUT, Receiver
from .segment import ACK, FIN, RST, SYN, URG, Segment, parse_segment
from .sender import CHRONO_SNDBUF_LIMITED, MAX_RTO, Sender
from .state import TCPState
from .protocol import FAST_OPEN_CLIENT, FAST_OPEN_CLIENT_NO_COOKIE, FAST_OPEN_SERVER, FAST_OPEN_SERVER_NO_COOKIE
from .stamps import TransmitStamper
from .zerocopy import ZeroCopySends
from .time_wait import TimeWait

if TYPE_CHECKING:
    from ...stack.clock import Timer
    from ...stack.route import Route
    from .protocol import TCPProtocol

MASK = 0xFFFFFFFF
DEFAULT_MSS = 536               # RFC 9293 §3.7.1: what to assume when the peer sends no MSS option
_MIN_WINDOW_CLAMP = 1152        # the least TCP_WINDOW_CLAMP Linux keeps (SOCK_MIN_RCVBUF / 2)
HELD_SEGMENTS = 256             # per listener, while its accept queue is full (TCPEndpoint._hold)
SOMAXCONN = 4096                # Linux's net.core.somaxconn: the cap on every listen backlog
MIN_MSS = 88                    # Linux's floor for TCP_MAXSEG


S = TCPState
# The states the per-segment paths compare with, as plain names: an Enum class attribute costs a
# descriptor call (about 0.2 µs on Python 3.11), several times a segment.
_LISTEN, _SYN_SENT, _SYN_RCVD, _ESTABLISHED, _CLOSED = S.LISTEN, S.SYN_SENT, S.SYN_RCVD, S.ESTABLISHED, S.CLOSED
_FIN_WAIT1, _FIN_WAIT2, _CLOSE_WAIT, _CLOSING, _LAST_ACK = (S.FIN_WAIT1, S.FIN_WAIT2, S.CLOSE_WAIT, S.CLOSING,
                                                            S.LAST_ACK)
_NOTIFY_IN, _NOTIFY_OUT, _NOTIFY_PRI = EventMask.IN, EventMask.OUT, EventMask.PRI     # notify() takes flags
_IN, _OUT, _ERR, _HUP, _RDHUP, _PRI = (int(m) for m in (EventMask.IN, EventMask.OUT, EventMask.ERR, EventMask.HUP,
                                                        EventMask.RDHUP, EventMask.PRI))
_SYNCHRONIZED = frozenset((S.ESTABLISHED, S.FIN_WAIT1, S.FIN_WAIT2, S.CLOSE_WAIT, S.CLOSING, S.LAST_ACK,
                           S.TIME_WAIT))
_RECEIVING = frozenset((S.ESTABLISHED, S.FIN_WAIT1, S.FIN_WAIT2))
_SENDING = frozenset((S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT1, S.CLOSING, S.LAST_ACK))
_COUNTED_ESTABLISHED = frozenset((S.ESTABLISHED, S.CLOSE_WAIT))
_CLOSED_EVENTS = EventMask.IN | EventMask.OUT | EventMask.HUP | EventMask.ERR    # what _finish() notifies
_FIN_EVENTS = EventMask.IN | EventMask.RDHUP
_SHUT_WRITE_EVENTS = EventMask.OUT | EventMask.HUP
_UNBOUND = FullAddress()
_HARDWARE_GSO = int(LinkCapabilities.HARDWARE_GSO)
_SCATTER_GATHER = int(LinkCapabilities.SCATTER_GATHER)
_MAX_HEADERS = 40 + 60     # the largest IP (IPv6) and TCP headers

_CONTROL_ERRORS: dict[ControlType, type[Error]] = {
    ControlType.PORT_UNREACHABLE: ErrConnectionRefused,
    ControlType.PROTOCOL_UNREACHABLE: ErrConnectionRefused,
    ControlType.HOST_UNREACHABLE: ErrHostUnreachable,
    ControlType.NET_UNREACHABLE: ErrNetworkUnreachable,
    ControlType.NET_UNKNOWN: ErrNetworkUnreachable,
    ControlType.HOST_UNKNOWN: ErrHostDown,
    ControlType.PROHIBITED: ErrHostUnreachable,
    ControlType.TTL_EXCEEDED: ErrHostUnreachable,
}


class TCPInfo(NamedTuple):
    """A snapshot for TCP_INFO: times in seconds, windows in segments (as Linux reports them)."""

    state: TCPState
    rtt: float
    rttvar: float
    rto: float
    min_rtt: float
    snd_mss: int
    rcv_mss: int
    cwnd: int
    ssthresh: int
    retransmits: int
    total_retransmits: int
    unacked: int
    snd_wnd: int
    rcv_wnd: int
    congestion_control: str
    sacked: int = 0             # segments SACKed, found lost (RACK) and resent in flight
    lost: int = 0
    resent: int = 0
    bytes_acked: int = 0        # sequence acknowledged and received in order (the SYN not counted, a FIN
    bytes_received: int = 0     # counted on the sending side, both as Linux); payload bytes written and not
    notsent_bytes: int = 0      # yet sent, sent (resent ones included) and resent
    bytes_sent: int = 0
    bytes_retrans: int = 0
    segs_out: int = 0           # packets as they crossed the link (a super-segment is one)
    segs_in: int = 0
    dsack_dups: int = 0         # D-SACKs received
    rcv_ooopack: int = 0        # segments received out of order
    total_rto: int = 0          # timeouts, those of the handshake included, and the episodes they began
    total_rto_recoveries: int = 0
    ca_state: int = 0           # Linux's TCP_CA_Open 0, Disorder 1 (duplicate ACKs, SACKs), Recovery 3, Loss 4
    probes: int = 0             # zero-window probes unanswered
    backoff: int = 0            # timeouts (or probes) since the last progress, each doubling the timer
    last_data_sent: float = 0.0     # seconds since data last went, came, and an ACK came (0: never)
    last_data_received: float = 0.0
    last_ack_received: float = 0.0
    data_segs_out: int = 0      # segments carrying data (a super-segment as its wire segments), and received
    data_segs_in: int = 0       # (a super-segment once, as segs_in)
    delivered: int = 0          # segments acknowledged, the SYN's included
    delivery_rate: float = 0.0  # bytes a second, over a round trip (Linux's tcp_rate.c) ...
    app_limited: bool = False   # ... measured while the application left the window unused
    # Seconds with data to send or acknowledge, apart from those held back by the peer's window, and those
    # with all sent and the writer out of room (Linux's chronograph: BUSY, RWND_LIMITED, SNDBUF_LIMITED).
    chrono: tuple[float, float, float] | list[float] = (0.0, 0.0, 0.0)
    reordering: int = 3         # the reordering the loss detection allows for, in segments (RFC 6675's DupThresh)
    reord_seen: int = 0         # deliveries found out of order
    pacing_rate: int | float = UNLIMITED_PACING_RATE  # bytes a second, paced or not, as Linux's (an int unlimited)
    max_pacing_rate: int = UNLIMITED_PACING_RATE    # SO_MAX_PACING_RATE's
    syn_data_acked: bool = False    # the SYN's data was acknowledged (Fast Open; TCPI_OPT_SYN_DATA)
    rehash: int = 0             # flow labels drawn anew (at timeouts)
    fast_open_fail: int = 0     # why the SYN's data was not taken (Linux's tcpi_fastopen_client_fail)
    total_rto_time: float = 0.0     # seconds spent recovering from timeouts


def _ca_state(snd: Sender) -> int:
    """Linux's congestion-avoidance state of a sender: in recovery, after a timeout (until progress), with
    duplicate ACKs or SACKed bytes, else open."""
    if snd.recovery:
        return 3
    if snd.retransmits and not snd.persisting:
        return 4
    if snd.dupacks or (snd.sack is not None and snd.sack.sacked_bytes()):
        return 1
    return 0


REPAIR_NO_QUEUE, REPAIR_RECV_QUEUE, REPAIR_SEND_QUEUE = 0, 1, 2    # TCP_REPAIR_QUEUE's values (Linux's)
# Why a Fast Open SYN's data was not taken (Linux's enum tcp_fastopen_client_fail, TCP_INFO's).
FAST_OPEN_COOKIE_UNAVAILABLE, FAST_OPEN_DATA_NOT_ACKED, FAST_OPEN_SYN_RETRANSMITTED = 1, 2, 3


@functools.cache
def window_shift(max_buffer: int) -> int:
    """The smallest RFC 7323 shift that lets a 16-bit window field cover ``max_buffer``."""
    shift = 0
    while (0xFFFF << shift) < max_buffer and shift < tcp.MAX_WINDOW_SCALE:
        shift += 1
    return shift


class Listener:
    """A listening endpoint's queues: handshakes under way and connections waiting for accept().

    Each queue holds up to ``backlog + 1`` entries, as Linux's do (``sk_acceptq_is_full`` and
    ``inet_csk_reqsk_queue_is_full`` compare with ``>``): ``listen(0)`` still takes one connection,
    and a server with a small backlog (socketserver's 5) overflows no sooner than on Linux.
    """

    __slots__ = ("backlog", "pending", "accepted", "held", "fast_open_pending")

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.pending: set[TCPEndpoint] = set()
        self.accepted: deque[TCPEndpoint] = deque()
        self.fast_open_pending = 0      # accepted with a Fast Open SYN, the handshake not yet complete
        # Segments that arrived while the accept queue was full (see TCPEndpoint._hold).
        self.held: deque[Segment] = deque()

    def accept_queue_full(self) -> bool:
        return len(self.accepted) > self.backlog

    def syn_queue_full(self) -> bool:
        return len(self.pending) > self.backlog


# Options that are one attribute each: flags, and numbers from 0 to a bound (others: EINVAL).
_FLAG_OPTIONS = {SockOpt.BIND_ADDRESS_NO_PORT: "bind_no_port", SockOpt.FREEBIND: "freebind",
                 SockOpt.TRANSPARENT: "transparent",
                 SockOpt.RECEIVE_ERRORS: "recverr", SockOpt.DONT_ROUTE: "dontroute",
                 SockOpt.REUSE_ADDRESS: "reuse_addr", SockOpt.REUSE_PORT: "reuse_port",
                 SockOpt.OUT_OF_BAND_INLINE: "oob_inline", SockOpt.ZEROCOPY: "zerocopy_on",
                 SockOpt.TCP_THIN_LINEAR_TIMEOUTS: "thin_linear_timeouts",
                 SockOpt.IPV6_AUTO_FLOW_LABEL: "auto_flow_label"}
_RANGED_OPTIONS = {SockOpt.TCP_SAVE_SYN: ("save_syn", 2), SockOpt.MIN_TTL: ("min_ttl", 255),
                   SockOpt.LOCAL_PORT_RANGE: ("local_port_range", 0xFFFFFFFF)}


class TCPEndpoint(TransportEndpoint):
    __slots__ = ("stack", "proto", "net_proto", "waiter_queue", "state", "stats", "stack_stats", "local", "remote",
                 "route", "_id", "_reservation", "_bound_addr", "_bound_nic", "snd", "rcv", "error", "pending_error",
                 "listener", "parent", "soft_error", "shut_read", "shut_write", "orphaned", "connect_reported",
                 "nodelay", "cork", "quickack", "keepalive", "keepalive_idle", "keepalive_interval", "keepalive_count",
                 "linger", "ttl", "tos", "send_buffer_size", "receive_buffer_size", "user_mss", "time_wait_timeout",
                 "fin_wait2_timeout", "cc_name", "reuse_addr", "reuse_port", "oob_inline", "sack_ok", "ts_ok",
                 "ts_offset", "ts_recent", "rcv_wscale", "ws_ok", "peer_mss", "max_retries", "syn_retries",
                 "handshake_tries", "user_timeout", "window_clamp", "notsent_lowat", "rcvlowat", "fast_open_queue",
                 "defer_accept", "defer_acked", "pmtudisc", "bind_no_port", "freebind", "recverr", "dontroute",
                 "min_ttl", "save_syn", "saved_syn", "stamp_reads", "read_stamp", "local_port_range", "mark",
                 "error_queue", "md5_keys", "md5_key", "socket_filter", "filter_locked", "state_timer",
                 "keepalive_timer", "delack_timer", "keepalive_probes", "last_receive", "_busy", "_backlog", "_pseudo",
                 "moderate_rcvbuf", "path_mss", "_header_room", "_tx_partial", "fast_open_connect", "fast_open_cookie",
                 "fast_open_slot", "fast_open_no_cookie", "fast_open_key", "stamper", "zerocopy_on", "zerocopy",
                 "data_segs_in", "last_data_received", "syn_data_acked", "repair", "repair_queue", "repair_seqs",
                 "thin_linear_timeouts", "rto_max", "auto_flow_label", "txhash", "rehash", "fast_open_fail",
                 "max_pacing_rate", "pacing", "pacing_rate_set", "txrehash", "reuseport_program", "transparent",
                 "tx_delay")

    def __init__(self, proto: TCPProtocol, net_proto: int, waiter_queue: WaiterQueue) -> None:
        stack = proto.stack
        self.stack = stack
        self.proto = proto
        self.net_proto = net_proto
        self.waiter_queue = waiter_queue
        self.state = S.CLOSED
        self.stats = stats = TransportEndpointStats()
        # Counted for every segment: created now rather than on first use (StatGroup.__getattr__).
        stats.packets_received = StatCounter()
        stats.packets_sent = StatCounter()
        self.stack_stats = proto.tcp_stats
        self.local = _UNBOUND
        self.remote: FullAddress | None = None
        self.route: Route | None = None
        self._id: TransportEndpointID | None = None
        self._reservation: tuple[Any, ...] | None = None
        self._bound_addr = b""
        self._bound_nic = 0
        self.snd: Sender | None = None
        self.rcv: Receiver | None = None
        self.error: Error | None = None             # what ended the connection; reported once to read/write
        self.pending_error: Error | None = None     # SO_ERROR
        self.soft_error: Error | None = None        # from ICMP while synchronized; reported on timeout
        # MSG_ERRQUEUE's: the ICMP errors that failed a connect, transmit stamps, MSG_ZEROCOPY's completions
        self.error_queue: list[QueuedError | TransmitStamp | ZeroCopyCompletion] | None = None
        self.md5_keys: list[md5.MD5Key] | None = None     # TCP_MD5SIG's, by peer address
        self.md5_key: bytes | None = None                 # the connection's: its peer's key, if it has one
        self.listener: Listener | None = None
        self.parent: TCPEndpoint | None = None      # the listener of a connection not yet accepted
        self.shut_read = False
        self.shut_write = False
        self.orphaned = False                       # closed by the user, finishing on its own
        self.connect_reported = True
        self.nodelay = False                        # Nagle on, as Linux
        self.cork = False
        self.quickack = False
        self.keepalive = False
        self.keepalive_idle = 7200.0                # Linux's tcp_keepalive_time / _intvl / _probes
        self.keepalive_interval = 75.0
        self.keepalive_count = 9
        self.linger: float | None = None
        self.ttl = 0
        self.tos = 0
        self.send_buffer_size = proto.send_buffer_size
        self.receive_buffer_size = proto.receive_buffer_size
        self.moderate_rcvbuf = True                 # auto-tune the receive buffer until the user sizes it
        self.user_mss = 0
        self.time_wait_timeout = proto.time_wait_timeout
        self.fin_wait2_timeout = proto.fin_wait2_timeout
        self.cc_name = proto.congestion_control
        self.reuse_addr = False
        self.reuse_port = False
        self.oob_inline = False
        self.sack_ok = False
        self.ts_ok = False
        self.ts_offset = 0
        self.ts_recent = 0
        self.rcv_wscale = 0
        self.ws_ok = False
        self.peer_mss = DEFAULT_MSS
        self.max_retries = proto.max_retries
        self.syn_retries = proto.syn_retries
        self.handshake_tries = 0
        self.user_timeout = 0.0                     # TCP_USER_TIMEOUT, seconds (0: retries alone decide)
        self.window_clamp = 0                       # TCP_WINDOW_CLAMP (0: none)
        self.notsent_lowat = 0                      # TCP_NOTSENT_LOWAT (<= 0: none)
        self.tx_delay = 0                           # TCP_TX_DELAY: µs each segment waits before it leaves
        self.rcvlowat = 1                           # SO_RCVLOWAT
        self.fast_open_queue = 0                    # TCP_FASTOPEN on a listener: Fast Open SYNs it takes at once
        self.fast_open_connect = False              # TCP_FASTOPEN_CONNECT: connect leaves the SYN to the first write
        self.fast_open_no_cookie = False            # TCP_FASTOPEN_NO_COOKIE: data with a SYN needs no cookie
        self.fast_open_key = b""                    # TCP_FASTOPEN_KEY: a listener's own cookie key (and backup)
        self.stamper: TransmitStamper | None = None  # SO_TIMESTAMPING's transmit stamps, once asked for
        self.zerocopy_on = False                        # SO_ZEROCOPY: MSG_ZEROCOPY writes keep their buffers
        self.zerocopy: ZeroCopySends | None = None      # those not yet free, once there has been one
        self.data_segs_in = 0           # (TCP_INFO) segments received with data, and when the last came
        self.last_data_received = 0.0
        self.syn_data_acked = False     # our SYN's data was acknowledged (Fast Open)
        self.fast_open_fail = 0         # and if not, why (FAST_OPEN_COOKIE_UNAVAILABLE, ...: Linux's)
        # TCP_REPAIR (checkpoint and restore, as CRIU uses Linux's): on, the queue TCP_QUEUE_SEQ and writes
        # and peeks address, and the sequence numbers a restored connection starts from (wire: the next
        # byte written, the next expected).
        self.repair = False
        self.repair_queue = REPAIR_NO_QUEUE
        self.repair_seqs = [0, 0]
        self.thin_linear_timeouts = proto.thin_linear_timeouts     # TCP_THIN_LINEAR_TIMEOUTS
        self.rto_max = MAX_RTO          # seconds the retransmission timer backs off to at most (TCP_RTO_MAX_MS)
        # SO_MAX_PACING_RATE, bytes a second: once set, what is sent is paced, for good, at the rate the window
        # and the RTT give, at most this (Linux's internal pacing, sk_pacing_status NEEDED); the rate until a
        # round trip is measured (Linux's sk_pacing_rate, which each SO_MAX_PACING_RATE can only lower).
        self.max_pacing_rate = UNLIMITED_PACING_RATE
        self.pacing = False
        self.pacing_rate_set = UNLIMITED_PACING_RATE
        # IPv6 flow labels (IPV6_AUTOFLOWLABEL): from a random hash of the connection's, drawn anew at every
        # timeout (Linux's sk_rethink_txhash: another label may take another path), and how often that was.
        self.auto_flow_label = True
        self.txhash = new_flow_hash()
        self.rehash = 0
        self.txrehash = True        # ... unless SO_TXREHASH says not to
        self.reuseport_program: Filter | None = None    # SO_ATTACH_REUSEPORT_CBPF's, until listen gives it a group
        self.fast_open_cookie: bytes | None = None  # the Fast Open option our SYN or SYN-ACK carries (b"": a request)
        # A Fast Open connection still in SYN-RCVD: the listener queue whose TCP_FASTOPEN allowance it takes.
        self.fast_open_slot: Listener | None = None
        self.defer_accept = 0                       # TCP_DEFER_ACCEPT on a listener: SYN-ACK timeouts
        self.defer_acked = False                    # (a child of such a listener: its bare ACK was dropped)
        self.pmtudisc = PMTUDISC_WANT               # IP_MTU_DISCOVER: DF on segments, frag-needed heeded
        self.bind_no_port = False                   # IP_BIND_ADDRESS_NO_PORT: a port-0 bind leaves the port to connect
        self.freebind = False                       # IP_FREEBIND: bind to an address not (yet) the stack's
        self.transparent = False                    # IP_TRANSPARENT: the same, for another host's (a proxy's)
        self.recverr = False                        # IP_RECVERR: a soft ICMP error is reported at once
        self.dontroute = False                      # SO_DONTROUTE: connect only to a destination on a link
        self.min_ttl = 0                            # IP_MINTTL / IPV6_MINHOPCOUNT (RFC 5082's GTSM); 0: none
        self.save_syn = 0                           # TCP_SAVE_SYN: 1 the SYN's IP and TCP headers, 2 its link's too
        self.saved_syn = b""                        # TCP_SAVED_SYN: a listener's last SYN, then its connection's
        self.stamp_reads = False                    # SO_TIMESTAMP: reads say when their bytes arrived
        self.local_port_range = 0                   # IP_LOCAL_PORT_RANGE (see PortManager.ephemeral_range)
        self.read_stamp: int | None = None          # ... the last read's (ns since the epoch)
        self.mark = 0                               # SO_MARK: carried by every segment sent
        self.socket_filter: Filter | None = None    # SO_ATTACH_FILTER: run on every segment received
        self.filter_locked = False                  # SO_LOCK_FILTER
        # Timers are created when first armed, and closed (their callbacks dropped) when the connection ends.
        self.state_timer: Timer | None = None       # an orphan's FIN-WAIT-2
        self.keepalive_timer: Timer | None = None
        self.delack_timer: Timer | None = None
        self.keepalive_probes = 0
        self.last_receive = 0.0                     # while keepalive is on: when the last segment came
        self._busy = 0
        self._backlog: list[tuple[PacketBuffer, bytes, bytes]] = []
        self._pseudo = 0
        self.path_mss = 0                           # what the path's MTU allows a segment (ICMP may lower it)
        self._header_room = 0                       # what the layers below the route put in front of TCP
        self._tx_partial = False                    # the route's NIC completes our checksums (TX offload)

    # === user API =================================================================================

    def bind(self, addr: FullAddress) -> None:
        if self.state is not S.CLOSED or self._reservation is not None:
            raise ErrAlreadyBound() if self._reservation is not None else ErrInvalidEndpointState()
        local = bytes(addr.addr)
        if local and not (self.freebind or self.transparent) and self.stack.local_address_nic(local) is None:
            raise ErrBadLocalAddress()
        if self.bind_no_port and not addr.port:
            # Linux's IP_BIND_ADDRESS_NO_PORT: only the address now; connect reserves a port free for
            # its 4-tuple (so many connections from one address need not each hold a port of their
            # own), listen an ephemeral one. Nothing is reserved, so binding again is allowed, as there.
            self._bound_addr = local
            self._bound_nic = addr.nic
            self.local = FullAddress(addr.nic, local, 0)
            return
        self._reserve(addr)

    def _reserve(self, addr: FullAddress) -> None:
        local = bytes(addr.addr)
        # (a socket in repair mode takes its port whatever holds it: Linux's SK_FORCE_REUSE)
        flags = PortFlags(self.reuse_addr or self.repair, self.reuse_port or self.repair)
        port = self.stack.ports.reserve((self.net_proto,), self.proto.number, local, addr.port, flags, addr.nic,
                                        local_range=self.local_port_range)
        self._reservation = ((self.net_proto,), self.proto.number, local, port, flags, addr.nic, None)
        self._bound_addr = local
        self._bound_nic = addr.nic
        self.local = FullAddress(addr.nic, local, port)

    def listen(self, backlog: int) -> None:
        backlog = min(max(backlog, 0), SOMAXCONN)
        if self.state is S.LISTEN:
            self.listener.backlog = backlog  # type: ignore[union-attr]
            return
        if self.state is not S.CLOSED or self.error is not None:
            raise ErrInvalidEndpointState()
        if self._reservation is None:       # unbound, or bound to an address alone: an ephemeral port
            self._reserve(FullAddress(self._bound_nic, self._bound_addr, 0))
        for other in self.stack.demux.lookup(self.net_proto, self.proto.number, self._bound_nic, b"",
                                             self._bound_addr, 0, self.local.port) or ():
            # SO_REUSEADDR lets ports be shared, but never by two listeners (only SO_REUSEPORT does that).
            if isinstance(other, TCPEndpoint) and other.state is S.LISTEN and \
                    not (self.reuse_port and other.reuse_port):
                raise ErrPortInUse()
        self._id = TransportEndpointID(self.local.port, self._bound_addr, 0, b"")
        self.stack.demux.register((self.net_proto,), self.proto.number, self._id, self, self.reuse_port,
                                  self._bound_nic, reuse_addr=self.reuse_addr, program=self.reuseport_program)
        self.reuseport_program = None       # (the group has it now, or had one of its own)
        self.listener = Listener(backlog)
        self._set_state(S.LISTEN)

    def accept(self) -> tuple[TCPEndpoint, WaiterQueue]:
        if self.state is not S.LISTEN:
            raise ErrInvalidEndpointState()
        accepted = self.listener.accepted  # type: ignore[union-attr]
        if not accepted:
            raise ErrWouldBlock()
        child = accepted.popleft()
        child.parent = None
        if self.listener.held:  # type: ignore[union-attr]
            self.stack.clock.call_soon(self.guarded, self._release_held)
        return child, child.waiter_queue

    def connect(self, addr: FullAddress, fast_open: bool = False) -> None:
        """Start the handshake (ErrConnectStarted). With ``fast_open`` (sendto's MSG_FASTOPEN) or
        TCP_FASTOPEN_CONNECT, and client Fast Open on: holding a cookie from this peer, return at once
        and leave the SYN to the first write, to carry its data (Linux's deferred connect); without
        one, the SYN asks for a cookie (RFC 7413 §4.1.1)."""
        state = self.state
        if state is S.SYN_SENT:
            raise ErrAlreadyConnected() if self.connect_reported else ErrAlreadyConnecting()
        if state in _SYNCHRONIZED or state is S.SYN_RCVD:
            if not self.connect_reported:
                self.connect_reported = True
                return
            raise ErrAlreadyConnected()
        if state is not S.CLOSED or self.error is not None or self.remote is not None:
            raise ErrInvalidEndpointState() if state is S.LISTEN else ErrConnectionAborted()
        remote = bytes(addr.addr)
        if not remote or not addr.port:
            raise ErrInvalidEndpointState() if not remote else ErrConnectionRefused()
        route = socket_route(self.stack, addr.nic or self._bound_nic, self._bound_addr, remote, self.net_proto,
                             self.dontroute, self.transparent)
        if route.broadcast or route.multicast:
            raise ErrNetworkUnreachable()
        dest = FullAddress(0, remote, addr.port)
        local = route.local_address
        if self._reservation is None:
            flags = PortFlags(self.reuse_addr, self.reuse_port)
            port = self.stack.ports.reserve((self.net_proto,), self.proto.number, local, 0, flags,
                                            self._bound_nic, dest, self.local_port_range)
            self._reservation = ((self.net_proto,), self.proto.number, local, port, flags, self._bound_nic, dest)
        else:
            port = self.local.port
        id = TransportEndpointID(port, local, addr.port, remote)
        if self.stack.demux.lookup_exact(self.net_proto, self.proto.number, self._bound_nic, id):
            raise ErrPortInUse()
        self._attach(route, id)
        if self.repair:
            self._restore()
            return
        iss, self.ts_offset = self.proto.initial_numbers(local, port, remote, addr.port)
        self.snd = Sender(self, iss, self._send_mss(None), self.cc_name)
        self.connect_reported = False
        self._set_state(S.SYN_SENT)
        proto = self.proto
        if (fast_open or self.fast_open_connect) and proto.fast_open & FAST_OPEN_CLIENT and self.md5_key is None:
            cached = proto.fast_open_cookies.get(remote)
            no_cookie = self.fast_open_no_cookie or proto.fast_open & FAST_OPEN_CLIENT_NO_COOKIE
            if cached is not None or no_cookie:
                cookie, peer_mss = cached if cached is not None else (b"", 0)
                self.fast_open_cookie = None if no_cookie else cookie
                self.snd.mss = self._send_mss(peer_mss or self.path_mss)
                self.connect_reported = True
                return
            self.fast_open_cookie = b""
            self.fast_open_fail = FAST_OPEN_COOKIE_UNAVAILABLE
        self.guarded(self._send_syn)
        raise ErrConnectStarted()

    def read(self, count: int) -> bytes:
        """Up to ``count`` bytes; b'' at end of stream. ErrWouldBlock if nothing is there yet."""
        rcv = self.rcv
        if rcv is not None and rcv.queue.size and not self.shut_read:
            if rcv.urg_seq >= 0:
                return self._read_at_mark(count)
            data = rcv.queue.read(count)
            self._after_read(len(data))
            return data
        return self._read_empty()

    def read_into(self, buffer: memoryview | bytearray) -> int:
        rcv = self.rcv
        if rcv is not None and rcv.queue.size and not self.shut_read:
            view = memoryview(buffer).cast("B")
            if rcv.urg_seq >= 0:
                data = self._read_at_mark(len(view))
                view[:len(data)] = data
                return len(data)
            n = rcv.queue.read_into(view)
            self._after_read(n)
            return n
        self._read_empty()
        return 0

    def peek(self, count: int, offset: int = 0) -> bytes:
        """Up to ``count`` bytes from ``offset`` bytes into what is queued (SO_PEEK_OFF), left queued;
        ErrWouldBlock while nothing is queued there (the reader waits for more, as Linux's)."""
        rcv = self.rcv
        if rcv is not None and rcv.queue.size > offset and not self.shut_read:
            if rcv.urg_seq >= rcv.read_seq + offset:
                data = self._read_at_mark(count, peek=True, start=offset)
            elif offset:
                data = rcv.queue.read(offset + count, peek=True)[offset:]
            else:
                data = rcv.queue.read(count, peek=True)
            if self.stamp_reads:    # (a peek is stamped with the last segment it took bytes from, as a read)
                self.read_stamp = rcv.stamp_of(rcv.read_seq + offset + len(data))
            return data
        return self._read_empty()

    def error_list(self) -> list[QueuedError | TransmitStamp | ZeroCopyCompletion]:
        """The error queue, made at its first entry (most connections never have one)."""
        if self.error_queue is None:
            self.error_queue = []
        return self.error_queue

    def read_error(self) -> QueuedError | TransmitStamp | ZeroCopyCompletion:
        """The oldest queued ICMP error, transmit stamp or MSG_ZEROCOPY completion (never waits: ErrWouldBlock if
        none); the socket's error becomes the next one's, if an ICMP error is next (Linux's
        sock_dequeue_err_skb)."""
        if not self.error_queue:
            raise ErrWouldBlock()
        entry = self.error_queue.pop(0)
        if type(entry) is TransmitStamp:
            self.stamper.dequeued(entry)  # type: ignore[union-attr]
        if self.error_queue and type(self.error_queue[0]) is QueuedError:
            self.error = self.pending_error = type(self.error_queue[0].error)()
        return entry

    def _read_empty(self) -> bytes:
        if self.error is not None:
            err, self.error = self.error, None
            self.pending_error = None
            raise err
        rcv = self.rcv
        if self.shut_read or (rcv is not None and rcv.fin_received) or \
                (self.state is S.CLOSED and self.remote is not None):
            return b""
        if self.state in _SYNCHRONIZED or self.state in (S.SYN_SENT, S.SYN_RCVD):
            raise ErrWouldBlock()
        self.stats.read_errors.not_connected.increment()
        raise ErrNotConnected()

    def _after_read(self, count: int) -> None:
        snd, rcv = self.snd, self.rcv
        if rcv.consumed(count, snd.srtt if snd is not None else 0.0):  # type: ignore[union-attr]
            self.proto.owe_ack(self)
        if self.stamp_reads:
            self.read_stamp = rcv.read_stamp()  # type: ignore[union-attr]

    def write(self, data: bytes | bytearray | memoryview, options: WriteOptions = DEFAULT_WRITE_OPTIONS) -> int:
        """Queue as much of ``data`` as the send buffer takes (possibly less than all); returns how much."""
        if self.error is not None:
            err, self.error = self.error, None
            if self.pending_error is err:
                self.pending_error = None   # reported once (Linux's sock_error clears sk_err)
            raise err
        state = self.state
        if self.shut_write or state in (_FIN_WAIT1, _FIN_WAIT2, _CLOSING, _LAST_ACK):
            self.stats.write_errors.write_closed.increment()
            raise ErrClosedForSend()
        snd = self.snd
        if state is not _ESTABLISHED and state is not _CLOSE_WAIT:
            if state is _SYN_SENT and not snd.max:  # type: ignore[union-attr]
                size = self._send_syn_data(data)
                if size and options.zerocopy and self.zerocopy_on:   # (the SYN's bytes are a copy, as Linux's)
                    self._zerocopy_written(options.continues)
                return size
            if state is _SYN_SENT or (state is _SYN_RCVD and self.fast_open_slot is None):
                raise ErrWouldBlock()
            if state is not _SYN_RCVD:      # (a Fast Open server sends before the handshake completes)
                self.stats.write_errors.invalid_endpoint_state.increment()
                raise ErrClosedForSend() if self.remote is not None else ErrNotConnected()
        assert snd is not None
        if self.repair:
            return self._repair_write(data)
        space = self.send_buffer_size - len(snd.buffer)
        if space <= 0 or (self.notsent_lowat > 0 and snd.buffer.end - snd.nxt >= self.notsent_lowat):
            if space <= 0:
                snd.blocked = True
                if snd.nxt >= snd.buffer.end:
                    snd.chrono_start(CHRONO_SNDBUF_LIMITED)     # all sent, and no room for more
            raise ErrWouldBlock()
        size = len(data)
        if size > space:
            data = memoryview(data)[:space]
            size = space
        if not size:
            return 0
        keep = options.zerocopy and self.zerocopy_on
        self._enter()
        try:
            snd.check_app_limited()
            snd.queue(data, keep)
            if keep:
                self._zerocopy_written(options.continues)
            if self.stamper is not None:
                self.stamper.written(snd.buffer.end - 1)
            if options.oob:
                snd.up = snd.buffer.end     # urgent mode: the pointer goes out with every segment now
                snd.send_data()
            elif not options.more:
                if snd.nxt != snd.una and snd.buffer.end - snd.nxt < snd.burst and self.proto.autocorking:
                    self.proto.push_soon(self)      # less than a full (super-)segment: wait for more
                else:
                    snd.send_data()
        finally:
            self._exit()
        return size

    def zerocopy_call_returned(self) -> None:
        """A MSG_ZEROCOPY send call has returned (its writes are all made): it completes once acknowledged."""
        if self.zerocopy is not None and self.zerocopy.open:
            self._enter()
            try:
                self.zerocopy.call_returned(self)
            finally:
                self._exit()

    def _zerocopy_written(self, continues: bool) -> None:
        """A MSG_ZEROCOPY write has queued bytes up to the send buffer's end (``continues``: for the send call
        of the write before)."""
        if self.zerocopy is None:
            self.zerocopy = ZeroCopySends()
        self.zerocopy.written(self.snd.buffer.end - 1, continues)  # type: ignore[union-attr]

    # --- TCP_REPAIR --------------------------------------------------------------------------------

    def set_repair(self, value: int) -> None:
        """TCP_REPAIR: 1 on; 0 off, with a window probe that gets the peer to tell its window and what it
        holds; -1 off without one (Linux's TCP_REPAIR_OFF_NO_WP). Closed or established connections only."""
        if self.state is not S.CLOSED and self.state is not S.ESTABLISHED:
            raise ErrNotPermitted()
        if value not in (-1, 0, 1):
            raise ErrInvalidOptionValue()
        self.repair = value == 1
        self.repair_queue = REPAIR_NO_QUEUE
        snd, rcv = self.snd, self.rcv
        if self.repair or self.state is not S.ESTABLISHED or snd is None or rcv is None:
            return
        self._enter()
        try:
            if value == 0:
                # Linux's tcp_send_window_probe: an already acknowledged sequence number, which the peer
                # answers with an ACK, whose window is then taken whatever it acknowledges.
                snd.wl1 = rcv.nxt - 1
                self.send_segment(snd.una - 1, ACK)
            snd.send_data()
        finally:
            self._exit()

    def set_repair_queue(self, queue: int) -> None:
        if not self.repair:
            raise ErrNotPermitted()
        if not REPAIR_NO_QUEUE <= queue <= REPAIR_SEND_QUEUE:
            raise ErrInvalidOptionValue()
        self.repair_queue = queue

    def set_queue_seq(self, seq: int) -> None:
        """TCP_QUEUE_SEQ: where the queue in repair starts, before the connection is restored."""
        if self.state is not S.CLOSED:
            raise ErrNotPermitted()
        if self.repair_queue == REPAIR_NO_QUEUE:
            raise ErrInvalidOptionValue()
        self.repair_seqs[self.repair_queue == REPAIR_RECV_QUEUE] = seq & MASK

    def queue_seq(self) -> int:
        """TCP_QUEUE_SEQ: the sequence number after the queue in repair (the next byte written or expected)."""
        queue = self.repair_queue
        if queue == REPAIR_NO_QUEUE:
            raise ErrInvalidOptionValue()
        snd, rcv = self.snd, self.rcv
        if queue == REPAIR_SEND_QUEUE:
            return snd.wire(snd.buffer.end) if snd is not None else self.repair_seqs[0]
        return (rcv.irs + rcv.nxt) & MASK if rcv is not None else self.repair_seqs[1]

    def set_repair_options(self, options: list[tuple[int, int]]) -> None:
        """TCP_REPAIR_OPTIONS: what the handshake had agreed, (TCP option kind, value) each (Linux's
        tcp_repair_options_est): MSS, window scales (ours in the high 16 bits), SACK, timestamps; only
        before the restored connection has sent anything."""
        if not self.repair:
            raise ErrInvalidOptionValue()
        snd, rcv = self.snd, self.rcv
        if self.state is not S.ESTABLISHED or snd is None or rcv is None or snd.max > 1:
            raise ErrNotPermitted()
        for kind, value in options:
            if kind == tcp.OPT_MSS:
                self.peer_mss = value
            elif kind == tcp.OPT_WS:
                self.ws_ok = True
                snd.wscale, self.rcv_wscale = value & 0xFFFF, value >> 16
                rcv.wscale = self.rcv_wscale
            elif kind == tcp.OPT_SACK_PERMITTED:
                if not self.sack_ok:
                    self.sack_ok = rcv.sack_ok = True
                    snd.enable_sack()
            elif kind == tcp.OPT_TIMESTAMP:
                self.ts_ok = True
        snd.mss = self._send_mss(self.peer_mss)     # (less the timestamps' option bytes, if they came on)
        rcv.mss = min(self.peer_mss, self.path_mss) - self.option_bytes()
        self._update_burst()

    def repair_window(self) -> tuple[int, int, int, int, int]:
        """TCP_REPAIR_WINDOW: the peer's sequence number of the last window update (wire), its window and
        the largest it offered, ours and where it starts (wire)."""
        snd, rcv = self.snd, self.rcv
        if snd is None or rcv is None:
            return 0, 0, 0, 0, 0
        return ((rcv.irs + snd.wl1) & MASK, snd.wnd, snd.max_wnd, max(rcv.adv_edge - rcv.nxt, 0),
                (rcv.irs + rcv.nxt) & MASK)

    def set_repair_window(self, snd_wl1: int, snd_wnd: int, max_window: int, rcv_wnd: int, rcv_wup: int) -> None:
        """Set what ``repair_window`` reads, checked as Linux's tcp_repair_set_window: neither sequence number
        beyond what is possible."""
        if not self.repair:
            raise ErrNotPermitted()
        snd, rcv = self.snd, self.rcv
        if snd is None or rcv is None:
            raise ErrInvalidOptionValue()
        rcv_nxt = (rcv.irs + rcv.nxt) & MASK
        if (snd_wl1 - (rcv_nxt + rcv_wnd)) & MASK and not (snd_wl1 - (rcv_nxt + rcv_wnd)) & 0x80000000 or \
                (rcv_wup - rcv_nxt) & MASK and not (rcv_wup - rcv_nxt) & 0x80000000:
            raise ErrInvalidOptionValue()
        snd.wl1 = rcv.nxt - ((rcv_nxt - snd_wl1) & MASK)
        snd.wnd, snd.max_wnd = snd_wnd, max_window
        rcv.adv_edge = rcv.nxt - ((rcv_nxt - rcv_wup) & MASK) + rcv_wnd

    def set_timestamp(self, tsval: int) -> None:
        """TCP_TIMESTAMP in repair mode: the clock our timestamps carry goes on from ``tsval`` (a restored
        connection's, so that the peer's PAWS accepts them)."""
        if not self.repair:
            raise ErrNotPermitted()
        self.ts_offset = (tsval - int(self.stack.clock.now() * 1000)) & MASK

    def _restore(self) -> None:
        """connect() in repair mode: no handshake, the connection is established from the sequence numbers
        TCP_QUEUE_SEQ set, with no option agreed until TCP_REPAIR_OPTIONS (Linux's tcp_connect in repair)."""
        write_seq, rcv_nxt = self.repair_seqs
        self.peer_mss = DEFAULT_MSS
        self.snd = snd = Sender(self, (write_seq - 1) & MASK, self._send_mss(DEFAULT_MSS), self.cc_name)
        snd.una = snd.nxt = snd.max = 1
        snd.wl2 = 1
        self.sack_ok = self.ts_ok = self.ws_ok = False
        self.rcv_wscale = 0
        self._new_receiver((rcv_nxt - 1) & MASK)
        self.connect_reported = True
        self._established()

    def _repair_write(self, data: bytes | bytearray | memoryview) -> int:
        """A write in repair mode restores a queue: into the receive queue as if it had arrived, into the
        send queue as if sent and not yet acknowledged (retransmitted in time if the peer lacks it)."""
        snd, rcv = self.snd, self.rcv
        assert snd is not None and rcv is not None
        if self.repair_queue == REPAIR_RECV_QUEUE:
            rcv.queue.append(memoryview(bytes(data)))
            rcv.nxt += len(data)
            rcv.adv_edge = max(rcv.adv_edge, rcv.nxt)
            self.waiter_queue.notify(_NOTIFY_IN)
            return len(data)
        if self.repair_queue != REPAIR_SEND_QUEUE:
            raise ErrInvalidOptionValue()
        start = snd.buffer.end
        snd.queue(data)
        snd.nxt = snd.max = snd.buffer.end
        if snd.rack is not None:
            snd.rack.sent(start, snd.max, snd.now(), False)
        snd.una_since = snd.now()
        self.guarded(snd.timer.reset, snd.rto)
        return len(data)

    def repair_peek(self, count: int) -> bytes:
        """recv(MSG_PEEK) in repair mode: what the queue in repair holds (the send queue: everything not yet
        acknowledged, sent or not), for a checkpoint."""
        if self.repair_queue == REPAIR_RECV_QUEUE:
            return self.peek(count)
        if self.repair_queue != REPAIR_SEND_QUEUE:
            raise ErrInvalidOptionValue()
        snd = self.snd
        if snd is None:
            return b""
        size = min(count, snd.buffer.end - snd.una)
        return bytes(snd.buffer.get(snd.una, size)) if size > 0 else b""  # type: ignore[arg-type]  # (one piece: not scatter)

    def rethink_txhash(self) -> None:
        """A timeout: another flow label, which may take another path (Linux's sk_rethink_txhash), unless
        SO_TXREHASH turned that off."""
        if self.txrehash:
            self.txhash = new_flow_hash()
            self.rehash += 1

    def _send_syn_data(self, data: bytes | bytearray | memoryview) -> int:
        """The first write after a deferred Fast Open connect: what fits beside the largest options
        in one segment of the peer's MSS goes with the SYN (Linux's tcp_send_syn_data); returns how much."""
        snd = self.snd
        assert snd is not None
        size = min(len(data), max(snd.mss - tcp.MAX_OPTIONS_SIZE, 0), self.send_buffer_size)
        snd.queue(memoryview(data)[:size])
        self.guarded(self._send_syn)
        return size

    def shutdown(self, flags: ShutdownFlags) -> None:
        state = self.state
        if state is S.LISTEN and flags & ShutdownFlags.READ:
            self.close()
            return
        if state not in _SYNCHRONIZED and state not in (S.SYN_SENT, S.SYN_RCVD):
            raise ErrNotConnected()
        self._enter()
        try:
            if flags & ShutdownFlags.READ and not self.shut_read:
                self.shut_read = True
                if self.rcv is not None:
                    self.rcv.queue.clear()
                self.waiter_queue.notify(_FIN_EVENTS)
            if flags & ShutdownFlags.WRITE and not self.shut_write:
                self.shut_write = True
                self._send_fin()
                self.waiter_queue.notify(_SHUT_WRITE_EVENTS)
        finally:
            self._exit()

    def close(self) -> None:
        """Close as the socket's close() does: FIN after the data, or RST if unread data would be lost
        or SO_LINGER is zero; the connection finishes on its own afterwards."""
        state = self.state
        self._enter()
        try:
            if self.repair and state is not S.CLOSED:
                self._finish(None)      # silently: the connection lives on where it is restored
            elif state is S.LISTEN:
                self._close_listener()
            elif state is S.CLOSED:
                self._release()
            elif state in (S.SYN_SENT,):
                self._finish(None)
            elif self.linger == 0 or (self.rcv is not None and self.rcv.queue.size):
                self._reset_and_finish()
            elif state in _SYNCHRONIZED or state is S.SYN_RCVD:
                self.orphaned = True
                self.shut_read = True
                if not self.shut_write:
                    self.shut_write = True
                    self._send_fin()
                if self.state is S.FIN_WAIT2:
                    self._orphan_in_fin_wait2()
        finally:
            self._exit()

    def _syn_window(self) -> int:
        """The window a SYN offers (never scaled): the receive buffer, within TCP_WINDOW_CLAMP."""
        return min(self.receive_buffer_size, 0xFFFF, self.window_clamp or 0xFFFF)

    def _orphan_in_fin_wait2(self) -> None:
        """Closed, our FIN acknowledged, the peer's still to come: wait so long for it (TCP_LINGER2),
        or, negative, reset at once (Linux's tcp_close with linger2 < 0)."""
        if self.fin_wait2_timeout < 0:
            self._reset_and_finish()
        else:
            self._arm_state_timer(self.fin_wait2_timeout)

    def readiness(self, mask: int) -> int:
        """The EventMask bits of ``mask`` that hold now, as Linux's tcp_poll decides them (an int:
        readiness is asked on every wait, and IntFlag arithmetic costs microseconds)."""
        state = self.state
        rcv = self.rcv
        if state is _ESTABLISHED and rcv is not None and not (self.shut_read or self.shut_write or rcv.fin_received) \
                and self.error is None and self.pending_error is None and rcv.urg_seq < 0 and not self.error_queue:
            # the common case
            ready = _IN if rcv.queue.size >= self.rcvlowat else 0
            if self._writable():
                ready |= _OUT
            return ready & int(mask)
        if state is _LISTEN:
            ready = _IN if self.listener.accepted else 0  # type: ignore[union-attr]
        else:
            done = state is _CLOSED and self.remote is not None     # reset, timed out or finished
            read_shut = self.shut_read or done or (rcv is not None and rcv.fin_received)
            write_shut = self.shut_write or done
            ready = 0
            if state is _CLOSED or (read_shut and write_shut):
                ready |= _HUP
            if read_shut:
                ready |= _IN | _RDHUP
            if (state is not _SYN_SENT and state is not _SYN_RCVD) or self.fast_open_slot is not None:
                if rcv is not None and rcv.queue.size - self._urgent_held() >= self.rcvlowat:
                    ready |= _IN
                if write_shut or state is _CLOSED or self._writable():
                    ready |= _OUT
            elif state is _SYN_SENT and not self.snd.max:  # type: ignore[union-attr]
                ready |= _OUT       # a deferred Fast Open connect waits for its first write
        if self.pending_error is not None or self.error is not None or self.error_queue:
            ready |= _ERR
            if self.error is not None:
                ready |= _IN        # a reader blocked on a live connection wakes to be told (IP_RECVERR)
        if rcv is not None and rcv.urg_byte >= 0 and not rcv.urg_read:
            ready |= _PRI
        return ready & int(mask)

    def _writable(self) -> bool:
        """Room in the send buffer, and (TCP_NOTSENT_LOWAT) less than so much of it not yet sent."""
        snd = self.snd
        assert snd is not None
        buffer = snd.buffer
        return self.send_buffer_size > len(buffer) and (
            self.notsent_lowat <= 0 or buffer.end - snd.nxt < self.notsent_lowat)

    def get_local_address(self) -> FullAddress:
        return self.local

    def get_remote_address(self) -> FullAddress:
        if self.remote is None or self.state not in _SYNCHRONIZED:
            raise ErrNotConnected()
        return self.remote

    def info(self) -> TCPInfo:
        """TCP_INFO's snapshot (see TCPInfo)."""
        snd, rcv = self.snd, self.rcv
        now = self.stack.clock.now()
        counts: dict[str, Any] = {"segs_out": self.stats.packets_sent.value,
                                  "segs_in": self.stats.packets_received.value, "data_segs_in": self.data_segs_in,
                                  "syn_data_acked": self.syn_data_acked, "rehash": self.rehash,
                                  "fast_open_fail": self.fast_open_fail, "pacing_rate": self.pacing_rate_set,
                                  "max_pacing_rate": self.max_pacing_rate}
        if snd is not None:
            data_end = snd.buffer.end     # (payload is [1, data_end): the SYN took 0, the FIN takes data_end)
            counts.update(bytes_acked=snd.una, notsent_bytes=max(data_end - snd.max, 0),
                          bytes_sent=max(min(snd.max, data_end) - 1, 0) + snd.bytes_retrans,
                          bytes_retrans=snd.bytes_retrans, dsack_dups=snd.dsack_dups, total_rto=snd.total_rto,
                          total_rto_recoveries=snd.total_rto_recoveries, ca_state=_ca_state(snd),
                          probes=snd.retransmits if snd.persisting else 0, backoff=snd.retransmits,
                          last_data_sent=now - snd.last_sent if snd.last_sent else 0.0,
                          last_ack_received=now - snd.last_ack_time if snd.last_ack_time else 0.0,
                          data_segs_out=snd.data_segs_out, delivered=snd.delivered,
                          delivery_rate=snd.delivery_rate, app_limited=snd.rate_app_limited,
                          chrono=snd.chrono_times()[1:],
                          reord_seen=snd.rack.reorderings if snd.rack is not None else 0,
                          total_rto_time=snd.total_rto_time + (now - snd.rto_stamp if snd.rto_stamp else 0.0),
                          pacing_rate=snd.pacing_rate())
        if rcv is not None:
            counts.update(bytes_received=rcv.nxt - 1, rcv_ooopack=rcv.ooo_packets)
        if self.last_data_received:
            counts.update(last_data_received=now - self.last_data_received)
        return TCPInfo(self.state, snd.srtt if snd else 0.0, snd.rttvar if snd else 0.0, snd.rto if snd else 0.0,
                       snd.min_rtt if snd else 0.0, snd.mss if snd else 0, rcv.mss if rcv else 0,
                       snd.cwnd if snd else 0, snd.ssthresh if snd else 0,
                       snd.retransmits if snd and not snd.persisting else 0,     # (a probe's are probes)
                       snd.total_retransmits if snd else 0, snd.outstanding if snd else 0, snd.wnd if snd else 0,
                       rcv.adv_edge - rcv.nxt if rcv else 0, self.cc_name,
                       *(snd.rack.segments(snd.mss) if snd is not None and snd.rack is not None else ()), **counts)

    # --- options ----------------------------------------------------------------------------------

    def set_sock_opt(self, opt: SockOpt, value: Any) -> None:
        if opt is SockOpt.DELAY:
            self.nodelay = not value
            self._push()
        elif opt is SockOpt.CORK:
            self.cork = bool(value)
            if not self.cork:
                self._push()
        elif opt is SockOpt.QUICK_ACK:
            self.quickack = bool(value)
            if self.quickack and self.delack_timer is not None and self.delack_timer.armed:
                self.send_ack()
        elif opt is SockOpt.KEEPALIVE_ENABLED:
            if value and not self.keepalive:    # (what arrives is timed only while keepalive is on)
                self.last_receive = self.stack.clock.now()
                self.keepalive_probes = 0
            self.keepalive = bool(value)
            self._arm_keepalive()
        elif opt in (SockOpt.KEEPALIVE_IDLE, SockOpt.KEEPALIVE_INTERVAL):
            if value <= 0:
                raise ErrInvalidOptionValue()
            if opt is SockOpt.KEEPALIVE_IDLE:
                self.keepalive_idle = float(value)
            else:
                self.keepalive_interval = float(value)
            self._arm_keepalive()
        elif opt is SockOpt.KEEPALIVE_COUNT:
            if not 1 <= int(value) <= 127:
                raise ErrInvalidOptionValue()
            self.keepalive_count = int(value)
        elif opt is SockOpt.LINGER:
            self.linger = None if value is None else max(0.0, float(value))
        elif opt is SockOpt.TTL:
            if not 0 <= int(value) <= 255:
                raise ErrInvalidOptionValue()
            self.ttl = int(value)
        elif opt is SockOpt.IPV4_TOS:
            self.tos = int(value) & 0xFF
        elif opt is SockOpt.MAX_SEG:
            if value and not MIN_MSS <= int(value) <= 65535 - 40:
                raise ErrInvalidOptionValue()
            self.user_mss = int(value)
        elif opt is SockOpt.SEND_BUFFER_SIZE:
            self.send_buffer_size = max(4096, min(int(value), 16 << 20))
            self.on_send_space()
        elif opt is SockOpt.RECEIVE_BUFFER_SIZE:
            self.receive_buffer_size = max(4096, min(int(value), 16 << 20))
            self.moderate_rcvbuf = False
            if self.rcv is not None:
                self.rcv.buffer_size = self.receive_buffer_size
                self.rcv.moderate = False
        elif opt is SockOpt.MODERATE_RECEIVE_BUFFER:
            self.moderate_rcvbuf = bool(value)
            if self.rcv is not None:
                self.rcv.moderate = bool(value)
        elif opt is SockOpt.TCP_TIME_WAIT_TIMEOUT:
            self.time_wait_timeout = max(0.0, float(value))
        elif opt is SockOpt.TCP_LINGER_TIMEOUT:
            self.fin_wait2_timeout = -1.0 if value < 0 else float(value)
        elif opt is SockOpt.TCP_SYN_COUNT:
            if not 1 <= value <= 127:
                raise ErrInvalidOptionValue()
            self.syn_retries = int(value)
        elif opt is SockOpt.TCP_USER_TIMEOUT:
            if value < 0:
                raise ErrInvalidOptionValue()
            self.user_timeout = float(value)
        elif opt is SockOpt.TCP_WINDOW_CLAMP:
            if not value and self.state is not S.CLOSED:
                raise ErrInvalidOptionValue()
            self.window_clamp = max(int(value), _MIN_WINDOW_CLAMP) if value else 0
            if self.rcv is not None:
                self.rcv.clamp = self.window_clamp
        elif opt is SockOpt.TCP_TX_DELAY:
            if not 0 <= int(value) < 1 << 28:           # (Linux: srtt_us, a u32 shifted by 3, must hold it)
                raise ErrInvalidOptionValue()
            self.tx_delay = int(value)
        elif opt is SockOpt.TCP_NOTSENT_LOWAT:
            self.notsent_lowat = int(value)         # (Linux keeps it as given; <= 0: no limit)
            self.on_send_space()
        elif opt is SockOpt.RECEIVE_LOW_WATER:
            self.rcvlowat = max(1, min(int(value), self.proto.max_receive_buffer_size // 2))
            if self.rcv is not None and self.rcv.queue.size >= self.rcvlowat:
                self.waiter_queue.notify(_NOTIFY_IN)
        elif opt is SockOpt.MTU_DISCOVER:
            if not PMTUDISC_DONT <= int(value) <= PMTUDISC_OMIT:
                raise ErrInvalidOptionValue()
            self.pmtudisc = int(value)
        elif opt is SockOpt.TCP_DEFER_ACCEPT:
            self.defer_accept = max(0, min(int(value), 255))
        elif opt is SockOpt.TCP_FAST_OPEN:
            if value < 0 or self.state not in (S.CLOSED, S.LISTEN):
                raise ErrInvalidOptionValue()
            self.fast_open_queue = int(value)
        elif opt is SockOpt.TCP_FAST_OPEN_CONNECT:
            if not 0 <= int(value) <= 1:
                raise ErrInvalidOptionValue()
            if not self.proto.fast_open & FAST_OPEN_CLIENT:
                raise ErrNotSupported()
            if self.state is not S.CLOSED:
                raise ErrInvalidOptionValue()
            self.fast_open_connect = bool(value)
        elif opt is SockOpt.TCP_FAST_OPEN_NO_COOKIE:
            if not 0 <= int(value) <= 1 or self.state not in (S.CLOSED, S.LISTEN):
                raise ErrInvalidOptionValue()
            self.fast_open_no_cookie = bool(value)
        elif opt is SockOpt.TRANSMIT_TIMESTAMPING:
            if self.stamper is None:
                self.stamper = TransmitStamper()
            snd = self.snd
            self.stamper.set_flags(int(value), snd.una if snd else 0, snd.buffer.end if snd else 0)
        elif opt is SockOpt.TCP_RTO_MAX:
            if not 1.0 <= value <= MAX_RTO:
                raise ErrInvalidOptionValue()
            self.rto_max = float(value)
        elif opt is SockOpt.TCP_TXREHASH:
            self.txrehash = bool(value)
        elif opt is SockOpt.REUSE_PORT_PROGRAM:
            self.reuseport_program = reuseport_program(self.stack.demux, self, value, self.reuse_port,
                                                       self.reuseport_program)
        elif opt is SockOpt.MAX_PACING_RATE:
            self.max_pacing_rate = rate = int(value)
            self.pacing = self.pacing or rate != UNLIMITED_PACING_RATE
            self.pacing_rate_set = min(self.pacing_rate_set, rate)
        elif opt is SockOpt.TCP_FAST_OPEN_KEY:
            if len(value) not in (16, 32):
                raise ErrInvalidOptionValue()
            self.fast_open_key = bytes(value)
        elif opt is SockOpt.CONGESTION_CONTROL:
            if value not in congestion.available():
                raise ErrInvalidOptionValue()
            self.cc_name = value
            if self.snd is not None:
                self.snd.set_congestion_control(value)
        elif opt in _FLAG_OPTIONS:
            setattr(self, _FLAG_OPTIONS[opt], bool(value))
        elif opt in _RANGED_OPTIONS:
            attribute, most = _RANGED_OPTIONS[opt]
            if not 0 <= int(value) <= most:
                raise ErrInvalidOptionValue()
            setattr(self, attribute, int(value))
        elif opt is SockOpt.TIMESTAMP:
            self.stamp_reads = bool(value)
            if self.rcv is not None:
                self.rcv.stamps = deque() if value else None
                self.rcv.clock_ns = self.stack.clock.now_ns
        elif opt is SockOpt.MARK:
            self.mark = int(value) & 0xFFFFFFFF
        elif opt is SockOpt.SOCKET_FILTER or opt is SockOpt.LOCK_FILTER:
            if self.filter_locked and (opt is SockOpt.SOCKET_FILTER or not value):
                raise ErrNotPermitted()             # Linux: neither changes once locked
            if opt is SockOpt.SOCKET_FILTER:
                self.socket_filter = value
            else:
                self.filter_locked = bool(value)
        elif opt is SockOpt.BIND_TO_DEVICE:
            self._bound_nic = int(value)
        else:
            raise ErrUnknownProtocolOption()

    def get_sock_opt(self, opt: SockOpt) -> Any:
        if opt is SockOpt.ERROR:
            err, self.pending_error = self.pending_error, None
            if err is not None and self.error is err:
                self.error = None   # reported once, here: Linux's SO_ERROR clears sk_err (reads then see EOF)
            return err
        if opt is SockOpt.RECEIVE_QUEUE_SIZE:
            return self.rcv.queue.size if self.rcv is not None else 0
        if opt is SockOpt.SEND_QUEUE_SIZE:
            return len(self.snd.buffer) if self.snd is not None else 0
        if opt is SockOpt.TCP_INFO:
            return self.info()
        if opt is SockOpt.AVAILABLE_CONGESTION_CONTROL:
            return " ".join(congestion.available())
        if opt is SockOpt.MAX_SEG:
            if self.repair and self.snd is not None:
                return self.peer_mss        # (what TCP_REPAIR_OPTIONS set: Linux's mss_clamp)
            return self.snd.mss if self.snd is not None else (self.user_mss or DEFAULT_MSS)
        if opt is SockOpt.RECEIVE_BUFFER_SIZE:
            return self.rcv.buffer_size if self.rcv is not None else self.receive_buffer_size
        if opt is SockOpt.PATH_MTU:
            if self.route is None or self.state not in _SYNCHRONIZED:
                raise ErrNotConnected()
            return self.route.path_mtu()
        simple = {SockOpt.DELAY: lambda: int(not self.nodelay), SockOpt.CORK: lambda: int(self.cork),
                  SockOpt.QUICK_ACK: lambda: int(self.quickack), SockOpt.KEEPALIVE_ENABLED: lambda: int(self.keepalive),
                  SockOpt.KEEPALIVE_IDLE: lambda: self.keepalive_idle,
                  SockOpt.KEEPALIVE_INTERVAL: lambda: self.keepalive_interval,
                  SockOpt.KEEPALIVE_COUNT: lambda: self.keepalive_count, SockOpt.LINGER: lambda: self.linger,
                  SockOpt.TTL: lambda: self.ttl, SockOpt.IPV4_TOS: lambda: self.tos,
                  SockOpt.SEND_BUFFER_SIZE: lambda: self.send_buffer_size,
                  SockOpt.TCP_TIME_WAIT_TIMEOUT: lambda: self.time_wait_timeout,
                  SockOpt.TCP_LINGER_TIMEOUT: lambda: self.fin_wait2_timeout,
                  SockOpt.TCP_TIMESTAMP: self.tsval,
                  SockOpt.TCP_SYN_COUNT: lambda: self.syn_retries, SockOpt.TCP_USER_TIMEOUT: lambda: self.user_timeout,
                  SockOpt.TCP_WINDOW_CLAMP: lambda: self.window_clamp,
                  SockOpt.TCP_NOTSENT_LOWAT: lambda: self.notsent_lowat,
                  SockOpt.TCP_TX_DELAY: lambda: self.tx_delay,
                  SockOpt.RECEIVE_LOW_WATER: lambda: self.rcvlowat, SockOpt.TCP_FAST_OPEN: lambda: self.fast_open_queue,
                  SockOpt.TCP_FAST_OPEN_CONNECT: lambda: int(self.fast_open_connect),
                  SockOpt.TCP_FAST_OPEN_NO_COOKIE: lambda: int(self.fast_open_no_cookie),
                  SockOpt.TCP_FAST_OPEN_KEY: lambda: self.fast_open_key,
                  SockOpt.TCP_DEFER_ACCEPT: lambda: self.defer_accept, SockOpt.MTU_DISCOVER: lambda: self.pmtudisc,
                  SockOpt.BIND_ADDRESS_NO_PORT: lambda: int(self.bind_no_port),
                  SockOpt.FREEBIND: lambda: int(self.freebind), SockOpt.MARK: lambda: self.mark,
                  SockOpt.TRANSPARENT: lambda: int(self.transparent),
                  SockOpt.RECEIVE_ERRORS: lambda: self.recverr, SockOpt.DONT_ROUTE: lambda: self.dontroute,
                  SockOpt.MIN_TTL: lambda: self.min_ttl, SockOpt.TCP_SAVE_SYN: lambda: self.save_syn,
                  SockOpt.TIMESTAMP: lambda: self.stamp_reads, SockOpt.LOCAL_PORT_RANGE: lambda: self.local_port_range,
                  SockOpt.SOCKET_FILTER: lambda: self.socket_filter,
                  SockOpt.LOCK_FILTER: lambda: int(self.filter_locked),
                  SockOpt.CONGESTION_CONTROL: lambda: self.cc_name,
                  SockOpt.REUSE_ADDRESS: lambda: int(self.reuse_addr), SockOpt.REUSE_PORT: lambda: int(self.reuse_port),
                  SockOpt.BIND_TO_DEVICE: lambda: self._bound_nic,
                  SockOpt.OUT_OF_BAND_INLINE: lambda: int(self.oob_inline),
                  SockOpt.ZEROCOPY: lambda: int(self.zerocopy_on),
                  SockOpt.TCP_THIN_LINEAR_TIMEOUTS: lambda: int(self.thin_linear_timeouts),
                  SockOpt.TCP_RTO_MAX: lambda: self.rto_max, SockOpt.MAX_PACING_RATE: lambda: self.max_pacing_rate,
                  SockOpt.TCP_TXREHASH: lambda: self.txrehash,
                  SockOpt.IPV6_AUTO_FLOW_LABEL: lambda: int(self.auto_flow_label),
                  SockOpt.MODERATE_RECEIVE_BUFFER: lambda: int(self.rcv.moderate if self.rcv else self.moderate_rcvbuf)}
        getter = simple.get(opt)
        if getter is None:
            if opt in (SockOpt.BROADCAST, SockOpt.MULTICAST_TTL, SockOpt.MULTICAST_LOOP):
                raise ErrNotSupported()
            raise ErrUnknownProtocolOption()
        return getter()

    # === inbound ==================================================================================

    def handle_packet(self, pkt: PacketBuffer, src: bytes, dst: bytes, src_port: int, dst_port: int) -> None:
        if self.min_ttl and self._below_min_ttl(pkt):
            return
        if self._busy:
            self._backlog.append((pkt, src, dst))
            return
        self._busy = 1
        try:
            self._process(pkt, src, dst)
        finally:
            if self._backlog:
                self._process_backlog()
            self._busy = 0

    def _below_min_ttl(self, pkt: PacketBuffer) -> bool:
        """IP_MINTTL / IPV6_MINHOPCOUNT: a packet that came from further away than allowed is dropped
        (Linux's tcp_v4_rcv, LINUX_MIB_TCPMINTTLDROP), counted as filtered."""
        header = pkt.network_header
        if header[8 if header[0] >> 4 == 4 else 7] >= self.min_ttl:
            return False
        self.stats.receive_errors.filtered.increment()
        return True

    def _enter(self) -> None:
        self._busy += 1

    def _exit(self) -> None:
        """Leave a busy section; the outermost one first processes what arrived meanwhile."""
        if self._busy == 1 and self._backlog:
            self._process_backlog()
        self._busy -= 1

    def _process_backlog(self) -> None:
        backlog = self._backlog
        while backlog:
            pkt, src, dst = backlog.pop(0)
            self._process(pkt, src, dst)

    def guarded(self, fn: Any, *args: Any) -> None:
        """Run a timer callback as a busy section (timers are entry points like user calls)."""
        self._enter()
        try:
            fn(*args)
        finally:
            self._exit()

    def _process(self, pkt: PacketBuffer, src: bytes, dst: bytes) -> None:
        state = self.state
        if state is _CLOSED:
            self._redeliver(pkt, src, dst)
            return
        if self.socket_filter is not None and not self._filter_keeps(pkt):
            return
        if self.save_syn and state is _LISTEN:
            self._save_syn(pkt)
        seg = parse_segment(pkt, src, dst, self.stack_stats,
                            not pkt.checksum_verified and self.proto.verify_checksums(pkt.nic_id))
        if seg is None:
            self.stats.receive_errors.malformed_packets_received.increment()
            return
        if self.proto.md5_in_use and not self._md5_verified(seg, pkt):
            return
        self.stats.packets_received.value += 1
        if seg.data:
            self.data_segs_in += 1
            self.last_data_received = self.stack.clock.now()
        self._dispatch(seg)

    def _md5_verified(self, seg: Segment, pkt: PacketBuffer) -> bool:
        """TCP_MD5SIG's check of an inbound segment (see ``md5.accepts``): done once some endpoint of the
        stack has had a key."""
        if md5.accepts(self._md5_key_for(seg), seg, pkt.transport_header, self.stack_stats):
            return True
        self.stats.receive_errors.malformed_packets_received.increment()
        return False

    def _md5_key_for(self, seg: Segment) -> bytes | None:
        """The key for ``seg``'s sender: a listener's for that address, a connection's own."""
        if self.listener is not None:
            return md5.best_key(self.md5_keys, seg.src) if self.md5_keys else None
        return self.md5_key

    def set_md5_key(self, address: bytes, prefix: int, key: bytes) -> bool:
        """TCP_MD5SIG: sign what goes to ``address`` (its first ``prefix`` bits) and check what comes from it
        with ``key``, replacing its key; an empty key removes the address's (False if there was none)."""
        keys = [k for k in self.md5_keys or () if (k.address, k.prefix) != (address, prefix)]
        found = len(keys) < len(self.md5_keys or ())
        if key:
            keys.append(md5.MD5Key(address, prefix, key))
            self.proto.md5_in_use = True    # (from now on every segment is looked at: Linux's tcp_md5_needed)
        self.md5_keys = keys or None
        if self.remote is not None:
            self.md5_key = md5.best_key(keys, self.remote.addr) if keys else None
            self._update_burst()
        return bool(key) or found

    def _save_syn(self, pkt: PacketBuffer) -> None:
        """TCP_SAVE_SYN: keep a SYN's headers (its link header too at 2) for the connection it opens."""
        data = pkt.data
        if len(data) >= 20 and data[13] & SYN and not data[13] & ACK:
            headers = bytes(pkt.network_header) + bytes(data[:(data[12] >> 4) * 4])
            self.saved_syn = bytes(pkt.link_header) + headers if self.save_syn == 2 else headers

    def take_saved_syn(self, room: int) -> bytes:
        """TCP_SAVED_SYN, read once: the headers of the SYN that opened this connection; ErrInvalidOptionValue
        (kept) if they do not fit in ``room``, as Linux answers EINVAL."""
        saved = self.saved_syn if self.state is not S.LISTEN else b""     # (a listener's is in passing)
        if len(saved) > room:
            raise ErrInvalidOptionValue()
        self.saved_syn = b""
        return saved

    def _filter_keeps(self, pkt: PacketBuffer) -> bool:
        """SO_ATTACH_FILTER on a segment (the TCP header at 0): dropped, or its payload cut to what the
        program keeps, never into the header (Linux's tcp_filter)."""
        data = pkt.data
        link = bytes(pkt.link_header)
        program = self.socket_filter
        assert program is not None
        keep = program.keeps(pkt, link + bytes(pkt.network_header), data, len(link), self.stack.nics)
        if not keep:
            self.stats.receive_errors.filtered.increment()
            return False
        header = (data[12] >> 4) * 4 if len(data) > 12 else len(data)
        if keep < len(data):
            pkt.data = data[:max(keep, header)]
        return True

    def handle_segment(self, seg: Segment) -> None:
        """A segment parsed (and counted) already: one a listener held while its accept queue was full."""
        self.guarded(self._dispatch, seg)

    def _dispatch(self, seg: Segment) -> None:
        state = self.state
        if state is _LISTEN:
            self._listen_segment(seg)
        elif state is _SYN_SENT:
            self._syn_sent_segment(seg)
        elif state is not _CLOSED:
            self._synchronized_segment(seg)
        else:
            self.proto.reply_reset(seg, self._md5_key_for(seg))

    def _redeliver(self, pkt: PacketBuffer, src: bytes, dst: bytes) -> None:
        """A segment that arrived while this endpoint was busy, for a connection that has ended since:
        it goes to whoever holds the 4-tuple now (the TIME-WAIT record, a listener), else it is one
        for no connection."""
        ports = self.proto.parse_ports(pkt.data)
        if ports is None:
            return
        demux = self.stack.demux
        group = demux.lookup(self.net_proto, self.proto.number, pkt.nic_id, src, dst, *ports)
        if group:
            demux.select(group, src, ports[0], dst, ports[1]).handle_packet(pkt, src, dst, *ports)
        else:
            seg = parse_segment(pkt, src, dst, self.stack_stats, self.proto.verify_checksums(pkt.nic_id))
            if seg is not None:
                self.proto.reply_reset(seg, self._md5_key_for(seg))

    # --- LISTEN -----------------------------------------------------------------------------------

    def _listen_segment(self, seg: Segment, iss: int | None = None) -> None:
        """A segment for the listener: a SYN opens a connection (with ``iss``, if given, as our initial
        sequence number), the ACK of a SYN cookie completes one."""
        flags = seg.flags
        if flags & RST:
            return
        listener = self.listener
        assert listener is not None
        stats = self.stack_stats
        if flags & ACK:
            mss = self.proto.check_syn_cookie(seg) if self.proto.syn_cookies and not flags & SYN else None
            if mss is None:
                if self.proto.syn_cookies and not flags & SYN:
                    stats.listen_overflow_invalid_syn_cookie_rcvd.increment()
                self.proto.reply_reset(seg, self._md5_key_for(seg))
                return
            if listener.accept_queue_full():
                self._hold(seg, stats.listen_overflow_ack_drop)
                return
            stats.listen_overflow_syn_cookie_rcvd.increment()
            child = self._new_child(seg, (seg.ack - 1) & MASK)
            if child is None:
                return
            child._establish_from_cookie(seg, mss)
            return
        if not flags & SYN:
            return
        if listener.accept_queue_full():
            self._hold(seg, stats.listen_overflow_syn_drop)   # Linux drops the SYN
            return
        if listener.syn_queue_full():
            if not self.proto.syn_cookies:
                stats.listen_overflow_syn_drop.increment()
                return
            self._send_syn_cookie(seg)
            return
        child = self._new_child(seg, iss)
        if child is not None:
            child.saved_syn, self.saved_syn = self.saved_syn, b""     # (TCP_SAVE_SYN's, if any)
            child._syn_received(seg, self._fast_open(seg, child))

    def _fast_open(self, seg: Segment, child: TCPEndpoint) -> bool:
        """Whether this SYN opens a Fast Open connection (RFC 7413 §4.2), decided in the order of Linux's
        tcp_try_fastopen: with server Fast Open on and a TCP_FASTOPEN queue with room, a valid cookie does
        (one made with the listener's backup key too, answered with the current one), or a SYN with data
        where no cookie is needed; the SYN's data is then taken at once. A request or a wrong cookie gets
        one in the SYN-ACK, and the data waits for the handshake, as without Fast Open."""
        offered = seg.options.fast_open
        stats = self.stack_stats
        if offered == b"":
            stats.fast_open_cookie_requests.increment()
        proto = self.proto
        listener = self.listener
        assert listener is not None
        if not proto.fast_open & FAST_OPEN_SERVER or (offered is None and not seg.data) or not self.fast_open_queue:
            return False
        if listener.fast_open_pending >= self.fast_open_queue:
            stats.fast_open_listen_overflow.increment()
            return False
        if not (self.fast_open_no_cookie or proto.fast_open & FAST_OPEN_SERVER_NO_COOKIE):
            if offered is None:
                return False
            key = self.fast_open_key
            cookie = proto.fast_open_cookie(seg.src, seg.dst, key[:16])
            if offered != cookie:
                child.fast_open_cookie = cookie
                if not offered or len(key) < 32 or offered != proto.fast_open_cookie(seg.src, seg.dst, key[16:]):
                    if offered:
                        stats.fast_open_passive_fail.increment()
                    return False
                stats.fast_open_passive_alt_key.increment()
        listener.fast_open_pending += 1
        child.fast_open_slot = listener
        stats.fast_open_passive.increment()
        return True

    def _hold(self, seg: Segment, drop: StatCounter) -> None:
        """A segment that only a full accept queue keeps out: held until accept() makes room.

        Linux drops it (the SYN, or the ACK that completes the handshake) and the peer tries again a
        second or a retransmission timeout later; but there the application accepts on a thread of
        its own while the kernel receives. Here the application and the stack take turns on one
        thread, and a burst of connections read in one batch fills a small backlog (socketserver's 5)
        before the accepting loop gets its turn: the segments wait in order, as they would have
        waited in the device, and are processed once the application has taken a connection. Up to
        ``HELD_SEGMENTS`` of them; beyond that, dropped (``drop`` counts it) as on Linux.
        """
        held = self.listener.held  # type: ignore[union-attr]
        if len(held) >= HELD_SEGMENTS:
            drop.increment()
            return
        self.stack_stats.listen_overflow_held.increment()
        held.append(seg)

    def _release_held(self) -> None:
        """After accept(): the held segments, oldest first, each to whoever owns its 4-tuple now,
        while the accept queue has room."""
        listener = self.listener
        while listener is not None and listener.held and not listener.accept_queue_full():
            seg = listener.held.popleft()
            demux = self.stack.demux
            group = demux.lookup(self.net_proto, self.proto.number, seg.nic_id, seg.src, seg.dst, seg.src_port,
                                 seg.dst_port)
            if group:
                demux.select(group, seg.src, seg.src_port, seg.dst, seg.dst_port).handle_segment(seg)  # type: ignore[attr-defined]  # (TCP's group: TCPEndpoints)
            else:
                self.proto.reply_reset(seg, self._md5_key_for(seg))
            listener = self.listener

    def _new_child(self, seg: Segment, iss: int | None) -> TCPEndpoint | None:
        """An endpoint for a connection to this listener, registered under its 4-tuple."""
        try:
            # (a transparent listener's connections are to any address: their replies come from it)
            route = self.stack.find_route(seg.nic_id if self._bound_nic else 0, seg.dst, seg.src, self.net_proto,
                                          self.transparent)
        except Error:
            return None
        child = TCPEndpoint(self.proto, self.net_proto, WaiterQueue())
        child._inherit(self)
        child.parent = self
        local, remote = seg.dst, seg.src
        child._attach(route, TransportEndpointID(seg.dst_port, local, seg.src_port, remote))
        own_iss, child.ts_offset = self.proto.initial_numbers(local, seg.dst_port, remote, seg.src_port)
        # (the handshake sets the MSS)
        child.snd = Sender(child, own_iss if iss is None else iss, DEFAULT_MSS, child.cc_name)
        return child

    def _inherit(self, listener: TCPEndpoint) -> None:
        """The options a connection takes from its listener (those Linux's sk_clone_lock copies)."""
        self.nodelay = listener.nodelay
        self.cork = listener.cork
        self.quickack = listener.quickack
        self.keepalive = listener.keepalive
        self.keepalive_idle = listener.keepalive_idle
        self.keepalive_interval = listener.keepalive_interval
        self.keepalive_count = listener.keepalive_count
        self.linger = listener.linger
        self.pmtudisc = listener.pmtudisc
        self.bind_no_port = listener.bind_no_port
        self.freebind = listener.freebind
        self.transparent = listener.transparent
        self.tx_delay = listener.tx_delay
        self.recverr = listener.recverr
        self.zerocopy_on = listener.zerocopy_on
        self.thin_linear_timeouts = listener.thin_linear_timeouts
        self.rto_max = listener.rto_max
        self.max_pacing_rate = listener.max_pacing_rate
        self.pacing = listener.pacing
        self.pacing_rate_set = listener.pacing_rate_set
        self.txrehash = listener.txrehash
        self.auto_flow_label = listener.auto_flow_label
        self.dontroute = listener.dontroute
        self.min_ttl = listener.min_ttl
        self.save_syn = listener.save_syn
        self.stamp_reads = listener.stamp_reads
        self.mark = listener.mark
        self.socket_filter = listener.socket_filter
        self.filter_locked = listener.filter_locked
        self.ttl = listener.ttl
        self.tos = listener.tos
        self.send_buffer_size = listener.send_buffer_size
        self.receive_buffer_size = listener.receive_buffer_size
        self.moderate_rcvbuf = listener.moderate_rcvbuf
        self.user_mss = listener.user_mss
        self.time_wait_timeout = listener.time_wait_timeout
        self.fin_wait2_timeout = listener.fin_wait2_timeout
        self.syn_retries = listener.syn_retries
        self.user_timeout = listener.user_timeout
        self.window_clamp = listener.window_clamp
        self.notsent_lowat = listener.notsent_lowat
        self.rcvlowat = listener.rcvlowat
        self.cc_name = listener.cc_name
        self._bound_nic = listener._bound_nic
        if listener.md5_keys:
            self.md5_keys = list(listener.md5_keys)

    def _send_syn_cookie(self, seg: Segment) -> None:
        """SYN queue full: answer with a SYN-ACK whose sequence number is the state (RFC 4987 §3.6)."""
        peer_mss = seg.options.mss or DEFAULT_MSS
        cookie = self.proto.syn_cookie(seg, peer_mss)
        try:
            route = self.stack.find_route(0, seg.dst, seg.src, self.net_proto, self.transparent)
        except Error:
            return
        options = tcp.encode_syn_options(self._mss_for(route))
        window = min(self.receive_buffer_size, 0xFFFF)
        self.proto.send_stateless(seg, cookie, (seg.seq + 1) & MASK, SYN | ACK, window, options, route)
        self.stack_stats.listen_overflow_syn_cookie_sent.increment()

    def _close_listener(self) -> None:
        listener = self.listener
        assert listener is not None
        for child in list(listener.pending) + list(listener.accepted):
            if child.state is not S.CLOSED:
                child._reset_and_finish()
            child.parent = None
        listener.pending.clear()
        listener.accepted.clear()
        self._finish(None)

    # --- handshake --------------------------------------------------------------------------------

    def _syn_received(self, seg: Segment, fast_open: bool = False) -> None:
        """A child created by the listener for this SYN (or a simultaneous open): answer SYN-ACK.
        A Fast Open one takes the SYN's data and goes to the accept queue now, its handshake unfinished."""
        self._negotiate(seg)
        self._new_receiver(seg.seq)
        self.snd.wnd = seg.window  # type: ignore[union-attr]  # SYN windows are never scaled
        self._set_state(S.SYN_RCVD)
        parent = self.parent
        if fast_open and parent is not None:
            if seg.data:
                self.rcv.handle_data(1, seg.data, False)  # type: ignore[union-attr]  # (a FIN waits for its resend)
            self._queue_for_accept(parent)
        elif parent is not None:
            parent.listener.pending.add(self)  # type: ignore[union-attr]
        self._send_syn()

    def _establish_from_cookie(self, seg: Segment, mss: int) -> None:
        """The ACK of a SYN-cookie handshake: the connection exists from here, without options."""
        snd = self.snd
        assert snd is not None
        self.peer_mss = mss         # the ACK carries no MSS option: the cookie remembered it
        snd.mss = self._send_mss(mss)
        self._new_receiver((seg.seq - 1) & MASK)
        snd.una = snd.nxt = snd.max = 1
        snd.wnd = snd.max_wnd = seg.window
        snd.wl1 = 1
        snd.wl2 = 1
        self._established()
        self._process_after_handshake(seg)

    def _syn_sent_segment(self, seg: Segment) -> None:
        """RFC 9293 §3.10.7.3."""
        snd = self.snd
        assert snd is not None
        flags = seg.flags
        ack = snd.unwrap(seg.ack)
        if flags & ACK and not 1 <= ack <= snd.max:    # (beyond 1 only for data sent with the SYN)
            if not flags & RST:
                self.proto.reply_reset(seg, self._md5_key_for(seg))
            return
        if flags & RST:
            if flags & ACK:
                self._finish(ErrConnectionRefused())
            return
        if not flags & SYN:
            return
        self._negotiate(seg)
        self._new_receiver(seg.seq)
        if flags & ACK:
            snd.una = 1
            snd.wnd = snd.max_wnd = seg.window   # the SYN-ACK's window is not scaled
            snd.wl1 = 0
            snd.wl2 = 1
            snd.timer.cancel()
            self._rtt_from_handshake()
            self._established()
            if self.fast_open_cookie is not None or snd.max > 1:
                self._fast_open_answered(seg, ack)
            self.send_ack()
            snd.send_data()
        else:
            self._set_state(S.SYN_RCVD)      # simultaneous open: SYN-ACK with our original ISS
            self.fast_open_cookie = None     # (a cookie is the server's to give)
            snd.wnd = seg.window
            self._send_syn()

    def _fast_open_answered(self, seg: Segment, ack: int) -> None:
        """The SYN-ACK to a Fast Open SYN: keep the cookie it brings for the next connection to this
        peer; what it does not acknowledge of the SYN's data is resent now (RFC 7413 §4.2.2)."""
        cookie = seg.options.fast_open
        if cookie:
            self.proto.remember_fast_open_cookie(self.remote.addr, cookie, self.peer_mss)  # type: ignore[union-attr]
        snd = self.snd
        assert snd is not None
        if snd.max > 1:
            stats = self.stack_stats
            (stats.fast_open_active if ack > 1 else stats.fast_open_active_fail).increment()
            self.syn_data_acked = ack > 1
            if ack <= 1:
                self.fast_open_fail = FAST_OPEN_SYN_RETRANSMITTED if snd.total_rto else FAST_OPEN_DATA_NOT_ACKED
            snd.syn_acked(ack)
        self.fast_open_cookie = None

    def _negotiate(self, seg: Segment) -> None:
        """Options agreed in the handshake (RFC 7323 §1.3, RFC 2018 §2)."""
        opts = seg.options
        proto = self.proto
        assert self.snd is not None
        self.peer_mss = opts.mss or DEFAULT_MSS
        self.sack_ok = proto.sack_enabled and opts.sack_permitted
        self.ts_ok = proto.timestamps_enabled and opts.timestamp is not None
        if self.md5_key is not None and self.sack_ok:
            self.ts_ok = False      # Linux's tcp_synack_options: signature, timestamps and SACK do not fit
        if self.ts_ok:
            self.ts_recent = opts.timestamp[0]  # type: ignore[index]
        scale = opts.window_scale
        self.ws_ok = proto.window_scaling and scale is not None
        if self.ws_ok and scale is not None:
            self.snd.wscale = scale
            self.rcv_wscale = window_shift(proto.max_receive_buffer_size)
        else:
            self.snd.wscale = 0
            self.rcv_wscale = 0
        self.snd.mss = self._send_mss(self.peer_mss)
        if self.sack_ok:
            self.snd.enable_sack()

    def _new_receiver(self, irs: int) -> None:
        self.rcv = Receiver(irs, self.receive_buffer_size, max(self.proto.max_receive_buffer_size,
                                                               self.receive_buffer_size),
                            self.rcv_wscale, min(self.peer_mss, self.path_mss) - self.option_bytes(),
                            self.sack_ok, self.stats, self.stack.clock.now)
        self.rcv.adv_edge = 1 + self._syn_window()
        self.rcv.moderate = self.moderate_rcvbuf
        self.rcv.clamp = self.window_clamp
        if self.stamp_reads:
            self.rcv.stamps = deque()
            self.rcv.clock_ns = self.stack.clock.now_ns

    def _established(self) -> None:
        snd = self.snd
        assert snd is not None
        self._update_burst()
        if not snd.srtt:
            # No sample from the handshake; RFC 6298 §5.7: if its SYN timed out, data starts from 3 s.
            snd.rto = 3.0 if self.handshake_tries else 1.0
        self.handshake_tries = 0
        snd.delivered = 1       # the SYN (ours or the peer's ACK of our SYN-ACK), as Linux counts it
        self._set_state(S.ESTABLISHED)
        if self.fast_open_slot is not None:
            self._leave_fast_open_slot()    # (queued for accept, and counted, at its SYN)
        elif self.parent is not None:
            self._queue_for_accept(self.parent)
        else:
            self.stack_stats.active_connection_openings.increment()
        self.last_receive = self.stack.clock.now()
        self._arm_keepalive()
        self.waiter_queue.notify(_NOTIFY_OUT)

    def _queue_for_accept(self, parent: TCPEndpoint) -> None:
        """Out of the listener's handshakes into its accept queue, counted as a passive open, its accept()
        woken: when the handshake completes, or a Fast Open SYN's data comes before it does."""
        listener = parent.listener
        assert listener is not None
        listener.pending.discard(self)
        listener.accepted.append(self)
        self.stack_stats.passive_connection_openings.increment()
        parent.waiter_queue.notify(_NOTIFY_IN)

    def _leave_fast_open_slot(self) -> None:
        self.fast_open_slot.fast_open_pending -= 1  # type: ignore[union-attr]
        self.fast_open_slot = None

    def _handshake_parent(self) -> TCPEndpoint | None:
        """The listener still answerable for this connection's handshake: none for an active open,
        nor for a Fast Open one, which its application may hold already."""
        return self.parent if self.fast_open_slot is None else None

    def _rtt_from_handshake(self) -> None:
        snd = self.snd
        if snd is not None and snd.rtt_seq is not None:
            snd.rtt_sample(snd.now() - snd.rtt_time)
            snd.rtt_seq = None

    def _send_syn(self) -> None:
        """SYN (active open) or SYN-ACK (passive or simultaneous open), with our options."""
        snd = self.snd
        assert snd is not None
        proto = self.proto
        mss = self.path_mss
        if self.user_mss:
            mss = min(mss, self.user_mss)
        syn_ack = self.state is S.SYN_RCVD
        payload: bytes | memoryview = b""
        if syn_ack:
            wscale = self.rcv_wscale if self.ws_ok else None
            sack = self.sack_ok
            ts = (self.tsval(), self.ts_recent) if self.ts_ok else None
        else:
            wscale = window_shift(proto.max_receive_buffer_size) if proto.window_scaling else None
            sack = proto.sack_enabled
            # (a signed SYN offers no timestamps: they and the signature leave no room for SACK blocks)
            ts = (self.tsval(), 0) if proto.timestamps_enabled and self.md5_key is None else None
            if len(snd.buffer) and not self.handshake_tries:   # (a deferred Fast Open connect's first write)
                payload = snd.buffer.get(1, len(snd.buffer))  # type: ignore[assignment]  # (a resent SYN: none)
        options = tcp.encode_syn_options(mss, wscale, sack, ts, self.fast_open_cookie)
        window = self._syn_window()
        flags = SYN | ACK if syn_ack else SYN
        if snd.rtt_seq is None and not self.handshake_tries:
            snd.rtt_seq = 1
            snd.rtt_time = snd.now()
        snd.nxt = 1 + len(payload)
        snd.max = max(snd.max, snd.nxt)     # (a resent SYN leaves Fast Open data sent for what is acknowledged)
        snd.timer.reset(snd.rto)
        self._emit(0, flags, payload, options, window)

    def in_handshake(self) -> bool:
        return self.state is S.SYN_SENT or self.state is S.SYN_RCVD

    def on_handshake_timeout(self) -> None:
        tries = self.handshake_tries
        self.handshake_tries = tries + 1
        snd = self.snd
        assert snd is not None
        snd.rtt_seq = None
        parent = self._handshake_parent()
        defer = parent.defer_accept if parent is not None else 0
        if defer:
            # TCP_DEFER_ACCEPT (Linux's syn_ack_recalc): a child whose bare ACK was dropped waits for
            # data without SYN-ACKs until its deferral nearly ends, then gets one more chance.
            expire = tries >= max(self.syn_retries, defer) and (not self.defer_acked or tries >= defer)
            resend = not self.defer_acked or tries >= defer - 1
        else:
            expire, resend = tries >= self.syn_retries, True
        if expire:
            self._finish(ErrTimeout() if parent is None else None)
            return
        snd.rto = min(snd.rto * 2, self.rto_max)
        if not resend:
            snd.timer.reset(snd.rto)
            return
        self.stack_stats.retransmits.increment()
        snd.total_retransmits += 1
        self._send_syn()

    # --- synchronized states ----------------------------------------------------------------------

    def _synchronized_segment(self, seg: Segment) -> None:
        """RFC 9293 §3.10.7.4, with RFC 5961 (blind attacks) and RFC 7323 (PAWS)."""
        rcv, snd = self.rcv, self.snd
        assert rcv is not None and snd is not None
        flags = seg.flags
        state = self.state
        if self.keepalive:
            self.last_receive = self.stack.clock.now()
            self.keepalive_probes = 0
        nxt = rcv.nxt
        delta = (seg.seq - rcv.irs - nxt) & MASK
        seq = nxt + (delta - (1 << 32) if delta & 0x80000000 else delta)
        data = seg.data
        length = len(data) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        ts = seg.options.timestamp
        if self.ts_ok and ts is not None and not flags & RST and ((ts[0] - self.ts_recent) & 0x80000000) and \
                self.ts_recent:
            # PAWS: an old duplicate (not against a recent timestamp of 0: none was seen, as a restored
            # connection's, or the peer's SYN carried 0, as some do — Linux's tcp_paws_check)
            self.send_ack()
            return
        # Acceptability (RFC 9293 §3.10.7.4 "first").
        window = rcv.adv_edge - nxt
        if length == 0:
            acceptable = seq == nxt if window <= 0 else nxt <= seq < nxt + window
        else:
            acceptable = window > 0 and (nxt <= seq < nxt + window or nxt <= seq + length - 1 < nxt + window)
        if flags & SYN and state is _SYN_RCVD and seq == 0:      # (the peer's SYN: Fast Open data past it)
            if not flags & ACK:
                self._send_syn()     # our SYN-ACK was lost: the peer sent its SYN again
                return
            if self.parent is None:
                # Simultaneous open (RFC 9293 Figure 7): the peer's SYN-ACK crossed ours and completes the handshake.
                flags &= ~SYN
                seq = nxt
                acceptable = True
        if not acceptable:
            if not flags & RST:
                if length and seq < nxt:
                    rcv.duplicate(seq, min(seq + length, nxt))     # an old duplicate: D-SACK it
                self.send_ack()
            return
        if flags & RST:
            if seq == nxt:
                self.stack_stats.resets_received.increment()
                self._on_reset()
            else:
                self._challenge_ack()
            return
        if flags & SYN:
            self._challenge_ack()   # RFC 5961 §4: never a reset from a SYN in a synchronized state
            return
        if not flags & ACK:
            return
        if self.ts_ok and ts is not None and seq <= nxt:
            self.ts_recent = ts[0]
        delta = (seg.ack - snd.iss - snd.una) & MASK
        ack = snd.una + (delta - (1 << 32) if delta & 0x80000000 else delta)
        if state is _SYN_RCVD:
            if not 1 <= ack <= snd.max:
                self.proto.reply_reset(seg, self._md5_key_for(seg))
                return
            parent = self._handshake_parent()
            if parent is not None and self.handshake_tries < parent.defer_accept and not data and not flags & FIN:
                self.defer_acked = True     # TCP_DEFER_ACCEPT: a bare ACK completes nothing yet (Linux drops it)
                return
            if parent is not None and parent.listener.accept_queue_full():  # type: ignore[union-attr]
                # Stay half-open (the SYN-ACK will be retransmitted) unless the listener can hold it.
                parent._hold(seg, self.stack_stats.listen_overflow_ack_drop)
                return
            snd.timer.cancel()
            snd.una = 1
            snd.wl1 = seq
            snd.wl2 = ack
            snd.wnd = seg.window << snd.wscale
            snd.max_wnd = snd.wnd
            self._rtt_from_handshake()
            self._established()
            state = _ESTABLISHED
        if ack > snd.max or ack < snd.una - max(snd.max_wnd, 1):
            self._challenge_ack()   # RFC 5961 §5: acks what we never sent, or far too old
            return
        pure = not data and not flags & (SYN | FIN)
        if self.ts_ok and ts is not None and ts[1] and ack > snd.una and snd.rtt_seq is None:
            # RFC 7323 §4: with no unambiguous timed segment (after a retransmission), the echoed
            # timestamp still measures the round trip (to the millisecond of our TS clock).
            snd.rtt_sample(((self.tsval() - ts[1]) & MASK) / 1000.0)
        snd.handle_ack(seq, ack, seg.window, pure, seg.options.sack_blocks, ts[1] if self.ts_ok and ts else None)
        if self.state is _CLOSED:
            return
        if snd.fin_acked():
            if state is _FIN_WAIT1:
                self._set_state(_FIN_WAIT2)
                state = _FIN_WAIT2
                self.waiter_queue.notify(_SHUT_WRITE_EVENTS)     # everything we sent is through (SO_LINGER)
                if self.orphaned:
                    self._orphan_in_fin_wait2()
                    if self.state is _CLOSED:
                        return
            elif state is _CLOSING:
                self._enter_time_wait()
                return
            elif state is _LAST_ACK:
                self._finish(None)
                return
        if flags & URG and state in _RECEIVING and not rcv.fin_received:
            self._urgent_pointer(seq, seg.urgent)
        if not data and not flags & FIN:
            return
        if state not in _RECEIVING:
            self.send_ack()          # data after the peer's FIN: nothing to do but acknowledge
            return
        if self.orphaned and data:
            self._reset_and_finish()  # nobody will read it (Linux: RST on data after close)
            return
        had_fin = rcv.fin_received
        before = rcv.queue.size
        ack = rcv.handle_data(seq, data, bool(flags & FIN))
        if self.shut_read:
            rcv.queue.clear()
        elif rcv.queue.size > before:
            self.waiter_queue.notify(_NOTIFY_IN)
        if rcv.urg_byte < 0 <= rcv.urg_seq and seq <= rcv.urg_seq < seq + len(data):
            rcv.urg_byte = data[rcv.urg_seq - seq]
            self.waiter_queue.notify(_NOTIFY_PRI)
        if rcv.fin_received and not had_fin:
            self._on_fin()
            if self.state is _CLOSED:
                return      # in TIME-WAIT: ACKed, and handed over
        if ack == ACK_NOW:
            self.send_ack()
        elif ack == ACK_SOON or self.quickack:
            self.proto.owe_ack(self)
        elif ack == ACK_LATER:
            timer = self.delack_timer
            if timer is None:
                timer = self.delack_timer = self.stack.timers.timer(self.guarded, self.send_ack)
            if not timer.armed:
                timer.reset(DELAYED_ACK_TIMEOUT)

    def _process_after_handshake(self, seg: Segment) -> None:
        """A cookie ACK may carry data already."""
        if seg.data or seg.flags & FIN:
            self._synchronized_segment(seg)

    def _on_fin(self) -> None:
        state = self.state
        if state is S.ESTABLISHED:
            self._set_state(S.CLOSE_WAIT)
        elif state is S.FIN_WAIT1 and not self.snd.fin_acked():  # type: ignore[union-attr]
            self._set_state(S.CLOSING)
        elif state is S.FIN_WAIT1 or state is S.FIN_WAIT2:
            self.send_ack()         # at once: nothing can follow our FIN to carry it
            self._enter_time_wait()
            return
        self.waiter_queue.notify(_FIN_EVENTS)

    def _on_reset(self) -> None:
        state = self.state
        if state is S.SYN_RCVD and self._handshake_parent() is not None:
            self._finish(None)      # the handshake is abandoned; the listener carries on
        elif state is S.CLOSING or state is S.LAST_ACK:
            self._finish(None)
        else:
            if state in _COUNTED_ESTABLISHED:
                self.stack_stats.established_resets.increment()
            self._finish(ErrConnectionReset())

    def _challenge_ack(self) -> None:
        """RFC 5961 §7: challenge ACKs are throttled stack-wide, so they cannot be used to flood."""
        if self.proto.challenge_ack_allowed():
            self.send_ack()

    def handle_control_packet(self, kind: ControlType, info: int, pkt: PacketBuffer) -> None:
        """ICMP errors: fatal during the handshake (connect fails fast), soft afterwards (RFC 1122 §4.2.3.9)."""
        snd = self.snd
        quoted = pkt.data  # type: ignore[attr-defined]
        if self.min_ttl and self._below_min_ttl(pkt):       # (the ICMP error's own TTL, as tcp_v4_err)
            return
        # RFC 5927 §4.1: only an error quoting a sequence number in flight can be about this connection.
        if snd is None or len(quoted) < 8 or not snd.una <= snd.unwrap(int.from_bytes(quoted[4:8], "big")) <= snd.max:
            return
        err = _CONTROL_ERRORS.get(kind)
        if err is None:
            # (DONT, INTERFACE and OMIT leave the MSS alone: Linux's ip_sk_accept_pmtu and tcp_v4_mtu_reduced)
            if kind is ControlType.PACKET_TOO_BIG and self.snd is not None and info and \
                    self.pmtudisc in PMTUDISC_SETS_DF:
                self.path_mss = min(self.path_mss, info - self._headers())
                self.snd.mss = max(MIN_MSS, min(self.snd.mss, self.path_mss - self.option_bytes()))
                self._update_burst()
            return
        if self.state is S.SYN_SENT:
            # Linux's tcp_v4_err queues the error that fails a connect, IP_RECVERR or not, quoting the SYN.
            entry = queued_error(err(), info, pkt, self.remote.port if self.remote is not None else 0, bytes(quoted))
            if entry is not None:
                self.error_list().append(entry)
            self._enter()
            try:
                self._finish(err())
            finally:
                self._exit()
        elif self.state in _SYNCHRONIZED:
            # A soft error (RFC 1122 §4.2.3.9): kept, and reported only if the connection then times out;
            # with IP_RECVERR reported at once instead, to the next read, write or SO_ERROR, the connection
            # going on (Linux's tcp_v4_err sets sk_err then, not sk_err_soft).
            if self.recverr:
                self.error = self.pending_error = err()
                self.waiter_queue.notify(EventMask.ERR | EventMask.IN)
            else:
                self.soft_error = err()

    # --- urgent data ------------------------------------------------------------------------------
    # RFC 9293 §3.8.5 as Linux keeps it (RFC 6093 §3.4): the urgent pointer points just past the urgent
    # byte; only the last such byte counts; unless SO_OOBINLINE, the byte leaves the stream (reads stop
    # just before it and then skip it) and is read alone with recv(MSG_OOB) while the reader has not
    # passed it. The receiver's urg_seq / urg_byte / urg_read hold the state (tcp_check_urg,
    # tcp_urg, tcp_recv_urg and the mark handling of tcp_recvmsg in Linux).

    def _urgent_pointer(self, seq: int, pointer: int) -> None:
        """A segment (at ``seq``, unwrapped) with URG: a new urgent byte, unless the reader is past it
        or it is one already known."""
        rcv = self.rcv
        assert rcv is not None
        urgent = seq + pointer - 1
        read_seq = rcv.read_seq
        if urgent < read_seq or urgent <= rcv.urg_seq:
            return
        if rcv.urg_seq == read_seq and not self.oob_inline and rcv.queue.size:
            rcv.queue.discard(1)    # the previous urgent byte, at the reader's position, leaves the stream
            read_seq += 1
        rcv.urg_seq, rcv.urg_byte, rcv.urg_read = urgent, -1, False
        if urgent < read_seq + rcv.queue.size:      # pointed at after it came: it is queued already
            rcv.urg_byte = rcv.queue.read(urgent - read_seq + 1, peek=True)[-1]
            self.waiter_queue.notify(_NOTIFY_PRI)

    def _urgent_held(self) -> int:
        """Queued bytes that do not make the socket readable: the urgent byte at the reader's position,
        out of line (Linux's tcp_poll: it takes one more byte then)."""
        rcv = self.rcv
        return 1 if rcv is not None and rcv.urg_seq >= 0 and rcv.urg_seq == rcv.read_seq and \
            not self.oob_inline else 0

    def _read_at_mark(self, count: int, peek: bool = False, start: int = 0) -> bytes:
        """Read while an urgent byte is marked: up to just before it; at it, past it (skipping it unless
        SO_OOBINLINE); once the reader is past it, the urgent data is gone. A peek may ``start`` further
        in (SO_PEEK_OFF), the mark being where it lies from there."""
        rcv = self.rcv
        assert rcv is not None
        queue = rcv.queue
        offset = rcv.urg_seq - rcv.read_seq - start
        skip = 1 if offset == 0 and not self.oob_inline else 0
        if offset > 0:
            count = min(count, offset)
        if peek:
            data = queue.read(start + count + skip, peek=True)[start + skip:]
            return data if data else self._read_empty()
        if skip:
            queue.discard(1)
        data = queue.read(count)
        self._after_read(len(data) + skip)
        if rcv.read_seq > rcv.urg_seq:
            rcv.urg_seq, rcv.urg_byte, rcv.urg_read = -1, -1, False
        return data if data else self._read_empty()     # (only the urgent byte was there)

    def read_urgent(self, peek: bool = False) -> bytes:
        """recv(MSG_OOB): the urgent byte, once. ErrInvalidEndpointState (EINVAL) if there is none to
        read (or it is inline), ErrWouldBlock while it has not arrived (never a wait, as Linux), b''
        if it never will."""
        if self.state is S.LISTEN:
            raise ErrNotConnected()
        rcv = self.rcv
        if self.oob_inline or rcv is None or rcv.urg_seq < 0 or rcv.urg_read:
            raise ErrInvalidEndpointState()     # (never connected: no receiver, so this too, as Linux)
        if rcv.urg_byte >= 0:
            if not peek:
                rcv.urg_read = True
            return bytes((rcv.urg_byte,))
        if self.state is S.CLOSED or self.shut_read or rcv.fin_received:
            return b""
        raise ErrWouldBlock()

    def at_mark(self) -> bool:
        """Whether the reader is at the urgent mark (sockatmark, SIOCATMARK)."""
        rcv = self.rcv
        return rcv is not None and rcv.urg_seq >= 0 and rcv.urg_seq == rcv.read_seq

    # === outbound =================================================================================

    def can_send_data(self) -> bool:
        return self.state in _SENDING or self.fast_open_slot is not None

    def send_segment(self, seq: int, flags: int,
                     payload: bytes | memoryview | list[memoryview] = b"") -> PacketBuffer | None:
        """Send a data/ACK/FIN segment of this connection (``seq`` unwrapped); a list payload is a
        super-segment's in pieces (``SendBuffer.get`` with ``scatter``)."""
        rcv = self.rcv
        options = b""
        ts = (self.tsval(), self.ts_recent) if self.ts_ok else None
        blocks: list[tuple[int, int]] = rcv.sack_blocks if rcv is not None and self.sack_ok else []
        if rcv is not None and rcv.dsack is not None:
            blocks, rcv.dsack = [rcv.dsack, *blocks], None      # first, and once (RFC 2883 §4)
        if ts is not None or blocks:
            if blocks:
                # SACK blocks ride along only as far as they fit in front of the payload within the MTU
                # (so never on a super-segment: a scattered payload is always one), and in the 40 bytes.
                room = 0 if type(payload) is list else self.path_mss - len(payload) - (12 if ts else 0) - 4
                if self.md5_key is not None:
                    room = min(room - md5.OPTION_SIZE, 40 - md5.OPTION_SIZE - (12 if ts else 0) - 4)
                blocks = blocks[:max(0, min(len(blocks), room // 8))]
                irs = rcv.irs  # type: ignore[union-attr]
                blocks = [((s + irs) & MASK, (e + irs) & MASK) for s, e in blocks]
            options = tcp.encode_options(ts, blocks)
        window = rcv.window_field() if rcv is not None else 0
        return self._emit(seq, flags, payload, options, window)

    def _emit(self, seq: int, flags: int, payload: bytes | memoryview | list[memoryview], options: bytes,
              window: int) -> PacketBuffer | None:
        snd, rcv, route = self.snd, self.rcv, self.route
        assert snd is not None and route is not None
        if self.md5_key is not None:
            options = md5.PLACEHOLDER + options     # (the signature goes first, as Linux's)
        size = tcp.MIN_SIZE + len(options)
        pkt = PacketBuffer(self._header_room + size, payload)
        if self.auto_flow_label:
            pkt.hash = self.txhash
        length = pkt.size()
        hdr = pkt.prepend(size)
        ack = (rcv.nxt + rcv.irs) & MASK if rcv is not None and flags & ACK else 0
        urgent = 0
        if snd.up > seq:
            # Urgent mode: every segment before the urgent byte points just past it (RFC 6093 §4;
            # 0xFFFF, "further than this segment can say", when that is beyond 64 KB: Linux).
            flags |= URG
            urgent = min(snd.up - seq, 0xFFFF)
        tcp.build(hdr, src_port=self.local.port, dst_port=self.remote.port, seq=(seq + snd.iss) & MASK,  # type: ignore[union-attr]
                  ack=ack, flags=flags, window=window, urgent=urgent, options=options)
        if self.md5_key is not None:
            md5.sign(hdr, self.local.addr, self.remote.addr, payload, self.md5_key)  # type: ignore[arg-type,union-attr]
        if length > snd.mss:
            # A super-segment: the link cuts it into segments of this size and completes each one's
            # checksum from the pseudo-header sum left in the field (Linux's CHECKSUM_PARTIAL).
            pkt.gso_size = snd.mss
            tcp.set_checksum(hdr, combine(self._pseudo, size + length))
        elif self._tx_partial:
            # Left for the link to complete (NETIF_F_HW_CSUM): loopback, whose receiver checks none.
            pkt.csum_offset = tcp.CHECKSUM_OFFSET
            tcp.set_checksum(hdr, combine(self._pseudo, size + length))
        else:
            total = combine(self._pseudo + size + length,
                            checksum(hdr, checksum(payload) if payload else 0))  # type: ignore[arg-type]  # (one piece: not a super-segment)
            tcp.set_checksum(hdr, ~total & 0xFFFF)
        pkt.mark = self.mark
        if self.tx_delay:
            # TCP_TX_DELAY: as fq holds a segment Linux stamped with a later departure time.
            self.stack.timers.call_later(self.tx_delay / 1e6, self._leave, route, pkt, self.ttl or route.default_ttl())
        elif not self._leave(route, pkt, self.ttl or route.default_ttl()):
            return None
        self.stack_stats.segments_sent.value += 1
        self.stats.packets_sent.value += 1
        if flags & RST:
            self.stack_stats.resets_sent.increment()
        if rcv is not None and flags & ACK:
            rcv.on_ack_sent()
            if self.delack_timer is not None:
                self.delack_timer.cancel()
        return pkt

    def _leave(self, route: Route, pkt: PacketBuffer, ttl: int) -> bool:
        """Hand a segment to the network layer; False (counted) if it cannot go."""
        try:
            route.write_packet(tcp.PROTOCOL_NUMBER, pkt, ttl, self.tos, self.pmtudisc in PMTUDISC_SETS_DF)
        except Error:
            self.stack_stats.segment_send_errors.increment()
            self.stats.send_errors.send_to_network_failed.increment()
            return False
        return True

    def send_ack(self) -> None:
        if self.snd is not None and self.rcv is not None and (self.state in _SYNCHRONIZED
                                                              or self.state is _SYN_RCVD):
            # Numbered from the highest sequence sent (BSD's snd_max): after a timeout ``nxt`` goes back
            # to resend, and an ACK numbered below what the peer already has would be unacceptable to it.
            # While probing a zero window, ``max`` covers the probe byte, which the peer may not hold.
            self.send_segment(self.snd.nxt if self.snd.persisting else self.snd.max, ACK)

    def _send_fin(self) -> None:
        state = self.state
        if state is S.ESTABLISHED or state is S.SYN_RCVD:
            self._set_state(S.FIN_WAIT1)
        elif state is S.CLOSE_WAIT:
            self._set_state(S.LAST_ACK)
        elif state is S.SYN_SENT:
            self._finish(None)
            return
        else:
            return
        self.snd.queue_fin()  # type: ignore[union-attr]

    def _push(self) -> None:
        if self.snd is not None and self.can_send_data():
            self._enter()
            try:
                self.snd.send_data()
            finally:
                self._exit()

    def tsval(self) -> int:
        """The timestamp value a segment sent now carries (RFC 7323: milliseconds, offset per connection)."""
        return (int(self.stack.clock.now() * 1000) + self.ts_offset) & MASK

    def _update_burst(self) -> None:
        """How much one transmission carries: whole segments up to the link's GSO limit (64 KB, more
        with BIG TCP) when the link cuts them."""
        snd, route = self.snd, self.route
        if snd is None or route is None:
            return
        link = route.nic.link
        capabilities = int(link.capabilities())
        if capabilities & _HARDWARE_GSO and not route.loop and self.md5_key is None:   # (each signed alone)
            # Room for the largest headers, as Linux's sk_gso_max_size (gso_max_size - MAX_TCP_HEADER - 1);
            # never less than one segment: on a path whose MTU allows more than GSO carries, no cutting.
            payload = link.gso_max_size(self.net_proto, route.remote_address) - 1 - _MAX_HEADERS
            snd.burst = max(payload // snd.mss * snd.mss, snd.mss)
            snd.scatter = bool(capabilities & _SCATTER_GATHER)
        else:
            snd.burst = snd.mss
            snd.scatter = False

    def _headers(self) -> int:
        """Network + TCP header bytes in every segment (options aside)."""
        return tcp.MIN_SIZE + (40 if self.net_proto == 0x86DD else 20)

    def _mss_for(self, route: Route) -> int:
        """The MSS a path of ``route.mtu()`` carries (what we advertise, before TCP_MAXSEG)."""
        return route.mtu() - self._headers()

    def _send_mss(self, peer_mss: int | None) -> int:
        """Payload per segment: the peer's MSS, clamped to the path MTU and TCP_MAXSEG, less the options."""
        mss = min(peer_mss or DEFAULT_MSS, self.path_mss)
        if self.user_mss:
            mss = min(mss, self.user_mss)
        return max(mss - self.option_bytes(), MIN_MSS - 40)

    def option_bytes(self) -> int:
        """Option bytes every segment of the connection carries: timestamps, the MD5 signature."""
        return (12 if self.ts_ok else 0) + (md5.OPTION_SIZE if self.md5_key is not None else 0)

    def on_send_space(self) -> None:
        snd = self.snd
        if snd is None:
            return
        if snd.blocked and self.send_buffer_size > len(snd.buffer):
            snd.blocked = False
            snd.chrono_stop(CHRONO_SNDBUF_LIMITED)
        if self.waiter_queue and self._writable():
            self.waiter_queue.notify(_NOTIFY_OUT)

    # === lifecycle ================================================================================

    def _attach(self, route: Route, id: TransportEndpointID) -> None:
        self.route = route
        self.path_mss = self._mss_for(route)
        self._header_room = route.max_header_length()
        self._tx_partial = route.nic.tx_checksum_offload
        self.remote = FullAddress(0, id.remote_address, id.remote_port)
        self.local = FullAddress(self.local.nic, id.local_address, id.local_port)
        if self.md5_keys:
            self.md5_key = md5.best_key(self.md5_keys, id.remote_address)
        self._pseudo = pseudo_header_checksum(tcp.PROTOCOL_NUMBER, id.local_address, id.remote_address, 0)
        if self._id is not None:
            self.stack.demux.unregister((self.net_proto,), self.proto.number, self._id, self, self._bound_nic)
        self._id = id
        self.stack.demux.register((self.net_proto,), self.proto.number, id, self, False, self._bound_nic)

    def _set_state(self, new: TCPState) -> None:
        old = self.state
        if old is new:
            return
        stats = self.stack_stats
        if new in _COUNTED_ESTABLISHED and old not in _COUNTED_ESTABLISHED:
            stats.current_established.value += 1
        elif old in _COUNTED_ESTABLISHED and new not in _COUNTED_ESTABLISHED:
            stats.current_established.value -= 1
        self.state = new

    def _enter_time_wait(self) -> None:
        """Both FINs are through: TIME-WAIT goes on in a small record that takes this endpoint's place
        in the demultiplexer, with its port reservation (Linux's tcp_time_wait), and the endpoint is
        done: CLOSED, as Linux's socket is once it has handed over (tcp_done)."""
        snd, rcv = self.snd, self.rcv
        assert snd is not None and rcv is not None and self._id is not None
        window = rcv.window_field()     # (first: it may move the right edge the record keeps)
        record = TimeWait(self.proto, self.net_proto, self._bound_nic, self._id, self._reservation,
                          rcv_nxt=(rcv.nxt + rcv.irs) & MASK, rcv_wnd=rcv.adv_edge - rcv.nxt,
                          window=window, snd_nxt=snd.wire(snd.max), max_wnd=snd.max_wnd,
                          ts_recent=self.ts_recent if self.ts_ok else None, ts_offset=self.ts_offset, ttl=self.ttl,
                          tos=self.tos, timeout=self.time_wait_timeout, md5_key=self.md5_key)
        self.stack.demux.replace((self.net_proto,), self.proto.number, self._id, self, record, self._bound_nic)
        self._id = self._reservation = None
        self._finish(None)

    def _arm_state_timer(self, delay: float) -> None:
        if self.state_timer is None:
            self.state_timer = self.stack.timers.timer(self.guarded, self._on_state_timer)
        self.state_timer.reset(delay)

    def _on_state_timer(self) -> None:
        """An orphan waited in FIN-WAIT-2 too long for the peer's FIN."""
        self._finish(None)

    def _reset_and_finish(self) -> None:
        """Abort: RST to the peer (RFC 9293 §3.10.4 ABORT) and release everything."""
        if self.state in _SYNCHRONIZED or self.state is S.SYN_RCVD:
            if self.state in _COUNTED_ESTABLISHED:
                self.stack_stats.established_resets.increment()
            self._emit(self.snd.max, RST | ACK, b"", b"", 0)  # type: ignore[union-attr]
        self._finish(None)

    def abort(self) -> None:
        """The stack is closing: the connection ends now (RST to a synchronized peer), as netstack's Abort."""
        self.fail(ErrConnectionAborted())

    def fail(self, err: Error) -> None:
        """The connection failed (retransmissions or keepalives exhausted): tell the user, RST the peer.

        A timeout after an ICMP error reports that error instead (EHOSTUNREACH rather than ETIMEDOUT), as Linux.
        """
        if isinstance(err, ErrTimeout) and self.soft_error is not None:
            err = self.soft_error
        if self.state in _SYNCHRONIZED:
            if self.state in _COUNTED_ESTABLISHED:
                self.stack_stats.established_resets.increment()
            self._emit(self.snd.max, RST | ACK, b"", b"", 0)  # type: ignore[union-attr]
        self._finish(err)

    def _finish(self, err: Error | None) -> None:
        """Enter CLOSED: report ``err`` (if any) and free every timer, queue and registration."""
        if self.state is S.SYN_SENT and err is not None:
            self.stack_stats.failed_connection_attempts.increment()
        self._set_state(S.CLOSED)
        if err is not None:
            self.error = err
            self.pending_error = err
        # Data already received stays readable, before the error (Linux); the rest goes, and with it
        # every reference back to this endpoint, so that reference counting alone frees it.
        if self.snd is not None:
            self.snd.close()
        if self.zerocopy is not None:
            self.zerocopy.release(self)
        for timer in (self.delack_timer, self.state_timer, self.keepalive_timer):
            if timer is not None:
                timer.close()
        self.delack_timer = self.state_timer = self.keepalive_timer = None
        if self.fast_open_slot is not None:
            self._leave_fast_open_slot()
        if self.parent is not None:
            listener = self.parent.listener
            # A handshake that ends unfinished leaves the listener; a connection in the accept queue stays
            # there, ended: accept() hands it out, and its reads give what came, then the error (Linux's).
            if listener is None or self in listener.pending:
                if listener is not None:
                    listener.pending.remove(self)
                self.parent = None
        self._release()
        self.waiter_queue.notify(_CLOSED_EVENTS)

    def _release(self) -> None:
        if self._id is not None:
            self.stack.demux.unregister((self.net_proto,), self.proto.number, self._id, self, self._bound_nic)
            self._id = None
        if self._reservation is not None:
            self.stack.ports.release(*self._reservation)
            self._reservation = None
        self.listener = None

    # --- keepalive --------------------------------------------------------------------------------

    def _arm_keepalive(self) -> None:
        if not self.keepalive or self.state is not S.ESTABLISHED and self.state is not S.CLOSE_WAIT:
            self._cancel_keepalive()
            return
        if self.keepalive_timer is None:
            self.keepalive_timer = self.stack.timers.timer(self.guarded, self._on_keepalive)
        self.keepalive_timer.reset(self.keepalive_idle)

    def _cancel_keepalive(self) -> None:
        if self.keepalive_timer is not None:
            self.keepalive_timer.cancel()

    def _on_keepalive(self) -> None:
        """Idle long enough? Probe with an old sequence number; too many unanswered: the peer is gone."""
        if self.state not in _COUNTED_ESTABLISHED or self.snd is None:
            return
        now = self.stack.clock.now()
        idle = now - self.last_receive
        if self.keepalive_probes == 0 and idle < self.keepalive_idle:
            self.keepalive_timer.reset(self.keepalive_idle - idle)  # type: ignore[union-attr]
            return
        if self.keepalive_probes >= self.keepalive_count:
            self.fail(ErrTimeout())
            return
        self.keepalive_probes += 1
        self.send_segment(self.snd.una - 1, ACK)
        self.keepalive_timer.reset(self.keepalive_interval)  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return f"<TCPEndpoint {self.state.name} {self.local} -> {self.remote}>"


