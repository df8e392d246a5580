"""UDP_GRO on NetsockSocket, each case checked against the kernel's sockets over 127.0.0.1 and ::1: a
super-datagram (a UDP_SEGMENT write) reaches a UDP_GRO socket as one read, its segment size in a control
message, and as separate datagrams once the option is off; the option itself takes what the kernel's takes."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from netsock.adapter import NetsockSocket
from netsock.adapter.socket import UDP_GRO, UDP_SEGMENT

HOSTS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
IPV4_RECVTTL, IPV6_RECVHOPLIMIT = 12, 51


def reads(make: Callable[..., Any], family: int, host: str, writes: list[tuple[int, int]], gro: int = 1,
          bufsize: int = 70000, receive_hop_limit: bool = False, rcvbuf: int = 0) -> list[tuple[int, Any, int]]:
    """(length, ancillary data, flags) of every read a UDP_GRO socket makes of the datagrams the ``writes``
    (size, UDP_SEGMENT size) send it; ``receive_hop_limit`` also asks for IP_TTL / IPV6_HOPLIMIT, and
    ``rcvbuf`` sets SO_RCVBUF."""
    with make(family, socket.SOCK_DGRAM) as rx, make(family, socket.SOCK_DGRAM) as tx:
        rx.bind((host, 0))
        if rcvbuf:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        rx.setsockopt(socket.IPPROTO_UDP, UDP_GRO, gro)
        if receive_hop_limit:
            if family == socket.AF_INET:
                rx.setsockopt(socket.IPPROTO_IP, IPV4_RECVTTL, 1)
            else:
                rx.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
        rx.settimeout(0.3)
        for size, gso in writes:
            ancdata = [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("H", gso))]
            assert tx.sendmsg([bytes(range(256)) * (size // 256) + bytes(size % 256)], ancdata, 0,
                              rx.getsockname()[:2]) == size
        got = []
        while True:
            try:
                data, ancdata, msg_flags, _ = rx.recvmsg(bufsize, 1024)
            except (socket.timeout, TimeoutError):
                return got
            got.append((len(data), ancdata, msg_flags))


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", HOSTS)
@pytest.mark.parametrize("writes, gro", [
    ([(3000, 1000)], 1),                        # three datagrams, one read
    ([(2500, 1000)], 1),                        # the last shorter
    ([(1000, 1000), (999, 1000)], 1),           # no more than one segment: no super-datagram, no message
    ([(12800, 100)], 1),                        # 128 datagrams, the most one write makes
    ([(3000, 1000), (1500, 500)], 1),           # two super-datagrams stay two reads
    ([(3000, 1000)], 0),                        # off: three reads
    ([(2500, 1000)], 7),                        # any non-zero value is on
])
def test_a_super_datagram_is_read_as_on_the_kernel(family: int, host: str, writes: list[tuple[int, int]],
                                                    gro: int) -> None:
    ours = reads(NetsockSocket, family, host, writes, gro)
    assert ours == reads(socket.socket, family, host, writes, gro)
    assert sum(length for length, _, _ in ours) == sum(size for size, _ in writes)


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", HOSTS)
def test_the_message_comes_between_the_socket_and_ip_levels_ones(family: int, host: str) -> None:
    ours = reads(NetsockSocket, family, host, [(3000, 1000)], receive_hop_limit=True)
    assert ours == reads(socket.socket, family, host, [(3000, 1000)], receive_hop_limit=True)
    assert [level for level, _, _ in ours[0][1]] == [socket.IPPROTO_UDP,
                                                     socket.IPPROTO_IP if family == socket.AF_INET else
                                                     socket.IPPROTO_IPV6]


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", HOSTS)
def test_a_short_buffer_truncates_the_whole_super_datagram(family: int, host: str) -> None:
    ours = reads(NetsockSocket, family, host, [(3000, 1000), (800, 1000)], bufsize=1500)
    assert ours == reads(socket.socket, family, host, [(3000, 1000), (800, 1000)], bufsize=1500)
    assert ours[0][0] == 1500 and ours[0][2] & socket.MSG_TRUNC and ours[1][0] == 800


@pytest.mark.usefixtures("stack")
def test_the_option_takes_what_the_kernels_takes() -> None:
    for make in (NetsockSocket, socket.socket):
        for proto in (socket.IPPROTO_UDP, socket.IPPROTO_UDPLITE):
            with make(socket.AF_INET, socket.SOCK_DGRAM, proto) as sock:
                assert sock.getsockopt(socket.IPPROTO_UDP, UDP_GRO) == 0
                sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 5)
                assert sock.getsockopt(socket.IPPROTO_UDP, UDP_GRO) == 1, make
                assert sock.getsockopt(socket.IPPROTO_UDP, UDP_GRO, 8) == struct.pack("i", 1)
                with pytest.raises(OSError) as info:
                    sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, b"\x01")
                assert info.value.errno == errno.EINVAL
        with make(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            with pytest.raises(OSError) as info:
                tcp.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
            assert info.value.errno == errno.ENOPROTOOPT


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", HOSTS)
def test_a_super_datagram_is_admitted_or_dropped_whole(family: int, host: str) -> None:
    """The first of three 12,000-byte super-datagrams overfills an 8 KiB receive buffer but is kept whole
    (Linux tests a buffer's room before, not after, it queues); the other two are dropped."""
    writes = [(12000, 1000)] * 3
    ours = reads(NetsockSocket, family, host, writes, rcvbuf=4096)
    assert ours == reads(socket.socket, family, host, writes, rcvbuf=4096)
    assert [length for length, _, _ in ours] == [12000]
