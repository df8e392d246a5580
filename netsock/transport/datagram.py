"""What datagram endpoints (UDP, UDP-Lite, ICMP echo "ping" sockets, raw) share: binding, connecting, a
bounded receive queue, readiness, socket options and ICMP error reporting.

A protocol subclass supplies its header: ``_send`` builds and sends one datagram, and its inbound
path calls ``_enqueue`` with the payload (a memoryview of the received frame: not copied until the
reader reads it) and the packet it came in. What the reader asked to learn about each datagram (the
RECEIVE_* options, TIMESTAMP) is taken from that packet as it is queued, and only then: reads return
it as control messages, as netstack's do.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import MutableSequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..header import ipv4, ipv6
from ..ports import PortFlags
from ..stack.bpf import Filter
from ..stack.demux import TransportEndpointID, reuseport_program
from ..stack.interfaces import PacketType
from ..stack.multicast import MAX_SOURCES, MCAST_EXCLUDE, MCAST_INCLUDE, socket_allows
from ..stack.packet_buffer import PacketBuffer, new_flow_hash
from ..stack.registration import ControlType, TransportEndpoint, check_on_link, socket_route
from ..stack.route import Route
from ..tcpip import (DEFAULT_WRITE_OPTIONS, IPV4_PROTOCOL_NUMBER, NO_CONTROL_MESSAGES, ControlMessages,
                     ErrAccessDenied, ErrAlreadyBound, ErrBadLocalAddress, ErrBroadcastDisabled, ErrClosedForReceive,
                     ErrClosedForSend, ErrConnectionRefused, ErrDestinationRequired, ErrHostDown, ErrHostUnreachable,
                     ErrInvalidEndpointState, ErrInvalidOptionValue, ErrMessageTooLong, ErrNetworkUnreachable,
                     ErrNoBufferSpace, ErrNotConnected, ErrNotPermitted, ErrNotSupported, ErrProtocolError,
                     ErrUnknownDevice, ErrUnknownProtocolOption,
                     ErrWouldBlock, Error, FullAddress, IPv6PacketInfo, PacketInfo, ReadResult,
                     SendableControlMessages, ShutdownFlags, SockOpt, TransportEndpointStats, WriteOptions)
from ..tcpip.options import (PMTUDISC_DO, PMTUDISC_DONT, PMTUDISC_INTERFACE, PMTUDISC_OMIT, PMTUDISC_PROBE,
                             PMTUDISC_SETS_DF, PMTUDISC_WANT, SCM_TSTAMP_SCHED, SCM_TSTAMP_SND, SOF_TIMESTAMPING_OPT_ID,
                             SOF_TIMESTAMPING_OPT_TSONLY, SOF_TIMESTAMPING_TX_SCHED, SOF_TIMESTAMPING_TX_SOFTWARE,
                             UNLIMITED_PACING_RATE)
from ..waiter import EventMask, WaiterQueue

_IN, _OUT, _ERR, _HUP, _RDHUP = (int(m) for m in (EventMask.IN, EventMask.OUT, EventMask.ERR, EventMask.HUP,
                                                  EventMask.RDHUP))

if TYPE_CHECKING:
    from ..stack.stack import Stack

# Linux's net.core.rmem_default / wmem_default.
DEFAULT_BUFFER_SIZE = 212992
MIN_BUFFER_SIZE = 4096
MAX_BUFFER_SIZE = 4 << 20

# Options that make each received datagram carry control messages.
_RECEIVE_OPTIONS = (SockOpt.TIMESTAMP, SockOpt.RECEIVE_TOS, SockOpt.RECEIVE_TTL, SockOpt.RECEIVE_PACKET_INFO,
                    SockOpt.RECEIVE_TCLASS, SockOpt.RECEIVE_HOP_LIMIT, SockOpt.RECEIVE_IPV6_PACKET_INFO,
                    SockOpt.RECEIVE_QUEUE_OVERFLOW, SockOpt.RECEIVE_ORIGINAL_DESTINATION, SockOpt.RECEIVE_MARK,
                    SockOpt.RECEIVE_FLOW_INFO, SockOpt.RECEIVE_FRAGMENT_SIZE, SockOpt.RECEIVE_FRAGMENT_SIZE6)

# The ICMP errors a connected datagram socket is told of without IP_RECVERR, and as what: the fatal
# ones of Linux's icmp_err_convert / icmpv6_err_convert (measured on Linux, UDP and raw sockets alike).
# Net or host unreachable and time exceeded are transient: such a socket never hears of them.
_HARD_ERRORS: dict[ControlType, type[Error]] = {
    ControlType.PORT_UNREACHABLE: ErrConnectionRefused,
    ControlType.PROTOCOL_UNREACHABLE: ErrUnknownProtocolOption,     # ENOPROTOOPT
    ControlType.NET_UNKNOWN: ErrNetworkUnreachable,
    ControlType.HOST_UNKNOWN: ErrHostDown,
    ControlType.PACKET_TOO_BIG: ErrMessageTooLong,                  # unless IP_PMTUDISC_DONT
    ControlType.PARAMETER_PROBLEM: ErrProtocolError,
}

# The transient ones, which only a socket with IP_RECVERR / IPV6_RECVERR is told of (queued, and as its error).
_SOFT_ERRORS: dict[ControlType, type[Error]] = {
    ControlType.NET_UNREACHABLE: ErrNetworkUnreachable,
    ControlType.HOST_UNREACHABLE: ErrHostUnreachable,
    ControlType.TTL_EXCEEDED: ErrHostUnreachable,
}
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, SO_EE_ORIGIN_TIMESTAMPING = 2, 3, 4    # <linux/errqueue.h>
TRANSMIT_STAMPS = ((SCM_TSTAMP_SCHED, SOF_TIMESTAMPING_TX_SCHED), (SCM_TSTAMP_SND, SOF_TIMESTAMPING_TX_SOFTWARE))
# What a queued entry is charged beside its bytes (an skb's own size, roughly: Linux charges truesize), so
# that stamps nobody reads fill the receive buffer and stop, as there, instead of growing without end.
ENTRY_OVERHEAD = 512

_PMTUDISC_REFUSES = frozenset((PMTUDISC_DO, PMTUDISC_PROBE, PMTUDISC_INTERFACE))   # too large: EMSGSIZE


class QueuedError(NamedTuple):
    """An ICMP error about a datagram this socket sent, kept on its error queue (IP_RECVERR, IPV6_RECVERR) as
    Linux's ip_icmp_error keeps one: what recvmsg(MSG_ERRQUEUE) hands out as a sock_extended_err."""

    error: Error                # ee_errno
    origin: int                 # SO_EE_ORIGIN_ICMP or SO_EE_ORIGIN_ICMP6
    icmp_type: int
    icmp_code: int
    info: int                   # ee_info: the MTU of a too-big error, a parameter problem's pointer
    offender: bytes             # the address the ICMP error came from
    destination: FullAddress    # where the quoted datagram was going (its port: UDP's or TCP's, else 0)
    payload: bytes              # as much of that datagram's payload as the error quotes


def link_frame(route: Route, pkt: PacketBuffer) -> bytes:
    """A packet just handed to ``route`` as a transmit stamp carries it: with lo's header of zero addresses
    on a loopback NIC, as Linux shows it; on other links from the network header on (theirs is built later,
    once the next hop's address is resolved)."""
    frame = pkt.to_bytes()
    if route.nic.loopback:
        return bytes(12) + (0x0800 if len(route.local_address) == 4 else 0x86DD).to_bytes(2, "big") + frame
    return frame


class TransmitStamp(NamedTuple):
    """A transmit timestamp (SO_TIMESTAMPING's TX_SCHED, TX_SOFTWARE) on the error queue, as Linux's
    __skb_tstamp_tx queues one: what recvmsg(MSG_ERRQUEUE) hands out as an SCM_TIMESTAMPING and a
    sock_extended_err of origin SO_EE_ORIGIN_TIMESTAMPING, with the packet as sent (unless OPT_TSONLY)."""

    info: int                   # ee_info: SCM_TSTAMP_SCHED, _SND or (TCP) _ACK
    key: int                    # ee_data: which send (OPT_ID's counter; 0 without it)
    payload: bytes              # the frame as it left (link header as Linux's lo shows one), or b""
    stamp: int                  # ns since the epoch
    source: bytes               # the packet's source address (the offender Linux names, with the packet)


class ZeroCopyCompletion(NamedTuple):
    """MSG_ZEROCOPY's completion on the error queue (Linux's __msg_zerocopy_callback): the send calls
    ``first`` to ``last`` (the socket's counter of such calls, 32 bits) no longer need their buffers;
    ``copied``: their bytes were copied after all (SO_EE_CODE_ZEROCOPY_COPIED), as a loopback's are."""

    first: int                  # ee_info
    last: int                   # ee_data
    copied: bool
    payload: bytes = b""        # (no packet goes with it)


def complete_zerocopy(queue: MutableSequence[Any], first: int, last: int, copied: bool) -> bool:
    """Queue the completion of send calls ``first``..``last``, or extend the error queue's last entry if it
    is a completion ending just before ``first`` (skb_zerocopy_notify_extend: its code stays as it was);
    True if a new entry was queued."""
    tail = queue[-1] if queue else None
    if type(tail) is ZeroCopyCompletion and (tail.last + 1) & 0xFFFFFFFF == first and \
            ((tail.last - tail.first) & 0xFFFFFFFF) + ((last - first) & 0xFFFFFFFF) + 2 < 1 << 32:
        queue[-1] = tail._replace(last=last)
        return False
    queue.append(ZeroCopyCompletion(first, last, copied))
    return True


def queued_error(error: Error, info: int, pkt: PacketBuffer, port: int, payload: bytes) -> QueuedError | None:
    """The error-queue entry for an ICMP error (``pkt``, as the network layer hands it to the transport)
    about what was sent to ``port``, quoting ``payload``; None if the ICMP header is not all there."""
    icmp = pkt.transport_header      # the ICMP header, then the quoted network header (see network/*/icmp)
    if len(icmp) < 8:
        return None
    if len(pkt.network_header) >= 20 and pkt.network_header[0] >> 4 == 4:
        origin, offender, remote = SO_EE_ORIGIN_ICMP, bytes(pkt.network_header[12:16]), bytes(icmp[24:28])
    else:
        origin, offender, remote = SO_EE_ORIGIN_ICMP6, bytes(pkt.network_header[8:24]), bytes(icmp[32:48])
    return QueuedError(error, origin, icmp[0], icmp[1], info, offender, FullAddress(pkt.nic_id, remote, port),
                       payload)


TXTIME_HORIZON = 10.0       # seconds ahead a departure time may be (Linux's fq: later ones are dropped)
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_TAI = 0, 1, 11
INITIAL_QUANTUM = 10 * 1514     # bytes a flow sends before fq paces it (its initial_quantum, 10 Ethernet MTUs)


class Departures:
    """A socket's datagrams held until they may leave, in the order written, as Linux's fq queueing discipline
    keeps a socket's flow: each no earlier than its SO_TXTIME time, one not yet due holding back those after it;
    and with SO_MAX_PACING_RATE, past the first INITIAL_QUANTUM bytes, each its length at the rate after the one
    before (a second at most; of the time the queue came late, up to half that made up)."""

    __slots__ = ("clock", "credit", "held", "next_free", "queue", "rate", "timer")

    def __init__(self, stack: Any, rate: int) -> None:
        self.clock = stack.clock
        self.held = stack.held_datagrams       # the stack's queues holding any, this one among them while it does
        self.queue: deque[tuple[float, int, Any]] = deque()     # (when it may leave, its bytes, what sends it)
        self.timer = stack.timers.timer(self._release)
        self.rate = rate                # bytes a second (UNLIMITED_PACING_RATE: not paced)
        self.credit = INITIAL_QUANTUM
        self.next_free = 0.0            # when the pacing lets the next one go (fq's time_next_packet)

    def __bool__(self) -> bool:
        return bool(self.queue)

    def hold(self, due: float, size: int, send: Any) -> None:
        self.queue.append((due, size, send))
        if len(self.queue) == 1:
            self.held.add(self)
            self._release()

    def _release(self) -> None:
        queue, now = self.queue, self.clock.now()
        while queue:
            due, size, send = queue[0]
            start = max(due, self.next_free)
            if start > now:
                self.timer.reset_at(start)
                return
            queue.popleft()
            send()
            self._paced(size, now)
        self.held.discard(self)

    def _paced(self, size: int, now: float) -> None:
        rate = self.rate
        if rate == UNLIMITED_PACING_RATE:
            return
        if self.credit > 0:
            self.credit -= size
            return
        gap = min(size / rate, 1.0) if rate else 1.0
        if self.next_free:
            gap -= min(gap / 2, now - self.next_free)
        self.next_free = now + gap


class Membership:
    """A socket's membership of a group: its filter mode and sources (in the order added), and whether it ever
    had a source list (Linux's sflist: a source operation of the other mode is refused then)."""

    __slots__ = ("listed", "mode", "sources")

    def __init__(self, mode: int = MCAST_EXCLUDE, source: bytes | None = None) -> None:
        self.mode = mode
        self.sources = [source] if source is not None else []
        self.listed = source is not None

    def state(self) -> tuple[int, frozenset[bytes]]:
        return self.mode, frozenset(self.sources)

    def filters(self) -> bool:
        """Whether some source is kept out."""
        return self.mode == MCAST_INCLUDE or bool(self.sources)


class EndpointState(enum.Enum):
    INITIAL = "initial"
    BOUND = "bound"
    CONNECTED = "connected"
    CLOSED = "closed"


class DatagramEndpoint(TransportEndpoint):
    transport_number = 0
    # IP_BIND_ADDRESS_NO_PORT applies (Linux's __inet_bind: UDP; a ping socket takes its id at bind).
    binds_address_alone = False
    max_payload = 65535 - 8     # what one IPv6 packet's payload holds; over IPv4, 20 bytes less

    def __init__(self, stack: Stack, net_proto: int, waiter_queue: WaiterQueue) -> None:
        self.stack = stack
        self.net_proto = net_proto
        self.waiter_queue = waiter_queue
        self.state = EndpointState.INITIAL
        self.stats = TransportEndpointStats()
        self.local = FullAddress()          # what getsockname shows
        self.remote: FullAddress | None = None
        self._bound_addr = b""              # the address given to bind (b'': any)
        self._id: TransportEndpointID | None = None
        self._reservation: tuple[Any, ...] | None = None
        self._route: Route | None = None    # cached for the connected peer
        self._txhash = 0                    # ... and a random hash of that flow: its IPv6 flow label's
        self._queue: deque[tuple[memoryview, FullAddress, ControlMessages]] = deque()
        self._queued_bytes = 0
        self._pending_error: Error | None = None
        # IP_RECVERR's queue, transmit stamps', MSG_ZEROCOPY's completions
        self._errors: deque[QueuedError | TransmitStamp | ZeroCopyCompletion] = deque()
        self._stamp_key = 0                 # SO_TIMESTAMPING's OPT_ID: the next datagram's
        self._zerocopy_id = 0               # MSG_ZEROCOPY: the next send call's number
        self._error_bytes = 0
        # SO_PEEK_OFF is set: a reader peeking past the queued datagrams waits for the next one, so each
        # arrival wakes readers, not only the first into an empty queue (Linux's peeking_with_offset).
        self.peeking_with_offset = False
        self._peeked_empty: set[int] = set()    # queued zero-length datagrams a peek returned (skb->peeked)
        self._read_shut = False            # plain bools: IntFlag arithmetic is slow per packet
        self._write_shut = False
        self.options: dict[SockOpt, Any] = {
            SockOpt.RECEIVE_BUFFER_SIZE: DEFAULT_BUFFER_SIZE, SockOpt.SEND_BUFFER_SIZE: DEFAULT_BUFFER_SIZE,
            SockOpt.REUSE_ADDRESS: False, SockOpt.REUSE_PORT: False, SockOpt.BROADCAST: False,
            SockOpt.BIND_TO_DEVICE: 0, SockOpt.TTL: 0, SockOpt.MULTICAST_TTL: 1, SockOpt.MULTICAST_LOOP: True,
            SockOpt.MULTICAST_INTERFACE: 0, SockOpt.IPV4_TOS: 0, SockOpt.IPV6_TRAFFIC_CLASS: 0,
            SockOpt.MTU_DISCOVER: PMTUDISC_WANT, SockOpt.BIND_ADDRESS_NO_PORT: False, SockOpt.FREEBIND: False,
            SockOpt.TRANSPARENT: False,
            SockOpt.MARK: 0, SockOpt.SOCKET_FILTER: None, SockOpt.LOCK_FILTER: False, SockOpt.RECEIVE_ERRORS: False,
            SockOpt.DONT_ROUTE: False, SockOpt.NO_CHECKSUM: False, SockOpt.IPV6_DONT_FRAGMENT: False,
            SockOpt.UNICAST_INTERFACE: 0, SockOpt.MULTICAST_ALL: True, SockOpt.LOCAL_PORT_RANGE: 0,
            SockOpt.TRANSMIT_TIMESTAMPING: 0, SockOpt.ZEROCOPY: False, SockOpt.IPV6_AUTO_FLOW_LABEL: True,
            # Datagrams scheduled as Linux's fq qdisc schedules them (see Departures).
            SockOpt.MAX_PACING_RATE: UNLIMITED_PACING_RATE, SockOpt.TXTIME: None, SockOpt.RECEIVE_PATH_MTU: False,
            **dict.fromkeys(_RECEIVE_OPTIONS, False),
        }
        self._wants_control = False         # any of _RECEIVE_OPTIONS on: one test per datagram
        self.socket_filter: Filter | None = None    # SO_ATTACH_FILTER's, tested per datagram
        self._memberships: dict[tuple[int, bytes], Membership] = {}     # (NIC, group) -> its source filter
        self._multicast_all = True          # IP_MULTICAST_ALL, read per datagram
        self._source_filtered = False       # some membership filters sources: each group datagram is looked at
        self.reuseport_program: Filter | None = None    # SO_ATTACH_REUSEPORT_CBPF's, until bind gives it a group
        self._txtime_due: float | None = None   # during a write with SCM_TXTIME: when its datagrams may leave
        self._departures: Departures | None = None  # those held until then (made at the first)
        self._path_mtu_report: ControlMessages | None = None    # IPV6_RECVPATHMTU's, for the next read

    # --- binding and connecting ------------------------------------------------------------------

    def bind(self, addr: FullAddress) -> None:
        """Bind to a local address (b'' = any) and port (0 = ephemeral)."""
        if self.state is not EndpointState.INITIAL:
            raise ErrAlreadyBound() if self.state is not EndpointState.CLOSED else ErrInvalidEndpointState()
        local = bytes(addr.addr)
        if local and not self._may_bind(local):
            raise ErrBadLocalAddress()
        if self.options[SockOpt.BIND_ADDRESS_NO_PORT] and not addr.port and self.binds_address_alone:
            # IP_BIND_ADDRESS_NO_PORT: the address alone; the port comes with connect or the first
            # write (autobind). Still unbound as far as binding again goes, as on Linux.
            self._bound_addr = local
            self.local = FullAddress(addr.nic, local, 0)
            return
        self._bound_addr = local   # _register reserves the port on it
        try:
            self._register(addr.nic, local, addr.port, None)
        except Error:
            self._bound_addr = b""
            raise
        self.local = FullAddress(addr.nic, local, self._id.local_port)  # type: ignore[union-attr]
        self.state = EndpointState.BOUND

    def connect(self, addr: FullAddress) -> None:
        """Set the default peer; datagrams from anyone else are no longer received. An empty
        address disconnects (as connect with AF_UNSPEC does)."""
        if self.state is EndpointState.CLOSED:
            raise ErrInvalidEndpointState()
        if not addr.addr:
            self.disconnect()
            return
        nic = self._output_nic(addr.nic, bytes(addr.addr))
        route = socket_route(self.stack, nic, self._source_address(), bytes(addr.addr), self.net_proto,
                             self.options[SockOpt.DONT_ROUTE], self.options[SockOpt.TRANSPARENT])
        if route.broadcast and not self.options[SockOpt.BROADCAST]:
            raise ErrBroadcastDisabled()
        port = self._id.local_port if self._id is not None else 0
        remote = FullAddress(addr.nic, bytes(addr.addr), addr.port)
        self._register(nic, self._bound_addr or route.local_address, port, remote)
        self.local = FullAddress(self.local.nic, route.local_address, self._id.local_port)  # type: ignore[union-attr]
        self.remote = remote
        self._route = route
        self._txhash = new_flow_hash()
        self.state = EndpointState.CONNECTED

    def disconnect(self) -> None:
        if self.state is not EndpointState.CONNECTED:
            return
        self._register(self.local.nic, self._bound_addr, self.local.port, None)
        self.local = FullAddress(self.local.nic, self._bound_addr, self.local.port)
        self.remote = None
        self._route = None
        self.state = EndpointState.BOUND

    def _register(self, nic: int, local: bytes, port: int, remote: FullAddress | None) -> None:
        """Swap this endpoint's port reservation and demux entry for new ones (all or nothing)."""
        flags = PortFlags(self.options[SockOpt.REUSE_ADDRESS], self.options[SockOpt.REUSE_PORT])
        nets = (self.net_proto,)
        old_res, old_id = self._reservation, self._id
        if old_res is not None:
            self.stack.ports.release(*old_res)
        try:
            # The port itself is reserved on the wildcard-or-bound address, as Linux's bind/autobind.
            port = self.stack.ports.reserve(nets, self.transport_number, self._bound_addr, port, flags, nic,
                                            local_range=self.options[SockOpt.LOCAL_PORT_RANGE])
        except Error:
            if old_res is not None:
                self.stack.ports.reserve(*old_res)
            raise
        new_id = TransportEndpointID(port, local, remote.port if remote else 0, bytes(remote.addr) if remote else b"")
        if old_id is not None:
            self.stack.demux.unregister(nets, self.transport_number, old_id, self, old_res[5])  # type: ignore[index]
        self.stack.demux.register(nets, self.transport_number, new_id, self, flags.reuse_port, nic,
                                  reuse_addr=flags.reuse_addr, program=self.reuseport_program)
        self.reuseport_program = None       # (the group has it now, or had one of its own)
        self._reservation = (nets, self.transport_number, self._bound_addr, port, flags, nic)
        self._id = new_id

    def _release(self) -> None:
        if self._id is not None and self._reservation is not None:
            self.stack.demux.unregister(self._reservation[0], self.transport_number, self._id, self,
                                        self._reservation[5])
            self.stack.ports.release(*self._reservation)
        self._id = None
        self._reservation = None

    # --- reading ----------------------------------------------------------------------------------

    def read(self, peek: bool = False) -> ReadResult:
        """The next datagram, whole (the adapter truncates to the caller's buffer), and its sender; or, first,
        an empty one with IPV6_RECVPATHMTU's report of a send refused for the path MTU (taken even by a peek,
        as Linux's ipv6_recv_rxpmtu takes it)."""
        report = self._path_mtu_report
        if report is not None and self.options[SockOpt.RECEIVE_PATH_MTU]:
            self._path_mtu_report = None
            destination, nic, _ = report.path_mtu  # type: ignore[misc]
            return ReadResult(b"", FullAddress(nic, destination, 0), report)
        if self._pending_error is not None and not peek:
            err, self._pending_error = self._pending_error, None
            raise err
        if not self._queue:
            if self._read_shut or self.state is EndpointState.CLOSED:
                self.stats.read_errors.read_closed.increment()
                raise ErrClosedForReceive()
            raise ErrWouldBlock()
        if peek:
            data, sender, control = self._queue[0]
            return ReadResult(bytes(data), sender, control)
        entry = self._queue.popleft()
        if self._peeked_empty:
            self._peeked_empty.discard(id(entry))
        data, sender, control = entry
        self._queued_bytes -= len(data)
        return ReadResult(bytes(data), sender, control)

    def peek_at(self, offset: int) -> tuple[ReadResult, int]:
        """SO_PEEK_OFF's peek: the datagram ``offset`` bytes into the queue, whole, and how far into it
        the offset falls. Datagrams the offset covers are stepped over, a zero-length one once a peek
        has returned it (Linux's __skb_try_recv_from_queue); ErrWouldBlock if it covers them all."""
        for entry in self._queue:
            data, sender, control = entry
            size = len(data)
            if offset >= size and (offset or id(entry) in self._peeked_empty):
                offset -= size
                continue
            if not size:
                self._peeked_empty.add(id(entry))
            return ReadResult(bytes(data), sender, control), offset
        if self._read_shut or self.state is EndpointState.CLOSED:
            raise ErrClosedForReceive()
        raise ErrWouldBlock()

    def _enqueue(self, payload: memoryview, sender: FullAddress, pkt: PacketBuffer, dst: bytes,
                 control: ControlMessages | None = None) -> None:
        """Queue a datagram for the reader; ``pkt`` (its network header) and ``dst`` (the destination
        address) tell what the control messages asked for say about it, unless ``control`` says it all."""
        if self._read_shut or self.state is EndpointState.CLOSED:
            self.stats.receive_errors.closed_receiver.increment()
            return
        if self._queued_bytes >= self.options[SockOpt.RECEIVE_BUFFER_SIZE]:
            self.stats.receive_errors.receive_buffer_overflow.increment()
            self._count_overflow()
            return
        if control is None:
            control = self._control_messages(pkt, sender.addr, dst) if self._wants_control else NO_CONTROL_MESSAGES
        was_empty = not self._queue
        self._queue.append((payload, sender, control))
        self._queued_bytes += len(payload)
        self.stats.packets_received.value += 1
        if was_empty or self.peeking_with_offset:
            self.waiter_queue.notify(EventMask.IN)

    def _not_for_this_socket(self, pkt: PacketBuffer, src: bytes, dst: bytes) -> bool:
        """Group traffic as Linux's ip_mc_sf_allow lets it through: for a group this socket joined (on the NIC it
        came by), as the membership's source filter says; for another, only with IP_MULTICAST_ALL on."""
        if pkt.pkt_type != PacketType.MULTICAST:
            return False
        membership = self._memberships.get((pkt.nic_id, bytes(dst)))
        if membership is None:
            return not self._multicast_all
        return not socket_allows(membership.mode, membership.sources, bytes(src))

    def _control_messages(self, pkt: PacketBuffer, src: bytes, dst: bytes) -> ControlMessages:
        """The control messages the options ask for, from the datagram's network header: IPv4's TOS
        is its byte 1 and TTL its byte 8 (RFC 791); IPv6's traffic class straddles bytes 0-1 and its
        hop limit is byte 7 (RFC 8200)."""
        opts = self.options
        header = pkt.network_header
        timestamp = self.stack.clock.now_ns() if opts[SockOpt.TIMESTAMP] else None
        ipv6_info = IPv6PacketInfo(dst, pkt.nic_id) if opts[SockOpt.RECEIVE_IPV6_PACKET_INFO] else None
        drops = None
        if opts[SockOpt.RECEIVE_QUEUE_OVERFLOW]:
            errors = self.stats.receive_errors     # Linux's sk_drops: what the queue or the filter refused
            drops = errors.receive_buffer_overflow.value + errors.filtered.value or None
        # (the packet's own: a transparent socket takes datagrams TPROXY steered to it, for any address and port)
        original = (dst, int.from_bytes(pkt.transport_header[2:4], "big") if len(pkt.transport_header) >= 4
                    else self.local.port) if opts[SockOpt.RECEIVE_ORIGINAL_DESTINATION] else None
        mark = pkt.mark if opts[SockOpt.RECEIVE_MARK] else None
        if len(dst) == 16:
            return ControlMessages(
                timestamp=timestamp, ipv6_packet_info=ipv6_info, drops=drops, original_destination=original, mark=mark,
                tclass=((header[0] & 0x0F) << 4 | header[1] >> 4) if opts[SockOpt.RECEIVE_TCLASS] else None,
                hop_limit=header[7] if opts[SockOpt.RECEIVE_HOP_LIMIT] else None,
                flow_info=(int.from_bytes(header[:4], "big") & 0x0FFFFFFF or None)
                if opts[SockOpt.RECEIVE_FLOW_INFO] else None,
                fragment_size6=pkt.frag_max_size or None if opts[SockOpt.RECEIVE_FRAGMENT_SIZE6] else None)
        packet_info = None
        if opts[SockOpt.RECEIVE_PACKET_INFO]:
            # Where a reply would come from, as Linux's fib_compute_spec_dst: the destination itself if
            # it is ours, else (broadcast, multicast) the receiving NIC's address towards the sender.
            local = dst
            if pkt.pkt_type != PacketType.HOST:
                nic = self.stack.nics.get(pkt.nic_id)
                local = nic.primary_address(IPV4_PROTOCOL_NUMBER, bytes(src)) if nic is not None else bytes(4)
            packet_info = PacketInfo(pkt.nic_id, local, dst)
        return ControlMessages(timestamp=timestamp, ipv6_packet_info=ipv6_info, packet_info=packet_info,
                               drops=drops, original_destination=original, mark=mark,
                               tos=header[1] if opts[SockOpt.RECEIVE_TOS] else None,
                               ttl=header[8] if opts[SockOpt.RECEIVE_TTL] else None,
                               fragment_size=pkt.frag_max_size or None if opts[SockOpt.RECEIVE_FRAGMENT_SIZE]
                               else None)

    def _count_overflow(self) -> None:
        """Protocol-wide counter for a datagram dropped on a full receive queue."""

    # --- writing ----------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview, options: WriteOptions = DEFAULT_WRITE_OPTIONS) -> int:
        """Send one datagram; returns its length. Never partial: all of it or an error."""
        if self._write_shut:
            self.stats.write_errors.write_closed.increment()
            raise ErrClosedForSend()
        if self.state is EndpointState.CLOSED:
            self.stats.write_errors.invalid_endpoint_state.increment()
            raise ErrInvalidEndpointState()
        if len(data) > self.max_payload:
            self.stats.write_errors.invalid_args.increment()
            raise ErrMessageTooLong()
        to = options.to
        if to is None or (self.remote is not None and to.addr == self.remote.addr and to.port == self.remote.port):
            if self.remote is None:
                raise ErrDestinationRequired()
            route, dst_port = self._route, self.remote.port
            if options.dont_route:
                check_on_link(route)    # (SO_DONTROUTE's was checked at connect)
        else:
            nic = self._output_nic(to.nic, bytes(to.addr))
            try:
                route = socket_route(self.stack, nic, self._source_address(), bytes(to.addr), self.net_proto,
                                     options.dont_route or self.options[SockOpt.DONT_ROUTE],
                                     self.options[SockOpt.TRANSPARENT])
            except Error:
                self.stats.send_errors.no_route.increment()
                raise
            dst_port = to.port
        assert route is not None
        if len(data) > self.max_payload - 20 and len(route.remote_address) == 4:   # IPv4's total length
            self.stats.write_errors.invalid_args.increment()
            raise ErrMessageTooLong()
        if route.broadcast and not self.options[SockOpt.BROADCAST]:
            raise ErrBroadcastDisabled()
        if self._pending_error is not None:
            # An ICMP error reported since fails this send instead, once (Linux's sock_error when the
            # datagram's buffer is allocated).
            err, self._pending_error = self._pending_error, None
            raise err
        if self.state is EndpointState.INITIAL:
            self._autobind()
        v6 = len(route.remote_address) == 16
        control = options.control           # sendmsg's ancillary data overrides the socket's settings
        ttl = control.hop_limit if v6 else control.ttl
        if ttl is None:
            ttl = self.options[SockOpt.MULTICAST_TTL] if route.multicast else \
                self.options[SockOpt.TTL] or route.default_ttl()
        tos = control.tclass if v6 else control.tos
        if tos is None:
            tos = self.options[SockOpt.IPV6_TRAFFIC_CLASS if v6 else SockOpt.IPV4_TOS]
        if control.txtime is None and self._departures is None:
            self.stats.packets_sent.value += self._transmit(route, data, dst_port, ttl, tos, control)
        else:
            self.stats.packets_sent.value += self._transmit_timed(route, data, dst_port, ttl, tos, control)
        if options.zerocopy and self.options[SockOpt.ZEROCOPY]:
            self._complete_zerocopy(route.loop or route.nic.loopback)
        return len(data)

    def _transmit_timed(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int, tos: int,
                        control: SendableControlMessages) -> int:
        """A write with SCM_TXTIME, or of a socket whose datagrams are scheduled (paced, or held once): they wait
        for their time (see Departures; one dropped beyond the horizon, which IP_RECVERR reports as ENOBUFS)."""
        now = self.stack.clock.now()
        due = now if control.txtime is None else self._departure(control.txtime)
        if due - now > TXTIME_HORIZON:
            self.stats.send_errors.send_to_network_failed.increment()
            if self.options[SockOpt.RECEIVE_ERRORS]:
                raise ErrNoBufferSpace()
            return 0
        self._txtime_due = due
        try:
            return self._transmit(route, data, dst_port, ttl, tos, control)
        finally:
            self._txtime_due = None

    def _departure(self, txtime: int) -> float:
        """SCM_TXTIME's time (ns of SO_TXTIME's clock) on the stack's clock, whose monotonic seconds stand for
        CLOCK_MONOTONIC; the wall clock and TAI are taken from now."""
        clock = self.stack.clock
        clock_id = (self.options[SockOpt.TXTIME] or (CLOCK_MONOTONIC, 0))[0]
        if clock_id == CLOCK_MONOTONIC:
            return txtime / 1e9
        wall = clock.now_ns()
        if clock_id == CLOCK_TAI:
            wall += time.clock_gettime_ns(CLOCK_TAI) - time.time_ns()
        return clock.now() + (txtime - wall) / 1e9

    def _complete_zerocopy(self, copied: bool) -> None:
        """MSG_ZEROCOPY: the send call's datagrams are with the link, which holds none of the caller's bytes
        after (it writes them out, or copies them: ``copied``, as Linux says of a loopback's), so the buffer
        is free at once; the completion goes to the error queue (not charged to the receive buffer: Linux
        takes it from the option memory)."""
        number, self._zerocopy_id = self._zerocopy_id, (self._zerocopy_id + 1) & 0xFFFFFFFF
        complete_zerocopy(self._errors, number, number, copied)
        self.waiter_queue.notify(EventMask.ERR)

    def _output_nic(self, nic: int, remote: bytes) -> int:
        """The NIC a datagram to ``remote`` leaves by: the address's scope, SO_BINDTODEVICE's or the bound
        address's NIC, else IP_MULTICAST_IF's for a group and IP_UNICAST_IF's for any other (0: the routes
        choose), as Linux's udp_sendmsg picks its oif."""
        nic = nic or self.options[SockOpt.BIND_TO_DEVICE] or self.local.nic
        if not nic and remote:
            nic = self.options[SockOpt.MULTICAST_INTERFACE if self._is_group_address(remote) else
                               SockOpt.UNICAST_INTERFACE]
        return nic

    def _route_write(self, route: Route, protocol: int, pkt: PacketBuffer, ttl: int, tos: int) -> None:
        """Hand a finished datagram to the network layer as IP_MTU_DISCOVER says: with DF (IPv4) for
        WANT, DO and PROBE; refused, EMSGSIZE, when larger than the path MTU (DO) or the device's (PROBE,
        INTERFACE) where the others are fragmented (DONT, WANT to the path's MTU, OMIT to the device's:
        Linux's ip_sk_use_pmtu)."""
        mode = self.options[SockOpt.MTU_DISCOVER]
        learned = mode <= PMTUDISC_DO       # the others go by the device's MTU, ignoring the path's
        # IPV6_DONTFRAG refuses too, over IPv6, what would need fragmenting (Linux's ip6_append_data).
        refuses = mode in _PMTUDISC_REFUSES or self.options[SockOpt.IPV6_DONT_FRAGMENT] and \
            len(route.remote_address) == 16
        if refuses and not pkt.gso_size:
            mtu = route.mtu(learned)
            if pkt.size() + (ipv4.MIN_SIZE if len(route.remote_address) == 4 else ipv6.HEADER_SIZE) > mtu:
                self.stats.write_errors.invalid_args.increment()
                if self.options[SockOpt.IPV6_DONT_FRAGMENT] and self.options[SockOpt.RECEIVE_PATH_MTU] and \
                        len(route.remote_address) == 16:
                    # (the latest only, as Linux's ipv6_local_rxpmtu keeps it)
                    self._path_mtu_report = ControlMessages(path_mtu=(
                        route.remote_address, self.options[SockOpt.BIND_TO_DEVICE], mtu))
                raise ErrMessageTooLong()
        pkt.mark = self.options[SockOpt.MARK]
        if len(route.remote_address) == 16 and self.options[SockOpt.IPV6_AUTO_FLOW_LABEL]:
            # The flow's hash for IPv6 to make its label of: the connection's, else one of the datagram's
            # addresses and ports (or ICMP type and code), as Linux's flow dissector makes it.
            pkt.hash = self._txhash if route is self._route else hash(
                (route.local_address, route.remote_address, protocol, bytes(pkt.headers()[:4]))) & 0xFFFFFFFF or 1
        departures = self._departures
        if departures is not None or self._txtime_due is not None:
            pkt.own_payload()
            if departures is None:
                departures = self._departures = Departures(self.stack, self.options[SockOpt.MAX_PACING_RATE])
            due = self._txtime_due
            size = pkt.size() + (ipv4.MIN_SIZE if len(route.remote_address) == 4 else ipv6.HEADER_SIZE)
            departures.hold(self.stack.clock.now() if due is None else due, size, lambda: self._leave_held(
                route, protocol, pkt, ttl, tos, mode in PMTUDISC_SETS_DF, learned))
            return
        self._leave(route, protocol, pkt, ttl, tos, mode in PMTUDISC_SETS_DF, learned)

    def _leave(self, route: Route, protocol: int, pkt: PacketBuffer, ttl: int, tos: int, dont_fragment: bool,
               learned: bool) -> None:
        route.write_packet(protocol, pkt, ttl, tos, dont_fragment, learned)
        stamping = self.options[SockOpt.TRANSMIT_TIMESTAMPING]
        if stamping & (SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_TX_SOFTWARE):
            self._stamp_transmit(stamping, route, pkt)

    def _leave_held(self, route: Route, protocol: int, pkt: PacketBuffer, ttl: int, tos: int, dont_fragment: bool,
                    learned: bool) -> None:
        """A held datagram's time came: it leaves (a failure now is counted, no caller is left to tell)."""
        try:
            self._leave(route, protocol, pkt, ttl, tos, dont_fragment, learned)
        except Error:
            self.stats.send_errors.send_to_network_failed.increment()

    def _stamp_transmit(self, stamping: int, route: Route, pkt: PacketBuffer) -> None:
        """Queue the transmit stamps SO_TIMESTAMPING asks for, of a datagram handed to ``route``: when it was
        queued for the device, then when it left (one moment here: netsock has no queue in front of a link).
        The packet goes with them as it left, but for the link header, which only a loopback NIC shows here (lo's
        zero addresses, as Linux's): the others build theirs later, after resolving the next hop's address."""
        key = 0
        if stamping & SOF_TIMESTAMPING_OPT_ID:
            key, self._stamp_key = self._stamp_key, (self._stamp_key + 1) & 0xFFFFFFFF
        frame = b"" if stamping & SOF_TIMESTAMPING_OPT_TSONLY else link_frame(route, pkt)
        now = self.stack.clock.now_ns()
        for info, flag in TRANSMIT_STAMPS:
            if stamping & flag:
                if self._error_bytes + len(frame) + ENTRY_OVERHEAD > self.options[SockOpt.RECEIVE_BUFFER_SIZE]:
                    self.stats.receive_errors.receive_buffer_overflow.increment()
                    return
                self._errors.append(TransmitStamp(info, key, frame, now, route.local_address))
                self._error_bytes += len(frame) + ENTRY_OVERHEAD
        self.waiter_queue.notify(EventMask.ERR)

    def _autobind(self) -> None:
        """The first write of an unbound endpoint takes an ephemeral port, as Linux's autobind (on the
        address bound without a port, if any)."""
        nic, local = self.local.nic, self._bound_addr
        self._register(nic, local, 0, None)
        self.local = FullAddress(nic, local, self._id.local_port)  # type: ignore[union-attr]
        self.state = EndpointState.BOUND

    def _transmit(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int, tos: int,
                  control: SendableControlMessages) -> int:
        """Send what one write makes on ``route``; returns the datagram count (UDP's GSO makes many)."""
        try:
            if route.multicast:
                self._send_multicast(route, data, dst_port, ttl, tos)
            else:
                self._send(route, data, dst_port, ttl, tos)
        except Error:
            self.stats.send_errors.send_to_network_failed.increment()
            raise
        return 1

    def _send(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int, tos: int) -> None:
        raise NotImplementedError

    def _send_multicast(self, route: Route, data: bytes | bytearray | memoryview, dst_port: int, ttl: int,
                        tos: int) -> None:
        """As Linux's ip_mc_output: with IP_MULTICAST_LOOP, a copy for this host's own members of the
        group (through the loop path, so the NIC's membership decides); with TTL 0, none on the wire. Out of
        a loopback NIC, the one that goes brings it back, once, whatever IP_MULTICAST_LOOP says (as Linux's lo)."""
        nic = route.nic
        if self.options[SockOpt.MULTICAST_LOOP] and not nic.loopback and nic.is_in_group(self.net_proto,
                                                                                       route.remote_address):
            to_self = Route(route.local_address, route.remote_address, route.remote_address, route.nic,
                            self.net_proto, loop=True, multicast=True)
            self._send(to_self, data, dst_port, ttl, tos)
        if ttl:
            self._send(route, data, dst_port, ttl, tos)

    def _may_bind(self, local: bytes) -> bool:
        """May this endpoint bind to ``local``: one of the stack's addresses or a group, or anything
        with IP_FREEBIND or IP_TRANSPARENT (Linux's inet_addr_valid_or_nonlocal)."""
        return (self.options[SockOpt.FREEBIND] or self.options[SockOpt.TRANSPARENT]
                or self.stack.local_address_nic(local) is not None
                or self._is_group_address(local))

    def _source_address(self) -> bytes:
        """The address to send from: the bound one, unless that is a group (the route's then, as Linux)."""
        return b"" if self._is_group_address(self._bound_addr) else self._bound_addr

    # --- lifecycle --------------------------------------------------------------------------------

    def shutdown(self, flags: ShutdownFlags) -> None:
        if self.state is not EndpointState.CONNECTED:
            raise ErrNotConnected()
        self._read_shut |= bool(flags & ShutdownFlags.READ)
        self._write_shut |= bool(flags & ShutdownFlags.WRITE)
        if flags & ShutdownFlags.READ:
            self.waiter_queue.notify(EventMask.IN | EventMask.RDHUP | (EventMask.HUP if self._write_shut else 0))
        elif self._read_shut:
            self.waiter_queue.notify(EventMask.HUP)

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if self.state is EndpointState.CLOSED:
            return
        self._release()
        for (nic_id, group), membership in self._memberships.items():
            nic = self.stack.nics.get(nic_id)
            if nic is not None:
                nic.leave_group(self.net_proto, group, *membership.state())
        self._memberships.clear()
        self._queue.clear()
        self._peeked_empty.clear()
        self._queued_bytes = 0
        self._route = None
        self.state = EndpointState.CLOSED
        self.waiter_queue.notify(EventMask.IN | EventMask.OUT | EventMask.HUP)

    # --- status -----------------------------------------------------------------------------------

    def readiness(self, mask: int) -> int:
        """The EventMask bits of ``mask`` that hold now, as Linux's datagram_poll decides them (an
        int, as TCP's: shutting down writing never clears output readiness)."""
        closed = self.state is EndpointState.CLOSED
        ready = _OUT
        if self._queue or closed:
            ready |= _IN
        if self._read_shut:
            ready |= _IN | _RDHUP
        if self._pending_error is not None:
            ready |= _IN | _ERR
        if self._errors:
            ready |= _ERR       # (not input: a read would wait; recvmsg(MSG_ERRQUEUE) takes them)
        if (self._read_shut and self._write_shut) or closed:
            ready |= _HUP
        return ready & mask

    def get_local_address(self) -> FullAddress:
        return self.local

    def get_remote_address(self) -> FullAddress:
        if self.remote is None:
            raise ErrNotConnected()
        return self.remote

    def _filter_keeps(self, pkt: PacketBuffer, head: bytes, body: bytes | memoryview, network: int) -> int:
        """How much of a packet SO_ATTACH_FILTER's program keeps (0: none, counted as filtered); see
        ``Filter.keeps``."""
        keep = self.socket_filter.keeps(pkt, head, body, network, self.stack.nics)  # type: ignore[union-attr]
        if not keep:
            self.stats.receive_errors.filtered.increment()
        return keep

    def handle_control_packet(self, kind: ControlType, info: int, pkt: PacketBuffer) -> None:
        """An ICMP error about a datagram this endpoint sent. Without IP_RECVERR only the fatal ones reach it,
        and only when connected; with it every one does, connected or not, and is queued besides (Linux's
        __udp4_lib_err, ping_err, raw_err). The next read or write reports it (SO_ERROR)."""
        queue = self.options[SockOpt.RECEIVE_ERRORS]
        if not queue and self.state is not EndpointState.CONNECTED:
            return
        ipv4_error = self.net_proto == IPV4_PROTOCOL_NUMBER
        error: type[Error] | None
        if kind is ControlType.PROHIBITED:      # EHOSTUNREACH over IPv4, EACCES over IPv6 (Linux)
            error = ErrHostUnreachable if ipv4_error else ErrAccessDenied
        elif kind is ControlType.PACKET_TOO_BIG and self.options[SockOpt.MTU_DISCOVER] == PMTUDISC_DONT:
            error = ErrMessageTooLong if queue and not ipv4_error else None     # (IPv4 drops it even then)
        else:
            error = _HARD_ERRORS.get(kind) or (_SOFT_ERRORS.get(kind) if queue else None)
        if error is None:
            return
        self._pending_error = error()
        if queue:
            self._queue_error(self._pending_error, info, pkt)
        self.waiter_queue.notify(EventMask.ERR | EventMask.IN)

    def _queue_error(self, error: Error, info: int, pkt: PacketBuffer) -> None:
        """Keep the error for recvmsg(MSG_ERRQUEUE), within the receive buffer as Linux charges it."""
        port, payload = self._quoted_payload(pkt)
        if self._error_bytes + len(payload) > self.options[SockOpt.RECEIVE_BUFFER_SIZE]:
            self.stats.receive_errors.receive_buffer_overflow.increment()
            return
        entry = queued_error(error, info, pkt, port, payload)
        if entry is not None:
            self._errors.append(entry)
            self._error_bytes += len(payload)

    def _quoted_payload(self, pkt: PacketBuffer) -> tuple[int, bytes]:
        """The destination port and the payload of the datagram an ICMP error quotes (``pkt.data``, from its
        transport header): a ping socket's reader gets it from the ICMP header on, port 0 (Linux's ping_err)."""
        return 0, bytes(pkt.data)

    def read_error(self) -> QueuedError | TransmitStamp | ZeroCopyCompletion:
        """The oldest queued ICMP error, transmit stamp or MSG_ZEROCOPY completion (never waits: ErrWouldBlock
        if none). The socket's error becomes the next entry's, if an ICMP error is next, or none (Linux's
        sock_dequeue_err_skb)."""
        if not self._errors:
            raise ErrWouldBlock()
        entry = self._errors.popleft()
        self._error_bytes -= len(entry.payload) + (ENTRY_OVERHEAD if type(entry) is TransmitStamp else 0)
        following = self._errors[0] if self._errors else None
        self._pending_error = type(following.error)() if type(following) is QueuedError else None
        return entry

    # --- options ----------------------------------------------------------------------------------

    def set_sock_opt(self, opt: SockOpt, value: Any) -> None:
        if opt in (SockOpt.RECEIVE_BUFFER_SIZE, SockOpt.SEND_BUFFER_SIZE):
            value = max(MIN_BUFFER_SIZE, min(int(value), MAX_BUFFER_SIZE))
        elif opt in (SockOpt.TTL, SockOpt.MULTICAST_TTL):
            if not 0 <= int(value) <= 255:
                raise ErrInvalidOptionValue()
        elif opt is SockOpt.IPV4_TOS or opt is SockOpt.IPV6_TRAFFIC_CLASS:
            value = int(value) & 0xFF
        elif opt is SockOpt.MULTICAST_INTERFACE:
            if value and value not in self.stack.nics:
                raise ErrBadLocalAddress()      # Linux: EADDRNOTAVAIL for an unknown ifindex
        elif opt in (SockOpt.ADD_MEMBERSHIP, SockOpt.REMOVE_MEMBERSHIP):
            self._membership(opt is SockOpt.ADD_MEMBERSHIP, *value)
            return
        elif opt is SockOpt.SOURCE_MEMBERSHIP:
            self._source_membership(*value)
            return
        elif opt is SockOpt.SOURCE_FILTER:
            self._set_source_filter(*value)
            return
        elif opt is SockOpt.MAX_PACING_RATE:
            value = int(value)
            if value != UNLIMITED_PACING_RATE and self._departures is None:
                self._departures = Departures(self.stack, value)    # (fq paces a socket's flow from now on)
            elif self._departures is not None:
                self._departures.rate = value
        elif opt is SockOpt.REUSE_PORT_PROGRAM:
            self.reuseport_program = reuseport_program(self.stack.demux, self, value,
                                                       self.options[SockOpt.REUSE_PORT], self.reuseport_program)
            return
        elif opt is SockOpt.MTU_DISCOVER:
            if not PMTUDISC_DONT <= int(value) <= PMTUDISC_OMIT:
                raise ErrInvalidOptionValue()
        elif opt is SockOpt.MARK:
            value = int(value) & 0xFFFFFFFF
        elif opt is SockOpt.SOCKET_FILTER or opt is SockOpt.LOCK_FILTER:
            # Once locked (Linux's SOCK_FILTER_LOCKED), neither the filter nor the lock may change: EPERM.
            if self.options[SockOpt.LOCK_FILTER] and (opt is SockOpt.SOCKET_FILTER or not value):
                raise ErrNotPermitted()
            if opt is SockOpt.SOCKET_FILTER:
                self.socket_filter = value
        elif opt is SockOpt.MULTICAST_ALL:
            self._multicast_all = value = bool(value)
        elif opt is SockOpt.TRANSMIT_TIMESTAMPING:
            if value & SOF_TIMESTAMPING_OPT_ID and not self.options[opt] & SOF_TIMESTAMPING_OPT_ID:
                self._stamp_key = 0             # counting starts over (Linux's sock_set_timestamping)
        elif opt is SockOpt.RECEIVE_ERRORS and not value:
            self._errors.clear()                # Linux purges the queue when IP_RECVERR goes off
            self._error_bytes = 0
        elif opt not in self.options:
            raise ErrUnknownProtocolOption()
        self.options[opt] = value
        if opt in _RECEIVE_OPTIONS:
            self._wants_control = any(self.options[o] for o in _RECEIVE_OPTIONS)

    def get_sock_opt(self, opt: SockOpt) -> Any:
        if opt is SockOpt.RECEIVE_QUEUE_SIZE:
            return len(self._queue[0][0]) if self._queue else 0
        if opt is SockOpt.SEND_QUEUE_SIZE:
            return 0
        if opt is SockOpt.ERROR:
            err, self._pending_error = self._pending_error, None
            return err
        if opt in (SockOpt.AVAILABLE_CONGESTION_CONTROL, SockOpt.TCP_INFO):
            raise ErrNotSupported()
        if opt is SockOpt.PATH_MTU:
            if self._route is None or self.remote is None:
                raise ErrNotConnected()
            return self._route.path_mtu()
        try:
            return self.options[opt]
        except KeyError:
            raise ErrUnknownProtocolOption() from None

    def _membership(self, join: bool, group: bytes, nic_id: int = 0, mode: int = MCAST_EXCLUDE,
                    source: bytes | None = None) -> None:
        """Join ``group`` (with a source: in ``mode`` with it, IP_ADD_SOURCE_MEMBERSHIP's first) or leave it;
        ErrInvalidOptionValue for a second join or a leave without one."""
        nic, key = self._group_nic(group, nic_id)
        if join:
            if key in self._memberships:
                raise ErrInvalidOptionValue()
            membership = self._memberships[key] = Membership(mode, source)
            nic.join_group(self.net_proto, key[1], *membership.state())
        else:
            membership = self._memberships.pop(key, None)   # type: ignore[assignment]
            if membership is None:
                raise ErrInvalidOptionValue()
            nic.leave_group(self.net_proto, key[1], *membership.state())
        self._source_filtered = any(m.filters() for m in self._memberships.values())

    def _source_membership(self, add: bool, mode: int, group: bytes, nic_id: int, source: bytes) -> None:
        """IP_ADD_SOURCE_MEMBERSHIP, _DROP_, IP_BLOCK_SOURCE, _UNBLOCK_ and their MCAST_ forms (``mode``: the
        filter mode each works in): a source added to or dropped from the group's filter, as Linux's
        ip_mc_source decides it. A membership whose filter never had a source switches mode for this (and
        keeps the new mode, the operation failing or not); dropping the last included source leaves."""
        nic, key = self._group_nic(group, nic_id)
        membership = self._memberships.get(key)
        if membership is None or (membership.listed and membership.mode != mode):
            raise ErrInvalidOptionValue()
        before = membership.state()
        membership.mode = mode
        sources = membership.sources
        leave = False
        try:
            if not add:
                if not membership.listed or source not in sources:
                    raise ErrBadLocalAddress()
                leave = len(sources) == 1 and mode == MCAST_INCLUDE
                if not leave:
                    sources.remove(source)
            else:
                if len(sources) >= MAX_SOURCES:
                    raise ErrNoBufferSpace()
                if source in sources:
                    raise ErrBadLocalAddress()
                sources.append(source)
                membership.listed = True
        finally:
            self._filter_changed(nic, key, before)      # (the mode switched even if the operation failed)
        if leave:
            self._membership(False, group, key[0])

    def _set_source_filter(self, group: bytes, nic_id: int, mode: int, sources: list[bytes]) -> None:
        """IP_MSFILTER / MCAST_MSFILTER: the group's whole filter replaced (INCLUDE of none: leave), as Linux's
        ip_mc_msfilter."""
        if mode not in (MCAST_INCLUDE, MCAST_EXCLUDE):
            raise ErrInvalidOptionValue()
        nic, key = self._group_nic(group, nic_id)
        if mode == MCAST_INCLUDE and not sources:
            self._membership(False, group, key[0])
            return
        membership = self._memberships.get(key)
        if membership is None:
            raise ErrInvalidOptionValue()
        before = membership.state()
        membership.mode, membership.sources, membership.listed = mode, list(sources), bool(sources)
        self._filter_changed(nic, key, before)

    def source_filter(self, group: bytes, nic_id: int) -> tuple[int, list[bytes]]:
        """A membership's filter mode and sources (IP_MSFILTER read back); ErrBadLocalAddress without one."""
        membership = self._memberships.get((nic_id, bytes(group)))
        if membership is None:
            raise ErrBadLocalAddress()
        return membership.mode, list(membership.sources)

    def _filter_changed(self, nic: Any, key: tuple[int, bytes], before: tuple[int, frozenset[bytes]]) -> None:
        membership = self._memberships[key]
        nic.change_group_filter(self.net_proto, key[1], before, membership.state())
        self._source_filtered = any(m.filters() for m in self._memberships.values())

    def _group_nic(self, group: bytes, nic_id: int) -> tuple[Any, tuple[int, bytes]]:
        """The NIC a membership of ``group`` is on (``nic_id``, else the group's route's), and its key."""
        if not self._is_group_address(group):
            raise ErrInvalidOptionValue()
        if not nic_id:
            try:
                nic_id = self.stack.find_route(0, b"", bytes(group), self.net_proto).nic.id
            except Error:
                # No route for the group: like Linux's ff00::/8 routes on every link, take the first
                # link that speaks this protocol; with none, there is no device (ENODEV).
                nic_id = next((n.id for n in self.stack.nics.values()
                               if n.enabled and not n.loopback and n.addresses.get(self.net_proto)), 0)
                if not nic_id:
                    raise ErrUnknownDevice() from None
        nic = self.stack.nics.get(nic_id)
        if nic is None:
            raise ErrInvalidOptionValue()
        return nic, (nic_id, bytes(group))

    def _is_group_address(self, addr: bytes) -> bool:
        if len(addr) == 16:
            return addr[0] == 0xFF
        return len(addr) == 4 and (224 <= addr[0] <= 239 or addr == b"\xff\xff\xff\xff")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.value} local={self.local} remote={self.remote}>"
