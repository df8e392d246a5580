"""UDP_SEGMENT (UDP GSO) on NetsockSocket, each case checked against the kernel's sockets over 127.0.0.1
and ::1: the datagrams a write makes, the per-call control message, the limits and the option itself."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from netsock.adapter import NetsockSocket
from netsock.adapter.socket import UDP_SEGMENT

HOSTS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


def datagrams(make: Callable[..., Any], family: int, host: str, size: int, option: int,
              ancdata: list[tuple[int, int, bytes]] = ()) -> list[int]:
    """The sizes of the datagrams one write of ``size`` bytes makes, with UDP_SEGMENT ``option`` set
    on the socket and sendmsg's ``ancdata``."""
    with make(family, socket.SOCK_DGRAM) as rx, make(family, socket.SOCK_DGRAM) as tx:
        rx.bind((host, 0))
        rx.settimeout(2)
        tx.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, option)
        assert tx.getsockopt(socket.IPPROTO_UDP, UDP_SEGMENT) == option
        assert tx.sendmsg([bytes(range(256)) * (size // 256) + bytes(size % 256)], ancdata, 0,
                          (host, rx.getsockname()[1])) == size
        sizes: list[int] = []
        while sum(sizes) < size:
            sizes.append(len(rx.recv(70000)))
        return sizes


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", HOSTS)
@pytest.mark.parametrize("size, option, ancdata", [
    (2500, 1000, []),
    (12800, 100, []),                                                       # 128 datagrams, the most
    (900, 1000, [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("H", 300))]),  # the call's size wins
    (900, 300, [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("H", 0))]),     # ... even 0: one datagram
    (40000, 0, []),
])
def test_a_write_makes_the_datagrams_the_kernel_makes(family: int, host: str, size: int, option: int,
                                                      ancdata: list[Any]) -> None:
    ours = datagrams(NetsockSocket, family, host, size, option, ancdata)
    assert ours == datagrams(socket.socket, family, host, size, option, ancdata)


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", HOSTS)
@pytest.mark.parametrize("size, option, ancdata, expected", [
    (12900, 100, [], errno.EINVAL),                                          # 129 datagrams
    (65528, 60000, [], errno.EMSGSIZE),                                      # no one IP packet holds it
    (900, 0, [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("i", 300))], errno.EINVAL),   # not 16 bits
    (900, 0, [(socket.IPPROTO_UDP, 1, struct.pack("H", 300))], errno.EINVAL),            # not UDP_SEGMENT
])
def test_what_the_kernel_refuses_is_refused(family: int, host: str, size: int, option: int, ancdata: list[Any],
                                            expected: int) -> None:
    for make in (NetsockSocket, socket.socket):
        with make(family, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, option)
            with pytest.raises(OSError) as info:
                sock.sendmsg([bytes(size)], ancdata, 0, (host, 9))
            assert info.value.errno == expected, make


@pytest.mark.usefixtures("stack")
def test_the_option_takes_what_the_kernel_takes() -> None:
    for make in (NetsockSocket, socket.socket):
        with make(socket.AF_INET, socket.SOCK_DGRAM) as udp, make(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            for bad in (-1, 65536):
                with pytest.raises(OSError) as info:
                    udp.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, bad)
                assert info.value.errno == errno.EINVAL
            udp.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 65535)
            assert udp.getsockopt(socket.IPPROTO_UDP, UDP_SEGMENT) == 65535
            with pytest.raises(OSError) as info:
                tcp.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 1000)
            assert info.value.errno == errno.ENOPROTOOPT


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", HOSTS)
def test_the_largest_datagram_is_the_kernels(family: int, host: str) -> None:
    """One IP packet: 65,507 payload bytes over IPv4, 65,527 over IPv6 (its header is not counted)."""
    for make in (NetsockSocket, socket.socket):
        with make(family, socket.SOCK_DGRAM) as sock:
            largest = 65527 if family == socket.AF_INET6 else 65507
            assert sock.sendto(bytes(largest), (host, 9)) == largest
            with pytest.raises(OSError) as info:
                sock.sendto(bytes(largest + 1), (host, 9))
            assert info.value.errno == errno.EMSGSIZE
