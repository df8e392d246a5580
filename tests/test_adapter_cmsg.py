"""recvmsg's ancillary data and sendmsg's IP header control messages on NetsockSocket datagram sockets,
each checked against what the kernel's sockets give for the same calls over 127.0.0.1 and ::1:
the messages, their order and byte layout, MSG_CTRUNC and cut-short messages for small buffers, the
options read back with getsockopt, and the argument checks CPython makes."""

from __future__ import annotations

import array
import errno
import socket
import select
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import pytest

from netsock.adapter import NetsockSocket
from netsock.patches import select as nselect

IP_PKTINFO, IP_RECVTTL, SO_TIMESTAMP = 8, 12, 29          # Linux's values (not named by every Python)
V4_OPTIONS = [(socket.IPPROTO_IP, IP_PKTINFO), (socket.IPPROTO_IP, IP_RECVTTL),
              (socket.IPPROTO_IP, socket.IP_RECVTOS)]
V6_OPTIONS = [(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO), (socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT),
              (socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS)]
LOOPBACK_IFINDEX = 1                                        # "lo" on Linux, and netsock's loopback NIC
pytestmark = pytest.mark.usefixtures("kernel_stamping")     # (the kernel's stamps compared from the first)


def ints(*values: int) -> bytes:
    return array.array("i", values).tobytes()


@contextmanager
def receiver_and_sender(make: Callable[..., Any], family: int, host: str,
                        options: list[tuple[int, int]]) -> Iterator[tuple[Any, Any]]:
    """A bound receiver with ``options`` on, and a sender (of the same family as the receiver unless
    the host is IPv4 and the receiver IPv6: a dual-stack receiver)."""
    rx = make(family, socket.SOCK_DGRAM)
    tx = make(socket.AF_INET if "." in host else socket.AF_INET6, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("::" if family == socket.AF_INET6 and "." in host else host, 0))
        for level, name in options:
            rx.setsockopt(level, name, 1)
        yield rx, tx


def exchange(make: Callable[..., Any], family: int, host: str, options: list[tuple[int, int]],
             ancbufsizes: list[int], ancdata: list[Any] = ()) -> list[tuple[Any, ...]]:
    """For each buffer size: send one datagram (with sendmsg's ``ancdata``) and what recvmsg gives."""
    results = []
    with receiver_and_sender(make, family, host, options) as (rx, tx):
        for size in ancbufsizes:
            assert tx.sendmsg([b"ping"], ancdata, 0, (host, rx.getsockname()[1])) == 4
            results.append(rx.recvmsg(16, size)[:3])
    return results


def without_times(results: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The results with the timestamps' bytes replaced by their length (the clocks differ)."""
    return [(data, [(level, kind, len(value) if kind == SO_TIMESTAMP else value) for level, kind, value in anc],
             flags) for data, anc, flags in results]


# --- what arrives, with enough room -----------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host, options", [
    (socket.AF_INET, "127.0.0.1", V4_OPTIONS),
    (socket.AF_INET6, "::1", V6_OPTIONS),
    (socket.AF_INET6, "127.0.0.1", V6_OPTIONS),                 # IPv4 on a dual-stack socket: IPV6_PKTINFO
    (socket.AF_INET6, "127.0.0.1", V6_OPTIONS + V4_OPTIONS),    # ... and the IPv4 ones asked for at IPPROTO_IP
], ids=["ipv4", "ipv6", "mapped", "mapped-with-ip-options"])
def test_received_control_messages_are_the_kernels(family: int, host: str, options: list[tuple[int, int]]) -> None:
    ours = exchange(NetsockSocket, family, host, options, [1024])
    assert ours == exchange(socket.socket, family, host, options, [1024])
    data, ancdata, flags = ours[0]
    assert (data, flags) == (b"ping", 0) and ancdata


@pytest.mark.usefixtures("stack")
def test_values_reflect_the_ip_header() -> None:
    with receiver_and_sender(NetsockSocket, socket.AF_INET, "127.0.0.1", V4_OPTIONS) as (rx, tx):
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 9)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xB8)
        tx.sendto(b"x", rx.getsockname())
        ancdata = rx.recvmsg(1, 1024)[1]
    assert ancdata == [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i4s4s", LOOPBACK_IFINDEX, bytes([127, 0, 0, 1]),
                                                                    bytes([127, 0, 0, 1]))),
                       (socket.IPPROTO_IP, socket.IP_TTL, ints(9)), (socket.IPPROTO_IP, socket.IP_TOS, b"\xb8")]
    with receiver_and_sender(NetsockSocket, socket.AF_INET6, "::1", V6_OPTIONS) as (rx, tx):
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 5)
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0x2E)
        tx.sendto(b"x", rx.getsockname())
        ancdata = rx.recvmsg(1, 1024)[1]
    assert ancdata == [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                        struct.pack("16sI", socket.inet_pton(socket.AF_INET6, "::1"), LOOPBACK_IFINDEX)),
                       (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, ints(5)),
                       (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, ints(0x2E))]


@pytest.mark.usefixtures("stack")
def test_timestamp_is_a_timeval_of_the_arrival() -> None:
    with receiver_and_sender(NetsockSocket, socket.AF_INET, "127.0.0.1", [(socket.SOL_SOCKET, SO_TIMESTAMP)]) \
            as (rx, tx):
        assert rx.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMP) == 1
        before = rx._core.stack.clock.now_ns() // 1000
        tx.sendto(b"x", rx.getsockname())
        [(level, kind, value)] = rx.recvmsg(1, 1024)[1]
    seconds, usec = struct.unpack("ll", value)
    assert (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMP)
    assert 0 <= seconds * 1_000_000 + usec - before < 5_000_000 and 0 <= usec < 1_000_000



SO_TIMESTAMPNS, SO_TIMESTAMPING, SO_TIMESTAMP_NEW, SO_TIMESTAMPNS_NEW, SO_TIMESTAMPING_NEW = 35, 37, 63, 64, 65
TS_RX_SOFTWARE, TS_SOFTWARE, TS_RAW_HARDWARE, TS_OPT_ID, TS_OPT_RX_FILTER = 1 << 3, 1 << 4, 1 << 6, 1 << 7, 1 << 17
STAMP_OPTIONS = (SO_TIMESTAMP, SO_TIMESTAMPNS, SO_TIMESTAMPING, SO_TIMESTAMP_NEW, SO_TIMESTAMPNS_NEW,
                 SO_TIMESTAMPING_NEW)
# Each step sets one option, then reads all six back and receives a datagram: the old and new options share
# Linux's one "new" flag, the last to be set decides every cmsg type.
STAMP_STEPS = [(SO_TIMESTAMPING, TS_RX_SOFTWARE | TS_SOFTWARE), (SO_TIMESTAMP, 1), (SO_TIMESTAMPNS, 1),
               (SO_TIMESTAMPING_NEW, TS_RX_SOFTWARE | TS_SOFTWARE | TS_RAW_HARDWARE), (SO_TIMESTAMPNS, 0),
               (SO_TIMESTAMP_NEW, 1), (SO_TIMESTAMPING, TS_SOFTWARE), (SO_TIMESTAMPNS_NEW, 1), (SO_TIMESTAMP, 0),
               (SO_TIMESTAMPING, TS_RX_SOFTWARE), (SO_TIMESTAMPING, TS_SOFTWARE | TS_OPT_RX_FILTER),
               (SO_TIMESTAMPING, TS_RX_SOFTWARE | TS_SOFTWARE | TS_OPT_RX_FILTER | TS_OPT_ID), (SO_TIMESTAMPING, 0)]


def stamp_steps(make: Callable[..., Any]) -> list[tuple[Any, ...]]:
    """What each of STAMP_STEPS leaves: the six options read back (SO_TIMESTAMPING's also as the 8-byte
    struct), and the cmsgs of a datagram received after it, their bytes as lengths."""
    results = []
    with receiver_and_sender(make, socket.AF_INET, "127.0.0.1", []) as (rx, tx):
        for name, value in STAMP_STEPS:
            rx.setsockopt(socket.SOL_SOCKET, name, value)
            read_back = [rx.getsockopt(socket.SOL_SOCKET, option) for option in STAMP_OPTIONS]
            tx.sendto(b"x", rx.getsockname())
            ancdata = rx.recvmsg(1, 1024)[1]
            results.append((name, value, read_back, rx.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 8),
                            [(level, kind, len(data)) for level, kind, data in ancdata]))
    return results


@pytest.mark.usefixtures("stack")
def test_timestamping_options_and_cmsgs_are_the_kernels() -> None:
    assert stamp_steps(NetsockSocket) == stamp_steps(socket.socket)


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("value", [1 << 19, -1, 1 << 12, 1 << 16, (1 << 16) | TS_OPT_ID, 1 << 15, b"\x18\x00",
                                   struct.pack("ii", TS_RX_SOFTWARE | TS_SOFTWARE, 0)])
def test_timestamping_flags_are_checked_as_the_kernel_checks_them(value: int | bytes) -> None:
    """Unknown bits, OPT_STATS without OPT_TSONLY, OPT_ID_TCP without OPT_ID, a short value: EINVAL; binding
    a PTP clock there is none of: EOPNOTSUPP; the struct so_timestamping form is taken."""
    answers = []
    for make in (NetsockSocket, socket.socket):
        with make(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, value)
                answers.append(sock.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING))
            except OSError as error:
                answers.append(errno.errorcode[error.errno])
    assert answers[0] == answers[1]


@pytest.mark.usefixtures("stack")
def test_hardware_stamps_are_taken_and_stamp_nothing() -> None:
    """No device here stamps in hardware (as Linux on a veth): TX_HARDWARE and RAW_HARDWARE are taken, and
    a datagram sent leaves nothing on the error queue."""
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 1 | TS_RAW_HARDWARE)
        assert sock.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING) == 1 | TS_RAW_HARDWARE
        sock.sendto(b"x", ("127.0.0.1", 9))
        with pytest.raises(BlockingIOError):
            sock.recvmsg(10, 1024, socket.MSG_ERRQUEUE)


TS_TX_SOFTWARE, TS_TX_SCHED, TS_TX_ACK, TS_OPT_CMSG, TS_OPT_TSONLY = 1 << 1, 1 << 8, 1 << 9, 1 << 10, 1 << 11
ERRQUEUE_NOW = socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT


def transmit_stamps(make: Callable[..., Any], family: int, host: str, flags: int, also: int = 0) -> list[Any]:
    """Two datagrams sent with ``flags`` (and the option ``also``, SO_TIMESTAMP or SO_TIMESTAMPNS, on), then the
    error queue read out: poll's answer before, and per entry the data's length, link header and payload end,
    the message flags and address, each control message (a stamp as its type, size and whether it is near
    now, the rest as bytes)."""
    with make(family, socket.SOCK_DGRAM) as rx, make(family, socket.SOCK_DGRAM) as tx:
        rx.bind((host, 0))
        if also:
            tx.setsockopt(socket.SOL_SOCKET, also, 1)
        tx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)
        for payload in (b"hello", b"world!"):
            tx.sendto(payload, rx.getsockname())
        for _ in range(50):
            if ready(tx, select.POLLERR):
                break
        entries: list[Any] = [ready(tx, select.POLLIN | select.POLLERR | select.POLLPRI)]
        while True:
            try:
                data, ancillary, msg_flags, address = tx.recvmsg(2048, 1024, ERRQUEUE_NOW)
            except BlockingIOError:
                break
            controls = []
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind in STAMP_OPTIONS:
                    seconds, fraction = struct.unpack_from("qq", value)
                    fraction /= 1e6 if kind == SO_TIMESTAMP else 1e9
                    controls.append((kind, len(value), abs(seconds + fraction - time.time()) < 60))
                else:
                    controls.append((level, kind, value))
            entries.append((len(data), data[:14], data[-5:], msg_flags, address, controls))   # (not the checksum)
        entries.append(ready(tx, select.POLLERR))
    return entries


def ready(sock: Any, events: int) -> int:
    poller = (nselect if isinstance(sock, NetsockSocket) else select).poll()
    poller.register(sock, events)
    gevent.sleep(0.001)
    return sum(event for _, event in poller.poll(0))


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
@pytest.mark.parametrize("flags, also", [(TS_TX_SOFTWARE | TS_SOFTWARE | TS_OPT_ID | TS_OPT_TSONLY, 0),
                                         (TS_TX_SCHED | TS_TX_SOFTWARE | TS_SOFTWARE | TS_OPT_ID, 0),
                                         (TS_TX_SOFTWARE | TS_SOFTWARE, 0),
                                         (TS_TX_SOFTWARE | TS_SOFTWARE | TS_OPT_ID | TS_OPT_CMSG, 0),
                                         (TS_TX_SOFTWARE | TS_OPT_ID, 0), (TS_TX_ACK | TS_SOFTWARE, 0),
                                         (TS_TX_SOFTWARE | TS_SOFTWARE | TS_OPT_RX_FILTER, SO_TIMESTAMPNS),
                                         (TS_TX_SOFTWARE, SO_TIMESTAMP)])
def test_transmit_stamps_come_back_on_the_error_queue_as_on_the_kernel(family: int, host: str, flags: int,
                                                                       also: int) -> None:
    """SO_TIMESTAMPING's TX_SCHED and TX_SOFTWARE on UDP: per datagram, the stamps in order, each with the
    stamp cmsgs a read would carry (SO_TIMESTAMP(NS)'s; SCM_TIMESTAMPING with SOFTWARE, OPT_RX_FILTER or not)
    and a sock_extended_err (ENOMSG, SO_EE_ORIGIN_TIMESTAMPING, the kind, OPT_ID's counter) with the packet as
    lo shows it (not with OPT_TSONLY) and its source (IPv6, or OPT_CMSG); the socket is POLLERR while any is
    queued. TX_ACK alone stamps nothing on UDP."""
    kernel = transmit_stamps(socket.socket, family, host, flags, also)
    assert transmit_stamps(NetsockSocket, family, host, flags, also) == kernel


@pytest.mark.usefixtures("stack")
def test_timestamping_reports_the_software_arrival_time() -> None:
    with receiver_and_sender(NetsockSocket, socket.AF_INET, "127.0.0.1", []) as (rx, tx):
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TS_RX_SOFTWARE | TS_SOFTWARE)
        before = rx._core.stack.clock.now_ns()
        tx.sendto(b"x", rx.getsockname())
        [(level, kind, value)] = rx.recvmsg(1, 1024)[1]
    seconds, ns, *rest = struct.unpack("6q", value)
    assert (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPING) and rest == [0, 0, 0, 0]
    assert 0 <= seconds * 1_000_000_000 + ns - before < 5_000_000_000 and 0 <= ns < 1_000_000_000



def stream_stamps(make: Callable[..., Any]) -> list[list[tuple[int, int, int]]]:
    """The cmsgs (bytes as lengths) of TCP reads over loopback under SO_TIMESTAMPING, then with SO_TIMESTAMPNS
    too, then through SO_TIMESTAMPING_NEW alone."""
    with make(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with make(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.connect(listener.getsockname())
            server = listener.accept()[0]
            with server:
                seen = []
                for name, value in ((SO_TIMESTAMPING, TS_RX_SOFTWARE | TS_SOFTWARE), (SO_TIMESTAMPNS, 1),
                                    (SO_TIMESTAMPNS, 0), (SO_TIMESTAMPING_NEW, TS_RX_SOFTWARE | TS_SOFTWARE)):
                    server.setsockopt(socket.SOL_SOCKET, name, value)
                    client.sendall(b"stamp")
                    data, ancdata = server.recvmsg(5, 1024)[:2]
                    seen.append([data, *((level, kind, len(item)) for level, kind, item in ancdata)])
                return seen


@pytest.mark.usefixtures("stack")
def test_tcp_reads_carry_the_kernels_timestamping_cmsgs() -> None:
    assert stream_stamps(NetsockSocket) == stream_stamps(socket.socket)



SO_MARK, SO_RCVMARK, SO_RXQ_OVFL = 36, 75, 40


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_received_mark_is_the_senders_over_loopback(family: int, host: str) -> None:
    """SO_RCVMARK: an SO_MARK cmsg on each datagram (after the drop count), whose mark Linux's loopback keeps from
    the sender's SO_MARK (setting one takes CAP_NET_ADMIN: root here, as the kernel's side needs too)."""
    def marks(make: Callable[..., Any]) -> list[Any]:
        seen = []
        with receiver_and_sender(make, family, host, [(socket.SOL_SOCKET, SO_RXQ_OVFL),
                                                      (socket.SOL_SOCKET, SO_RCVMARK)]) as (rx, tx):
            for mark in (0, 7, 0xFFFFFFFF):
                tx.setsockopt(socket.SOL_SOCKET, SO_MARK, struct.pack("I", mark))
                tx.sendto(b"m", rx.getsockname())
                seen.append(rx.recvmsg(1, 1024)[1])
            rx.setsockopt(socket.SOL_SOCKET, SO_RCVMARK, 0)
            tx.sendto(b"m", rx.getsockname())
            seen.append((rx.getsockopt(socket.SOL_SOCKET, SO_RCVMARK), rx.recvmsg(1, 1024)[1]))
        return seen
    ours = marks(NetsockSocket)
    assert ours == marks(socket.socket)
    assert ours[1] == [(socket.SOL_SOCKET, SO_MARK, struct.pack("I", 7))]


# --- too little room --------------------------------------------------------------------------------------

# Around each boundary: none, less than a header, a header, part of the data, all but the padding, all.
V4_SIZES = [0, 1, 15, 16, 17, 31, 32, 40, 47, 48, 55, 56, 63, 64, 72, 79, 80, 83, 87, 88, 99, 100, 104, 105, 112]
V6_SIZES = [0, 15, 16, 19, 35, 36, 40, 55, 56, 57, 59, 60, 64, 79, 80, 83, 84, 85, 88]


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host, options, sizes", [
    (socket.AF_INET, "127.0.0.1", [(socket.SOL_SOCKET, SO_TIMESTAMP), *V4_OPTIONS], V4_SIZES),
    (socket.AF_INET6, "::1", V6_OPTIONS, V6_SIZES),
], ids=["ipv4", "ipv6"])
def test_small_buffers_truncate_as_the_kernel(family: int, host: str, options: list[tuple[int, int]],
                                              sizes: list[int]) -> None:
    ours = without_times(exchange(NetsockSocket, family, host, options, sizes))
    assert ours == without_times(exchange(socket.socket, family, host, options, sizes))
    assert {flags for _, _, flags in ours} == {0, socket.MSG_CTRUNC}


@pytest.mark.usefixtures("stack")
def test_recvmsg_into_and_msg_trunc_combine_with_ctrunc() -> None:
    def run(make: Callable[..., Any]) -> tuple[Any, ...]:
        with receiver_and_sender(make, socket.AF_INET6, "::1", V6_OPTIONS) as (rx, tx):
            tx.sendto(b"0123456789", rx.getsockname())
            first, second = bytearray(3), bytearray(4)
            result = rx.recvmsg_into([first, second], socket.CMSG_SPACE(20) + socket.CMSG_LEN(4) - 1)
            return result[:3], bytes(first + second)
    ours = run(NetsockSocket)
    assert ours == run(socket.socket)
    assert ours[0][2] == socket.MSG_TRUNC | socket.MSG_CTRUNC


@pytest.mark.usefixtures("stack")
def test_nothing_asked_for_nothing_given() -> None:
    with receiver_and_sender(NetsockSocket, socket.AF_INET, "127.0.0.1", []) as (rx, tx):
        tx.sendto(b"x", rx.getsockname())
        assert rx.recvmsg(1, 0)[1:3] == ([], 0)


@pytest.mark.usefixtures("stack")
def test_a_cleared_option_stops_its_message() -> None:
    with receiver_and_sender(NetsockSocket, socket.AF_INET, "127.0.0.1", V4_OPTIONS) as (rx, tx):
        rx.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 0)
        rx.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, b"")        # no value: off, as Linux
        tx.sendto(b"x", rx.getsockname())
        assert rx.recvmsg(1, 1024)[1] == [(socket.IPPROTO_IP, socket.IP_TTL, ints(64))]


# --- the options --------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, kind, options", [
    (socket.AF_INET, socket.SOCK_DGRAM, V4_OPTIONS + [(socket.SOL_SOCKET, SO_TIMESTAMP)]),
    (socket.AF_INET6, socket.SOCK_DGRAM, V6_OPTIONS + V4_OPTIONS + [(socket.SOL_SOCKET, SO_TIMESTAMP)]),
    (socket.AF_INET, socket.SOCK_STREAM, V4_OPTIONS + [(socket.SOL_SOCKET, SO_TIMESTAMP)]),
    (socket.AF_INET6, socket.SOCK_STREAM, V6_OPTIONS),
], ids=["udp", "udp6", "tcp", "tcp6"])
def test_options_read_back_as_the_kernels(family: int, kind: int, options: list[tuple[int, int]]) -> None:
    def states(make: Callable[..., Any]) -> list[Any]:
        with make(family, kind) as sock:
            seen = [sock.getsockopt(level, name) for level, name in options]
            for level, name in options:
                sock.setsockopt(level, name, 7)
            seen += [sock.getsockopt(level, name) for level, name in options]
            seen += [sock.getsockopt(level, name, 1) for level, name in options if level == socket.IPPROTO_IP]
            for level, name in options:
                sock.setsockopt(level, name, 0)
            return seen + [sock.getsockopt(level, name) for level, name in options]
    assert states(NetsockSocket) == states(socket.socket)


@pytest.mark.usefixtures("stack")
def test_ipv6_options_on_an_ipv4_socket_are_refused_as_by_the_kernel() -> None:
    for make in (NetsockSocket, socket.socket):
        with make(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(OSError) as info:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        assert info.value.errno == errno.ENOPROTOOPT


# --- sendmsg ------------------------------------------------------------------------------------------------

SEND_CASES = [
    (socket.AF_INET, "127.0.0.1", [(socket.IPPROTO_IP, socket.IP_TTL, ints(3))]),
    (socket.AF_INET, "127.0.0.1", [(socket.IPPROTO_IP, socket.IP_TOS, ints(0x28))]),
    (socket.AF_INET, "127.0.0.1", [(socket.IPPROTO_IP, socket.IP_TOS, b"\x28"),
                                   (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, ints(2))]),   # not IPv4's: skipped
    (socket.AF_INET6, "::1", [(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, ints(2)),
                              (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, ints(0x28))]),
    (socket.AF_INET6, "::1", [(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, ints(-1)),
                              (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, ints(-1)),
                              (socket.IPPROTO_IP, socket.IP_TTL, ints(0))]),                  # not IPv6's: skipped
]


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host, ancdata", SEND_CASES)
def test_sendmsg_sets_the_ip_header_as_the_kernel(family: int, host: str, ancdata: list[Any]) -> None:
    options = V4_OPTIONS[1:] if family == socket.AF_INET else V6_OPTIONS[1:]
    ours = exchange(NetsockSocket, family, host, options, [1024], ancdata)
    assert ours == exchange(socket.socket, family, host, options, [1024], ancdata)


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host, ancdata", [
    (socket.AF_INET, "127.0.0.1", [(socket.IPPROTO_IP, socket.IP_TTL, b"\x03")]),
    (socket.AF_INET, "127.0.0.1", [(socket.IPPROTO_IP, socket.IP_TTL, ints(0))]),
    (socket.AF_INET, "127.0.0.1", [(socket.IPPROTO_IP, socket.IP_TTL, ints(256))]),
    (socket.AF_INET, "127.0.0.1", [(socket.IPPROTO_IP, socket.IP_TOS, ints(256))]),
    (socket.AF_INET, "127.0.0.1", [(socket.IPPROTO_IP, 99, b"")]),
    (socket.AF_INET6, "::1", [(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, ints(-1) + b"\0")]),
    (socket.AF_INET6, "::1", [(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, ints(256))]),
    (socket.AF_INET6, "::1", [(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, ints(-2))]),
    (socket.AF_INET6, "::1", [(socket.IPPROTO_IPV6, 99, b"")]),
])
def test_sendmsg_rejects_what_the_kernel_rejects(family: int, host: str, ancdata: list[Any]) -> None:
    for make in (NetsockSocket, socket.socket):
        with make(family, socket.SOCK_DGRAM) as sock, pytest.raises(OSError) as info:
            sock.sendmsg([b"x"], ancdata, 0, (host, 9))
        assert info.value.errno == errno.EINVAL


@pytest.mark.usefixtures("stack")
def test_sendmsg_refuses_control_messages_netsock_lacks() -> None:
    with NetsockSocket(socket.AF_INET6, socket.SOCK_DGRAM) as sock, pytest.raises(OSError) as info:
        sock.sendmsg([b"x"], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, bytes(20))], 0, ("::1", 9))
    assert info.value.errno == errno.EOPNOTSUPP


# --- argument checks ----------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_int_arguments_overflow_as_cpythons() -> None:
    for make in (NetsockSocket, socket.socket):
        with make(socket.AF_INET, socket.SOCK_STREAM) as sock:
            for call, value in ((sock.listen, 2**31), (sock.listen, -2**31 - 1),
                                (sock.shutdown, 2**31), (sock.shutdown, -2**31 - 1)):
                with pytest.raises(OverflowError):
                    call(value)
            for how in (2**31 - 1, -1):
                with pytest.raises(OSError) as info:
                    sock.shutdown(how)
                assert info.value.errno == errno.EINVAL
            with pytest.raises(ValueError, match="invalid ancillary data buffer length"):
                sock.recvmsg(1, 2**31)


@pytest.mark.usefixtures("stack")
def test_fileno_takes_the_family_type_and_proto_given() -> None:
    with NetsockSocket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        fd = sock.detach()
        with NetsockSocket(1234, 999, 23, fileno=fd) as other:
            assert (other.family, other.type, other.proto) == (1234, 999, 23)
            with NetsockSocket(fileno=other.dup().detach()) as asked:
                assert (asked.family, asked.type, asked.proto) == (socket.AF_INET, socket.SOCK_STREAM,
                                                                   socket.IPPROTO_TCP)
            with NetsockSocket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, 0,
                               fileno=other.dup().detach()) as nonblocking:
                assert (nonblocking.type, nonblocking.gettimeout()) == (socket.SOCK_STREAM, 0.0)


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, proto, host, request_type", [
    (socket.AF_INET, socket.IPPROTO_ICMP, "127.0.0.1", 8),
    (socket.AF_INET6, socket.IPPROTO_ICMPV6, "::1", 128),
])
def test_ping_replies_carry_control_messages_too(family: int, proto: int, host: str, request_type: int) -> None:
    """As Linux's ping sockets (ping_recvmsg): the same messages as UDP's (no kernel comparison here:
    the kernel's ping sockets need net.ipv4.ping_group_range)."""
    options = V4_OPTIONS[1:] if family == socket.AF_INET else V6_OPTIONS[1:]
    with NetsockSocket(family, socket.SOCK_DGRAM, proto) as sock:
        for level, name in options:
            sock.setsockopt(level, name, 1)
        sock.sendto(bytes((request_type, 0, 0, 0, 0, 0, 0, 1)) + b"hi", (host, 0))
        data, ancdata, flags, _ = sock.recvmsg(64, 1024)
    assert (data[8:], flags) == (b"hi", 0)
    if family == socket.AF_INET:
        assert ancdata == [(socket.IPPROTO_IP, socket.IP_TTL, ints(64)), (socket.IPPROTO_IP, socket.IP_TOS, b"\0")]
    else:
        assert ancdata == [(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, ints(64)),
                           (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, ints(0))]


@pytest.mark.usefixtures("stack")
def test_transmit_stamps_nobody_reads_stop_at_the_receive_buffer() -> None:
    """Stamps count against the receive buffer, as Linux charges them: a sender that never reads its error
    queue stops getting them (counted), instead of holding memory without end; reading makes room again."""
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        tx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TS_TX_SOFTWARE | TS_OPT_ID)
        for _ in range(1000):
            tx.sendto(b"x" * 100, rx.getsockname())
        keys = []
        while True:
            try:
                keys.append(struct.unpack_from("I", tx.recvmsg(0, 1024, socket.MSG_ERRQUEUE)[1][0][2], 12)[0])
            except BlockingIOError:
                break
        assert 0 < len(keys) < 100 and keys == list(range(len(keys)))
        assert tx._core.ep.stats.receive_errors.receive_buffer_overflow.value == 1000 - len(keys)
        tx.sendto(b"again", rx.getsockname())
        assert struct.unpack_from("I", tx.recvmsg(0, 1024, socket.MSG_ERRQUEUE)[1][0][2], 12)[0] == 1000


def tcp_transmit_stamps(make: Callable[..., Any]) -> list[Any]:
    """A TCP connection over loopback under SO_TIMESTAMPING's transmit flags: sends of 3, 5 and 5,000 bytes,
    OPT_ID counting from the oldest unacknowledged byte, then without OPT_ID, then OPT_ID_TCP from the next
    byte written; per error-queue entry the data's length and end, the kind and key, the control messages'
    shapes; with OPT_ID asked of a socket not yet connected first (EINVAL, as the count has no start)."""
    entries: list[Any] = []
    with make(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with make(socket.AF_INET, socket.SOCK_STREAM) as client:
            try:
                client.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TS_TX_SOFTWARE | TS_OPT_ID)
            except OSError as error:
                entries.append(errno.errorcode[error.errno])
            client.connect(listener.getsockname())
            server = listener.accept()[0]
            with server:
                client.sendall(b"pre")
                server.recv(10)
                gevent.sleep(0.3)       # (its ACK back, even a delayed one: OPT_ID counts from the oldest unacked)
                steps = [(TS_TX_SCHED | TS_TX_SOFTWARE | TS_TX_ACK | TS_SOFTWARE | TS_OPT_ID, (b"abc", b"defgh")),
                         (TS_TX_SOFTWARE | TS_TX_ACK | TS_SOFTWARE | TS_OPT_ID | TS_OPT_TSONLY, (b"x" * 5000,)),
                         (TS_TX_SOFTWARE | TS_SOFTWARE, (b"zz",)),
                         (TS_TX_ACK | TS_OPT_ID | (1 << 16), (b"qq",))]
                for flags, sends in steps:
                    client.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)
                    for payload in sends:
                        client.send(payload)
                        gevent.sleep(0.02)
                    got = 0
                    while got < sum(map(len, sends)):
                        got += len(server.recv(10000))
                    gevent.sleep(0.05)
                    while True:
                        try:
                            data, ancillary, _, _ = client.recvmsg(2048, 1024, ERRQUEUE_NOW)
                        except BlockingIOError:
                            break
                        shapes = [(level, kind, len(value)) for level, kind, value in ancillary]
                        info, key = struct.unpack_from("II", ancillary[-1][2], 8)
                        entries.append((len(data), data[-2:], info, key, shapes))
    return entries


@pytest.mark.usefixtures("stack")
def test_tcp_transmit_stamps_come_back_as_on_the_kernel() -> None:
    """TX_SCHED, TX_SOFTWARE (the segment with the send's last byte, as it left) and TX_ACK (when that byte
    is acknowledged, with the segment's payload) on TCP, keyed by byte offset, compared with the kernel."""
    kernel = tcp_transmit_stamps(socket.socket)
    assert tcp_transmit_stamps(NetsockSocket) == kernel


IPV6_FLOWINFO, IPV6_AUTOFLOWLABEL = 11, 70


def flow_infos(make: Callable[..., Any]) -> list[Any]:
    """Per datagram sent over ::1 (IPV6_AUTOFLOWLABEL, IPV6_TCLASS on the sender, IPV6_FLOWINFO on the
    receiver): its control messages, a flow info as its traffic class bits and whether it holds a label; then
    whether the first two, of one flow, had the same label."""
    with make(socket.AF_INET6, socket.SOCK_DGRAM) as rx, make(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
        rx.bind(("::1", 0))
        seen: list[Any] = [tx.getsockopt(socket.IPPROTO_IPV6, IPV6_AUTOFLOWLABEL)]
        labels = []
        for auto, tclass, receive in ((1, 0, 1), (1, 0, 1), (0, 0, 1), (0, 0x28, 1), (1, 0x28, 1), (1, 0, 0)):
            tx.setsockopt(socket.IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, auto)
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tclass)
            rx.setsockopt(socket.IPPROTO_IPV6, IPV6_FLOWINFO, receive)
            tx.sendto(b"x", rx.getsockname()[:2])
            ancdata = rx.recvmsg(10, 100)[1]
            for level, kind, data in ancdata:
                info = int.from_bytes(data, "big")
                labels.append(info & 0xFFFFF)
                seen.append((level, kind, len(data), info >> 20, bool(info & 0xFFFFF)))
            seen.append(len(ancdata))
        return [*seen, labels[0] == labels[1]]


@pytest.mark.usefixtures("stack")
def test_flow_labels_and_flow_info_are_the_kernels() -> None:
    """IPV6_AUTOFLOWLABEL (on by default) labels datagrams by their flow; IPV6_FLOWINFO hands the receiver
    traffic class and label, unless both are 0."""
    ours = flow_infos(NetsockSocket)
    assert ours == flow_infos(socket.socket)
    assert ours[-1] is True and (41, IPV6_FLOWINFO, 4, 0x28, False) in ours
