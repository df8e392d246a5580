"""``NetsockSocket``: CPython's ``socket.socket`` contract, served by netsock endpoints.

The rules are CPython's on Linux: the same methods, arguments, return shapes and exceptions (type,
errno and message), checked against the real kernel. Blocking, timeout and non-blocking modes park
the calling greenlet on the endpoint's ``WaiterQueue`` (``scheduler.wait_for``), so other greenlets
and the stack keep running. ``fileno()`` is a real eventfd that is readable exactly while the socket
is (see ``fds``).

What a kernel socket is, apart from its descriptors, is a ``SocketCore`` here: ``dup`` makes another
descriptor (and socket object) for the same core, and the core closes with its last descriptor.

Dual stack: an AF_INET6 TCP, UDP or UDP-Lite socket without IPV6_V6ONLY that binds to the wildcard
(or is bound implicitly) holds a second, IPv4 endpoint on the same port, sharing its waiter queue,
and presents IPv4 peers as ``::ffff:a.b.c.d``. Connecting or binding to such a mapped address makes
the IPv4 endpoint the socket's only one, as Linux does.

AF_PACKET sockets (SOCK_RAW, SOCK_DGRAM) read and write the frames of the stack's own NICs, named
by their NIC names in sockaddr_ll tuples. Linux asks CAP_NET_RAW for them, and for SOCK_RAW in
AF_INET/AF_INET6, to guard the host's kernel and everyone's traffic; a netsock stack is the
process's own, so any process may open them here.
"""

from __future__ import annotations

import _socket
import ctypes
import io
import itertools
import math
import operator
import os
import struct
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from dataclasses import replace
from errno import (EACCES, EADDRINUSE, EADDRNOTAVAIL, EAFNOSUPPORT, EAGAIN, EALREADY, EBADF, EDOM, EFAULT, EFBIG,
                   EINPROGRESS, EINVAL, EISCONN, ENETUNREACH, ENOBUFS, ENODEV, ENOENT, ENOMSG, ENOPROTOOPT, ENOTCONN,
                   ENOTSOCK, EOPNOTSUPP, EPERM, EPIPE, EPROTO, EPROTONOSUPPORT, ESOCKTNOSUPPORT)
from socket import (AF_INET, AF_INET6, AF_PACKET, CMSG_LEN, CMSG_SPACE, IP_ADD_MEMBERSHIP, IP_DROP_MEMBERSHIP,
                    IP_HDRINCL, IP_MULTICAST_IF, IP_MULTICAST_LOOP, IP_MULTICAST_TTL, IP_RECVTOS, IP_RETOPTS, IP_TOS,
                    IP_TTL, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP,
                    IPPROTO_UDPLITE, IPV6_CHECKSUM, IPV6_DONTFRAG, IPV6_DSTOPTS, IPV6_HOPLIMIT, IPV6_HOPOPTS,
                    IPV6_JOIN_GROUP, IPV6_LEAVE_GROUP, IPV6_MULTICAST_HOPS, IPV6_MULTICAST_IF, IPV6_MULTICAST_LOOP,
                    IPV6_PKTINFO, IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO, IPV6_RECVTCLASS, IPV6_RTHDR, IPV6_RTHDRDSTOPTS,
                    IPV6_TCLASS, IPV6_UNICAST_HOPS, IPV6_V6ONLY, MSG_CTRUNC, MSG_DONTROUTE, MSG_DONTWAIT,
                    MSG_ERRQUEUE, MSG_MORE,
                    MSG_OOB, MSG_PEEK, MSG_TRUNC, MSG_WAITALL, SHUT_RD, SHUT_RDWR, SHUT_WR, SO_ACCEPTCONN,
                    SO_BINDTODEVICE, SO_BROADCAST, SO_DOMAIN, SO_ERROR, SO_KEEPALIVE, SO_LINGER, SO_OOBINLINE,
                    SO_PROTOCOL, SO_RCVBUF, SO_RCVLOWAT, SO_RCVTIMEO, SO_REUSEADDR, SO_REUSEPORT, SO_SNDBUF,
                    SO_SNDTIMEO, SO_TYPE,
                    SOCK_CLOEXEC, SOCK_DGRAM,
                    SOCK_NONBLOCK, SOCK_RAW, SOCK_STREAM, SOL_SOCKET, SOMAXCONN, TCP_CONGESTION, TCP_CORK, TCP_INFO,
                    TCP_DEFER_ACCEPT, TCP_FASTOPEN, TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_LINGER2, TCP_MAXSEG,
                    TCP_NODELAY, TCP_NOTSENT_LOWAT, TCP_QUICKACK, TCP_SYNCNT, TCP_USER_TIMEOUT, TCP_WINDOW_CLAMP,
                    UDPLITE_RECV_CSCOV,
                    UDPLITE_SEND_CSCOV, AddressFamily, SocketIO, SocketKind, _GiveupOnSendfile, inet_ntop, inet_pton,
                    ntohs)
from typing import Any

from gevent import get_hub, getcurrent

from ..header import tcp
from ..scheduler import wait_for
from ..stack import Stack
from ..stack.bpf import INSTRUCTION, Filter
from ..tcpip import (DEFAULT_WRITE_OPTIONS, ICMPV4_PROTOCOL_NUMBER, ICMPV6_PROTOCOL_NUMBER, IPV4_PROTOCOL_NUMBER,
                     IPV6_PROTOCOL_NUMBER, NO_CONTROL_MESSAGES, NO_SENDABLE_CONTROL_MESSAGES, TCP_PROTOCOL_NUMBER,
                     UDP_PROTOCOL_NUMBER, ControlMessages, ErrAlreadyConnected, ErrAlreadyConnecting,
                     ErrClosedForReceive, ErrConnectStarted, ErrInvalidOptionValue, ErrNoPortAvailable,
                     ErrNotConnected, Error,
                     ErrPortInUse, ErrWouldBlock, FullAddress, ReadResult, SendableControlMessages, ShutdownFlags,
                     SockOpt, WriteOptions)
from ..stack.multicast import MAX_SOURCES, MCAST_EXCLUDE, MCAST_INCLUDE
from ..tcpip.options import ARPHRD_ETHER, ARPHRD_LOOPBACK, PMTUDISC_WANT, UNLIMITED_PACING_RATE, PacketAddress
from ..transport.datagram import SO_EE_ORIGIN_TIMESTAMPING, QueuedError, TransmitStamp, ZeroCopyCompletion
from ..transport.packet import PacketEndpoint
from ..transport.raw import RawEndpoint
from ..transport.tcp import TCPState, md5
from ..transport.tcp.protocol import FAST_OPEN_CLIENT
from ..transport.tcp.receiver import DELAYED_ACK_TIMEOUT
from ..transport.udplite import PROTOCOL_NUMBER as UDPLITE_PROTOCOL_NUMBER
from ..waiter import EventMask, WaiterQueue
from . import fds
from .runtime import current_stack, resolver

__all__ = ["NetsockSocket", "SocketCore"]

# Plain ints on the per-call paths: each IntFlag operation costs about a microsecond.
_IN, _OUT, _HUP = int(EventMask.IN), int(EventMask.OUT), int(EventMask.HUP)
_ERR, _PRI = int(EventMask.ERR), int(EventMask.PRI)
_ENDED = int(EventMask.ERR | EventMask.HUP | EventMask.RDHUP)     # an error or the end: a waiting read returns
_ALL_EVENTS = EventMask.IN | EventMask.OUT | EventMask.HUP | EventMask.ERR
# Closing with our FIN (and data before it) not yet acknowledged: what SO_LINGER waits out.
_FIN_UNACKED = frozenset((TCPState.FIN_WAIT1, TCPState.CLOSING, TCPState.LAST_ACK))
MSG_CTRUNC, MSG_DONTROUTE, MSG_DONTWAIT, MSG_ERRQUEUE, MSG_MORE, MSG_OOB, MSG_PEEK, MSG_TRUNC, MSG_WAITALL = map(
    int, (MSG_CTRUNC, MSG_DONTROUTE, MSG_DONTWAIT, MSG_ERRQUEUE, MSG_MORE, MSG_OOB, MSG_PEEK, MSG_TRUNC, MSG_WAITALL))
MSG_FASTOPEN = 0x20000000       # (Linux's; the socket module has it on Linux only)
TCP_FASTOPEN_CONNECT, TCP_FASTOPEN_KEY, TCP_FASTOPEN_NO_COOKIE = 30, 33, 34
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"                    # ::ffff:0:0/96, IPv4-mapped IPv6
_INT = struct.Struct("i")
_LINGER = struct.Struct("ii")
_SENDFILE_BLOCK = 65536     # bytes read and sent at a time by sendfile()
_U16 = struct.Struct("H")
_U64 = struct.Struct("Q")
UDP_SEGMENT = 103           # <linux/udp.h> (the socket module does not export it): UDP GSO, the datagram size
UDP_GRO = 104               # <linux/udp.h>, not exported either: a super-datagram's datagrams are read as one
# UDP and UDP-Lite are one protocol to Linux's options: both levels reach the same handler (udp_lib_setsockopt).
_UDP_TRANSPORTS = (UDP_PROTOCOL_NUMBER, UDPLITE_PROTOCOL_NUMBER)
_UDP_LEVELS = (IPPROTO_UDP, IPPROTO_UDPLITE)
_SOL_RAW = 255                  # raw IPv4 sockets' own level (Linux's SOL_RAW)
_ICMP_FILTER = 1                # SOL_RAW: struct icmp_filter; at IPPROTO_ICMPV6, ICMPV6_FILTER: struct icmp6_filter
_UDPLITE_COVERAGE = {UDPLITE_SEND_CSCOV: SockOpt.UDPLITE_SEND_COVERAGE,
                     UDPLITE_RECV_CSCOV: SockOpt.UDPLITE_RECEIVE_COVERAGE}
_UDP_CORK = 1
# SOL_PACKET options (<linux/if_packet.h>)
_SOL_PACKET = 263
_PACKET_ADD_MEMBERSHIP, _PACKET_DROP_MEMBERSHIP, _PACKET_STATISTICS, _PACKET_AUXDATA, _PACKET_ORIGDEV = 1, 2, 6, 8, 9
_PACKET_VERSION, _PACKET_HDRLEN, _PACKET_RESERVE, _PACKET_IGNORE_OUTGOING = 10, 11, 12, 23
_PACKET_MR_UNICAST = 3                  # the last membership type (MULTICAST, PROMISC, ALLMULTI, UNICAST)
_PACKET_MREQ = struct.Struct("iHH8s")   # struct packet_mreq: ifindex, type, address length, address
_TPACKET_HDRLEN = 32
# Kept and read back: what steers rings (COPY_THRESH, VERSION, RESERVE, LOSS, TIMESTAMP), queueing (TX_HAS_OFF,
# QDISC_BYPASS); of them, the flags read back as 0 or 1.
_PACKET_KEPT = frozenset((7, _PACKET_VERSION, _PACKET_RESERVE, 14, 17, 19, 20))
_PACKET_FLAGS = frozenset((_PACKET_ORIGDEV, 14, 19, 20))
_UDP_NO_CHECK6 = {101: SockOpt.NO_CHECKSUM6_TX, 102: SockOpt.NO_CHECKSUM6_RX}     # <linux/udp.h>, RFC 6935/6936
_TIMEVAL = struct.Struct("ll")
# Linux 6.18's struct tcp_info (280 bytes): to tcpi_total_retrans, then from tcpi_pacing_rate to the AccECN counters.
_TCP_INFO = struct.Struct("8B24I4Q6IQ3Q2I2Q6I2HI7I2H")
_TCP_CA_NAME_MAX = 16
_TCPI_OPT_TIMESTAMPS, _TCPI_OPT_SACK, _TCPI_OPT_WSCALE, _TCPI_OPT_SYN_DATA = 1, 2, 4, 32
_TCP_ATO_USEC = int(DELAYED_ACK_TIMEOUT * 1e6)     # tcpi_ato: the delayed-ACK timeout (Linux's minimum, 40 ms)
_DUAL_BIND_TRIES = 16
_MORE = WriteOptions(more=True)
# TCP options passed to the endpoint as they are (it checks them as Linux does).
_TCP_OPTIONS = {TCP_SYNCNT: SockOpt.TCP_SYN_COUNT, TCP_WINDOW_CLAMP: SockOpt.TCP_WINDOW_CLAMP,
                TCP_NOTSENT_LOWAT: SockOpt.TCP_NOTSENT_LOWAT, TCP_FASTOPEN: SockOpt.TCP_FAST_OPEN,
                TCP_FASTOPEN_CONNECT: SockOpt.TCP_FAST_OPEN_CONNECT,
                TCP_FASTOPEN_NO_COOKIE: SockOpt.TCP_FAST_OPEN_NO_COOKIE, 37: SockOpt.TCP_TX_DELAY}   # 37: TCP_TX_DELAY
_MAX_LINGER2 = 120                  # seconds (Linux's TCP_FIN_TIMEOUT_MAX)


def _seconds_to_timeouts(seconds: int) -> int:
    """TCP_DEFER_ACCEPT's seconds as SYN-ACK timeouts (1 s, doubling, at most 120 s each), the fewest
    that span them (Linux's secs_to_retrans; getsockopt gives back what those span)."""
    if seconds <= 0:
        return 0
    timeouts, timeout, period = 1, 1, 1
    while seconds > period and timeouts < 255:
        timeouts += 1
        timeout = min(timeout * 2, 120)
        period += timeout
    return timeouts


def _timeouts_to_seconds(timeouts: int) -> int:
    """What ``timeouts`` SYN-ACK timeouts span (Linux's retrans_to_secs)."""
    period, timeout = 0, 1
    for _ in range(timeouts):
        period += timeout
        timeout = min(timeout * 2, 120)
    return period
# (MSG_MORE, MSG_OOB) -> how a TCP send is written
_STREAM_WRITE_OPTIONS = {(False, False): DEFAULT_WRITE_OPTIONS, (True, False): _MORE,
                         (False, True): WriteOptions(oob=True), (True, True): WriteOptions(more=True, oob=True)}
_SHUTDOWN_FLAGS = {SHUT_RD: ShutdownFlags.READ, SHUT_WR: ShutdownFlags.WRITE,
                   SHUT_RDWR: ShutdownFlags.READ | ShutdownFlags.WRITE}
_EOF = ReadResult(b"")
_INT_MIN, _INT_MAX = -2**31, 2**31 - 1

# Linux's values of options the socket module of some Python versions does not name.
_IP_PKTINFO = 8
_IP_RECVTTL = 12
_IP_PROTOCOL = 52
_SO_MARK = 36                                               # <asm-generic/socket.h>
# Socket-level options kept on the socket (<asm-generic/socket.h>); what they steer in Linux (queueing
# disciplines, busy polling) netsock has none of, so they are set, checked and read back as Linux does.
_SO_DONTROUTE, _SO_NO_CHECK = 5, 11
_SO_DEBUG, _SO_BSDCOMPAT, _SO_PRIORITY, _SO_PEERCRED, _SO_SNDLOWAT, _SO_PEERNAME = 1, 14, 12, 17, 19, 28
_SO_SNDBUFFORCE, _SO_RCVBUFFORCE, _SO_BUSY_POLL, _SO_BPF_EXTENSIONS, _SO_INCOMING_CPU = 32, 33, 46, 48, 49
_SO_MEMINFO, _SO_INCOMING_NAPI_ID, _SO_COOKIE, _SO_BINDTOIFINDEX = 55, 56, 57, 62
_SO_PREFER_BUSY_POLL, _SO_BUSY_POLL_BUDGET, _SO_NETNS_COOKIE = 69, 70, 71
_SO_PEEK_OFF = 42
_SO_PASSCRED, _SO_BUF_LOCK = 16, 72
# Flags a socket keeps that steer what netsock has no part of (Wi-Fi status, the link's FCS); SO_PASSSEC, like
# SO_PASSCRED, is AF_UNIX's and netlink's; SO_RESERVE_MEM needs memory accounting, which netsock's sockets lack;
# SO_CNX_ADVICE only advises (set, never read).
_SO_WIFI_STATUS, _SO_NOFCS, _SO_PASSSEC, _SO_CNX_ADVICE, _SO_RESERVE_MEM = 41, 43, 34, 53, 73
_SO_TXREHASH = 74                           # TCP: draw a new flow hash (IPv6 flow label) at each timeout
_SO_ATTACH_REUSEPORT_CBPF, _SO_DETACH_REUSEPORT_BPF = 51, 68     # a classic BPF program picks in a SO_REUSEPORT group
_SO_TXTIME = 61                             # also SCM_TXTIME, the control message that gives a datagram its time
_SOCK_TXTIME = struct.Struct("iI")          # struct sock_txtime: clock id, flags
_SOF_TXTIME_FLAGS = 3                       # SOF_TXTIME_DEADLINE_MODE | SOF_TXTIME_REPORT_ERRORS
_TXTIME_CLOCKS = (0, 1, 11)                 # CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_TAI (sockopt_validate_clockid)
_SO_TIMEO_NEW = {66: SO_RCVTIMEO, 67: SO_SNDTIMEO}  # SO_RCVTIMEO_NEW, _SNDTIMEO_NEW: the same 64-bit timeval here
_SNDBUF_LOCK, _RCVBUF_LOCK = 1, 2                           # SO_BUF_LOCK's bits (Linux's SOCK_*BUF_LOCK)
_SKF_AD_MAX = 64                                            # SO_BPF_EXTENSIONS: the ancillary loads' end
# Read-only or kept-only socket options' values before any set (SO_BSDCOMPAT and SO_SNDLOWAT cannot be set).
_SOCKET_OPTION_DEFAULTS = {_SO_DEBUG: 0, _SO_BSDCOMPAT: 0, _SO_PRIORITY: 0, _SO_SNDLOWAT: 1, _SO_BUSY_POLL: 0,
                           _SO_PREFER_BUSY_POLL: 0, _SO_BPF_EXTENSIONS: _SKF_AD_MAX, _SO_INCOMING_NAPI_ID: 0}
_COOKIES = itertools.count(1)                               # SO_COOKIE: one sequence for every socket
_NETNS_COOKIES: weakref.WeakKeyDictionary[Stack, int] = weakref.WeakKeyDictionary()
_UCRED_NOBODY = struct.pack("iII", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # SO_PEERCRED of an IP socket: no peer process
_COOKIE = struct.Struct("Q")
_SO_MAX_PACING_RATE = 47                                    # an unsigned long; an int where one is given or asked
# TCP states after the peer's FIN or a reset (Linux's SOCK_DONE): TCP_INQ says 1 for nothing left then.
_PEER_DONE = frozenset((TCPState.CLOSE_WAIT, TCPState.LAST_ACK, TCPState.CLOSING, TCPState.TIME_WAIT, TCPState.CLOSED))
_MEMINFO = struct.Struct("9I")                              # SK_MEMINFO_VARS u32s
# Linux's ip_tos2prio: the priority an IP_TOS value gives the socket (rt_tos2priority), by (tos & 0x1E) >> 1.
_TOS_PRIORITY = (0, 0, 0, 0, 2, 2, 2, 2, 6, 6, 6, 6, 4, 4, 4, 4)
_TCP_TIMESTAMP, _TCP_THIN_DUPACK, _TCP_INQ, _TCP_IS_MPTCP = 24, 17, 36, 43    # <linux/tcp.h>
_TCP_THIN_LINEAR_TIMEOUTS, _TCP_CC_INFO, _TCP_RTO_MAX_MS = 16, 26, 44
# TCP_REPAIR and its companions (<linux/tcp.h>): checkpoint and restore of a connection, CRIU's way
_TCP_REPAIR, _TCP_REPAIR_QUEUE, _TCP_QUEUE_SEQ, _TCP_REPAIR_OPTIONS, _TCP_REPAIR_WINDOW = 19, 20, 21, 22, 29
_TCP_REPAIR_OPT = struct.Struct("II")               # struct tcp_repair_opt: option kind, value
_TCP_REPAIR_WINDOW_STRUCT = struct.Struct("5I")     # snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup
_TCP_MD5SIG, _TCP_MD5SIG_EXT, _TCP_MD5SIG_FLAG_PREFIX, _TCP_MD5SIG_FLAG_IFINDEX = 14, 32, 1, 2
_TCP_MD5SIG_SIZE = 216     # struct tcp_md5sig: sockaddr_storage, flags, prefixlen, keylen, ifindex, key[80]
_TCP_MD5SIG_FIELDS = struct.Struct("=BBHi")
_TCP_SAVE_SYN, _TCP_SAVED_SYN = 27, 28
_SO_ATTACH_FILTER, _SO_DETACH_FILTER, _SO_LOCK_FILTER = 26, 27, 44     # (26 read back: SO_GET_FILTER)
_SOCK_FPROG = struct.Struct("HP")                           # struct sock_fprog: a length and a pointer
_CAP_NET_ADMIN, _CAP_NET_RAW = 12, 13                       # <linux/capability.h>
_SO_TIMESTAMP = 29                                          # SO_TIMESTAMP_OLD: a struct timeval
_SO_TIMESTAMPNS = 35                                        # SO_TIMESTAMPNS_OLD: a struct timespec
_SO_TIMESTAMPING, _SO_TIMESTAMPING_NEW = 37, 65             # also the SCM_TIMESTAMPING cmsg types
_SO_TIMESTAMP_NEW, _SO_TIMESTAMPNS_NEW = 63, 64             # the same stamps, as 64-bit time (one layout here)
_TSTAMP_NEW = (SOL_SOCKET, _SO_TIMESTAMP_NEW)               # Linux's SOCK_TSTAMP_NEW: the last option set was a _NEW
_SOCK_TIMESTAMP = (SOL_SOCKET, 1 << 16)                     # Linux's SOCK_TIMESTAMP: SO_TIMESTAMP* was ever on
# SOF_TIMESTAMPING_* flags (<linux/net_tstamp.h>; Linux 6.18 knows bits 0 to 18).
_SOF_TX_SOFTWARE, _SOF_RX_SOFTWARE, _SOF_SOFTWARE, _SOF_OPT_ID = 1 << 1, 1 << 3, 1 << 4, 1 << 7
_SOF_TX_SCHED, _SOF_TX_ACK, _SOF_OPT_TSONLY, _SOF_OPT_STATS = 1 << 8, 1 << 9, 1 << 11, 1 << 12
_SOF_BIND_PHC, _SOF_OPT_ID_TCP, _SOF_OPT_RX_FILTER, _SOF_MASK = 1 << 15, 1 << 16, 1 << 17, (1 << 19) - 1
_SOF_TX_SOFTWARE_REPORTS = _SOF_TX_SOFTWARE | _SOF_TX_SCHED | _SOF_TX_ACK
_SOF_OPT_CMSG = 1 << 10
_SO_TIMESTAMPING_STRUCT = struct.Struct("ii")               # struct so_timestamping: flags, bind_phc
_SCM_TIMESTAMPING = struct.Struct("qq32x")                  # struct scm_timestamping: software, (legacy, hardware)
_SO_RXQ_OVFL = 40                                           # datagrams dropped before this one
_SO_RCVMARK = 75                                            # each datagram's mark, as an SO_MARK cmsg
_SO_SELECT_ERR_QUEUE = 45                                   # an error (queued) makes the socket POLLPRI too
_SO_ZEROCOPY = 60                                           # MSG_ZEROCOPY may keep a send's buffer (TCP, UDP)
_MSG_ZEROCOPY = 0x4000000                                   # <linux/socket.h>; the socket module lacks it
_SO_EE_ORIGIN_ZEROCOPY = 5
_SO_EE_CODE_ZEROCOPY_COPIED = 1
_IPV6_2292PKTINFO, _IPV6_2292HOPOPTS, _IPV6_2292DSTOPTS, _IPV6_2292RTHDR, _IPV6_2292HOPLIMIT = 2, 3, 4, 5, 8
_IPV6_FLOWINFO = 11
_IP_MTU_DISCOVER, _IP_MTU, _IPV6_MTU_DISCOVER, _IPV6_MTU = 10, 14, 23, 24     # path MTU discovery
_IPV6_AUTOFLOWLABEL = 70                    # IPv6 flow labels made of the flow's hash (on by default)
_IP_RECVFRAGSIZE, _IPV6_RECVFRAGSIZE = 25, 77   # a reassembled datagram's largest fragment, as a control message
_IPV6_PATHMTU, _SOCKADDR_IN6_SIZE = 61, 28
_IPV6_RECVPATHMTU = 60                      # a send refused for the path MTU leaves an IPV6_PATHMTU for the next read
# IP_CHECKSUM: a datagram whose checksum the device summed whole (CHECKSUM_COMPLETE) says the sum in a control
# message; netsock's links vouch for a checksum (partial, or checked) or leave it to be checked, never summed
# whole, as Linux's loopback and TUN: so the flag is kept, and no read carries the message.
_IP_CHECKSUM = 23
# IP_NODEFRAG: a raw socket's outgoing packets are not reassembled by netfilter. netsock never reassembles a
# host's own packets, so the bit changes nothing here: it is kept and read back as Linux keeps it.
_IP_NODEFRAG = 22
_IP_UNICAST_IF, _IPV6_UNICAST_IF = 50, 76
_IP_MULTICAST_ALL, _IPV6_MULTICAST_ALL = 49, 29
# Source-specific multicast (RFC 3678): IPv4's own options, and the protocol-independent MCAST_ ones of either level.
_IP_UNBLOCK_SOURCE, _IP_BLOCK_SOURCE, _IP_ADD_SOURCE_MEMBERSHIP, _IP_DROP_SOURCE_MEMBERSHIP = 37, 38, 39, 40
_IP_MSFILTER = 41
_MCAST_JOIN_GROUP, _MCAST_BLOCK_SOURCE, _MCAST_UNBLOCK_SOURCE, _MCAST_LEAVE_GROUP = 42, 43, 44, 45
_MCAST_JOIN_SOURCE_GROUP, _MCAST_LEAVE_SOURCE_GROUP, _MCAST_MSFILTER = 46, 47, 48
# What each source operation does, as Linux's ip_mc_source takes it: add or drop, in which filter mode.
_SOURCE_OPERATIONS = {
    _IP_ADD_SOURCE_MEMBERSHIP: (True, MCAST_INCLUDE), _MCAST_JOIN_SOURCE_GROUP: (True, MCAST_INCLUDE),
    _IP_DROP_SOURCE_MEMBERSHIP: (False, MCAST_INCLUDE), _MCAST_LEAVE_SOURCE_GROUP: (False, MCAST_INCLUDE),
    _IP_BLOCK_SOURCE: (True, MCAST_EXCLUDE), _MCAST_BLOCK_SOURCE: (True, MCAST_EXCLUDE),
    _IP_UNBLOCK_SOURCE: (False, MCAST_EXCLUDE), _MCAST_UNBLOCK_SOURCE: (False, MCAST_EXCLUDE)}
_IP_MREQ_SOURCE = struct.Struct("4s4s4s")          # group, interface address, source
_IP_MSFILTER_HEAD = struct.Struct("4s4sII")        # group, interface address, mode, number of sources
_SOCKADDR_STORAGE = 128
_GROUP_REQ = struct.Struct(f"I4x{_SOCKADDR_STORAGE}s")                              # interface, group
_GROUP_SOURCE_REQ = struct.Struct(f"I4x{_SOCKADDR_STORAGE}s{_SOCKADDR_STORAGE}s")    # ..., source
_GROUP_FILTER_HEAD = struct.Struct(f"I4x{_SOCKADDR_STORAGE}sII")                    # ..., mode, number of sources
_IP_LOCAL_PORT_RANGE = 51
_IP_MINTTL, _IPV6_MINHOPCOUNT = 21, 73   # <linux/in.h>, <linux/in6.h>: RFC 5082's minimum TTL
_IP_RECVERR, _IPV6_RECVERR = 11, 25   # ICMP errors queued for recvmsg(MSG_ERRQUEUE)
_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")    # <linux/errqueue.h>: errno, origin, type, code, pad, info, data
_IP_BIND_ADDRESS_NO_PORT = 24       # <linux/in.h> (IPPROTO_IP level; 24 is IPV6_MTU at IPPROTO_IPV6)
_IP_FREEBIND, _IPV6_FREEBIND = 15, 78   # <linux/in.h>, <linux/in6.h>: one bit of the socket, set by either
_IP_TRANSPARENT, _IPV6_TRANSPARENT = 19, 75     # one bit too (CAP_NET_RAW or CAP_NET_ADMIN to set it)
_SO_ORIGINAL_DST, _SOCKADDR_IN_SIZE = 80, 16    # (IP6T_SO_ORIGINAL_DST is 80 at IPPROTO_IPV6 too)
_IN_PKTINFO = struct.Struct("i4s4s")                        # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("16sI")                        # addr, ifindex
_CMSG_HEADER = CMSG_LEN(0)
# The control messages that, asked for at each level, a datagram's reads carry.
_IP_RECVORIGDSTADDR, _IPV6_RECVORIGDSTADDR = 20, 74     # the control message's type is the option's number
_RECEIVE_IP_OPTIONS = {_IP_RECVORIGDSTADDR: SockOpt.RECEIVE_ORIGINAL_DESTINATION,
                       _IP_PKTINFO: SockOpt.RECEIVE_PACKET_INFO, _IP_RECVTTL: SockOpt.RECEIVE_TTL,
                       IP_RECVTOS: SockOpt.RECEIVE_TOS, _IP_RECVFRAGSIZE: SockOpt.RECEIVE_FRAGMENT_SIZE}
_RECEIVE_IPV6_OPTIONS = {_IPV6_RECVORIGDSTADDR: SockOpt.RECEIVE_ORIGINAL_DESTINATION,
                         IPV6_RECVPKTINFO: SockOpt.RECEIVE_IPV6_PACKET_INFO,
                         IPV6_RECVHOPLIMIT: SockOpt.RECEIVE_HOP_LIMIT, IPV6_RECVTCLASS: SockOpt.RECEIVE_TCLASS,
                         _IPV6_FLOWINFO: SockOpt.RECEIVE_FLOW_INFO, _IPV6_RECVFRAGSIZE: SockOpt.RECEIVE_FRAGMENT_SIZE6}
# Send-side control messages Linux takes that netsock does not implement (the rest it rejects, EINVAL).
_UNSUPPORTED_SEND_IP = frozenset((IP_RETOPTS, _IP_PKTINFO, _IP_PROTOCOL))
_UNSUPPORTED_SEND_IPV6 = frozenset((IPV6_PKTINFO, _IPV6_2292PKTINFO, _IPV6_FLOWINFO, _IPV6_2292HOPOPTS,
                                    _IPV6_2292DSTOPTS, _IPV6_2292RTHDR, IPV6_HOPOPTS, IPV6_RTHDRDSTOPTS, IPV6_RTHDR,
                                    IPV6_DSTOPTS, IPV6_DONTFRAG))


def _oserror(code: int) -> OSError:
    """OSError(code, strerror) – of the subclass CPython maps ``code`` to."""
    return OSError(code, os.strerror(code))


def _timed_out() -> OSError:
    return TimeoutError("timed out")


def _would_block() -> OSError:
    return _oserror(EAGAIN)


# --- arguments ------------------------------------------------------------------------------------------

def _transport(family: int, kind: int, proto: int) -> int:
    """The transport protocol of socket(family, kind, proto), or the OSError Linux gives; of an AF_PACKET
    socket, its EtherType in network byte order, as given (0: none until bound to one)."""
    if family == AF_PACKET:
        if kind not in (SOCK_RAW, SOCK_DGRAM):
            raise _oserror(ESOCKTNOSUPPORT)
        return proto & 0xFFFF       # Linux keeps the low 16 bits (a __be16)
    if family not in (AF_INET, AF_INET6):
        raise _oserror(EAFNOSUPPORT)
    if kind == SOCK_STREAM:
        if proto in (0, IPPROTO_TCP):
            return TCP_PROTOCOL_NUMBER
    elif kind == SOCK_DGRAM:
        if proto in (0, IPPROTO_UDP):
            return UDP_PROTOCOL_NUMBER
        if proto == IPPROTO_UDPLITE:
            return UDPLITE_PROTOCOL_NUMBER
        if proto == (IPPROTO_ICMP if family == AF_INET else IPPROTO_ICMPV6):
            return ICMPV4_PROTOCOL_NUMBER if family == AF_INET else ICMPV6_PROTOCOL_NUMBER
    elif kind == SOCK_RAW:
        # Any IP protocol but 0 (EPROTONOSUPPORT); past one byte, EINVAL. Linux also takes 256-262,
        # which no IP header can carry; netsock does not.
        if not 0 <= proto < 256:
            raise _oserror(EINVAL)
        if proto:
            return proto
    else:
        raise _oserror(ESOCKTNOSUPPORT)
    raise _oserror(EPROTONOSUPPORT)


def _timeout_value(value: Any) -> float | None:
    """settimeout's argument, validated as CPython does."""
    if value is None:
        return None
    seconds = value if isinstance(value, float) else operator.index(value)
    if math.isnan(seconds):
        raise ValueError("Invalid value NaN (not a number)")
    if seconds < 0:
        raise ValueError("Timeout value out of range")
    return float(seconds)


def _data_view(data: Any) -> memoryview:
    """A flat byte view of a bytes-like object (CPython's "y*")."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _buffer_view(buffer: Any, caller: str) -> memoryview:
    """A flat writable byte view (CPython's "w*")."""
    try:
        view = memoryview(buffer)
    except TypeError:
        view = None
    if view is None or view.readonly:
        raise TypeError(f"{caller}() argument 1 must be read-write bytes-like object, not {type(buffer).__name__}")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _host_name(host: Any) -> str:
    if isinstance(host, str):
        name = host if host.isascii() else host.encode("idna").decode("ascii")
    elif isinstance(host, (bytes, bytearray)):
        name = bytes(host).decode("latin-1")
    else:
        raise TypeError(f"str, bytes or bytearray expected, not {type(host).__name__}")
    if "\0" in name:
        raise TypeError("host name must not contain null character")
    return name


def _resolve(stack: Stack, name: str, family: int) -> bytes:
    """The packed address for ``name`` as CPython's setipaddr finds it: "" is the wildcard, numeric
    addresses parse, "localhost" is the loopback, and other names are the stack's resolver's."""
    size = 4 if family == AF_INET else 16
    if not name:
        return bytes(size)
    if name in ("<broadcast>", "255.255.255.255"):
        if family != AF_INET:
            raise OSError("address family mismatched")
        return b"\xff" * 4
    try:
        return inet_pton(family, name if family == AF_INET else name.partition("%")[0])
    except OSError:
        pass
    if name.lower() in ("localhost", "localhost."):
        return b"\x7f\0\0\1" if family == AF_INET else bytes(15) + b"\1"
    return resolver(stack).address_of(name, family)


def _sockaddr(stack: Stack, family: int, address: Any, caller: str) -> tuple[bytes, int, int]:
    """(packed address, port, scope id) from an address tuple, with CPython's getsockaddrarg errors."""
    kind = "AF_INET" if family == AF_INET else "AF_INET6"
    if not isinstance(address, tuple):
        raise TypeError(f"{caller}(): {kind} address must be tuple, not {type(address).__name__}")
    if family == AF_INET:
        if len(address) != 2:
            raise TypeError("AF_INET address must be a pair (host, port)")
        host, port = address
        flowinfo = scope_id = 0
    else:
        if not 2 <= len(address) <= 4:
            raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
        host, port, flowinfo, scope_id = (*address, 0, 0)[:4]
        flowinfo = operator.index(flowinfo) & 0xFFFFFFFF
        scope_id = operator.index(scope_id) & 0xFFFFFFFF
    name = _host_name(host)
    port = operator.index(port)
    if not -2**31 <= port < 2**31:
        raise OverflowError(f"{caller}(): port must be 0-65535.")
    packed = _resolve(stack, name, family)
    if not 0 <= port <= 0xFFFF:
        raise OverflowError(f"{caller}(): port must be 0-65535.")
    if flowinfo > 0xFFFFF:
        raise OverflowError(f"{caller}(): flowinfo must be 0-1048575.")
    if not _is_link_scoped(packed):
        scope_id = 0        # Linux heeds the scope of link-local and multicast addresses only
    return packed, port, scope_id


def _is_link_scoped(addr: bytes) -> bool:
    return len(addr) == 16 and (addr[0] == 0xFF or (addr[0] == 0xFE and addr[1] & 0xC0 == 0x80))


def _unspecified_is_loopback(addr: bytes) -> bytes:
    """Linux sends to the unspecified address (0.0.0.0, ::) as to the loopback."""
    if any(addr):
        return addr
    return b"\x7f\0\0\1" if len(addr) == 4 else bytes(15) + b"\1"


def _is_mapped(addr: bytes) -> bool:
    return len(addr) == 16 and addr[:12] == _MAPPED_PREFIX


def _packet_address(stack: Stack, address: Any, caller: str) -> PacketAddress:
    """A sockaddr_ll tuple, (ifname, proto[, pkttype[, hatype[, addr]]]), with CPython's errors; the
    NIC is looked up by name among the stack's (ENODEV if it has none of that name)."""
    if not isinstance(address, tuple):
        raise TypeError(f"{caller}(): AF_PACKET address must be tuple, not {type(address).__name__}")
    if not 2 <= len(address) <= 5 or not isinstance(address[0], str):
        raise TypeError("AF_PACKET address must be a tuple of two to five elements")
    ifname, proto, pkt_type, hatype, addr = (*address, 0, 0, b"")[:5]
    proto, pkt_type, hatype = operator.index(proto), operator.index(pkt_type), operator.index(hatype)
    addr = bytes(_data_view(addr))
    nic = stack.nic_by_name(ifname)
    if nic is None:
        raise _oserror(ENODEV)
    if len(addr) > 8:
        raise ValueError("Hardware address must be 8 bytes or less")
    if not 0 <= proto <= 0xFFFF:
        raise OverflowError(f"{caller}(): protoNumber must be 0-65535.")
    return PacketAddress(nic.id, proto, pkt_type, hatype, addr)


def _packet_tuple(stack: Stack, address: PacketAddress) -> tuple[str, int, int, int, bytes]:
    """What CPython shows of a sockaddr_ll: the NIC's name ('' for none), protocol, packet type, hardware
    type and link address."""
    nic = stack.nics.get(address.nic)
    return (nic.name if nic is not None else "", address.protocol, address.pkt_type, address.hardware_type,
            bytes(address.address))


def _address_tuple(family: int, addr: bytes, port: int, nic: int) -> tuple[Any, ...]:
    """What getsockname/getpeername/recvfrom show for a stack address (b'' is the wildcard)."""
    if family == AF_INET:
        return inet_ntop(AF_INET, addr or bytes(4)), port
    if len(addr) == 4:
        addr = _MAPPED_PREFIX + addr if any(addr) else b""
    addr = addr or bytes(16)
    link_local = addr[0] == 0xFE and addr[1] & 0xC0 == 0x80
    return inet_ntop(AF_INET6, addr), port, 0, nic if link_local else 0


def _capable(*capabilities: int) -> bool:
    """Any of ``capabilities`` in this process's effective set: what Linux asks before options that
    reach beyond the socket (SO_MARK, SO_PRIORITY above 6, SO_*BUFFORCE, busy polling)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            effective = next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return os.geteuid() == 0
    return any(effective & 1 << capability for capability in capabilities)


def _netns_cookie(stack: Stack) -> int:
    """SO_NETNS_COOKIE: a stack is netsock's network namespace; each gets its number when first asked."""
    cookie = _NETNS_COOKIES.get(stack)
    if cookie is None:
        cookie = _NETNS_COOKIES[stack] = len(_NETNS_COOKIES) + next(_COOKIES)
    return cookie


def _current_cpu() -> int:
    """The CPU this process runs on (field 39 of /proc/self/stat): where netsock processed what it received."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return 0


def _int_option(raw: bytes, char: bool = False) -> int:
    """An int option value; IP-level options also take a single byte, as Linux does."""
    if len(raw) >= 4:
        return _INT.unpack_from(raw)[0]
    if char and raw:
        return raw[0]
    raise _oserror(EINVAL)


def _option_result(value: int | bytes, buflen: int, char: bool) -> int | bytes:
    """getsockopt's answer: an int without ``buflen``, else at most ``buflen`` bytes, as the kernel
    copies them out. An unsigned 32-bit value (a sequence number, a timestamp, a mark) comes back as the C
    int CPython reads, negative from 2**31."""
    if isinstance(value, int) and 0x80000000 <= value <= 0xFFFFFFFF:
        value -= 1 << 32
    if not buflen:
        if isinstance(value, int):
            return value
        return _INT.unpack((value + bytes(4))[:4])[0]
    if isinstance(value, int):
        if char and buflen < 4 and 0 <= value <= 255:
            return bytes((value,))
        value = _INT.pack(value)
    return value[:buflen]


def _is_group(addr: bytes) -> bool:
    return addr[0] == 0xFF if len(addr) == 16 else 224 <= addr[0] <= 239


def _storage_address(storage: bytes, family: int) -> bytes | None:
    """The address a sockaddr_storage holds, None unless it is of ``family``."""
    if struct.unpack_from("H", storage)[0] != family:
        return None
    return storage[4:8] if family == AF_INET else storage[8:24]


def _usec(seconds: float) -> int:
    return min(int(seconds * 1e6), 0xFFFFFFFF)


def _msec(seconds: float) -> int:
    return min(int(seconds * 1e3), 0xFFFFFFFF)


def _c_int(value: int) -> int:
    """``value`` as CPython's int argument conversion (PyLong_AsInt) takes it."""
    if not _INT_MIN <= value <= _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    return value


def _intenum(value: int, kind: type[AddressFamily] | type[SocketKind]) -> Any:
    """The enum member for ``value``, or the number if there is none (CPython's _intenum_converter)."""
    try:
        return kind(value)
    except ValueError:
        return value


def _control_items(control: ControlMessages, family: int, stamps: tuple[int, int]) -> list[tuple[int, int, bytes]]:
    """A datagram's control messages as Linux delivers them, in its order: the timestamp as ``stamps`` asks
    (the SO_TIMESTAMP(NS) cmsg type, then the SCM_TIMESTAMPING one; 0: none), the other socket-level ones,
    UDP_GRO's, then IPV6_PKTINFO (on an IPv6 socket also for IPv4, mapped), then the IPv4 ones, then the IPv6
    ones."""
    items = []
    if control.timestamp is not None:
        seconds, ns = divmod(control.timestamp, 1_000_000_000)
        timestamp, timestamping = stamps
        if timestamp:
            nanoseconds = timestamp in (_SO_TIMESTAMPNS, _SO_TIMESTAMPNS_NEW)
            items.append((SOL_SOCKET, timestamp, _TIMEVAL.pack(seconds, ns if nanoseconds else ns // 1000)))
        if timestamping:
            items.append((SOL_SOCKET, timestamping, _SCM_TIMESTAMPING.pack(seconds, ns)))
    if control.drops is not None:
        items.append((SOL_SOCKET, _SO_RXQ_OVFL, struct.pack("I", control.drops & 0xFFFFFFFF)))
    if control.mark is not None:
        items.append((SOL_SOCKET, _SO_MARK, struct.pack("I", control.mark & 0xFFFFFFFF)))
    if control.gro_size is not None:
        items.append((IPPROTO_UDP, UDP_GRO, _INT.pack(control.gro_size)))
    if control.path_mtu is not None:        # struct ip6_mtuinfo
        destination, scope, mtu = control.path_mtu
        items.append((IPPROTO_IPV6, _IPV6_PATHMTU, _sockaddr_bytes(AF_INET6, destination, 0, scope) +
                      struct.pack("I", mtu)))
    info6 = control.ipv6_packet_info
    if info6 is not None and family == AF_INET6:
        addr = bytes(info6.addr)
        items.append((IPPROTO_IPV6, IPV6_PKTINFO,
                      _IN6_PKTINFO.pack(addr if len(addr) == 16 else _MAPPED_PREFIX + addr, info6.nic)))
    if control.packet_aux is not None:
        status, length, kept, network = control.packet_aux
        items.append((_SOL_PACKET, _PACKET_AUXDATA, struct.pack("IIIHHHH", status, length, kept, 0, network, 0, 0)))
    info = control.packet_info
    if info is not None:
        items.append((IPPROTO_IP, _IP_PKTINFO,
                      _IN_PKTINFO.pack(info.nic, bytes(info.local_addr), bytes(info.destination_addr))))
    if control.ttl is not None:
        items.append((IPPROTO_IP, IP_TTL, _INT.pack(control.ttl)))
    if control.tos is not None:
        items.append((IPPROTO_IP, IP_TOS, bytes((control.tos,))))
    original = control.original_destination
    if original is not None and len(original[0]) == 4:
        items.append((IPPROTO_IP, _IP_RECVORIGDSTADDR, _sockaddr_bytes(AF_INET, *original)))
    if control.fragment_size is not None:
        items.append((IPPROTO_IP, _IP_RECVFRAGSIZE, _INT.pack(control.fragment_size)))
    if control.hop_limit is not None:
        items.append((IPPROTO_IPV6, IPV6_HOPLIMIT, _INT.pack(control.hop_limit)))
    if control.tclass is not None:
        items.append((IPPROTO_IPV6, IPV6_TCLASS, _INT.pack(control.tclass)))
    if control.flow_info is not None:
        items.append((IPPROTO_IPV6, _IPV6_FLOWINFO, struct.pack("!I", control.flow_info)))
    if original is not None and len(original[0]) == 16:
        items.append((IPPROTO_IPV6, _IPV6_RECVORIGDSTADDR, _sockaddr_bytes(AF_INET6, *original)))
    if control.fragment_size6 is not None:
        items.append((IPPROTO_IPV6, _IPV6_RECVFRAGSIZE, _INT.pack(control.fragment_size6)))
    return items


def _ancillary(items: list[tuple[int, int, bytes]], ancbufsize: int) -> tuple[list[tuple[int, int, bytes]], int]:
    """(ancillary data, MSG_CTRUNC or 0) as recvmsg returns them from an ``ancbufsize``-byte buffer:
    Linux's put_cmsg writes a message whole if it fits, cut short (its header's length too) if only
    its header does, and nothing at all once less than a header is left; each takes CMSG_SPACE,
    or what is left. CPython reads every message written back."""
    out = []
    room = ancbufsize
    flags = 0
    for level, kind, data in items:
        if room < _CMSG_HEADER:
            return out, MSG_CTRUNC
        length = CMSG_LEN(len(data))
        if room < length:
            flags = MSG_CTRUNC
            length = room
        out.append((level, kind, data[:length - _CMSG_HEADER]))
        room -= min(CMSG_SPACE(len(data)), room)
    return out, flags


def _sockaddr_bytes(family: int, addr: bytes, port: int = 0, scope_id: int = 0) -> bytes:
    """A struct sockaddr_in or sockaddr_in6 as the kernel writes one into a control message or option
    (an IPv4 address in an IPv6 one: mapped)."""
    if family == AF_INET:
        return struct.pack("=H", AF_INET) + struct.pack("!H4s", port, addr) + bytes(8)
    addr = addr if len(addr) == 16 else _MAPPED_PREFIX + addr
    return struct.pack("=H", AF_INET6) + struct.pack("!HI16s", port, 0, addr) + struct.pack("=I", scope_id)


def _handed_over(data: bytes, into: memoryview | None) -> bytes | int:
    """What a read returns: the bytes, or, reading into the caller's buffer, their count."""
    if into is None:
        return data
    into[:len(data)] = data
    return len(data)


def _error_message(entry: QueuedError, family: int) -> tuple[int, int, bytes]:
    """IP_RECVERR's control message as Linux's ip_recv_error / ipv6_recv_error write it: the
    sock_extended_err, then the offender (whoever sent the ICMP error) as the socket family's sockaddr."""
    extended = _SOCK_EXTENDED_ERR.pack(entry.error.errno, entry.origin, entry.icmp_type, entry.icmp_code, 0,
                                       entry.info, 0)
    offender = _sockaddr_bytes(family, entry.offender)
    return (IPPROTO_IP, _IP_RECVERR, extended + offender) if family == AF_INET else \
        (IPPROTO_IPV6, _IPV6_RECVERR, extended + offender)


def _cmsg_int(data: bytes, low: int, high: int) -> int:
    """An int control message's value, checked as Linux does (exactly an int, within [low, high])."""
    if len(data) != _INT.size:
        raise _oserror(EINVAL)
    value = _INT.unpack(data)[0]
    if not low <= value <= high:
        raise _oserror(EINVAL)
    return value


def _sendable_control(items: list[tuple[int, int, bytes]], ipv4: bool, udp: bool,
                      txtime_on: bool) -> SendableControlMessages:
    """sendmsg's ancillary data for a datagram going out over IPv4 (Linux's ip_cmsg_send) or IPv6
    (ip6_datagram_send_ctl): each takes its own level's messages and skips the other's; a UDP or UDP-Lite
    socket also takes UDP_SEGMENT (udp_cmsg_send: a 16-bit size, any other UDP-level message is EINVAL); and
    SCM_TXTIME, a 64-bit time, once SO_TXTIME is set (__sock_cmsg_send; EINVAL before)."""
    ttl = tos = hop_limit = tclass = gso_size = txtime = None
    for level, kind, data in items:
        if level == SOL_SOCKET and kind == _SO_TXTIME:
            if not txtime_on or len(data) != _U64.size:
                raise _oserror(EINVAL)
            txtime = _U64.unpack(data)[0]
            continue
        if level == SOL_SOCKET:
            raise _oserror(EOPNOTSUPP)
        if level == IPPROTO_UDP and udp:
            if kind != UDP_SEGMENT or len(data) != _U16.size:
                raise _oserror(EINVAL)
            gso_size = _U16.unpack(data)[0]
            continue
        if ipv4:
            if level != IPPROTO_IP:
                continue
            if kind == IP_TTL:
                ttl = _cmsg_int(data, 1, 255)
            elif kind == IP_TOS:
                tos = data[0] if len(data) == 1 else _cmsg_int(data, 0, 255)
            else:
                raise _oserror(EOPNOTSUPP if kind in _UNSUPPORTED_SEND_IP else EINVAL)
        else:
            if level != IPPROTO_IPV6:
                continue
            if kind in (IPV6_HOPLIMIT, _IPV6_2292HOPLIMIT):
                value = _cmsg_int(data, -1, 255)
                hop_limit = None if value == -1 else value      # -1: the socket's own
            elif kind == IPV6_TCLASS:
                # -1 is not "the socket's own" here: Linux 6 lets it override that and sends 0xff.
                tclass = _cmsg_int(data, -1, 255) & 0xFF
            else:
                raise _oserror(EOPNOTSUPP if kind in _UNSUPPORTED_SEND_IPV6 else EINVAL)
    if ttl is tos is hop_limit is tclass is gso_size is txtime is None:
        return NO_SENDABLE_CONTROL_MESSAGES
    return SendableControlMessages(ttl=ttl, tos=tos, hop_limit=hop_limit, tclass=tclass, gso_size=gso_size,
                                   txtime=txtime)


def _tcp_info(ep: Any) -> bytes:
    """Linux's struct tcp_info (times in µs, the last_* ones in ms, windows in segments, except tcpi_snd_wnd and
    tcpi_rcv_wnd; tcpi_busy_time includes the time limited by the peer's window and by the send buffer, as
    Linux's). What netsock does not keep reads 0: the receiver's RTT and slow-start threshold, ECN's counts;
    tcpi_segs_out, _in and tcpi_data_segs_in count a super-segment once."""
    info = ep.info()
    options = ((_TCPI_OPT_TIMESTAMPS if ep.ts_ok else 0) | (_TCPI_OPT_SACK if ep.sack_ok else 0)
               | (_TCPI_OPT_WSCALE if ep.ws_ok else 0) | (_TCPI_OPT_SYN_DATA if info.syn_data_acked else 0))
    wscale = ((ep.snd.wscale if ep.snd is not None else 0) & 0xF) | (ep.rcv_wscale & 0xF) << 4 if ep.ws_ok else 0
    mtu = ep.route.mtu() if ep.route is not None else 0
    return _TCP_INFO.pack(
        int(info.state), info.ca_state, min(info.retransmits, 255), min(info.probes, 255), min(info.backoff, 255),
        options, wscale, int(info.app_limited) | info.fast_open_fail << 1,
        _usec(info.rto), _TCP_ATO_USEC, info.snd_mss, info.rcv_mss, info.unacked, info.sacked, info.lost, info.resent,
        0, _msec(info.last_data_sent), 0, _msec(info.last_data_received), _msec(info.last_ack_received),
        mtu, 0, _usec(info.rtt), _usec(info.rttvar), min(info.ssthresh, 0xFFFFFFFF),
        min(info.cwnd, 0xFFFFFFFF), info.rcv_mss, info.reordering, 0, max(info.rcv_wnd, 0),
        info.total_retransmits & 0xFFFFFFFF,
        int(info.pacing_rate), info.max_pacing_rate, info.bytes_acked, info.bytes_received, info.segs_out & 0xFFFFFFFF,
        info.segs_in & 0xFFFFFFFF, min(info.notsent_bytes, 0xFFFFFFFF), _usec(info.min_rtt),
        info.data_segs_in & 0xFFFFFFFF, info.data_segs_out & 0xFFFFFFFF, int(info.delivery_rate),
        int(sum(info.chrono) * 1e6), int(info.chrono[1] * 1e6), int(info.chrono[2] * 1e6),
        info.delivered & 0xFFFFFFFF, 0, info.bytes_sent, info.bytes_retrans, info.dsack_dups & 0xFFFFFFFF,
        info.reord_seen & 0xFFFFFFFF, info.rcv_ooopack & 0xFFFFFFFF,
        min(info.snd_wnd, 0xFFFFFFFF), min(max(info.rcv_wnd, 0), 0xFFFFFFFF), info.rehash & 0xFFFFFFFF,
        min(info.total_rto, 0xFFFF),
        min(info.total_rto_recoveries, 0xFFFF), _msec(info.total_rto_time), 0, 0, 0, 0, 0, 0, 0, 0, 0)


# --- the shared state -----------------------------------------------------------------------------------

class SocketCore:
    """What a socket's descriptors share (the kernel's ``struct socket``): its endpoint(s), the options
    kept beside them, and its descriptors. Methods raise netsock errors or OSErrors."""

    __slots__ = ("_entry", "_turn", "bound", "cookie", "descriptors", "ep", "family", "groups4", "kind", "linger",
                 "plain", "proto", "settings", "stack", "timeouts", "transport", "twin", "v6only", "waiter_queue")

    def __init__(self, stack: Stack, family: int, kind: int, proto: int, transport: int, ep: Any = None) -> None:
        self.stack = stack
        self.family = family
        self.kind = kind
        self.proto = proto
        self.transport = transport
        if ep is None:
            self.waiter_queue = WaiterQueue()
            net = IPV4_PROTOCOL_NUMBER if family == AF_INET else IPV6_PROTOCOL_NUMBER
            if family == AF_PACKET:
                ep = PacketEndpoint(stack, ntohs(transport), kind == SOCK_DGRAM, self.waiter_queue)
            elif kind == SOCK_RAW:
                ep = RawEndpoint(stack, net, transport, self.waiter_queue)
            else:
                ep = stack.new_endpoint(transport, net, self.waiter_queue)
        else:
            self.waiter_queue = ep.waiter_queue
        self.ep = ep
        self.twin: Any = None               # the IPv4 endpoint of a dual-stack socket
        self.v6only = False
        self.bound = False                  # bound explicitly or implicitly (listen, connect, send)
        # Endpoint options as set, by (option, IP version: 0 for all): replayed on endpoints made later.
        self.settings: dict[tuple[SockOpt, int], Any] = {}
        # Options Linux keeps for a socket type they do nothing for, only to read them back.
        self.plain: dict[tuple[int, int], int | bytes] = {}
        self.cookie = 0     # SO_COOKIE, given when first asked for
        self.groups4: set[tuple[bytes, int]] = set()     # an IPv6 socket's IPv4 groups (IP_ADD_MEMBERSHIP)
        if family == AF_INET6 and transport in _UDP_TRANSPORTS and kind == SOCK_DGRAM:
            # Linux sets IP_MULTICAST_ALL in inet_create only: an IPv6 socket's IPv4 traffic starts without it.
            self.settings[(SockOpt.MULTICAST_ALL, 4)] = False
        self.linger = (0, 0)
        self.timeouts: list[float | None] = [None, None]     # SO_RCVTIMEO, SO_SNDTIMEO
        self.descriptors = fds.EventFds()
        self._turn = False                  # which of ep/twin goes first next time (fairness)
        self._entry = self.waiter_queue.register(self._notified, _IN)

    @classmethod
    def accepted(cls, listener: SocketCore, ep: Any) -> SocketCore:
        """The core of a connection ``listener`` accepted; it inherits the listener's socket-level state
        (the stack copied the endpoint's own options to ``ep`` already)."""
        core = cls(listener.stack, listener.family, listener.kind, listener.proto, listener.transport, ep)
        core.bound = True
        core.settings = dict(listener.settings)
        core.plain = dict(listener.plain)
        core.linger = listener.linger
        core.timeouts = list(listener.timeouts)
        return core

    # --- descriptors and readiness ------------------------------------------------------------------

    def open_fd(self) -> int:
        fd = self.descriptors.open(self)
        self.sync()
        return fd

    def close_fd(self, fd: int) -> None:
        """Close one descriptor; with the last one, the endpoints close too."""
        self.descriptors.close(fd)
        if not self.descriptors.fds:
            for ep in self.endpoints():
                ep.close()
            self.waiter_queue.unregister(self._entry)
            # The entry holds our bound method: dropped, nothing refers back here, and reference
            # counting frees the socket now instead of leaving it to the cyclic GC.
            self._entry = None
        self.waiter_queue.notify(EventMask.HUP)     # greenlets waiting on the closed descriptor give up

    def endpoints(self) -> tuple[Any, ...]:
        return (self.ep,) if self.twin is None else (self.ep, self.twin)

    def linger_after_close(self) -> None:
        """After the last close of a TCP socket with SO_LINGER on and a time: wait, that long at most,
        until the peer has acknowledged everything sent, FIN included (Linux's sk_stream_wait_close,
        for a non-blocking socket too); then the connection goes on closing by itself. Not from the
        hub (a close run by the collector), which cannot wait."""
        onoff, seconds = self.linger
        if not onoff or seconds <= 0 or self.kind != SOCK_STREAM or getcurrent() is get_hub():
            return
        endpoints = self.endpoints()
        wait_for(self.waiter_queue, _ALL_EVENTS,
                 lambda: all(ep.state not in _FIN_UNACKED for ep in endpoints), timeout=seconds)

    def readiness(self, mask: int) -> int:
        # SO_SELECT_ERR_QUEUE: an error, or one queued, is POLLPRI as well as POLLERR (Linux's datagram_poll
        # and tcp_poll), so that select() sees it in its exceptional set.
        select_errors = mask & _PRI and self.plain.get((SOL_SOCKET, _SO_SELECT_ERR_QUEUE))
        asked = mask | _ERR if select_errors else mask
        ready = self.ep.readiness(asked)
        if self.twin is not None:
            ready |= self.twin.readiness(asked)
        if select_errors and ready & _ERR:
            ready |= _PRI
        return ready & mask

    def sync(self) -> None:
        """Make the descriptors' readability match the socket's (after anything that may change it).

        Input readiness covers data, end of stream, a pending accept and the errors a read reports,
        all of which select() counts as readable."""
        self.descriptors.set_readable(bool(self.readiness(_IN)))

    def _notified(self, mask: EventMask) -> None:
        self.sync()

    # --- endpoints ------------------------------------------------------------------------------------

    def _new_endpoint(self, net: int) -> Any:
        """Another endpoint for this socket (same waiter queue), with the options set so far."""
        ep = self.stack.new_endpoint(self.transport, net, self.waiter_queue)
        version = 4 if net == IPV4_PROTOCOL_NUMBER else 6
        for (opt, scope), value in self.settings.items():
            if scope in (0, version):
                ep.set_sock_opt(opt, value)
        if version == 4:
            for group in self.groups4:
                ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, group)
        return ep

    def _may_be_dual(self) -> bool:
        return (self.family == AF_INET6 and self._ip_versions_shared()
                and self.ep.net_proto == IPV6_PROTOCOL_NUMBER)

    def _drop_twin(self) -> None:
        if self.twin is not None:
            self.twin.close()
            self.twin = None

    def _ip_versions_shared(self) -> bool:
        """May this AF_INET6 socket carry IPv4 (v4-mapped) traffic?"""
        return (self.transport in (TCP_PROTOCOL_NUMBER, UDP_PROTOCOL_NUMBER, UDPLITE_PROTOCOL_NUMBER)
                and self.kind != SOCK_RAW and not self.v6only)

    def bind(self, addr: bytes, port: int, nic: int) -> None:
        if _is_mapped(addr):
            if not self._ip_versions_shared() or self.bound:
                raise _oserror(EINVAL)
            ep = self._new_endpoint(IPV4_PROTOCOL_NUMBER)
            try:
                ep.bind(FullAddress(nic, addr[12:] if any(addr[12:]) else b"", port))
            except Error:
                ep.close()
                raise
            self.ep.close()
            self.ep = ep
        elif not any(addr) and self._may_be_dual() and not self.bound:
            self._bind_dual(port, nic)
        else:
            self.ep.bind(FullAddress(nic, addr if any(addr) else b"", port))
        self.bound = True

    def _bind_dual(self, port: int, nic: int) -> None:
        """Bind to the IPv6 wildcard and hold the same port for IPv4, as a non-V6ONLY socket does."""
        for _ in range(_DUAL_BIND_TRIES if port == 0 else 1):
            self.ep.bind(FullAddress(nic, b"", port))
            twin = self._new_endpoint(IPV4_PROTOCOL_NUMBER)
            try:
                twin.bind(FullAddress(nic, b"", self.ep.get_local_address().port))
            except ErrPortInUse:
                twin.close()
                self.ep.close()             # unbind: start over with a fresh endpoint
                self.ep = self._new_endpoint(IPV6_PROTOCOL_NUMBER)
                continue
            self.twin = twin
            return
        raise ErrPortInUse()

    def connect(self, addr: bytes, port: int, nic: int, fast_open: bool = False) -> None:
        """Connect (TCP: start the handshake, raising ErrConnectStarted; ``fast_open``: MSG_FASTOPEN's)
        to ``addr``."""
        if _is_mapped(addr):
            if not self._ip_versions_shared():
                raise _oserror(ENETUNREACH)
            if self.ep.net_proto == IPV6_PROTOCOL_NUMBER:
                if self.twin is not None:
                    old, self.ep, self.twin = self.ep, self.twin, None
                elif self.bound:
                    raise _oserror(ENETUNREACH)     # bound to an IPv6 address: no IPv4 path from it
                else:
                    old, self.ep = self.ep, self._new_endpoint(IPV4_PROTOCOL_NUMBER)
                old.close()
            addr = addr[12:]
        elif len(addr) == 16 and self.ep.net_proto == IPV4_PROTOCOL_NUMBER:
            raise _oserror(EAFNOSUPPORT)        # an IPv4 (mapped) socket cannot reach IPv6
        try:
            if fast_open:
                self.ep.connect(FullAddress(nic, addr, port), fast_open=True)
            else:
                self.ep.connect(FullAddress(nic, addr, port))
        except ErrConnectStarted:
            self._drop_twin()
            self.bound = True
            raise
        self._drop_twin()
        self.bound = True

    def listen(self, backlog: int) -> None:
        if not self.bound:
            self.bind(bytes(4 if self.family == AF_INET else 16), 0, 0)
        for ep in self.endpoints():
            ep.listen(backlog)

    def accept(self) -> Any:
        """A connected child endpoint; ErrWouldBlock if none is waiting."""
        if self.twin is None:
            return self.ep.accept()[0]
        first, second = (self.twin, self.ep) if self._turn else (self.ep, self.twin)
        self._turn = not self._turn
        try:
            return first.accept()[0]
        except ErrWouldBlock:
            return second.accept()[0]

    @property
    def peek_offset(self) -> int:
        """SO_PEEK_OFF: where the next peek starts, in bytes into what is queued (-1: at the start,
        without moving). Linux's sk_peek_off: peeks move it on by what they return, reads back."""
        return self.plain.get((SOL_SOCKET, _SO_PEEK_OFF), -1)  # type: ignore[return-value]

    def move_peek_offset(self, count: int) -> None:
        """A peek returned ``count`` bytes (negative: a read took them) while the offset was on."""
        offset = self.plain.get((SOL_SOCKET, _SO_PEEK_OFF), -1)
        if offset >= 0:     # type: ignore[operator]
            self.plain[(SOL_SOCKET, _SO_PEEK_OFF)] = max(offset + count, 0)  # type: ignore[operator]

    def arrivals(self) -> int:
        """A number that grows with each arrival of something to read: what a peek past the queued data
        waits to change (the queue's readiness already holds)."""
        if self.kind == SOCK_STREAM:
            rcv = self.ep.rcv
            return rcv.nxt if rcv is not None else 0
        return sum(ep.stats.packets_received.value for ep in self.endpoints())

    def peek_datagram(self, offset: int) -> tuple[ReadResult, int]:
        """The datagram ``offset`` bytes into the queue and where in it the offset falls (SO_PEEK_OFF)."""
        for ep in self.endpoints():
            ep.peeking_with_offset = True       # (each arrival wakes the reader from now on)
        for ep in self.endpoints():
            if ep.readiness(_IN):
                try:
                    return ep.peek_at(offset)
                except ErrWouldBlock:
                    continue
        return self.ep.peek_at(offset)

    def read_datagram(self, peek: bool) -> ReadResult:
        if self.twin is not None:
            order = (self.twin, self.ep) if self._turn else (self.ep, self.twin)
            for ep in order:
                if ep.readiness(_IN):
                    if not peek:
                        self._turn = ep is self.ep
                    return ep.read(peek)
        return self.ep.read(peek)

    def write_datagram(self, data: memoryview, to: tuple[bytes, int, int] | PacketAddress | None,
                       control: SendableControlMessages = NO_SENDABLE_CONTROL_MESSAGES,
                       dont_route: bool = False, more: bool = False, zerocopy: bool = False) -> int:
        if self.family == AF_PACKET:
            return self.ep.write(data, WriteOptions(to=to, control=control))
        if not self.bound and self._may_be_dual():
            self.bind(bytes(16), 0, 0)      # the implicit bind holds the port for both versions
        if to is None:
            return self.ep.write(data) if control is NO_SENDABLE_CONTROL_MESSAGES and not (dont_route or more or
                                                                                          zerocopy) \
                else self.ep.write(data, WriteOptions(control=control, dont_route=dont_route, more=more,
                                                      zerocopy=zerocopy))
        addr, port, nic = to
        ep = self.ep
        if _is_mapped(addr):
            if not self._ip_versions_shared():
                raise _oserror(ENETUNREACH)
            if ep.net_proto == IPV6_PROTOCOL_NUMBER:
                if self.twin is None:
                    raise _oserror(ENETUNREACH)
                ep = self.twin
            addr = addr[12:]
        elif len(addr) == 16 and ep.net_proto == IPV4_PROTOCOL_NUMBER:
            raise _oserror(EAFNOSUPPORT)
        sent = ep.write(data, WriteOptions(to=FullAddress(nic, addr, port), control=control, dont_route=dont_route,
                                           more=more, zerocopy=zerocopy))
        self.bound = True
        return sent

    def shutdown(self, flags: ShutdownFlags) -> None:
        for ep in self.endpoints():
            ep.shutdown(flags)

    def take_error(self) -> Error | None:
        """The pending error (SO_ERROR), cleared."""
        for ep in self.endpoints():
            err = ep.get_sock_opt(SockOpt.ERROR)
            if err is not None:
                return err
        return None

    def address(self, ep_address: FullAddress | PacketAddress) -> tuple[Any, ...]:
        if self.family == AF_PACKET:
            return _packet_tuple(self.stack, ep_address)     # type: ignore[arg-type]
        return _address_tuple(self.family, bytes(ep_address.addr), ep_address.port, ep_address.nic)

    # --- options ----------------------------------------------------------------------------------------

    def _set(self, opt: SockOpt, value: Any, scope: int = 0) -> None:
        """Set an endpoint option on the endpoints of IP version ``scope`` (0: all), now and later."""
        for ep in self.endpoints():
            if scope == 0 or scope == (4 if ep.net_proto == IPV4_PROTOCOL_NUMBER else 6):
                ep.set_sock_opt(opt, value)
        self.settings[(opt, scope)] = value

    def _get(self, opt: SockOpt, scope: int = 0, default: Any = None) -> Any:
        for ep in self.endpoints():
            if scope == 0 or scope == (4 if ep.net_proto == IPV4_PROTOCOL_NUMBER else 6):
                return ep.get_sock_opt(opt)
        return self.settings.get((opt, scope), default)

    def _interface(self, ifindex: int, address: bytes, missing: int) -> int:
        """The NIC an option names by index, else by one of its addresses; 0 for neither."""
        if ifindex:
            if ifindex not in self.stack.nics:
                raise _oserror(missing)
            return ifindex
        if any(address):
            nic = self.stack.local_address_nic(address)
            if nic is None:
                raise _oserror(missing)
            return nic.id
        return 0

    def _membership(self, join: bool, group: bytes, nic: int) -> None:
        if join and not _is_group(group):
            raise _oserror(EINVAL)      # (a leave looks for the membership only: EADDRNOTAVAIL, as Linux)
        try:
            self.ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP if join else SockOpt.REMOVE_MEMBERSHIP, (group, nic))
        except ErrInvalidOptionValue:
            # The group and NIC are valid, so the stack refused a second join or a leave without a join.
            raise _oserror(EADDRINUSE if join else EADDRNOTAVAIL) from None

    def _ipv4_membership(self, join: bool, group: bytes, nic: int) -> None:
        """IP_ADD_MEMBERSHIP / IP_DROP_MEMBERSHIP on an IPv6 socket, as Linux lets one join IPv4 groups: for the
        IPv4 traffic it takes (mapped), held by its IPv4 endpoint — now, or once a bind to the wildcard makes
        one."""
        if join and not _is_group(group):
            raise _oserror(EINVAL)
        key = (group, nic)
        if join == (key in self.groups4):
            raise _oserror(EADDRINUSE if join else EADDRNOTAVAIL)
        ep = self.twin if self.twin is not None else self.ep if self.ep.net_proto == IPV4_PROTOCOL_NUMBER else None
        if ep is not None:
            ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP if join else SockOpt.REMOVE_MEMBERSHIP, key)
        (self.groups4.add if join else self.groups4.discard)(key)

    def _multicast_request(self, name: int, raw: bytes, family: int) -> None:
        """RFC 3678's group and source requests, at either level (``family``: the level's): MCAST_JOIN_GROUP and
        _LEAVE_GROUP, the source operations (MCAST_ and IPv4's IP_ ones), MCAST_MSFILTER and IP_MSFILTER, checked
        in Linux's order. Datagram and raw sockets hold memberships here; a TCP socket, which Linux lets join
        too, cannot."""
        if name in (_MCAST_JOIN_GROUP, _MCAST_LEAVE_GROUP):
            if len(raw) < _GROUP_REQ.size:
                raise _oserror(EINVAL)
            ifindex, storage = _GROUP_REQ.unpack_from(raw)
            group = _storage_address(storage, family)
            if group is None:
                raise _oserror(EINVAL if family == AF_INET else EADDRNOTAVAIL)
            self._multicast_socket(family)
            self._membership(name == _MCAST_JOIN_GROUP, group, self._interface(ifindex, b"", ENODEV))
        elif name in _SOURCE_OPERATIONS:
            if name < _MCAST_JOIN_GROUP:                # IPv4's struct ip_mreq_source, exactly
                if len(raw) != _IP_MREQ_SOURCE.size:
                    raise _oserror(EINVAL)
                group, interface, source = _IP_MREQ_SOURCE.unpack(raw)
                ifindex = 0
            else:
                if len(raw) < _GROUP_SOURCE_REQ.size:
                    raise _oserror(EINVAL)
                ifindex, group_storage, source_storage = _GROUP_SOURCE_REQ.unpack_from(raw)
                group, source = _storage_address(group_storage, family), _storage_address(source_storage, family)
                if group is None or source is None:
                    raise _oserror(EADDRNOTAVAIL)
                interface = b""
            self._multicast_socket(family)
            self._source_operation(name, group, self._interface(ifindex, interface, ENODEV), source)
        else:
            self._set_source_filter(name, raw, family)

    def _source_operation(self, name: int, group: bytes, nic: int, source: bytes) -> None:
        add, mode = _SOURCE_OPERATIONS[name]
        if not _is_group(group):
            raise _oserror(EINVAL)
        if add and mode == MCAST_INCLUDE:
            try:    # joining with the source, unless a member already (Linux's ip_mc_join_group_ssm)
                self.ep.set_sock_opt(SockOpt.ADD_MEMBERSHIP, (group, nic, MCAST_INCLUDE, source))
                return
            except ErrInvalidOptionValue:
                pass
        self.ep.set_sock_opt(SockOpt.SOURCE_MEMBERSHIP, (add, mode, group, nic, source))

    def _set_source_filter(self, name: int, raw: bytes, family: int) -> None:
        """IP_MSFILTER (struct ip_msfilter) or MCAST_MSFILTER (struct group_filter): a membership's whole filter."""
        if name == _IP_MSFILTER:
            head, entry = _IP_MSFILTER_HEAD, 4
            if len(raw) < head.size:
                raise _oserror(EINVAL)
            group, interface, mode, count = head.unpack_from(raw)
            ifindex = 0
        else:
            head, entry = _GROUP_FILTER_HEAD, _SOCKADDR_STORAGE
            if len(raw) < head.size:
                raise _oserror(EINVAL)
            ifindex, storage, mode, count = head.unpack_from(raw)
            interface = b""
        if count > MAX_SOURCES:
            raise _oserror(ENOBUFS)
        if head.size + count * entry > len(raw):
            raise _oserror(EINVAL)
        if name == _IP_MSFILTER:
            sources = [raw[head.size + 4 * i:head.size + 4 * i + 4] for i in range(count)]
        else:
            group = _storage_address(storage, family)
            found = [_storage_address(raw[head.size + entry * i:head.size + entry * (i + 1)], family)
                     for i in range(count)]
            if group is None or None in found:
                raise _oserror(EADDRNOTAVAIL if family == AF_INET else EINVAL)
            sources = [s for s in found if s is not None]
        if not _is_group(group) or mode not in (MCAST_INCLUDE, MCAST_EXCLUDE):
            raise _oserror(EINVAL)
        self._multicast_socket(family)
        self.ep.set_sock_opt(SockOpt.SOURCE_FILTER, (group, self._interface(ifindex, interface, ENODEV), mode, sources))

    def _multicast_socket(self, family: int) -> None:
        """Memberships of ``family``'s groups: a datagram or raw socket of that family's (ENOPROTOOPT otherwise)."""
        if self.kind == SOCK_STREAM or self.family != family:
            raise _oserror(ENOPROTOOPT)

    def setsockopt(self, level: int, name: int, raw: bytes) -> None:
        if level == SOL_SOCKET:
            self._set_socket_option(name, raw)
        elif level == IPPROTO_TCP and self.kind == SOCK_STREAM:
            self._set_tcp_option(name, raw)
        elif level == IPPROTO_IP:
            self._set_ip_option(name, raw)
        elif level == IPPROTO_IPV6 and self.family == AF_INET6:
            self._set_ipv6_option(name, raw)
        elif level in _UDP_LEVELS and self.transport in _UDP_TRANSPORTS and self.kind == SOCK_DGRAM:
            self._set_udp_option(name, raw)
        elif level == _SOL_PACKET and self.family == AF_PACKET:
            self._set_packet_option(name, raw)
        elif self._is_icmp_filter_level(level):
            self._set_icmp_filter(name, raw)
        elif level == _SOL_RAW and self.kind == SOCK_RAW:      # IPv6's (IPv4's is the filter's)
            if name != IPV6_CHECKSUM:
                raise _oserror(ENOPROTOOPT)
            self._set(SockOpt.IPV6_CHECKSUM, _int_option(raw))   # Linux's way round RFC 3542, for ICMPv6 too
        else:
            raise _oserror(ENOPROTOOPT)

    def _set_timestamping(self, name: int, raw: bytes) -> None:
        """SO_TIMESTAMPING: an int or a struct so_timestamping, checked as Linux's sock_set_timestamping.
        Receive stamps are software ones (the stack's clock as a packet is queued); no device here stamps
        in hardware, so the hardware flags are taken and stamp nothing, as on a device without the
        feature. Transmit software stamps (TX_SCHED, TX_SOFTWARE, and on TCP TX_ACK) go to the error queue."""
        flags = _int_option(raw)
        if flags & ~_SOF_MASK or flags & _SOF_OPT_ID_TCP and not flags & _SOF_OPT_ID or \
                flags & _SOF_OPT_STATS and not flags & _SOF_OPT_TSONLY:
            raise _oserror(EINVAL)
        current = self.plain.get((SOL_SOCKET, _SO_TIMESTAMPING), 0)
        if flags & _SOF_OPT_ID and not current & _SOF_OPT_ID and self.kind == SOCK_STREAM and \
                self.ep.state in (TCPState.CLOSED, TCPState.LISTEN):
            raise _oserror(EINVAL)      # (the byte count it starts from must be well defined)
        if flags & _SOF_BIND_PHC:
            raise _oserror(EOPNOTSUPP)  # no PTP hardware clock to bind
        self._set(SockOpt.TRANSMIT_TIMESTAMPING, flags)
        self.plain[(SOL_SOCKET, _SO_TIMESTAMPING)] = flags
        self.plain[_TSTAMP_NEW] = int(name == _SO_TIMESTAMPING_NEW)
        self._stamp_arrivals()

    def _stamp_arrivals(self) -> None:
        """Arrivals are stamped while SO_TIMESTAMPING's RX_SOFTWARE asks, and from the first SO_TIMESTAMP(NS)
        on (Linux keeps its SOCK_TIMESTAMP until the socket closes: turned off, the option stops its own
        cmsg only, and SOF_TIMESTAMPING_SOFTWARE still reports the stamps). (Linux also stamps for a socket
        that did not ask while any other socket on the host does: not here.)"""
        flags = self.plain.get((SOL_SOCKET, _SO_TIMESTAMPING), 0)
        self._set(SockOpt.TIMESTAMP, bool(self.plain.get(_SOCK_TIMESTAMP) or flags & _SOF_RX_SOFTWARE))

    def stamps(self, error_queue: bool = False) -> tuple[int, int]:
        """The timestamp cmsg types a read carries (0: none): SO_TIMESTAMP(NS)'s, and SCM_TIMESTAMPING's
        while SOF_TIMESTAMPING_SOFTWARE asks for software stamps to be reported (with OPT_RX_FILTER only
        if RX_SOFTWARE makes them, unless it is the error queue's transmit stamp: Linux's
        __sock_recv_timestamp); each the _NEW type if the last of these options set was a _NEW one."""
        plain = self.plain
        new = plain.get(_TSTAMP_NEW, 0)
        timestamp = 0
        if plain.get((SOL_SOCKET, _SO_TIMESTAMP)):
            nanoseconds = plain.get((SOL_SOCKET, _SO_TIMESTAMPNS))
            timestamp = (_SO_TIMESTAMPNS_NEW if new else _SO_TIMESTAMPNS) if nanoseconds else \
                (_SO_TIMESTAMP_NEW if new else _SO_TIMESTAMP)
        flags = plain.get((SOL_SOCKET, _SO_TIMESTAMPING), 0)
        reported = flags & _SOF_SOFTWARE and (error_queue or flags & _SOF_RX_SOFTWARE  # type: ignore
                                              or not flags & _SOF_OPT_RX_FILTER)
        return timestamp, (_SO_TIMESTAMPING_NEW if new else _SO_TIMESTAMPING) if reported else 0

    def getsockopt(self, level: int, name: int) -> int | bytes:
        if level == SOL_SOCKET:
            return self._get_socket_option(name)
        if level == IPPROTO_TCP and self.kind == SOCK_STREAM:
            return self._get_tcp_option(name)
        if level == IPPROTO_IP:
            return self._get_ip_option(name)
        if level == IPPROTO_IPV6 and self.family == AF_INET6:
            return self._get_ipv6_option(name)
        if level in _UDP_LEVELS and self.transport in _UDP_TRANSPORTS and self.kind == SOCK_DGRAM:
            return self._get_udp_option(name)
        if level == _SOL_PACKET and self.family == AF_PACKET:
            return self._get_packet_option(name)
        if self._is_icmp_filter_level(level):
            return self._get_icmp_filter(name)
        if level == _SOL_RAW and self.kind == SOCK_RAW:
            if name != IPV6_CHECKSUM:
                raise _oserror(ENOPROTOOPT)
            return self._get(SockOpt.IPV6_CHECKSUM)
        # A level the protocol does not handle, on get: Linux's IPv4 says EOPNOTSUPP, IPv6 and packet
        # sockets ENOPROTOOPT.
        raise _oserror(EOPNOTSUPP if self.family == AF_INET else ENOPROTOOPT)

    def _is_icmp_filter_level(self, level: int) -> bool:
        return self.kind == SOCK_RAW and level == (_SOL_RAW if self.family == AF_INET else IPPROTO_ICMPV6)

    def _get_icmp_filter(self, name: int) -> bytes:
        """The ICMP filter as the kernel stores it: 32-bit words, bit n of the whole for type n
        (set: blocked). Only ICMP sockets have one (others: EOPNOTSUPP, as Linux)."""
        if name != _ICMP_FILTER:
            raise _oserror(ENOPROTOOPT)
        if self.transport != (ICMPV4_PROTOCOL_NUMBER if self.family == AF_INET else ICMPV6_PROTOCOL_NUMBER):
            raise _oserror(EOPNOTSUPP)
        words = 1 if self.family == AF_INET else 8
        mask = self._get(SockOpt.ICMP_FILTER)
        return struct.pack(f"{words}I", *(mask >> 32 * i & 0xFFFFFFFF for i in range(words)))

    def _set_icmp_filter(self, name: int, raw: bytes) -> None:
        """Write ``raw`` over the start of the filter, as Linux's raw_seticmpfilter and
        rawv6_seticmpfilter copy what they are given, up to the struct's size."""
        current = self._get_icmp_filter(name)
        words = struct.unpack(f"{len(current) // 4}I", raw[:len(current)] + current[len(raw):])
        self._set(SockOpt.ICMP_FILTER, sum(word << 32 * i for i, word in enumerate(words)))

    def _set_packet_option(self, name: int, raw: bytes) -> None:
        """Linux's packet_setsockopt for what netsock has: memberships, PACKET_AUXDATA, PACKET_IGNORE_OUTGOING,
        and the settings that steer only rings, queueing disciplines or bonding, which netsock has none of
        (kept, checked and read back). Most take exactly an int."""
        ep = self.ep
        if name in (_PACKET_ADD_MEMBERSHIP, _PACKET_DROP_MEMBERSHIP):
            if len(raw) < _PACKET_MREQ.size:
                raise _oserror(EINVAL)
            ifindex, kind, length, address = _PACKET_MREQ.unpack_from(raw)
            nic = self.stack.nics.get(ifindex)
            if nic is None:
                raise _oserror(ENODEV)
            # (the address may be as long as the NIC's: Ethernet's 6 bytes, lo's too in Linux)
            longest = 6 if nic.hardware_type in (ARPHRD_ETHER, ARPHRD_LOOPBACK) else len(nic.link.link_address())
            if length > longest or kind > _PACKET_MR_UNICAST:
                raise _oserror(EINVAL)
            ep.membership(name == _PACKET_ADD_MEMBERSHIP, ifindex, kind, address[:length])
            return
        if name in (_PACKET_AUXDATA, _PACKET_ORIGDEV):
            value = _int_option(raw)
        elif name in _PACKET_KEPT or name == _PACKET_IGNORE_OUTGOING:
            if len(raw) != _INT.size:
                raise _oserror(EINVAL)
            value = _int_option(raw)
            if name == _PACKET_VERSION and value not in (0, 1, 2) or name == _PACKET_IGNORE_OUTGOING and \
                    value not in (0, 1) or name == _PACKET_RESERVE and value < 0:
                raise _oserror(EINVAL)
        else:
            raise _oserror(ENOPROTOOPT)
        if name == _PACKET_AUXDATA:
            ep.auxdata = bool(value)
        elif name == _PACKET_IGNORE_OUTGOING:
            ep.ignore_outgoing = bool(value)
        else:
            self.plain[(_SOL_PACKET, name)] = int(bool(value)) if name in _PACKET_FLAGS else value

    def _get_packet_option(self, name: int) -> int | bytes:
        ep = self.ep
        if name == _PACKET_AUXDATA:
            return int(ep.auxdata)
        if name == _PACKET_IGNORE_OUTGOING:
            return int(ep.ignore_outgoing)
        if name == _PACKET_STATISTICS:
            return struct.pack("II", *ep.statistics())
        if name == _PACKET_HDRLEN:
            return _TPACKET_HDRLEN      # of TPACKET_V1, which the zeroed buffer CPython passes asks for
        if name in _PACKET_KEPT or name == _PACKET_ORIGDEV:
            return self.plain.get((_SOL_PACKET, name), 0)
        raise _oserror(ENOPROTOOPT)

    def _set_udp_option(self, name: int, raw: bytes) -> None:
        """Linux's udp_lib_setsockopt: the value must be an int whatever the option; the coverage
        options are UDP-Lite's alone (the endpoint stores them as Linux does)."""
        value = _int_option(raw)
        if name == UDP_SEGMENT:
            if not 0 <= value <= 0xFFFF:
                raise _oserror(EINVAL)
            self._set(SockOpt.UDP_SEGMENT, value)
        elif name in _UDPLITE_COVERAGE and self.transport == UDPLITE_PROTOCOL_NUMBER:
            self._set(_UDPLITE_COVERAGE[name], value)
        elif name in _UDP_NO_CHECK6:
            self._set(_UDP_NO_CHECK6[name], bool(value))
        elif name == _UDP_CORK:
            self._set(SockOpt.UDP_CORK, bool(value))
        elif name == UDP_GRO:
            self._set(SockOpt.UDP_GRO, bool(value))
        else:
            raise _oserror(ENOPROTOOPT)

    def _get_udp_option(self, name: int) -> int:
        """Linux's udp_lib_getsockopt: a coverage option reads as 0 until set, and on UDP sockets too."""
        if name == UDP_SEGMENT:
            return self._get(SockOpt.UDP_SEGMENT, default=0)
        if name in _UDPLITE_COVERAGE:
            if self.transport != UDPLITE_PROTOCOL_NUMBER:
                return 0
            return self._get(_UDPLITE_COVERAGE[name]) or 0
        if name in _UDP_NO_CHECK6:
            return int(self._get(_UDP_NO_CHECK6[name], default=False))
        if name == _UDP_CORK:
            return int(self._get(SockOpt.UDP_CORK, default=False))
        if name == UDP_GRO:
            return int(self._get(SockOpt.UDP_GRO, default=False))
        raise _oserror(ENOPROTOOPT)

    def _set_socket_option(self, name: int, raw: bytes) -> None:
        stream = self.kind == SOCK_STREAM
        name = _SO_TIMEO_NEW.get(name, name)
        if name in (SO_REUSEADDR, SO_REUSEPORT):
            self._set(SockOpt.REUSE_ADDRESS if name == SO_REUSEADDR else SockOpt.REUSE_PORT, bool(_int_option(raw)))
        elif name == SO_KEEPALIVE and stream:
            self._set(SockOpt.KEEPALIVE_ENABLED, bool(_int_option(raw)))
        elif name == SO_OOBINLINE and stream:
            self._set(SockOpt.OUT_OF_BAND_INLINE, bool(_int_option(raw)))
        elif name == SO_BROADCAST and not stream:
            self._set(SockOpt.BROADCAST, bool(_int_option(raw)))
        elif name in (SO_KEEPALIVE, SO_BROADCAST, SO_OOBINLINE, _SO_SELECT_ERR_QUEUE, _SO_WIFI_STATUS, _SO_NOFCS):
            self.plain[(SOL_SOCKET, name)] = int(bool(_int_option(raw)))
        elif name == _SO_CNX_ADVICE:
            _int_option(raw)
        elif name == _SO_TXTIME:
            if len(raw) != _SOCK_TXTIME.size:
                raise _oserror(EINVAL)
            clock, flags = _SOCK_TXTIME.unpack(raw)
            if flags & ~_SOF_TXTIME_FLAGS:
                raise _oserror(EINVAL)
            if clock != 1 and not _capable(_CAP_NET_ADMIN):
                raise _oserror(EPERM)       # (a clock other than CLOCK_MONOTONIC is for the etf qdisc)
            if clock not in _TXTIME_CLOCKS:
                raise _oserror(EINVAL)
            self.plain[(SOL_SOCKET, name)] = raw
            if not stream:
                self._set(SockOpt.TXTIME, (clock, flags))
        elif name == _SO_ATTACH_REUSEPORT_CBPF:
            self._set(SockOpt.REUSE_PORT_PROGRAM, self._filter_program(raw))
        elif name == _SO_DETACH_REUSEPORT_BPF:
            _int_option(raw)
            self._set(SockOpt.REUSE_PORT_PROGRAM, None)
        elif name == _SO_TXREHASH and stream:
            value = _int_option(raw)
            if not -1 <= value <= 1:
                raise _oserror(EINVAL)
            self._set(SockOpt.TCP_TXREHASH, value != 0)     # (-1: the system's default, net.core.txrehash 1)
        elif name in (_SO_PASSSEC, _SO_RESERVE_MEM, _SO_TXREHASH):
            raise _oserror(EOPNOTSUPP)
        elif name == SO_LINGER:
            if len(raw) < _LINGER.size:
                raise _oserror(EINVAL)
            onoff, seconds = _LINGER.unpack_from(raw)
            if stream:
                self._set(SockOpt.LINGER, max(seconds, 0) if onoff else None)
            self.linger = (1, seconds) if onoff else (0, self.linger[1])
        elif name == SO_RCVLOWAT:
            lowat = _int_option(raw)
            lowat = (_INT_MAX if lowat < 0 else lowat) or 1     # Linux: negative is "as much as can be"
            if stream:
                self._set(SockOpt.RECEIVE_LOW_WATER, lowat)     # (capped at half the largest buffer)
            else:
                self.plain[(SOL_SOCKET, name)] = lowat
        elif name in (SO_RCVBUF, SO_SNDBUF):
            size = min(_int_option(raw) & 0xFFFFFFFF, 0x7FFFFFFF)   # Linux reads it unsigned
            self._set(SockOpt.RECEIVE_BUFFER_SIZE if name == SO_RCVBUF else SockOpt.SEND_BUFFER_SIZE, size)
            self.plain[(SOL_SOCKET, _SO_BUF_LOCK)] = self.plain.get((SOL_SOCKET, _SO_BUF_LOCK), 0) | (  # type: ignore
                _RCVBUF_LOCK if name == SO_RCVBUF else _SNDBUF_LOCK)
        elif name == _SO_BUF_LOCK:
            # The buffer sizes' locks themselves: a set size locks its buffer (above); unlocked, TCP's
            # receive buffer tunes itself again (Linux's sk_userlocks, which tcp_rcv_space_adjust reads).
            locks = _int_option(raw)
            if locks & ~(_SNDBUF_LOCK | _RCVBUF_LOCK):
                raise _oserror(EINVAL)
            self.plain[(SOL_SOCKET, name)] = locks
            if stream:
                self._set(SockOpt.MODERATE_RECEIVE_BUFFER, not locks & _RCVBUF_LOCK)
        elif name == _SO_PASSCRED:
            raise _oserror(EOPNOTSUPP)     # (credentials pass over AF_UNIX and netlink only, in Linux 6)
        elif name in (SO_RCVTIMEO, SO_SNDTIMEO):
            if len(raw) < _TIMEVAL.size:
                raise _oserror(EINVAL)
            seconds, usec = _TIMEVAL.unpack_from(raw)
            if not 0 <= usec < 1_000_000:
                raise _oserror(EDOM)
            # 0 s is "no timeout"; a negative one, Linux takes as "do not wait at all".
            self.timeouts[name == SO_SNDTIMEO] = 0.0 if seconds < 0 else (seconds + usec / 1e6) or None
        elif name in (_SO_TIMESTAMP, _SO_TIMESTAMPNS, _SO_TIMESTAMP_NEW, _SO_TIMESTAMPNS_NEW):
            # One flag and its precision, as Linux's sock_set_timestamp: any of the four turns stamping on in
            # its own unit (a timeval or a timespec) and cmsg type (old or new), any one off turns it off.
            on = bool(_int_option(raw))
            self.plain[(SOL_SOCKET, _SO_TIMESTAMP)] = int(on)
            self.plain[(SOL_SOCKET, _SO_TIMESTAMPNS)] = int(on and name in (_SO_TIMESTAMPNS, _SO_TIMESTAMPNS_NEW))
            if on:
                self.plain[_TSTAMP_NEW] = int(name in (_SO_TIMESTAMP_NEW, _SO_TIMESTAMPNS_NEW))
                self.plain[_SOCK_TIMESTAMP] = 1
            self._stamp_arrivals()
        elif name in (_SO_TIMESTAMPING, _SO_TIMESTAMPING_NEW):
            self._set_timestamping(name, raw)
        elif name == _SO_ATTACH_FILTER:
            self._set(SockOpt.SOCKET_FILTER, self._filter_program(raw))
        elif name == _SO_DETACH_FILTER:
            _int_option(raw)
            if self._get(SockOpt.LOCK_FILTER, default=False):
                raise _oserror(EPERM)
            if self._get(SockOpt.SOCKET_FILTER) is None:
                raise _oserror(ENOENT)
            self._set(SockOpt.SOCKET_FILTER, None)
        elif name == _SO_LOCK_FILTER:
            self._set(SockOpt.LOCK_FILTER, bool(_int_option(raw)))
        elif name == _SO_MAX_PACING_RATE:
            if len(raw) >= _U64.size:
                rate = _U64.unpack_from(raw)[0]
            else:       # an int: -1 is no limit, others as an unsigned int (Linux's sock_setsockopt)
                value = _int_option(raw)
                rate = UNLIMITED_PACING_RATE if value == -1 else value & 0xFFFFFFFF
            self._set(SockOpt.MAX_PACING_RATE, rate)
        elif name == _SO_MARK:
            mark = _int_option(raw)
            if not _capable(_CAP_NET_ADMIN, _CAP_NET_RAW):
                raise _oserror(EPERM)
            self._set(SockOpt.MARK, mark & 0xFFFFFFFF)
        elif name in (_SO_SNDBUFFORCE, _SO_RCVBUFFORCE):
            if not _capable(_CAP_NET_ADMIN):
                raise _oserror(EPERM)
            self._set_socket_option(SO_SNDBUF if name == _SO_SNDBUFFORCE else SO_RCVBUF, raw)
        elif name in (_SO_DEBUG, _SO_PREFER_BUSY_POLL):
            value = _int_option(raw)
            if value and not _capable(_CAP_NET_ADMIN):
                raise _oserror(EACCES if name == _SO_DEBUG else EPERM)
            self.plain[(SOL_SOCKET, name)] = int(bool(value))
        elif name == _SO_PRIORITY:
            priority = _int_option(raw)
            if not 0 <= priority <= 6 and not _capable(_CAP_NET_RAW, _CAP_NET_ADMIN):
                raise _oserror(EPERM)
            self.plain[(SOL_SOCKET, name)] = priority
        elif name == _SO_BUSY_POLL:             # microseconds; above net.core.busy_read (0) takes CAP_NET_ADMIN
            usec = _int_option(raw)
            if usec > 0 and not _capable(_CAP_NET_ADMIN):
                raise _oserror(EPERM)
            if usec < 0:
                raise _oserror(EINVAL)
            self.plain[(SOL_SOCKET, name)] = usec
        elif name == _SO_BUSY_POLL_BUDGET:      # (Linux has no getter for it)
            budget = _int_option(raw)
            if budget > self.plain.get((SOL_SOCKET, name), 0) and not _capable(_CAP_NET_ADMIN):
                raise _oserror(EPERM)
            if not 0 <= budget <= 0xFFFF:
                raise _oserror(EINVAL)
            self.plain[(SOL_SOCKET, name)] = budget
        elif name == _SO_INCOMING_CPU:
            self.plain[(SOL_SOCKET, name)] = _int_option(raw)
        elif name == _SO_PEEK_OFF:
            self._peek_offset_supported()
            self.plain[(SOL_SOCKET, name)] = _int_option(raw)     # (any negative value turns it off)
        elif name == _SO_BSDCOMPAT:
            _int_option(raw)                    # long a no-op in Linux, still taken
        elif name == _SO_ZEROCOPY:
            value = _int_option(raw)
            if not self._zerocopy_capable():
                raise _oserror(EOPNOTSUPP)
            if not 0 <= value <= 1:
                raise _oserror(EINVAL)
            self._set(SockOpt.ZEROCOPY, bool(value))
        elif name == _SO_DONTROUTE:
            self._set(SockOpt.DONT_ROUTE, bool(_int_option(raw)))
        elif name == _SO_NO_CHECK:              # (only UDP heeds it, in Linux too)
            self._set_datagram_flag((SOL_SOCKET, name), SockOpt.NO_CHECKSUM, bool(_int_option(raw)))
        elif name == _SO_RXQ_OVFL:              # (TCP reads carry no drop count in Linux either)
            self._set_datagram_flag((SOL_SOCKET, name), SockOpt.RECEIVE_QUEUE_OVERFLOW, bool(_int_option(raw)))
        elif name == _SO_RCVMARK:               # (nor a mark: TCP reads carry neither in Linux)
            self._set_datagram_flag((SOL_SOCKET, name), SockOpt.RECEIVE_MARK, bool(_int_option(raw)))
        elif name == _SO_BINDTOIFINDEX:
            ifindex = _int_option(raw)
            if ifindex < 0:
                raise _oserror(EINVAL)
            if ifindex and ifindex not in self.stack.nics:
                raise _oserror(ENODEV)          # (Linux ≥ 5.x stores any index unlooked-at)
            self._set(SockOpt.BIND_TO_DEVICE, ifindex)
        elif name == SO_BINDTODEVICE:
            ifname = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            nic = self.stack.nic_by_name(ifname) if ifname else None
            if ifname and nic is None:
                raise _oserror(ENODEV)
            self._set(SockOpt.BIND_TO_DEVICE, nic.id if nic is not None else 0)
        else:
            raise _oserror(ENOPROTOOPT)

    def _filter_program(self, raw: bytes) -> Filter:
        """SO_ATTACH_FILTER's struct sock_fprog: the instructions are read where its pointer says, in
        this process's memory, as the kernel copies them from the caller's."""
        if len(raw) != _SOCK_FPROG.size:
            raise _oserror(EINVAL)
        if self._get(SockOpt.LOCK_FILTER, default=False):
            raise _oserror(EPERM)
        count, address = _SOCK_FPROG.unpack(raw)
        if not address or not count:
            raise _oserror(EINVAL)
        try:
            return Filter.unpack(ctypes.string_at(address, count * INSTRUCTION.size))
        except ValueError:
            raise _oserror(EINVAL) from None

    def get_filter(self, buflen: int) -> bytes:
        """SO_GET_FILTER as Linux's sk_get_filter answers getsockopt: it reads the buffer's length as a
        count of instructions (EINVAL if fewer than the program's), writes them all and reports their
        count as the length — so a caller sees the first ``count`` bytes of them."""
        program = self._get(SockOpt.SOCKET_FILTER)
        if program is None:
            return b""
        count = len(program.instructions)
        if buflen < count:
            raise _oserror(EINVAL)
        return program.pack()[:count]

    def _get_socket_option(self, name: int) -> int | bytes:
        stream = self.kind == SOCK_STREAM
        name = _SO_TIMEO_NEW.get(name, name)
        if name in (_SO_WIFI_STATUS, _SO_NOFCS, _SO_RESERVE_MEM):
            return self.plain.get((SOL_SOCKET, name), 0)
        if name == _SO_TXTIME:
            return self.plain.get((SOL_SOCKET, name), bytes(_SOCK_TXTIME.size))
        if name == _SO_TXREHASH and stream:
            return int(self._get(SockOpt.TCP_TXREHASH))
        if name in (_SO_PASSSEC, _SO_TXREHASH):
            raise _oserror(EOPNOTSUPP)
        if name in (SO_REUSEADDR, SO_REUSEPORT):
            return int(self._get(SockOpt.REUSE_ADDRESS if name == SO_REUSEADDR else SockOpt.REUSE_PORT))
        if name == SO_KEEPALIVE and stream:
            return int(self._get(SockOpt.KEEPALIVE_ENABLED))
        if name == SO_OOBINLINE and stream:
            return int(self._get(SockOpt.OUT_OF_BAND_INLINE))
        if name == SO_BROADCAST and not stream:
            return int(self._get(SockOpt.BROADCAST))
        if name in (SO_KEEPALIVE, SO_BROADCAST, SO_OOBINLINE, _SO_SELECT_ERR_QUEUE):
            return self.plain.get((SOL_SOCKET, name), 0)
        if name == SO_LINGER:
            return _LINGER.pack(*self.linger)
        if name == _SO_ZEROCOPY:
            return int(self._get(SockOpt.ZEROCOPY)) if self._zerocopy_capable() else 0
        if name == SO_RCVLOWAT:
            return int(self._get(SockOpt.RECEIVE_LOW_WATER)) if stream else self.plain.get((SOL_SOCKET, name), 1)
        if name in (SO_RCVBUF, SO_SNDBUF):    # Linux reports twice what was asked for (bookkeeping room)
            return 2 * self._get(SockOpt.RECEIVE_BUFFER_SIZE if name == SO_RCVBUF else SockOpt.SEND_BUFFER_SIZE)
        if name in (SO_RCVTIMEO, SO_SNDTIMEO):
            limit = self.timeouts[name == SO_SNDTIMEO] or 0.0
            seconds = int(limit)
            return _TIMEVAL.pack(seconds, round((limit - seconds) * 1e6))
        if name == SO_ERROR:
            err = self.take_error()
            return err.errno if err is not None else 0
        if name == SO_TYPE:
            return self.kind
        if name == SO_DOMAIN:
            return self.family
        if name == SO_PROTOCOL:
            return self.transport
        if name == SO_ACCEPTCONN:
            return int(stream and self.ep.state is TCPState.LISTEN)
        if name in (_SO_TIMESTAMP, _SO_TIMESTAMPNS, _SO_TIMESTAMP_NEW, _SO_TIMESTAMPNS_NEW):
            # As Linux's sock_getsockopt words it (SO_TIMESTAMP_NEW reads 1 in nanoseconds too).
            stamping = self.plain.get((SOL_SOCKET, _SO_TIMESTAMP), 0)
            nanoseconds = self.plain.get((SOL_SOCKET, _SO_TIMESTAMPNS), 0)
            new = self.plain.get(_TSTAMP_NEW, 0)
            if name == _SO_TIMESTAMP:
                return int(bool(stamping and not new and not nanoseconds))
            return int(bool((nanoseconds if name != _SO_TIMESTAMP_NEW else stamping) and
                            bool(new) == (name != _SO_TIMESTAMPNS)))
        if name in (_SO_TIMESTAMPING, _SO_TIMESTAMPING_NEW):
            # The flags as set; through SO_TIMESTAMPING_NEW only after a _NEW option (Linux's sock_getsockopt).
            own = name == _SO_TIMESTAMPING or self.plain.get(_TSTAMP_NEW, 0)
            return _SO_TIMESTAMPING_STRUCT.pack(self.plain.get((SOL_SOCKET, _SO_TIMESTAMPING), 0) if own else 0, 0)
        if name == _SO_ATTACH_FILTER:       # SO_GET_FILTER into an int: see get_filter
            return _INT.unpack(self.get_filter(_INT.size) + bytes(4))[0] if self._get(SockOpt.SOCKET_FILTER) else 0
        if name == _SO_LOCK_FILTER:
            return int(self._get(SockOpt.LOCK_FILTER, default=False))
        if name == _SO_MAX_PACING_RATE:     # (the whole unsigned long: getsockopt cuts it as asked)
            return self._get(SockOpt.MAX_PACING_RATE, default=UNLIMITED_PACING_RATE)
        if name == _SO_MARK:
            mark = self._get(SockOpt.MARK, default=0)
            return mark - (1 << 32) if mark & 0x80000000 else mark     # Linux hands the u32 out as an int
        if name == SO_BINDTODEVICE:
            nic = self.stack.nics.get(self._get(SockOpt.BIND_TO_DEVICE))
            return nic.name.encode() + b"\0" if nic is not None else b""
        if name in _SOCKET_OPTION_DEFAULTS:
            return self.plain.get((SOL_SOCKET, name), _SOCKET_OPTION_DEFAULTS[name])
        if name == _SO_BINDTOIFINDEX:
            return self._get(SockOpt.BIND_TO_DEVICE, default=0) or 0
        if name == _SO_DONTROUTE:
            return int(self._get(SockOpt.DONT_ROUTE, default=False))
        if name == _SO_NO_CHECK:
            return self._get_datagram_flag((SOL_SOCKET, name), SockOpt.NO_CHECKSUM)
        if name == _SO_RXQ_OVFL:
            return self._get_datagram_flag((SOL_SOCKET, name), SockOpt.RECEIVE_QUEUE_OVERFLOW)
        if name == _SO_RCVMARK:
            return self._get_datagram_flag((SOL_SOCKET, name), SockOpt.RECEIVE_MARK)
        if name == _SO_PEERCRED:
            return _UCRED_NOBODY
        if name == _SO_PEERNAME:
            return self._peer_sockaddr()
        if name == _SO_PEEK_OFF:
            self._peek_offset_supported()
            return self.peek_offset
        if name == _SO_BUF_LOCK:
            return self.plain.get((SOL_SOCKET, name), 0)
        if name == _SO_PASSCRED:
            raise _oserror(EOPNOTSUPP)
        if name == _SO_INCOMING_CPU:
            cpu = self.plain.get((SOL_SOCKET, name))
            if cpu is None:
                cpu = _current_cpu() if self._received_anything() else -1
            return cpu
        if name == _SO_MEMINFO:
            receive_buffer, send_buffer = self._get_socket_option(SO_RCVBUF), self._get_socket_option(SO_SNDBUF)
            queued, unsent = self.queue_size(SockOpt.RECEIVE_QUEUE_SIZE), self.queue_size(SockOpt.SEND_QUEUE_SIZE)
            return _MEMINFO.pack(queued, receive_buffer, unsent, send_buffer, 0, unsent, 0, 0, 0)
        if name == _SO_COOKIE:
            if self.cookie == 0:
                self.cookie = next(_COOKIES)
            return _COOKIE.pack(self.cookie)
        if name == _SO_NETNS_COOKIE:
            return _COOKIE.pack(_netns_cookie(self.stack))
        raise _oserror(ENOPROTOOPT)

    def _md5_key(self, raw: bytes, extended: bool) -> tuple[bytes, int, bytes]:
        """A struct tcp_md5sig, checked as Linux's tcp_v4_parse_md5_keys / tcp_v6_parse_md5_keys: (address,
        prefix length, key); an IPv4-mapped address on an IPv6 socket is an IPv4 key. TCP_MD5SIG_EXT's
        flags choose a prefix and an interface (a VRF's only: EINVAL for any other here)."""
        if len(raw) < _TCP_MD5SIG_SIZE:
            raise _oserror(EINVAL)
        address = _storage_address(raw, self.family)
        flags, prefix, keylen, ifindex = _TCP_MD5SIG_FIELDS.unpack_from(raw, 128)
        if address is None or keylen > md5.MAX_KEY_LENGTH:
            raise _oserror(EINVAL)
        bits = len(address) * 8
        if not extended or not flags & _TCP_MD5SIG_FLAG_PREFIX:
            prefix = bits
        elif prefix > bits:
            raise _oserror(EINVAL)
        if extended and flags & _TCP_MD5SIG_FLAG_IFINDEX and ifindex:
            raise _oserror(EINVAL)
        if self.family == AF_INET6 and address[:12] == _MAPPED_PREFIX:
            if prefix < 96:
                raise _oserror(EINVAL)
            address, prefix = address[12:], prefix - 96
        return address, prefix, raw[136:136 + keylen]

    def _zerocopy_capable(self) -> bool:
        """SO_ZEROCOPY is TCP's and UDP's (Linux's sk_setsockopt: not UDP-Lite's, ping's, raw or packet
        sockets')."""
        return self.family != AF_PACKET and (self.kind == SOCK_STREAM or
                                             self.kind == SOCK_DGRAM and self.transport == UDP_PROTOCOL_NUMBER)

    def _peek_offset_supported(self) -> None:
        """SO_PEEK_OFF exists for TCP and datagram (UDP, UDP-Lite, ping) sockets: Linux's raw and packet
        sockets have no set_peek_off, and refuse to set or read it."""
        if self.family == AF_PACKET or self.kind == SOCK_RAW:
            raise _oserror(EOPNOTSUPP)

    def _peer_sockaddr(self) -> bytes:
        """SO_PEERNAME: the peer's struct sockaddr_in or sockaddr_in6 (ENOTCONN before connect)."""
        if self.family == AF_PACKET:
            raise _oserror(EOPNOTSUPP)
        try:
            peer = self.ep.get_remote_address()
        except Error:
            raise _oserror(ENOTCONN) from None
        scope_id = self.address(peer)[3] if self.family == AF_INET6 else 0
        return _sockaddr_bytes(self.family, bytes(peer.addr), peer.port, scope_id)

    def queue_size(self, opt: SockOpt) -> int:
        """Bytes queued to read (RECEIVE_QUEUE_SIZE) or to send (SEND_QUEUE_SIZE)."""
        try:
            return int(self.ep.get_sock_opt(opt))
        except Error:
            return 0        # a listener, a socket that never connected: nothing queued

    def _received_anything(self) -> bool:
        return any(ep.stats.packets_received.value for ep in self.endpoints())

    def _set_tcp_option(self, name: int, raw: bytes) -> None:
        if name == TCP_CONGESTION:
            algorithm = raw.split(b"\0", 1)[0].decode("ascii", "replace")
            if algorithm not in self.ep.get_sock_opt(SockOpt.AVAILABLE_CONGESTION_CONTROL).split():
                raise _oserror(ENOENT)
            self._set(SockOpt.CONGESTION_CONTROL, algorithm)
            return
        if name in (_TCP_MD5SIG, _TCP_MD5SIG_EXT):
            address, prefix, key = self._md5_key(raw, name == _TCP_MD5SIG_EXT)
            if not all([ep.set_md5_key(address, prefix, key) for ep in self.endpoints()]):
                raise _oserror(ENOENT)      # (removing a key the socket does not have)
            return
        if name == TCP_FASTOPEN_KEY:
            self._set(SockOpt.TCP_FAST_OPEN_KEY, raw)
            return
        if name in (_TCP_REPAIR_OPTIONS, _TCP_REPAIR_WINDOW):
            self._set_repair_struct(name, raw)
            return
        value = _int_option(raw)
        if name == TCP_NODELAY:
            self._set(SockOpt.DELAY, not value)
        elif name == TCP_CORK:
            self._set(SockOpt.CORK, bool(value))
        elif name == TCP_QUICKACK:
            self._set(SockOpt.QUICK_ACK, bool(value))
        elif name in (TCP_KEEPIDLE, TCP_KEEPINTVL):
            if not 1 <= value <= 32767:
                raise _oserror(EINVAL)
            self._set(SockOpt.KEEPALIVE_IDLE if name == TCP_KEEPIDLE else SockOpt.KEEPALIVE_INTERVAL, value)
        elif name == TCP_KEEPCNT:
            if not 1 <= value <= 127:
                raise _oserror(EINVAL)
            self._set(SockOpt.KEEPALIVE_COUNT, value)
        elif name == TCP_MAXSEG:
            self._set(SockOpt.MAX_SEG, value)
        elif name == TCP_USER_TIMEOUT:      # milliseconds
            self._set(SockOpt.TCP_USER_TIMEOUT, value / 1000 if value >= 0 else -1)
        elif name == TCP_DEFER_ACCEPT:      # seconds, kept as the SYN-ACK timeouts they span (as Linux)
            self._set(SockOpt.TCP_DEFER_ACCEPT, _seconds_to_timeouts(value))
        elif name == TCP_LINGER2:           # seconds: 0 the default, at most 120, negative "reset at once"
            self._set(SockOpt.TCP_LINGER_TIMEOUT, -1 if value < 0 else min(value, _MAX_LINGER2) or
                      self.ep.proto.fin_wait2_timeout)
        elif name in _TCP_OPTIONS:
            self._set(_TCP_OPTIONS[name], value)
        elif name == _TCP_INQ:
            self.plain[(IPPROTO_TCP, name)] = int(bool(value))
        elif name == _TCP_THIN_DUPACK:      # a no-op since Linux 4.19 (RACK does the work), still checked
            if not 0 <= value <= 1:
                raise _oserror(EINVAL)
        elif name == _TCP_THIN_LINEAR_TIMEOUTS:
            if not 0 <= value <= 1:
                raise _oserror(EINVAL)
            self._set(SockOpt.TCP_THIN_LINEAR_TIMEOUTS, bool(value))
        elif name == _TCP_RTO_MAX_MS:
            if not 1000 <= value <= 120_000:
                raise _oserror(EINVAL)
            self._set(SockOpt.TCP_RTO_MAX, value / 1000)
        elif name == _TCP_TIMESTAMP:        # only a socket in repair mode (TCP_REPAIR) may move its clock
            self._each(lambda ep: ep.set_timestamp(value & 0xFFFFFFFF))
        elif name == _TCP_REPAIR:
            if not _capable(_CAP_NET_ADMIN):
                raise _oserror(EPERM)
            self._each(lambda ep: ep.set_repair(value))
        elif name == _TCP_REPAIR_QUEUE:
            self._each(lambda ep: ep.set_repair_queue(value))
        elif name == _TCP_QUEUE_SEQ:
            self._each(lambda ep: ep.set_queue_seq(value & 0xFFFFFFFF))
        elif name == _TCP_SAVE_SYN:
            self._set(SockOpt.TCP_SAVE_SYN, value)
        else:
            raise _oserror(ENOPROTOOPT)

    def _each(self, change: Callable[[Any], None]) -> None:
        """A change made to each of the socket's endpoints (a dual-stack one's two), as a netsock error's errno."""
        try:
            for ep in self.endpoints():
                change(ep)
        except Error as e:
            raise e.to_oserror() from None

    def _set_repair_struct(self, name: int, raw: bytes) -> None:
        """TCP_REPAIR_OPTIONS (tcp_repair_opt pairs; a window scale over 14 is EFBIG, SACK's and timestamps'
        values must be 0) and TCP_REPAIR_WINDOW (exactly its struct), as Linux reads them."""
        if name == _TCP_REPAIR_WINDOW:
            if not self.ep.repair:
                raise _oserror(EPERM)
            if len(raw) != _TCP_REPAIR_WINDOW_STRUCT.size:
                raise _oserror(EINVAL)
            window = _TCP_REPAIR_WINDOW_STRUCT.unpack(raw)
            self._each(lambda ep: ep.set_repair_window(*window))
            return
        options = [_TCP_REPAIR_OPT.unpack_from(raw, offset)
                   for offset in range(0, len(raw) - _TCP_REPAIR_OPT.size + 1, _TCP_REPAIR_OPT.size)]
        if not self.ep.repair:
            raise _oserror(EINVAL)
        for kind, value in options:
            if kind == tcp.OPT_WS and max(value & 0xFFFF, value >> 16) > tcp.MAX_WINDOW_SCALE:
                raise _oserror(EFBIG)
            if kind in (tcp.OPT_SACK_PERMITTED, tcp.OPT_TIMESTAMP) and value:
                raise _oserror(EINVAL)
        self._each(lambda ep: ep.set_repair_options(options))

    def _get_tcp_option(self, name: int) -> int | bytes:
        if name == TCP_NODELAY:
            return 1 - self._get(SockOpt.DELAY)
        simple = {TCP_CORK: SockOpt.CORK, TCP_QUICKACK: SockOpt.QUICK_ACK, TCP_KEEPIDLE: SockOpt.KEEPALIVE_IDLE,
                  TCP_KEEPINTVL: SockOpt.KEEPALIVE_INTERVAL, TCP_KEEPCNT: SockOpt.KEEPALIVE_COUNT,
                  TCP_MAXSEG: SockOpt.MAX_SEG}.get(name)
        if simple is not None:
            return int(self._get(simple))
        if name == TCP_USER_TIMEOUT:
            return round(self._get(SockOpt.TCP_USER_TIMEOUT) * 1000)
        if name == TCP_LINGER2:
            return int(self._get(SockOpt.TCP_LINGER_TIMEOUT))
        if name == TCP_DEFER_ACCEPT:
            return _timeouts_to_seconds(self._get(SockOpt.TCP_DEFER_ACCEPT))
        if name in _TCP_OPTIONS:
            return int(self._get(_TCP_OPTIONS[name]))
        if name == TCP_CONGESTION:
            return self._get(SockOpt.CONGESTION_CONTROL).encode().ljust(_TCP_CA_NAME_MAX, b"\0")
        if name == TCP_FASTOPEN_KEY:
            return self._get(SockOpt.TCP_FAST_OPEN_KEY)
        if name == TCP_INFO:
            return _tcp_info(self.ep)
        if name in (_TCP_INQ, _TCP_THIN_DUPACK, _TCP_IS_MPTCP):
            return self.plain.get((IPPROTO_TCP, name), 0)
        if name == _TCP_TIMESTAMP:
            return int(self._get(SockOpt.TCP_TIMESTAMP))
        if name == _TCP_REPAIR:
            return int(self.ep.repair)
        if name == _TCP_THIN_LINEAR_TIMEOUTS:
            return int(self._get(SockOpt.TCP_THIN_LINEAR_TIMEOUTS))
        if name == _TCP_RTO_MAX_MS:
            return round(self._get(SockOpt.TCP_RTO_MAX) * 1000)
        if name == _TCP_CC_INFO:
            # The algorithm's own state (Linux's get_info: BBR's, Vegas's, DCTCP's): Reno and CUBIC, netsock's
            # two, report none, and Linux hands back no bytes for them either.
            return b""
        if name == _TCP_REPAIR_QUEUE:
            if not self.ep.repair:
                raise _oserror(EINVAL)
            return self.ep.repair_queue
        if name == _TCP_QUEUE_SEQ:
            try:
                return self.ep.queue_seq()
            except Error as e:
                raise e.to_oserror() from None
        if name == _TCP_SAVE_SYN:
            return int(self._get(SockOpt.TCP_SAVE_SYN))
        raise _oserror(ENOPROTOOPT)

    def _set_ip_option(self, name: int, raw: bytes) -> None:
        scope = 4 if self.family == AF_INET6 else 0     # on an IPv6 socket: its IPv4 (mapped) traffic
        stream = self.kind == SOCK_STREAM
        if name == IP_TTL:
            ttl = _int_option(raw, char=True)
            if ttl != -1 and not 1 <= ttl <= 255:
                raise _oserror(EINVAL)
            self._set(SockOpt.TTL, max(ttl, 0), scope)          # 0: the stack's default
        elif name == IP_TOS:
            tos = _int_option(raw, char=True) & 0xFF
            if stream:
                tos &= ~3                                   # TCP owns the ECN bits
            if tos != self._get(SockOpt.IPV4_TOS, scope, 0):
                # A new TOS sets the socket's priority too (Linux's __ip_sock_set_tos); the same one does not.
                self.plain[(SOL_SOCKET, _SO_PRIORITY)] = _TOS_PRIORITY[(tos & 0x1E) >> 1]
            self._set(SockOpt.IPV4_TOS, tos, scope)
        elif name == IP_MULTICAST_TTL:
            ttl = _int_option(raw, char=True)
            if stream or not -1 <= ttl <= 255:
                raise _oserror(EINVAL)
            self._set(SockOpt.MULTICAST_TTL, 1 if ttl == -1 else ttl, scope)
        elif name == IP_MULTICAST_LOOP:
            loop = bool(_int_option(raw, char=True))
            if stream:
                self.plain[(IPPROTO_IP, name)] = int(loop)
            else:
                self._set(SockOpt.MULTICAST_LOOP, loop, scope)
        elif name == IP_MULTICAST_IF:
            # struct ip_mreqn, struct ip_mreq or struct in_addr, told apart by length as Linux does.
            if stream or len(raw) < 4:
                raise _oserror(EINVAL)
            address = raw[4:8] if len(raw) >= 8 else raw[:4]
            ifindex = _INT.unpack_from(raw, 8)[0] if len(raw) >= 12 else 0
            self._set(SockOpt.MULTICAST_INTERFACE, self._interface(ifindex, address, EADDRNOTAVAIL), scope)
            self.plain[(IPPROTO_IP, name)] = address
        elif name in (IP_ADD_MEMBERSHIP, IP_DROP_MEMBERSHIP):
            if stream:
                raise _oserror(EPROTO)
            if len(raw) < 8:
                raise _oserror(EINVAL)
            ifindex = _INT.unpack_from(raw, 8)[0] if len(raw) >= 12 else 0
            nic = self._interface(ifindex, raw[4:8], ENODEV)
            if self.family == AF_INET6:
                self._ipv4_membership(name == IP_ADD_MEMBERSHIP, raw[:4], nic)
            else:
                self._membership(name == IP_ADD_MEMBERSHIP, raw[:4], nic)
        elif _IP_UNBLOCK_SOURCE <= name <= _MCAST_MSFILTER:
            self._multicast_request(name, raw, AF_INET)
        elif name == IP_HDRINCL and self.kind == SOCK_RAW and self.family == AF_INET:
            self._set(SockOpt.HEADER_INCLUDED, bool(_int_option(raw, char=True)))
        elif name == _IP_CHECKSUM:
            self.plain[(IPPROTO_IP, name)] = int(bool(_int_option(raw, char=True)))
        elif name == _IP_NODEFRAG:
            if self.kind != SOCK_RAW:
                raise _oserror(ENOPROTOOPT)
            self.plain[(IPPROTO_IP, name)] = int(bool(_int_option(raw, char=True)))
        elif name == _IP_FREEBIND:
            self._set(SockOpt.FREEBIND, bool(_int_option(raw, char=True)))
        elif name == _IP_TRANSPARENT:
            self._set_transparent(_int_option(raw, char=True))
        elif name == _IP_MINTTL:
            self._min_ttl(_int_option(raw, char=True), scope)
        elif name == _IP_UNICAST_IF:
            self._unicast_interface(raw, scope)
        elif name == _IP_LOCAL_PORT_RANGE and self.family != AF_PACKET:
            if len(raw) != _INT.size:
                raise _oserror(EINVAL)
            value = struct.unpack("I", raw)[0]
            low, high = value & 0xFFFF, value >> 16
            if low and high and low > high:
                raise _oserror(EINVAL)
            self._set(SockOpt.LOCAL_PORT_RANGE, value)
        elif name == _IP_MULTICAST_ALL:
            value = _int_option(raw, char=True)
            if value not in (0, 1):
                raise _oserror(EINVAL)
            self._multicast_all((IPPROTO_IP, name), value, scope)
        elif name == _IP_RECVERR and self.family != AF_PACKET:     # (datagram sockets queue, TCP reports)
            self._set(SockOpt.RECEIVE_ERRORS, bool(_int_option(raw, char=True)), scope)
        elif name == _IP_BIND_ADDRESS_NO_PORT:
            # A bit of the socket, IPv6 ones included (Linux's inet_sk flag): every endpoint's. An
            # empty value clears it (Linux's do_ip_setsockopt reads nothing and keeps its 0).
            self._set(SockOpt.BIND_ADDRESS_NO_PORT, bool(raw) and bool(_int_option(raw, char=True)))
        elif name == _IP_MTU_DISCOVER:
            self._set(SockOpt.MTU_DISCOVER, _int_option(raw), scope)
        elif name in _RECEIVE_IP_OPTIONS:
            wanted = bool(_int_option(raw, char=True)) if raw else False   # Linux: no value is 0
            if name == _IP_RECVFRAGSIZE and stream:
                raise _oserror(EINVAL)          # (a stream has no datagrams: Linux's raw and datagram sockets only)
            self._set_datagram_flag((IPPROTO_IP, name), _RECEIVE_IP_OPTIONS[name], wanted, scope)
        else:
            raise _oserror(ENOPROTOOPT)

    def _get_ip_option(self, name: int) -> int | bytes:
        scope = 4 if self.family == AF_INET6 else 0
        stream = self.kind == SOCK_STREAM
        if name in (_IP_MSFILTER, _MCAST_MSFILTER):
            raise _oserror(EINVAL)      # (Linux reads the group from the buffer, which Python's getsockopt cannot fill)
        if name == IP_TTL:
            return self._get(SockOpt.TTL, scope, 0) or self.stack.default_ttl
        if name == IP_TOS:
            return self._get(SockOpt.IPV4_TOS, scope, 0)
        if name == IP_MULTICAST_TTL:
            return 1 if stream else self._get(SockOpt.MULTICAST_TTL, scope, 1)
        if name == IP_MULTICAST_LOOP:
            return self.plain.get((IPPROTO_IP, name), 1) if stream else int(self._get(SockOpt.MULTICAST_LOOP, scope, 1))
        if name == IP_MULTICAST_IF:
            return self.plain.get((IPPROTO_IP, name), bytes(4))
        if name == IP_HDRINCL and not (self.kind == SOCK_RAW and self.family == AF_INET6):
            # TCP and UDP sockets read the bit too (0); raw IPv6 sockets have no IP level at all.
            return int(self._get(SockOpt.HEADER_INCLUDED)) if self.kind == SOCK_RAW else 0
        if name in _RECEIVE_IP_OPTIONS:
            return self._get_datagram_flag((IPPROTO_IP, name), _RECEIVE_IP_OPTIONS[name], scope)
        if name == _IP_BIND_ADDRESS_NO_PORT:
            return int(self._get(SockOpt.BIND_ADDRESS_NO_PORT, 0, False))
        if name in (_IP_CHECKSUM, _IP_NODEFRAG):
            return self.plain.get((IPPROTO_IP, name), 0)
        if name == _IP_FREEBIND:
            return int(self._get(SockOpt.FREEBIND, 0, False))
        if name == _IP_TRANSPARENT:
            return int(self._get(SockOpt.TRANSPARENT, 0, False))
        if name == _IP_RECVERR and self.family != AF_PACKET:
            return int(self._get(SockOpt.RECEIVE_ERRORS, scope, False))
        if name == _IP_MINTTL:
            return self.plain.get((IPPROTO_IP, name), 0)
        if name == _IP_UNICAST_IF:
            return _INT.unpack(struct.pack("!I", self.plain.get((IPPROTO_IP, name), 0)))[0]
        if name == _IP_MULTICAST_ALL:
            return self.plain.get((IPPROTO_IP, name), int(self.family == AF_INET))
        if name == _IP_LOCAL_PORT_RANGE and self.family != AF_PACKET:
            return _INT.unpack(struct.pack("I", self._get(SockOpt.LOCAL_PORT_RANGE, default=0)))[0]
        if name == _IP_MTU_DISCOVER:
            return int(self._get(SockOpt.MTU_DISCOVER, scope, PMTUDISC_WANT))
        if name == _IP_MTU:
            return self._path_mtu(scope)
        if name == _IP_PROTOCOL:
            # Linux answers with inet_num: a raw socket's protocol, of others the local port (0 unbound).
            return self.transport if self.kind == SOCK_RAW else self.ep.get_local_address().port
        raise _oserror(ENOPROTOOPT)

    def _set_datagram_flag(self, key: tuple[int, int], opt: SockOpt, on: bool, scope: int = 0) -> None:
        """A flag that only datagram endpoints act on: a TCP socket keeps it to read back, as Linux's does."""
        if self.kind == SOCK_STREAM:
            self.plain[key] = int(on)
        else:
            self._set(opt, on, scope)

    def _get_datagram_flag(self, key: tuple[int, int], opt: SockOpt, scope: int = 0) -> int:
        return self.plain.get(key, 0) if self.kind == SOCK_STREAM else int(self._get(opt, scope, False))

    def _set_transparent(self, value: int) -> None:
        """IP_TRANSPARENT / IPV6_TRANSPARENT: on only with CAP_NET_RAW or CAP_NET_ADMIN (EPERM), as Linux."""
        if value and not _capable(_CAP_NET_RAW, _CAP_NET_ADMIN):
            raise _oserror(EPERM)
        self._set(SockOpt.TRANSPARENT, bool(value))

    def _min_ttl(self, ttl: int, scope: int, key: tuple[int, int] = (IPPROTO_IP, _IP_MINTTL)) -> None:
        """IP_MINTTL (IPv4 traffic) and IPV6_MINHOPCOUNT: 0 to 255; TCP heeds it (as Linux, only TCP)."""
        if not 0 <= ttl <= 255:
            raise _oserror(EINVAL)
        self.plain[key] = ttl
        if self.kind == SOCK_STREAM:
            self._set(SockOpt.MIN_TTL, ttl, scope)

    def _unicast_interface(self, raw: bytes, scope: int, key: tuple[int, int] = (IPPROTO_IP, _IP_UNICAST_IF)) -> None:
        """IP_UNICAST_IF / IPV6_UNICAST_IF: an interface index in network byte order (both, in Linux), 0 for
        none; one the stack lacks is EADDRNOTAVAIL, one besides SO_BINDTODEVICE's EINVAL. Datagram sockets
        send unicast by it (TCP keeps it, as Linux's)."""
        if len(raw) != _INT.size:
            raise _oserror(EINVAL)
        ifindex = struct.unpack("!I", raw)[0]
        if ifindex:
            if ifindex not in self.stack.nics:
                raise _oserror(EADDRNOTAVAIL)
            bound = self._get(SockOpt.BIND_TO_DEVICE, default=0)
            if bound and bound != ifindex:
                raise _oserror(EINVAL)
        self.plain[key] = ifindex
        if self.kind != SOCK_STREAM:
            self._set(SockOpt.UNICAST_INTERFACE, ifindex, scope)

    def _multicast_all(self, key: tuple[int, int], value: int, scope: int) -> None:
        """IP_MULTICAST_ALL / IPV6_MULTICAST_ALL (1 by default): off, a socket gets group traffic only for
        groups it joined itself. UDP heeds it; other sockets keep it, as Linux's."""
        self.plain[key] = value
        if self.transport in _UDP_TRANSPORTS and self.kind == SOCK_DGRAM:
            self._set(SockOpt.MULTICAST_ALL, bool(value), scope)

    def original_destination(self, level: int, room: int) -> bytes:
        """SO_ORIGINAL_DST (IPv4's at IPPROTO_IP, IPv6's at IPPROTO_IPV6): the destination a TCP connection's
        client asked for, before the nat table translated it (Linux's getorigdst, which transparent
        proxies ask), as a sockaddr into ``room`` for one; ENOENT for a connection of the other version or
        one the table does not track (it tracks while it has rules)."""
        if self.transport != IPPROTO_TCP:
            raise _oserror(ENOPROTOOPT)
        family = AF_INET if level == IPPROTO_IP else AF_INET6
        if room < (_SOCKADDR_IN_SIZE if family == AF_INET else _SOCKADDR_IN6_SIZE):
            raise _oserror(EINVAL)
        try:
            local, remote = self.ep.get_local_address(), self.ep.get_remote_address()
        except Error:
            raise _oserror(ENOENT) from None
        iptables = self.stack.iptables
        found = None
        if len(remote.addr) == (4 if family == AF_INET else 16):
            table = iptables.ipv4_nat if family == AF_INET else iptables.ipv6_nat
            found = table.original_destination(IPPROTO_TCP, local.addr, local.port, remote.addr, remote.port)
        if found is None:
            raise _oserror(ENOENT)
        return _sockaddr_bytes(family, *found).ljust(room, b"\0")

    def _path_mtu(self, scope: int) -> int:
        """IP_MTU / IPV6_MTU: the path MTU of a connected socket (ENOTCONN otherwise)."""
        mtu = self._get(SockOpt.PATH_MTU, scope)
        if mtu is None:
            raise _oserror(ENOTCONN)
        return int(mtu)

    def _set_ipv6_option(self, name: int, raw: bytes) -> None:
        stream = self.kind == SOCK_STREAM
        if name == _IPV6_FREEBIND:
            self._set(SockOpt.FREEBIND, bool(_int_option(raw)))     # an int only, at this level
            return
        if name == _IPV6_TRANSPARENT:
            self._set_transparent(_int_option(raw))
            return
        if name == _IPV6_RECVERR:
            self._set(SockOpt.RECEIVE_ERRORS, bool(_int_option(raw)), 6)
            return
        if name == _IPV6_MINHOPCOUNT:
            self._min_ttl(_int_option(raw), 6, (IPPROTO_IPV6, name))
            return
        if name == _IPV6_UNICAST_IF:
            self._unicast_interface(raw, 6, (IPPROTO_IPV6, name))
            return
        if name == _IPV6_MULTICAST_ALL:
            self._multicast_all((IPPROTO_IPV6, name), int(bool(_int_option(raw))), 6)
            return
        if name == IPV6_DONTFRAG:           # (TCP keeps it: it never fragments)
            self._set_datagram_flag((IPPROTO_IPV6, name), SockOpt.IPV6_DONT_FRAGMENT, bool(_int_option(raw)), 6)
            return
        if name == IPV6_V6ONLY:
            value = _int_option(raw)
            if self.bound:
                raise _oserror(EINVAL)
            self.v6only = bool(value)
            return
        if name in (IPV6_JOIN_GROUP, IPV6_LEAVE_GROUP):
            if len(raw) < 20:                   # struct ipv6_mreq (looked at first, as Linux does)
                raise _oserror(EINVAL)
            if stream:
                raise _oserror(EPROTO)
            ifindex = struct.unpack_from("I", raw, 16)[0]
            self._membership(name == IPV6_JOIN_GROUP, raw[:16], self._interface(ifindex, b"", ENODEV))
            return
        if _MCAST_JOIN_GROUP <= name <= _MCAST_MSFILTER:
            self._multicast_request(name, raw, AF_INET6)
            return
        if stream and name in (IPV6_MULTICAST_HOPS, IPV6_MULTICAST_IF):
            raise _oserror(ENOPROTOOPT)
        value = _int_option(raw)
        if name in (IPV6_UNICAST_HOPS, IPV6_MULTICAST_HOPS, IPV6_TCLASS):
            if not -1 <= value <= 255:
                raise _oserror(EINVAL)
            if name == IPV6_UNICAST_HOPS:
                self._set(SockOpt.TTL, max(value, 0), 6)       # -1 (and 0): the stack's default
            elif name == IPV6_MULTICAST_HOPS:
                self._set(SockOpt.MULTICAST_TTL, 1 if value == -1 else value, 6)
            else:
                self._set(SockOpt.IPV4_TOS if stream else SockOpt.IPV6_TRAFFIC_CLASS, max(value, 0), 6)
        elif name == IPV6_MULTICAST_LOOP:
            if value not in (0, 1):
                raise _oserror(EINVAL)
            if stream:                          # kept, as Linux keeps the bit on any IPv6 socket
                self.plain[(IPPROTO_IPV6, name)] = value
            else:
                self._set(SockOpt.MULTICAST_LOOP, bool(value), 6)
        elif name == IPV6_MULTICAST_IF:
            self._set(SockOpt.MULTICAST_INTERFACE, self._interface(value, b"", ENODEV), 6)
        elif name == IPV6_CHECKSUM and self.kind == SOCK_RAW:
            if self.transport == ICMPV6_PROTOCOL_NUMBER:
                raise _oserror(EINVAL)      # RFC 3542 §3.1: ICMPv6's checksum is the stack's, always
            self._set(SockOpt.IPV6_CHECKSUM, value, 6)
        elif name == _IPV6_MTU_DISCOVER:
            self._set(SockOpt.MTU_DISCOVER, value, 6)
        elif name == _IPV6_AUTOFLOWLABEL:
            self._set(SockOpt.IPV6_AUTO_FLOW_LABEL, bool(value), 6)
        elif name == _IPV6_RECVPATHMTU:
            self._set_datagram_flag((IPPROTO_IPV6, name), SockOpt.RECEIVE_PATH_MTU, bool(value), 6)
        elif name in _RECEIVE_IPV6_OPTIONS:
            # IPV6_PKTINFO comes with IPv4 datagrams of a dual-stack socket too (the address mapped).
            self._set_datagram_flag((IPPROTO_IPV6, name), _RECEIVE_IPV6_OPTIONS[name], bool(value),
                                    0 if name == IPV6_RECVPKTINFO else 6)
        else:
            raise _oserror(ENOPROTOOPT)

    def _get_ipv6_option(self, name: int) -> int | bytes:
        stream = self.kind == SOCK_STREAM
        if name == _MCAST_MSFILTER:
            raise _oserror(EINVAL)      # (as IP_MSFILTER: the group would come in the buffer)
        if name == _IPV6_FREEBIND:
            return int(self._get(SockOpt.FREEBIND, 0, False))
        if name == _IPV6_TRANSPARENT:
            return int(self._get(SockOpt.TRANSPARENT, 0, False))
        if name == _IPV6_RECVERR:
            return int(self._get(SockOpt.RECEIVE_ERRORS, 6, False))
        if name == _IPV6_MINHOPCOUNT:
            return self.plain.get((IPPROTO_IPV6, name), 0)
        if name == _IPV6_UNICAST_IF:
            return _INT.unpack(struct.pack("!I", self.plain.get((IPPROTO_IPV6, name), 0)))[0]
        if name == _IPV6_MULTICAST_ALL:
            return self.plain.get((IPPROTO_IPV6, name), 1)
        if name == IPV6_DONTFRAG:
            return self._get_datagram_flag((IPPROTO_IPV6, name), SockOpt.IPV6_DONT_FRAGMENT, 6)
        if name == _IPV6_PATHMTU:           # struct ip6_mtuinfo: Linux leaves its address zeroed
            return bytes(_SOCKADDR_IN6_SIZE) + struct.pack("I", self._path_mtu(6))
        if name == IPV6_V6ONLY:
            return int(self.v6only)
        if name == IPV6_UNICAST_HOPS:
            return self._get(SockOpt.TTL, 6, 0) or self.stack.default_ttl
        if name == IPV6_MULTICAST_HOPS:
            return 1 if stream else self._get(SockOpt.MULTICAST_TTL, 6, 1)
        if name == IPV6_MULTICAST_LOOP:
            return self.plain.get((IPPROTO_IPV6, name), 1) if stream else int(self._get(SockOpt.MULTICAST_LOOP, 6, 1))
        if name == IPV6_MULTICAST_IF:
            return 0 if stream else self._get(SockOpt.MULTICAST_INTERFACE, 6, 0)
        if name == IPV6_TCLASS:
            return self._get(SockOpt.IPV4_TOS if stream else SockOpt.IPV6_TRAFFIC_CLASS, 6, 0)
        if name == IPV6_CHECKSUM and self.kind == SOCK_RAW:
            return self._get(SockOpt.IPV6_CHECKSUM, 6)
        if name == _IPV6_MTU_DISCOVER:
            return int(self._get(SockOpt.MTU_DISCOVER, 6, PMTUDISC_WANT))
        if name == _IPV6_AUTOFLOWLABEL:
            return int(self._get(SockOpt.IPV6_AUTO_FLOW_LABEL, 6, True))
        if name == _IPV6_MTU:
            return self._path_mtu(6)
        if name == _IPV6_RECVPATHMTU:
            return self._get_datagram_flag((IPPROTO_IPV6, name), SockOpt.RECEIVE_PATH_MTU, 6)
        if name in _RECEIVE_IPV6_OPTIONS:
            return self._get_datagram_flag((IPPROTO_IPV6, name), _RECEIVE_IPV6_OPTIONS[name],
                                           0 if name == IPV6_RECVPKTINFO else 6)
        raise _oserror(ENOPROTOOPT)


# --- the socket -----------------------------------------------------------------------------------------

class NetsockSocket:
    """A socket of a netsock stack with the interface and behaviour of CPython's ``socket.socket``.

    ``stack`` (keyword only) picks the stack; by default the current one (``runtime.current_stack``).
    """

    __slots__ = ["__weakref__", "_closed", "_core", "_family", "_fd", "_io_refs", "_kind", "_proto", "_timeout"]

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None, *,
                 stack: Stack | None = None) -> None:
        self._fd = -1
        self._io_refs = 0
        self._closed = False
        timeout = _socket.getdefaulttimeout()
        if fileno is None:
            family = AF_INET if family == -1 else operator.index(family)
            kind = SOCK_STREAM if type == -1 else operator.index(type)
            proto = 0 if proto == -1 else operator.index(proto)
            transport = _transport(family, kind & ~(SOCK_NONBLOCK | SOCK_CLOEXEC), proto)
            core = SocketCore(stack or current_stack(), family, kind & ~(SOCK_NONBLOCK | SOCK_CLOEXEC), proto,
                              transport)
            fd = core.open_fd()
        else:
            fd = operator.index(fileno)
            if fd < 0:
                raise ValueError("negative file descriptor")
            found = fds.lookup(fd)
            if not isinstance(found, SocketCore):
                raise _oserror(ENOTSOCK)
            core = found
            # As CPython: what is given describes the socket object; -1 asks the descriptor.
            family = core.family if family == -1 else operator.index(family)
            kind = core.kind if type == -1 else operator.index(type)
            proto = core.transport if proto == -1 else operator.index(proto)
        if kind & SOCK_NONBLOCK:
            timeout = 0.0
        self._core = core
        self._fd = fd
        self._family = family
        self._kind = kind & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)
        self._proto = proto
        self._timeout = timeout

    # --- identity -----------------------------------------------------------------------------------

    @property
    def family(self) -> AddressFamily | int:
        return _intenum(self._family, AddressFamily)

    @property
    def type(self) -> SocketKind | int:
        return _intenum(self._kind, SocketKind)

    @property
    def proto(self) -> int:
        return self._proto

    @property
    def timeout(self) -> float | None:
        return self._timeout

    def fileno(self) -> int:
        if self._fd >= 0:
            self._core.descriptors.mirror()     # someone may poll the number from now on
        return self._fd

    def __repr__(self) -> str:
        closed = getattr(self, "_closed", False)
        # str() of the enums, as CPython's "%s": the number from Python 3.11 on.
        text = (f"<netsock.socket{' [closed]' if closed else ''} fd={self.fileno()}, family={self.family!s}, "
                f"type={self.type!s}, proto={self.proto}")
        if not closed:
            try:
                text += f", laddr={self.getsockname()}"
            except OSError:
                pass
            try:
                text += f", raddr={self.getpeername()}"
            except OSError:
                pass
        return text + ">"

    def __getstate__(self) -> None:
        raise TypeError(f"cannot pickle {self.__class__.__name__!r} object")

    def __enter__(self) -> NetsockSocket:
        return self

    def __exit__(self, *args: object) -> None:
        if not self._closed:
            self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0 and fds.lookup(fd) is self._core:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            # The collector may run in the middle of stack code: close from the hub loop instead.
            self._core.stack.clock.call_soon(self._core.close_fd, fd)

    # --- life cycle -----------------------------------------------------------------------------------

    def _check(self) -> None:
        # The descriptor may have been closed through another socket object on it, or socket.close(fd).
        if self._fd < 0 or fds.lookup(self._fd) is not self._core:
            raise _oserror(EBADF)

    def close(self) -> None:
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            core = self._core
            core.close_fd(fd)
            if not core.descriptors.fds:
                core.linger_after_close()

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed:
            self.close()

    def detach(self) -> int:
        """Give up the descriptor without closing it; ``NetsockSocket(fileno=fd)`` takes it back."""
        self._closed = True
        fd, self._fd = self._fd, -1
        if fd >= 0:
            self._core.descriptors.mirror()
        return fd

    def dup(self) -> NetsockSocket:
        self._check()
        sock = self.__class__(self.family, self.type, self.proto, fileno=self._core.open_fd())
        sock.settimeout(self.gettimeout())
        return sock

    def get_inheritable(self) -> bool:
        return os.get_inheritable(self.fileno())

    def set_inheritable(self, inheritable: bool) -> None:
        os.set_inheritable(self.fileno(), inheritable)

    def makefile(self, mode: str = "r", buffering: int | None = None, *, encoding: str | None = None,
                 errors: str | None = None, newline: str | None = None) -> Any:
        """An I/O stream on the socket: CPython's implementation, over ``socket.SocketIO``."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        binary = "b" in mode
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = SocketIO(self, rawmode)  # type: ignore[arg-type]  # it needs only the socket methods
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        if reading and writing:
            buffer: Any = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, io.text_encoding(encoding), errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    # --- blocking modes -----------------------------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        self._timeout = _timeout_value(value)
        self._check()

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0
        self._check()

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def _limits(self, flags: int, send: bool,
                expired: Callable[[], OSError] = _would_block) -> tuple[float | None, Callable[[], OSError]]:
        """When an operation must give up waiting, and what it raises then: at once (non-blocking or
        MSG_DONTWAIT), at the socket timeout (TimeoutError), or, in blocking mode, at SO_RCVTIMEO /
        SO_SNDTIMEO (``expired``, as the kernel's EAGAIN) if set."""
        if flags & MSG_DONTWAIT or self._timeout == 0.0:
            return time.monotonic(), expired
        if self._timeout is not None:
            return time.monotonic() + self._timeout, _timed_out
        limit = self._core.timeouts[send]
        return (None if limit is None else time.monotonic() + limit), expired

    def _wait(self, mask: EventMask, deadline: float | None, expired: Callable[[], OSError],
              ready: Callable[[], bool] | None = None) -> None:
        remaining = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise expired()
        core = self._core
        # Exactly the readiness that lets the operation proceed (input readiness includes errors and
        # EOF; output readiness a failed connect); HUP is how closing the descriptor wakes us.
        # (``ready`` instead, for an operation that waits on something more than readiness.)
        if ready is None:
            ready = lambda: bool(core.readiness(mask))  # noqa: E731
        if not wait_for(core.waiter_queue, mask | _HUP, lambda: self._fd < 0 or ready(), remaining):
            raise expired()
        self._check()       # closed by another greenlet meanwhile

    def _io(self, mask: EventMask, op: Callable[[], Any], deadline: float | None,
            expired: Callable[[], OSError], more: bool = False) -> Any:
        """Run ``op`` until it does not would-block, waiting for ``mask`` in between — or, ``more``,
        for the next arrival (or an error or the end of the stream): a peek past the queued data."""
        core = self._core
        while True:
            self._check()
            mark = core.arrivals() if more else 0
            try:
                return op()
            except ErrWouldBlock:
                pass
            except Error as e:
                raise e.to_oserror() from None
            finally:
                core.sync()
            self._wait(mask, deadline, expired, (lambda: core.arrivals() != mark or bool(core.readiness(_ENDED)))
                       if more else None)

    # --- addresses and connections ----------------------------------------------------------------------

    def _address(self, address: Any, caller: str) -> Any:
        """(packed address, port, NIC) of an address argument; an AF_PACKET socket's, a PacketAddress."""
        if self._core.family == AF_PACKET:
            return _packet_address(self._core.stack, address, caller)
        addr, port, scope_id = _sockaddr(self._core.stack, self._core.family, address, caller)
        if scope_id and scope_id not in self._core.stack.nics:
            raise _oserror(ENODEV if caller == "bind" else ENETUNREACH)
        return addr, port, scope_id

    def getsockname(self) -> tuple[Any, ...]:
        self._check()
        return self._core.address(self._core.ep.get_local_address())

    def getpeername(self) -> tuple[Any, ...]:
        self._check()
        try:
            return self._core.address(self._core.ep.get_remote_address())
        except Error as e:
            raise e.to_oserror() from None

    def bind(self, address: Any) -> None:
        target = self._address(address, "bind")
        self._check()
        try:
            if self._core.family == AF_PACKET:
                self._core.ep.bind(target)
            else:
                self._core.bind(*target)
        except ErrNoPortAvailable:
            raise _oserror(EADDRINUSE) from None    # no ephemeral port left: Linux's bind says so
        except Error as e:
            raise e.to_oserror() from None

    def listen(self, backlog: int = min(SOMAXCONN, 128)) -> None:
        backlog = operator.index(backlog)
        if backlog > _INT_MAX:          # CPython's "i" argument conversion
            raise OverflowError("signed integer is greater than maximum")
        if backlog < _INT_MIN:
            raise OverflowError("signed integer is less than minimum")
        backlog = max(backlog, 0)
        self._check()
        if self._core.kind != SOCK_STREAM:
            raise _oserror(EOPNOTSUPP)
        try:
            self._core.listen(backlog)
        except ErrNoPortAvailable:
            raise _oserror(EADDRINUSE) from None    # the autobind of an unbound listener, as bind
        except Error as e:
            raise e.to_oserror() from None

    def _accept(self) -> tuple[int, tuple[Any, ...]]:
        """(descriptor, address) of the next connection: the primitive CPython's accept() is built on,
        which subclasses and feature probes (``hasattr(socket.socket, "_accept")``) rely on."""
        self._check()
        core = self._core
        if core.kind != SOCK_STREAM:
            raise _oserror(EOPNOTSUPP)
        child = self._io(_IN, core.accept, *self._limits(0, send=False))
        return SocketCore.accepted(core, child).open_fd(), core.address(child.remote)

    def accept(self) -> tuple[NetsockSocket, tuple[Any, ...]]:
        fd, address = self._accept()
        sock = NetsockSocket(self.family, self.type, self.proto, fileno=fd)
        if _socket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock, address

    def connect(self, address: Any) -> None:
        target = self._address(address, "connect")
        self._check()
        self._connect(target)

    def connect_ex(self, address: Any) -> int:
        target = self._address(address, "connect_ex")
        if self._fd < 0:
            return EBADF
        try:
            self._connect(target)
        except OSError as e:
            return e.errno if e.errno is not None else EAGAIN     # CPython: a timeout is EWOULDBLOCK
        return 0

    def _connect(self, target: tuple[bytes, int, int], fast_open: bool = False) -> None:
        if self._core.family == AF_PACKET:
            raise _oserror(EOPNOTSUPP)      # Linux's packet sockets connect to nothing
        addr, port, scope = target
        addr = _unspecified_is_loopback(addr)
        core = self._core
        try:
            core.connect(addr, port, scope, fast_open)
            return
        except ErrConnectStarted:
            pass
        except ErrAlreadyConnecting:
            if self._timeout is not None:
                raise _oserror(EALREADY) from None
        except ErrNoPortAvailable:
            # No port free for the 4-tuple: Linux's TCP connect says EADDRNOTAVAIL (inet_hash_connect),
            # its UDP connect EAGAIN (autobind), which is the error's own errno.
            raise _oserror(EADDRNOTAVAIL if core.kind == SOCK_STREAM else EAGAIN) from None
        except Error as e:
            raise e.to_oserror() from None
        finally:
            core.sync()
        if self._timeout == 0.0:
            raise _oserror(EINPROGRESS)
        self._wait(_OUT, *self._limits(0, send=True, expired=lambda: _oserror(EINPROGRESS)))
        err = core.take_error()
        if err is not None:
            raise err.to_oserror()
        try:
            core.connect(addr, port, scope)     # collects the completion (the next connect is EISCONN)
        except ErrAlreadyConnected:
            pass
        except Error as e:
            raise e.to_oserror() from None

    def shutdown(self, how: int) -> None:
        how = _c_int(operator.index(how))
        self._check()
        flags = _SHUTDOWN_FLAGS.get(how)
        if flags is None:
            raise _oserror(EINVAL)
        try:
            self._core.shutdown(flags)
        except Error as e:
            raise e.to_oserror() from None
        finally:
            self._core.sync()

    # --- sending ------------------------------------------------------------------------------------------

    def _stream_write(self, flags: int) -> Callable[[memoryview], int]:
        """The endpoint's write, as one send call makes it (perhaps many times over)."""
        options = _STREAM_WRITE_OPTIONS[bool(flags & MSG_MORE), bool(flags & MSG_OOB)]
        core = self._core
        if flags & _MSG_ZEROCOPY:
            return self._zerocopy_stream_write(replace(options, zerocopy=True))

        def write(view: memoryview) -> int:
            try:
                return core.ep.write(view, options)
            except ErrNotConnected:
                raise _oserror(EPIPE) from None     # Linux: sending on an unconnected TCP socket
        return write

    def _zerocopy_stream_write(self, options: WriteOptions) -> Callable[[memoryview], int]:
        """A MSG_ZEROCOPY send call's writes: those after the first that queues bytes go on with its number
        (``continues``), as Linux's one ubuf_info per sendmsg."""
        core = self._core
        current = options

        def write(view: memoryview) -> int:
            nonlocal current
            try:
                sent = core.ep.write(view, current)
            except ErrNotConnected:
                raise _oserror(EPIPE) from None
            if sent:
                current = replace(options, continues=True)
            return sent
        return write

    def _fast_open_send(self, view: memoryview, flags: int, target: tuple[bytes, int, int] | None) -> int:
        """sendto(MSG_FASTOPEN): connect and send in one call, as Linux's tcp_sendmsg_fastopen. Holding a
        cookie from the peer, the data goes with the SYN; without one the SYN asks for a cookie and the data
        follows the handshake (a non-blocking socket: EINPROGRESS, nothing sent, as there)."""
        core = self._core
        if not core.ep.proto.fast_open & FAST_OPEN_CLIENT:
            raise _oserror(EOPNOTSUPP)
        if target is None:      # (Linux: a connect without an address, unless connected already)
            raise _oserror(EISCONN if core.ep.remote is not None else EINVAL)
        self._connect(target, fast_open=True)
        return self._stream_send(view, flags)

    def _zerocopy_call(self, send: Callable[[memoryview, int], Any], view: memoryview, flags: int) -> Any:
        """A MSG_ZEROCOPY send call: ``send`` makes its writes, and the call completes only once it has returned
        (and its bytes are acknowledged)."""
        try:
            return send(view, flags)
        finally:
            self._core.ep.zerocopy_call_returned()

    def _stream_send(self, view: memoryview, flags: int) -> int:
        if flags & _MSG_ZEROCOPY:
            return self._zerocopy_call(self._stream_send_once, view, flags)
        return self._stream_send_once(view, flags)

    def _stream_send_once(self, view: memoryview, flags: int) -> int:
        write = self._stream_write(flags)
        deadline, expired = self._limits(flags, send=True)
        if self._timeout is not None or flags & MSG_DONTWAIT:
            return self._io(_OUT, lambda: write(view), deadline, expired)
        # A blocking send returns once all of it is queued; an error or SO_SNDTIMEO cut it short.
        sent = 0
        while True:
            try:
                sent += self._io(_OUT, lambda done=sent: write(view[done:]), deadline, expired)
            except OSError:
                if sent:
                    return sent
                raise
            if sent >= len(view):
                return sent

    def _datagram_send(self, view: memoryview, flags: int, to: tuple[bytes, int, int] | None,
                       control: SendableControlMessages = NO_SENDABLE_CONTROL_MESSAGES) -> int:
        core = self._core
        more = bool(flags & MSG_MORE)
        if flags & MSG_OOB or more and core.transport not in _UDP_TRANSPORTS:
            raise _oserror(EOPNOTSUPP)      # no urgent data; corking is UDP's
        if to is not None and core.family != AF_PACKET:
            to = (_unspecified_is_loopback(to[0]), to[1], to[2])
        dont_route = bool(flags & MSG_DONTROUTE)
        zerocopy = bool(flags & _MSG_ZEROCOPY)
        return self._io(_OUT, lambda: core.write_datagram(view, to, control, dont_route, more, zerocopy),
                        *self._limits(flags, send=True))

    def send(self, data: Any, flags: int = 0) -> int:
        view = _data_view(data)
        flags = operator.index(flags)
        self._check()
        if self._core.kind == SOCK_STREAM:
            if flags & MSG_FASTOPEN:
                return self._fast_open_send(view, flags, None)
            return self._stream_send(view, flags)
        return self._datagram_send(view, flags, None)

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = _data_view(data)
        flags = operator.index(flags)
        self._check()
        if self._core.kind != SOCK_STREAM:
            self._datagram_send(view, flags, None)
            return
        if flags & _MSG_ZEROCOPY:
            self._zerocopy_call(self._stream_send_all, view, flags)
            return
        self._stream_send_all(view, flags)

    def _stream_send_all(self, view: memoryview, flags: int) -> None:
        write = self._stream_write(flags)
        deadline, expired = self._limits(flags, send=True)      # the timeout covers the whole call
        sent = 0
        while True:
            sent += self._io(_OUT, lambda done=sent: write(view[done:]), deadline, expired)
            if sent >= len(view):
                return

    def sendto(self, data: Any, *args: Any) -> int:
        if len(args) == 1:
            flags, address = 0, args[0]
        elif len(args) == 2:
            flags, address = args
        else:
            raise TypeError(f"sendto() takes 2 or 3 arguments ({len(args) + 1} given)")
        view = _data_view(data)
        flags = operator.index(flags)
        target = self._address(address, "sendto")
        self._check()
        if self._core.kind == SOCK_STREAM:
            if flags & MSG_FASTOPEN:
                return self._fast_open_send(view, flags, target)
            return self._stream_send(view, flags)   # Linux ignores the address of a stream socket
        return self._datagram_send(view, flags, target)

    def sendmsg(self, buffers: Iterable[Any], ancdata: Iterable[Any] = (), flags: int = 0,
                address: Any = None) -> int:
        """Data, flags and, on datagram sockets, the ancillary data that sets the IP header's TTL and TOS
        (IP_TTL, IP_TOS) or hop limit and traffic class (IPV6_HOPLIMIT, IPV6_TCLASS); other ancillary
        data Linux knows is EOPNOTSUPP."""
        try:
            iterator = iter(buffers)
        except TypeError:
            raise TypeError("sendmsg() argument 1 must be an iterable") from None
        views = [_data_view(b) for b in iterator]
        try:
            items = list(iter(ancdata))
        except TypeError:
            raise TypeError("sendmsg() argument 2 must be an iterable") from None
        for item in items:
            if not isinstance(item, (tuple, list)):
                raise TypeError("[sendmsg() ancillary data items]() argument must be 3-item sequence, "
                                f"not {type(item).__name__}")
            if len(item) != 3:
                raise TypeError("[sendmsg() ancillary data items]() argument must be sequence of length 3, "
                                f"not {len(item)}")
        ancillary = [(operator.index(level), operator.index(kind), bytes(_data_view(data)))
                     for level, kind, data in items]
        flags = operator.index(flags)
        target = self._address(address, "sendmsg") if address is not None else None
        self._check()
        view = views[0] if len(views) == 1 else memoryview(b"".join(views))
        core = self._core
        if core.kind == SOCK_STREAM:
            if ancillary:
                raise _oserror(EOPNOTSUPP)
            if flags & MSG_FASTOPEN:
                return self._fast_open_send(view, flags, target)
            return self._stream_send(view, flags)
        control = NO_SENDABLE_CONTROL_MESSAGES
        if ancillary:
            # The IP version the datagram leaves with decides which level's messages count.
            ipv4 = core.family == AF_INET or (
                _is_mapped(target[0]) if target is not None else core.ep.net_proto == IPV4_PROTOCOL_NUMBER)
            udp = core.transport in _UDP_TRANSPORTS and core.kind == SOCK_DGRAM
            control = _sendable_control(ancillary, ipv4, udp, core.plain.get((SOL_SOCKET, _SO_TXTIME)) is not None)
        return self._datagram_send(view, flags, target, control)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """Send a binary file's contents: as CPython's, the sendfile path for a file with a
        descriptor, else reading it (both go through send(): there is no kernel socket for
        os.sendfile)."""
        try:
            return self._sendfile_use_sendfile(file, offset, count)
        except _GiveupOnSendfile:
            return self._sendfile_use_send(file, offset, count)

    def _sendfile_use_sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """CPython's sendfile path, its checks and outcomes (_GiveupOnSendfile for what is not a
        regular file, the file's position moved past what was sent), the bytes read with
        os.pread from the file's descriptor instead of os.sendfile's in-kernel copy."""
        self._check_sendfile_params(file, offset, count)
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation) as err:
            raise _GiveupOnSendfile(err) from None
        try:
            size = os.fstat(fileno).st_size
        except OSError as err:
            raise _GiveupOnSendfile(err) from None
        if not size:
            return 0
        if self.gettimeout() == 0:
            raise ValueError("non-blocking sockets are not supported")
        total = 0
        try:
            while not count or total < count:
                want = min(count - total if count else _SENDFILE_BLOCK, _SENDFILE_BLOCK)
                try:
                    data = memoryview(os.pread(fileno, want, offset))
                except OSError as err:
                    if total == 0:
                        raise _GiveupOnSendfile(err) from None
                    raise
                if not data:
                    break
                while data:
                    sent = self.send(data)
                    total += sent
                    offset += sent
                    data = data[sent:]
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset)

    def _sendfile_use_send(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """CPython's fallback: read() the file and send() what it gives."""
        self._check_sendfile_params(file, offset, count)
        if self.gettimeout() == 0:
            raise ValueError("non-blocking sockets are not supported")
        if offset:
            file.seek(offset)
        blocksize = min(count, _SENDFILE_BLOCK) if count else _SENDFILE_BLOCK
        total = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total, blocksize)
                    if blocksize <= 0:
                        break
                data = memoryview(file.read(blocksize))
                if not data:
                    break
                while data:
                    sent = self.send(data)
                    total += sent
                    data = data[sent:]
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset + total)

    def _check_sendfile_params(self, file: Any, offset: int, count: int | None) -> None:
        if "b" not in getattr(file, "mode", "b"):
            raise ValueError("file should be opened in binary mode")
        if not self.type & SOCK_STREAM:
            raise ValueError("only SOCK_STREAM type sockets are supported")
        if count is not None:
            if not isinstance(count, int):
                raise TypeError(f"count must be a positive integer (got {count!r})")
            if count <= 0:
                raise ValueError(f"count must be a positive integer (got {count!r})")

    # --- receiving ----------------------------------------------------------------------------------------

    def _repair_read(self, size: int, flags: int) -> bytes:
        """A read in repair mode (TCP_REPAIR) dumps the queue in repair: only a peek (EPERM), never waiting."""
        if not flags & MSG_PEEK:
            raise _oserror(EPERM)
        try:
            return self._core.ep.repair_peek(size)
        except Error as e:
            raise e.to_oserror() from None

    def _stream_read(self, size: int, flags: int, into: memoryview | None = None) -> bytes | int:
        """TCP recv: up to ``size`` bytes (all of them with MSG_WAITALL, unless EOF or an error comes
        first); into ``into`` if given, returning the count."""
        if flags & MSG_OOB:
            return self._urgent_read(flags, into)
        if flags & MSG_ERRQUEUE:
            return _handed_over(self._error_queue_read().data[:size], into)
        if size == 0:
            return b"" if into is None else 0
        core = self._core
        if core.ep.repair:
            return _handed_over(self._repair_read(size, flags), into)
        deadline, expired = self._limits(flags, send=False)
        if flags & MSG_PEEK:
            offset = core.peek_offset
            data = self._io(_IN, lambda: core.ep.peek(size, max(offset, 0)), deadline, expired, more=offset > 0)
            core.move_peek_offset(len(data))
            return _handed_over(data, into)
        chunks: list[bytes] = []

        def read(done: int) -> int:
            if into is not None:
                return core.ep.read_into(into[done:size])
            chunk = core.ep.read(size - done)
            chunks.append(chunk)
            return len(chunk)

        got = 0
        while True:
            try:
                count = self._io(_IN, lambda done=got: read(done), deadline, expired)
            except OSError:
                if got:
                    break
                raise
            got += count
            core.move_peek_offset(-count)
            if not count or got >= size or not flags & MSG_WAITALL:
                break
        if into is not None:
            return got
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _urgent_read(self, flags: int, into: memoryview | None) -> bytes | int:
        """recv(MSG_OOB): TCP's urgent byte, as CPython gets it from Linux (tcp_recv_urg): the kernel
        never waits for it (EAGAIN until it is in, even on a blocking socket; EINVAL when there is
        none to read); a socket with a timeout waits to be readable, as CPython polls for POLLIN
        (not POLLPRI) before each try, MSG_DONTWAIT or not, until the byte comes or time is up."""
        core = self._core
        peek = bool(flags & MSG_PEEK)
        waits = bool(self._timeout)
        deadline, expired = self._limits(flags & ~MSG_DONTWAIT, send=False)
        while True:
            if waits:
                self._wait(_IN, deadline, expired)
            try:
                data = core.ep.read_urgent(peek)
                break
            except ErrWouldBlock:
                if not waits:
                    raise _oserror(EAGAIN) from None
            except Error as e:
                raise e.to_oserror() from None
            finally:
                core.sync()
        return _handed_over(data, into)

    def _error_queue_read(self) -> ReadResult:
        """recv(MSG_ERRQUEUE): the oldest queued ICMP error (never waiting: EAGAIN if none, as Linux's
        ip_recv_error): the quoted payload, from the address it was sent to, the error itself as the
        control message."""
        try:
            entry = self._core.ep.read_error()
        except ErrWouldBlock:
            raise _oserror(EAGAIN) from None
        finally:
            self._core.sync()
        destination = entry.destination if type(entry) is QueuedError else None
        return ReadResult(entry.payload, destination, entry)   # type: ignore[arg-type]

    def _datagram_read(self, flags: int, size: int) -> ReadResult:
        """The next datagram, whole (from the peek offset on, with SO_PEEK_OFF); an empty one with no sender
        after shutdown(SHUT_RD); with MSG_ERRQUEUE the oldest queued ICMP error. ``size``: the caller's room,
        which moves the peek offset."""
        core = self._core
        if flags & MSG_ERRQUEUE:
            return self._error_queue_read()
        peek = bool(flags & MSG_PEEK)
        offset = core.peek_offset if core.transport in _UDP_TRANSPORTS else -1  # (ping sockets keep it unused)

        def read() -> ReadResult:
            try:
                return core.read_datagram(peek)
            except ErrClosedForReceive:
                return _EOF

        def peek_at() -> tuple[ReadResult, int]:
            try:
                return core.peek_datagram(offset)
            except ErrClosedForReceive:
                return _EOF, 0
        if offset < 0:
            return self._io(_IN, read, *self._limits(flags, send=False))
        # Linux's udp_recvmsg moves the offset by what the call returns: the bytes copied, or with
        # MSG_TRUNC the datagram's whole length; a read takes it back as much.
        if not peek:
            result = self._io(_IN, read, *self._limits(flags, send=False))
            core.move_peek_offset(-(len(result.data) if flags & MSG_TRUNC else min(len(result.data), size)))
            return result
        result, start = self._io(_IN, peek_at, *self._limits(flags, send=False), more=True)
        core.move_peek_offset(len(result.data) if flags & MSG_TRUNC else min(len(result.data) - start, size))
        return result._replace(data=result.data[start:]) if start else result

    def _stream_ancillary(self, ancbufsize: int, read: int) -> tuple[list[tuple[int, int, bytes]], int]:
        """A TCP read's control messages, in Linux's order: with SO_TIMESTAMP(NS), when the last segment
        its ``read`` bytes came from arrived; with TCP_INQ, what is left to read (Linux's tcp_inq_hint: 1
        when nothing is, but the peer has closed, so that the reader knows to read its end)."""
        core = self._core
        items = []
        stamp = core.ep.read_stamp
        if read and stamp is not None and core.ep.stamp_reads:
            items = _control_items(ControlMessages(timestamp=stamp), core.family, core.stamps())
        if core.plain.get((IPPROTO_TCP, _TCP_INQ)):
            left = core.queue_size(SockOpt.RECEIVE_QUEUE_SIZE)
            if not left and core.ep.state in _PEER_DONE:
                left = 1
            items.append((IPPROTO_TCP, _TCP_INQ, _INT.pack(left)))
        return _ancillary(items, ancbufsize) if items else ([], 0)

    def _sender(self, result: ReadResult) -> tuple[Any, ...] | None:
        return self._core.address(result.sender) if result.sender is not None else None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        bufsize = operator.index(bufsize)
        flags = operator.index(flags)
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if bufsize == 0:
            return b""      # CPython asks nothing of the kernel
        self._check()
        if self._core.kind == SOCK_STREAM:
            return self._stream_read(bufsize, flags)  # type: ignore[return-value]
        return self._datagram_read(flags, bufsize).data[:bufsize]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = _buffer_view(buffer, "recv_into")
        nbytes = operator.index(nbytes)
        flags = operator.index(flags)
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        nbytes = nbytes or len(view)
        if len(view) < nbytes:
            raise ValueError("buffer too small for requested bytes")
        if nbytes == 0:
            return 0
        self._check()
        return self._recv_into(view[:nbytes], flags)[0]

    def _recv_into(self, view: memoryview, flags: int) -> tuple[int, tuple[Any, ...] | None]:
        if self._core.kind == SOCK_STREAM:
            return self._stream_read(len(view), flags, view), None  # type: ignore[return-value]
        result = self._datagram_read(flags, len(view))
        count = min(len(result.data), len(view))
        view[:count] = result.data[:count]
        return (len(result.data) if flags & MSG_TRUNC else count), self._sender(result)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, tuple[Any, ...] | None]:
        bufsize = operator.index(bufsize)
        flags = operator.index(flags)
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        self._check()
        if self._core.kind == SOCK_STREAM:
            return self._stream_read(bufsize, flags), None  # type: ignore[return-value]
        result = self._datagram_read(flags, bufsize)
        return result.data[:bufsize], self._sender(result)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, tuple[Any, ...] | None]:
        view = _buffer_view(buffer, "recvfrom_into")
        nbytes = operator.index(nbytes)
        flags = operator.index(flags)
        if nbytes < 0:
            raise ValueError("negative buffersize in recvfrom_into")
        if nbytes > len(view):
            raise ValueError("nbytes is greater than the length of the buffer")
        self._check()
        return self._recv_into(view[:nbytes or len(view)], flags)

    def _ancillary(self, result: ReadResult, ancbufsize: int) -> tuple[list[tuple[int, int, bytes]], int]:
        """(ancillary data, MSG_CTRUNC or 0) of a datagram read, for an ``ancbufsize``-byte buffer; an
        error queue's read also says MSG_ERRQUEUE."""
        if result.control is NO_CONTROL_MESSAGES:
            return [], 0
        if isinstance(result.control, QueuedError):
            ancdata, flags = _ancillary([_error_message(result.control, self._core.family)], ancbufsize)
            return ancdata, flags | MSG_ERRQUEUE
        if isinstance(result.control, TransmitStamp):
            ancdata, flags = _ancillary(self._stamp_messages(result.control), ancbufsize)
            return ancdata, flags | MSG_ERRQUEUE
        if isinstance(result.control, ZeroCopyCompletion):
            ancdata, flags = _ancillary([self._zerocopy_message(result.control)], ancbufsize)
            return ancdata, flags | MSG_ERRQUEUE
        core = self._core
        items = _control_items(result.control, core.family, core.stamps())
        return _ancillary(items, ancbufsize) if items else ([], 0)

    def _zerocopy_message(self, completion: ZeroCopyCompletion) -> tuple[int, int, bytes]:
        """A MSG_ZEROCOPY completion as Linux's ip_recv_error / ipv6_recv_error write it: the sock_extended_err
        (no error, SO_EE_ORIGIN_ZEROCOPY, the calls' range in ee_info..ee_data) and a zero sockaddr."""
        extended = _SOCK_EXTENDED_ERR.pack(0, _SO_EE_ORIGIN_ZEROCOPY, 0,
                                           _SO_EE_CODE_ZEROCOPY_COPIED if completion.copied else 0, 0,
                                           completion.first, completion.last)
        if self._core.family == AF_INET:
            return IPPROTO_IP, _IP_RECVERR, extended + bytes(16)
        return IPPROTO_IPV6, _IPV6_RECVERR, extended + bytes(28)

    def _stamp_messages(self, stamp: TransmitStamp) -> list[tuple[int, int, bytes]]:
        """A transmit stamp's control messages as Linux's ip_recv_error / ipv6_recv_error write them: the stamp
        as a read's would be (SO_TIMESTAMP(NS), SCM_TIMESTAMPING), then the sock_extended_err (ENOMSG,
        SO_EE_ORIGIN_TIMESTAMPING, the stamp's kind and key) with, when the packet came too, its source as the
        offender (over IPv4 only with OPT_CMSG); else a zero sockaddr."""
        core = self._core
        flags = core.plain.get((SOL_SOCKET, _SO_TIMESTAMPING), 0)
        items = _control_items(ControlMessages(timestamp=stamp.stamp), core.family, core.stamps(error_queue=True))
        extended = _SOCK_EXTENDED_ERR.pack(ENOMSG, SO_EE_ORIGIN_TIMESTAMPING, 0, 0, 0, stamp.info, stamp.key)
        ipv4 = core.family == AF_INET
        named = stamp.payload and (flags & _SOF_OPT_CMSG or not ipv4)
        offender = _sockaddr_bytes(core.family, stamp.source) if named else bytes(16 if ipv4 else 28)
        items.append((IPPROTO_IP, _IP_RECVERR, extended + offender) if ipv4 else
                     (IPPROTO_IPV6, _IPV6_RECVERR, extended + offender))
        return items

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> tuple[bytes, list[Any], int, Any]:
        """(data, ancillary data, message flags (MSG_TRUNC, MSG_CTRUNC), sender address)."""
        bufsize = operator.index(bufsize)
        ancbufsize = operator.index(ancbufsize)
        flags = operator.index(flags)
        if bufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        if not 0 <= ancbufsize <= _INT_MAX:
            raise ValueError("invalid ancillary data buffer length")
        self._check()
        if self._core.kind == SOCK_STREAM and not flags & MSG_ERRQUEUE:
            data = self._stream_read(bufsize, flags)
            ancdata, truncated = self._stream_ancillary(ancbufsize, len(data))
            return data, ancdata, truncated | flags & MSG_OOB, None  # type: ignore[return-value]
        result = self._datagram_read(flags, bufsize)
        ancdata, truncated = self._ancillary(result, ancbufsize)
        if len(result.data) > bufsize:
            truncated |= MSG_TRUNC
        return result.data[:bufsize], ancdata, truncated, self._sender(result)

    def recvmsg_into(self, buffers: Iterable[Any], ancbufsize: int = 0,
                     flags: int = 0) -> tuple[int, list[Any], int, Any]:
        try:
            items = list(iter(buffers))
        except TypeError:
            raise TypeError("recvmsg_into() argument 1 must be an iterable") from None
        views = []
        for item in items:
            try:
                views.append(_buffer_view(item, "recvmsg_into"))
            except TypeError:
                raise TypeError("recvmsg_into() argument 1 must be an iterable of single-segment read-write "
                                "buffers") from None
        ancbufsize = operator.index(ancbufsize)
        flags = operator.index(flags)
        if not 0 <= ancbufsize <= _INT_MAX:
            raise ValueError("invalid ancillary data buffer length")
        self._check()
        total = sum(len(v) for v in views)
        ancdata: list[tuple[int, int, bytes]] = []
        if self._core.kind == SOCK_STREAM and not flags & MSG_ERRQUEUE:
            data: bytes = self._stream_read(total, flags)  # type: ignore[assignment]
            ancdata, truncated = self._stream_ancillary(ancbufsize, len(data))
            truncated, sender = truncated | flags & MSG_OOB, None
        else:
            result = self._datagram_read(flags, total)
            data = result.data[:total]
            ancdata, truncated = self._ancillary(result, ancbufsize)
            if len(result.data) > total:
                truncated |= MSG_TRUNC
            sender = self._sender(result)
        offset = 0
        for view in views:
            chunk = data[offset:offset + len(view)]
            view[:len(chunk)] = chunk
            offset += len(chunk)
        return len(data), ancdata, truncated, sender

    # --- options ------------------------------------------------------------------------------------------

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        level = operator.index(level)
        optname = operator.index(optname)
        if optlen is not None:
            if value is not None:
                raise TypeError(f"setsockopt() argument 3 must be NoneType, not {type(value).__name__}")
            self._check()
            raise _oserror(EFAULT)      # a NULL option value
        if isinstance(value, int) and -2**31 <= value < 2**31:
            raw = _INT.pack(value)
        else:
            raw = bytes(_data_view(value))
        self._check()
        try:
            self._core.setsockopt(level, optname, raw)
        except Error as e:
            raise e.to_oserror() from None

    def getsockopt(self, level: int, optname: int, buflen: int = 0) -> int | bytes:
        level = operator.index(level)
        optname = operator.index(optname)
        buflen = operator.index(buflen)
        if buflen and not 0 < buflen <= 1024:
            raise OSError("getsockopt buflen out of range")
        self._check()
        if level == SOL_SOCKET and optname == _SO_ATTACH_FILTER and buflen:
            return self._core.get_filter(buflen)
        if level == IPPROTO_TCP and optname == _TCP_SAVED_SYN and self._core.kind == SOCK_STREAM:
            try:
                return _option_result(self._core.ep.take_saved_syn(buflen or _INT.size), buflen, False)
            except Error as e:
                raise e.to_oserror() from None
        if level == IPPROTO_TCP and optname == _TCP_REPAIR_WINDOW and self._core.kind == SOCK_STREAM:
            if buflen != _TCP_REPAIR_WINDOW_STRUCT.size:
                raise _oserror(EINVAL)
            if not self._core.ep.repair:
                raise _oserror(EPERM)
            return _TCP_REPAIR_WINDOW_STRUCT.pack(*self._core.ep.repair_window())
        if optname == _SO_ORIGINAL_DST and (level == IPPROTO_IP or level == IPPROTO_IPV6
                                                      and self._core.family == AF_INET6):
            return self._core.original_destination(level, buflen)
        if level == IPPROTO_IPV6 and optname == _IPV6_PATHMTU and self._core.family == AF_INET6 and \
                (buflen or _INT.size) < _SOCKADDR_IN6_SIZE + 4:
            raise _oserror(EINVAL)      # room for a whole ip6_mtuinfo is asked first (then ENOTCONN)
        try:
            value = self._core.getsockopt(level, optname)
        except Error as e:
            raise e.to_oserror() from None
        finally:
            self._core.sync()      # SO_ERROR clears an error that made the socket readable
        if level == SOL_SOCKET and (optname == _SO_COOKIE and (buflen or _INT.size) < _COOKIE.size
                                    or optname == _SO_NETNS_COOKIE and buflen != _COOKIE.size
                                    or optname == _SO_PEERNAME and buflen > len(value)):    # type: ignore[arg-type]
            raise _oserror(EINVAL)  # cookies only whole (a namespace's exactly); a peer's address into no more room
        if level == SOL_SOCKET and optname == _SO_MAX_PACING_RATE:     # a u64 into room for one, else a u32
            value = _U64.pack(value) if buflen >= _U64.size else min(value, 0xFFFFFFFF)   # type: ignore[arg-type]
        return _option_result(value, buflen, level == IPPROTO_IP)

