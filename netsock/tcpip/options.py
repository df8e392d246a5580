"""Endpoint options, shutdown flags, write options and control messages.

netstack has one Go type per socket option; in Python one enum names them all and
``Endpoint.set_sock_opt(SockOpt.X, value)`` / ``get_sock_opt(SockOpt.X)`` carry the value.
An endpoint that does not know an option raises ``ErrUnknownProtocolOption`` (ENOPROTOOPT).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from .address import FullAddress


class ShutdownFlags(enum.IntFlag):
    READ = 1
    WRITE = 2


class SockOpt(enum.Enum):
    # Members are singletons compared by identity: hashed by it too, in C. (Enum's own __hash__ is a Python
    # function, and the datagram endpoints look options up by member on every datagram.)
    __hash__ = object.__hash__

    # Integer-valued options (netstack's SockOpt).
    RECEIVE_QUEUE_SIZE = "receive_queue_size"     # read-only: unread bytes queued
    SEND_QUEUE_SIZE = "send_queue_size"           # read-only: unsent bytes queued
    SEND_BUFFER_SIZE = "send_buffer_size"
    RECEIVE_BUFFER_SIZE = "receive_buffer_size"
    DELAY = "delay"                               # TCP: Nagle on (1) / off (0)
    # Typed options.
    REUSE_ADDRESS = "reuse_address"
    REUSE_PORT = "reuse_port"
    BROADCAST = "broadcast"
    BIND_TO_DEVICE = "bind_to_device"             # NIC id, 0 = none
    TTL = "ttl"                                   # 0 = protocol default
    MULTICAST_TTL = "multicast_ttl"
    MULTICAST_LOOP = "multicast_loop"
    MULTICAST_INTERFACE = "multicast_interface"
    ADD_MEMBERSHIP = "add_membership"
    REMOVE_MEMBERSHIP = "remove_membership"
    IPV4_TOS = "ipv4_tos"
    IPV6_TRAFFIC_CLASS = "ipv6_traffic_class"
    V6_ONLY = "v6_only"
    KEEPALIVE_ENABLED = "keepalive_enabled"
    KEEPALIVE_IDLE = "keepalive_idle"             # seconds
    KEEPALIVE_INTERVAL = "keepalive_interval"     # seconds
    KEEPALIVE_COUNT = "keepalive_count"
    MAX_SEG = "max_seg"
    CORK = "cork"
    QUICK_ACK = "quick_ack"
    LINGER = "linger"                             # None or seconds
    TCP_LINGER_TIMEOUT = "tcp_linger_timeout"     # FIN-WAIT-2 timeout, seconds (< 0: an orphan is reset there)
    TCP_SYN_COUNT = "tcp_syn_count"               # SYN retransmissions before connect gives up (TCP_SYNCNT)
    TCP_TIMESTAMP = "tcp_timestamp"               # read-only: the timestamp clock now, as this connection sends it
    TCP_USER_TIMEOUT = "tcp_user_timeout"         # seconds data may stay unacknowledged, 0 = no limit (RFC 5482)
    TCP_WINDOW_CLAMP = "tcp_window_clamp"         # the most window advertised, bytes, 0 = no clamp
    TCP_NOTSENT_LOWAT = "tcp_notsent_lowat"       # writable only below this many unsent bytes, 0 = no limit
    TCP_TX_DELAY = "tcp_tx_delay"                 # every segment leaves this many microseconds late (testing)
    TCP_FAST_OPEN = "tcp_fast_open"               # a listener's Fast Open queue (RFC 7413); on the protocol:
                                                  # net.ipv4.tcp_fastopen's client (1) and server (2) bits
    TCP_FAST_OPEN_CONNECT = "tcp_fast_open_connect"   # connect returns at once, the SYN carries the first write
    TCP_FAST_OPEN_NO_COOKIE = "tcp_fast_open_no_cookie"   # Fast Open without cookies (a client's SYN, a listener)
    TCP_FAST_OPEN_KEY = "tcp_fast_open_key"       # a listener's cookie key: 16 bytes, or 32 with a backup
    RECEIVE_LOW_WATER = "receive_low_water"       # readable from this many bytes (SO_RCVLOWAT)
    TCP_DEFER_ACCEPT = "tcp_defer_accept"         # a listener waits for data this many SYN-ACK timeouts
    BIND_ADDRESS_NO_PORT = "bind_address_no_port"   # bind to port 0 takes the address alone; connect then
                                                    # picks a port free for its 4-tuple (IP_BIND_ADDRESS_NO_PORT)
    MARK = "mark"                                 # 32 bits the endpoint's packets carry (SO_MARK): what
                                                  # the filter table's mark condition tests on OUTPUT
    SOCKET_FILTER = "socket_filter"               # a stack.bpf.Filter run on what is received, None: none
                                                  # (SO_ATTACH_FILTER / SO_DETACH_FILTER)
    LOCK_FILTER = "lock_filter"                   # the filter can no longer change (SO_LOCK_FILTER)
    FREEBIND = "freebind"                         # bind to an address the stack does not have (yet)
                                                  # (IP_FREEBIND / IPV6_FREEBIND)
    MTU_DISCOVER = "mtu_discover"                 # path MTU discovery: one of PMTUDISC_* (IP_MTU_DISCOVER)
    PATH_MTU = "path_mtu"                         # read-only, connected: the path MTU known now (IP_MTU)
    TCP_TIME_WAIT_TIMEOUT = "tcp_time_wait_timeout"
    CONGESTION_CONTROL = "congestion_control"
    AVAILABLE_CONGESTION_CONTROL = "available_congestion_control"
    MODERATE_RECEIVE_BUFFER = "moderate_receive_buffer"
    OUT_OF_BAND_INLINE = "out_of_band_inline"
    UDP_SEGMENT = "udp_segment"                   # UDP GSO: writes cut into datagrams this size, 0 = off
    # UDP-Lite checksum coverage in bytes from the header's start, 0 = all; None until set (Linux tells
    # "never set" from 0 by the effect, not by getsockopt, which answers 0 for both).
    UDPLITE_SEND_COVERAGE = "udplite_send_coverage"         # what is sent (UDPLITE_SEND_CSCOV)
    UDPLITE_RECEIVE_COVERAGE = "udplite_receive_coverage"   # the least accepted (UDPLITE_RECV_CSCOV)
    TCP_INFO = "tcp_info"
    ERROR = "error"                               # read and clear the pending error
    # Which control messages reads of a datagram endpoint carry (netstack's SocketOptions receive*):
    # each is captured from a datagram as it arrives, only while its option is on.
    TIMESTAMP = "timestamp"                       # arrival time (SO_TIMESTAMP)
    TRANSMIT_TIMESTAMPING = "transmit_timestamping"   # SO_TIMESTAMPING's SOF_TIMESTAMPING_* flags (below) that
                                                      # ask for, and shape, transmit stamps
    RECEIVE_TOS = "receive_tos"                   # IPv4 TOS (IP_RECVTOS)
    RECEIVE_TTL = "receive_ttl"                   # IPv4 TTL (IP_RECVTTL)
    RECEIVE_PACKET_INFO = "receive_packet_info"   # IPv4 NIC and addresses (IP_PKTINFO)
    RECEIVE_TCLASS = "receive_tclass"             # IPv6 traffic class (IPV6_RECVTCLASS)
    RECEIVE_FLOW_INFO = "receive_flow_info"       # IPv6 traffic class and flow label, when not 0 (IPV6_FLOWINFO)
    RECEIVE_FRAGMENT_SIZE = "receive_fragment_size"     # a reassembled datagram's largest fragment: IPv4 ...
    RECEIVE_FRAGMENT_SIZE6 = "receive_fragment_size6"   # ... and IPv6 (IP_RECVFRAGSIZE, IPV6_RECVFRAGSIZE)
    IPV6_AUTO_FLOW_LABEL = "ipv6_auto_flow_label"     # flow labels from the flow's hash (IPV6_AUTOFLOWLABEL; on)
    RECEIVE_HOP_LIMIT = "receive_hop_limit"       # IPv6 hop limit (IPV6_RECVHOPLIMIT)
    IPV6_DONT_FRAGMENT = "ipv6_dont_fragment"     # an IPv6 datagram over the path MTU fails (IPV6_DONTFRAG)
    UDP_CORK = "udp_cork"                         # writes gather into one datagram until uncorked (UDP_CORK)
    UDP_GRO = "udp_gro"                           # a super-datagram's datagrams are read as one (UDP_GRO)
    ZEROCOPY = "zerocopy"                         # writes may keep the caller's buffer (SO_ZEROCOPY, TCP and UDP)
    TCP_THIN_LINEAR_TIMEOUTS = "tcp_thin_linear_timeouts"   # a thin stream's RTO does not back off at first
    TCP_RTO_MAX = "tcp_rto_max"                   # seconds the RTO backs off to at most (TCP_RTO_MAX_MS; 1 to 120)
    SOURCE_MEMBERSHIP = "source_membership"       # (add, mode, group, NIC, source): a source into or out of a
                                                  # membership's filter (IP_ADD_SOURCE_MEMBERSHIP, IP_BLOCK_SOURCE...)
    SOURCE_FILTER = "source_filter"               # (group, NIC, mode, sources): a membership's whole filter
                                                  # (IP_MSFILTER, MCAST_MSFILTER)
    REUSE_PORT_PROGRAM = "reuse_port_program"     # a stack.bpf.Filter choosing the SO_REUSEPORT group's member
                                                  # by its index (SO_ATTACH_REUSEPORT_CBPF), None: detach
    TXTIME = "txtime"                             # (clock id, flags) of SCM_TXTIME's departure times (SO_TXTIME),
                                                  # None: not set
    TRANSPARENT = "transparent"                   # bind to (and so send from) an address not the stack's, as a
                                                  # proxy for another host's traffic (IP_TRANSPARENT)
    RECEIVE_PATH_MTU = "receive_path_mtu"         # an IPv6 send refused for the path MTU (IPV6_DONTFRAG) leaves
                                                  # its path MTU for the next read (IPV6_RECVPATHMTU)
    TCP_TXREHASH = "tcp_txrehash"                 # a timeout draws a new flow hash (IPv6 flow label) (SO_TXREHASH)
    MAX_PACING_RATE = "max_pacing_rate"           # bytes a second at most (SO_MAX_PACING_RATE): set once, TCP
                                                  # paces what it sends (UNLIMITED_PACING_RATE: no limit)
    NO_CHECKSUM = "no_checksum"                   # UDP over IPv4 sent without a checksum (SO_NO_CHECK)
    NO_CHECKSUM6_TX = "no_checksum6_tx"           # UDP over IPv6 sent without one (UDP_NO_CHECK6_TX, RFC 6935)
    NO_CHECKSUM6_RX = "no_checksum6_rx"           # ... and taken without one (UDP_NO_CHECK6_RX)
    TCP_SAVE_SYN = "tcp_save_syn"                 # a listener keeps each SYN's headers for its connection (0-2)
    TCP_SAVED_SYN = "tcp_saved_syn"               # read-once: the headers of the SYN that opened it (or b"")
    LOCAL_PORT_RANGE = "local_port_range"         # this socket's ephemeral ports, as a u32 (IP_LOCAL_PORT_RANGE)
    MULTICAST_ALL = "multicast_all"               # group traffic for groups other sockets joined (IP_MULTICAST_ALL)
    UNICAST_INTERFACE = "unicast_interface"       # the NIC unicast datagrams leave by, unbound (IP_UNICAST_IF)
    MIN_TTL = "min_ttl"                           # TCP takes no packet with a lower TTL / hop limit (IP_MINTTL)
    DONT_ROUTE = "dont_route"                     # sends only to destinations on a link (SO_DONTROUTE)
    RECEIVE_ERRORS = "receive_errors"             # ICMP errors queued for the reader (IP_RECVERR, IPV6_RECVERR)
    RECEIVE_QUEUE_OVERFLOW = "receive_queue_overflow"   # each datagram says how many were dropped so far (SO_RXQ_OVFL)
    RECEIVE_MARK = "receive_mark"                 # each datagram says its packet's mark (SO_RCVMARK)
    RECEIVE_ORIGINAL_DESTINATION = "receive_original_destination"   # its address and port (IP_RECVORIGDSTADDR)
    RECEIVE_IPV6_PACKET_INFO = "receive_ipv6_packet_info"   # NIC and destination (IPV6_RECVPKTINFO)
    # Raw endpoints.
    HEADER_INCLUDED = "header_included"           # IPv4: writes carry their own IP header (IP_HDRINCL)
    IPV6_CHECKSUM = "ipv6_checksum"               # IPv6: offset of the checksum the stack fills in, -1 none
    ICMP_FILTER = "icmp_filter"                   # ICMP(v6) types not read: bit n set blocks type n


@dataclass(frozen=True)
class SendableControlMessages:
    """Per-write overrides of the socket's IP header settings (netstack's SendableControlMessages);
    None: the endpoint's own. The fields of the IP version the datagram goes out with apply."""

    ttl: int | None = None         # IPv4 TTL
    tos: int | None = None         # IPv4 TOS
    hop_limit: int | None = None   # IPv6 hop limit
    tclass: int | None = None      # IPv6 traffic class
    gso_size: int | None = None    # UDP_SEGMENT for this write
    txtime: int | None = None      # SCM_TXTIME: when the datagram may leave, ns of the socket's SO_TXTIME clock


NO_SENDABLE_CONTROL_MESSAGES = SendableControlMessages()


ETH_P_ALL = 3                   # a packet endpoint's protocol for every EtherType (Linux's if_ether.h)
ARPHRD_ETHER = 1                # hardware types (Linux's if_arp.h)
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE            # no link header: TUN


class PacketAddress(NamedTuple):
    """A packet endpoint's address (Linux's sockaddr_ll): what a read says of a frame, what bind and
    write take (nic 0: any)."""

    nic: int = 0
    protocol: int = 0           # EtherType, host order
    pkt_type: int = 0           # PACKET_HOST ... PACKET_OUTGOING
    hardware_type: int = 0      # ARPHRD_*
    address: bytes = b""        # the sender's link address (of a frame read) or the destination's



# IP_MTU_DISCOVER / IPV6_MTU_DISCOVER values (<linux/in.h>): DONT never sets DF; WANT (the default) sets it
# on what fits the path and fragments the rest; DO always sets it and refuses a datagram larger than the
# path MTU; PROBE and INTERFACE refuse one larger than the device's (INTERFACE without DF); OMIT goes
# without DF and is fragmented at the device's MTU. PROBE, INTERFACE and OMIT ignore the path MTU learned.
PMTUDISC_DONT, PMTUDISC_WANT, PMTUDISC_DO, PMTUDISC_PROBE, PMTUDISC_INTERFACE, PMTUDISC_OMIT = range(6)
PMTUDISC_SETS_DF = frozenset((PMTUDISC_WANT, PMTUDISC_DO, PMTUDISC_PROBE))

UNLIMITED_PACING_RATE = (1 << 64) - 1     # SO_MAX_PACING_RATE's default, no limit (Linux's ~0UL)


# SO_TIMESTAMPING's flags for transmit stamps (<linux/net_tstamp.h>), and the stamps' kinds (ee_info).
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1     # when the packet leaves for the device
SOF_TIMESTAMPING_OPT_ID = 1 << 7          # each stamp says which send it is for (ee_data)
SOF_TIMESTAMPING_TX_SCHED = 1 << 8        # when the packet enters the queue in front of the device
SOF_TIMESTAMPING_TX_ACK = 1 << 9          # when the peer acknowledges the send's last byte (TCP)
SOF_TIMESTAMPING_OPT_CMSG = 1 << 10       # an IPv4 stamp with the packet names its source (offender)
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11     # the stamp without the packet
SOF_TIMESTAMPING_OPT_ID_TCP = 1 << 16     # TCP's OPT_ID counts from the next byte written, not the oldest unacked
SCM_TSTAMP_SND, SCM_TSTAMP_SCHED, SCM_TSTAMP_ACK = 0, 1, 2


@dataclass(slots=True)
class WriteOptions:
    """How one write is sent: ``to`` overrides the connected peer; ``more`` is MSG_MORE, ``oob``
    MSG_OOB; ``control`` carries sendmsg's ancillary data (datagram endpoints). Never changed once made
    (``dataclasses.replace`` makes another), but not frozen: a frozen dataclass's ``__init__`` costs three
    times as much, and a sendto makes one of these per datagram."""

    to: FullAddress | PacketAddress | None = None
    more: bool = False
    oob: bool = False           # MSG_OOB: the write's last byte is urgent data (TCP)
    end_of_record: bool = False
    atomic: bool = False
    control: SendableControlMessages = NO_SENDABLE_CONTROL_MESSAGES
    dont_route: bool = False    # MSG_DONTROUTE: only to a destination on a link of ours (datagram endpoints)
    # MSG_ZEROCOPY with SO_ZEROCOPY on: the caller's buffer is kept, not copied, until a completion on the
    # error queue says it is free; ``continues``: this write goes on with the previous one's send call (TCP:
    # the bytes a blocking send queues in several writes share one completion id).
    zerocopy: bool = False
    continues: bool = False


DEFAULT_WRITE_OPTIONS = WriteOptions()


class PacketInfo(NamedTuple):
    """Where an IPv4 datagram arrived (netstack's IPPacketInfo, Linux's struct in_pktinfo)."""

    nic: int
    local_addr: bytes         # the address a reply would come from (Linux's ipi_spec_dst)
    destination_addr: bytes   # the IP header's destination


class IPv6PacketInfo(NamedTuple):
    """Where a datagram arrived (Linux's struct in6_pktinfo; the address is IPv4 for an IPv4 one)."""

    addr: bytes
    nic: int


@dataclass(frozen=True)
class ControlMessages:
    """Ancillary data returned with a read (netstack's ReceivableControlMessages); None: not asked for."""

    timestamp: int | None = None   # ns since the epoch that the packet was received
    inq: int | None = None         # bytes still queued after this read
    tos: int | None = None         # IPv4 TOS
    ttl: int | None = None         # IPv4 TTL
    packet_info: PacketInfo | None = None
    tclass: int | None = None      # IPv6 traffic class
    hop_limit: int | None = None   # IPv6 hop limit
    flow_info: int | None = None   # IPv6 traffic class and flow label (the first word but its version)
    fragment_size: int | None = None    # a reassembled datagram's largest fragment as it came (IPv4, IPv6)
    fragment_size6: int | None = None
    ipv6_packet_info: IPv6PacketInfo | None = None
    drops: int | None = None       # datagrams the socket dropped before this one (SO_RXQ_OVFL; only if some)
    mark: int | None = None        # the packet's mark (SO_RCVMARK): on loopback, the sending socket's SO_MARK
    original_destination: tuple[bytes, int] | None = None   # the address and port it was sent to
    # A packet endpoint's frame (PACKET_AUXDATA): status bits, the frame's length, what was kept of it, the
    # network header's offset in what is read.
    packet_aux: tuple[int, int, int, int] | None = None
    gro_size: int | None = None    # UDP_GRO: the read joins datagrams of this size (the last may be shorter)
    path_mtu: tuple[bytes, int, int] | None = None  # IPV6_RECVPATHMTU's report: destination, its scope (NIC), MTU


NO_CONTROL_MESSAGES = ControlMessages()
