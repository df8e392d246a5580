"""UDP-Lite sockets (IPPROTO_UDPLITE) on NetsockSocket, each scenario run on the kernel's sockets too
over 127.0.0.1, ::1 and a dual-stack socket, and compared: datagrams arrive, the checksum coverage
options read back and act as Linux's, UDP and UDP-Lite keep to their own ports, and the errors."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from netsock.adapter import NetsockSocket

from conftest import outcome

UDPLITE = socket.IPPROTO_UDPLITE
SEND_CSCOV, RECV_CSCOV = socket.UDPLITE_SEND_CSCOV, socket.UDPLITE_RECV_CSCOV
UDP_SEGMENT = 103                       # <linux/udp.h>
LOOPBACKS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"), (socket.AF_INET6, "127.0.0.1")]
LOOPBACK_IDS = ["ipv4", "ipv6", "mapped"]
PAYLOAD = b"0123456789abcdefghijklmnopqrstuv"     # 32 bytes: a 40-byte datagram

Make = Callable[..., Any]


def pair(make: Make, family: int, host: str) -> tuple[Any, Any, tuple[str, int]]:
    """A UDP-Lite receiver bound on the loopback (a dual-stack one for an IPv4 host on AF_INET6), a
    sender of the host's family, and where to send."""
    rx = make(family, socket.SOCK_DGRAM, UDPLITE)
    tx = make(socket.AF_INET if "." in host else socket.AF_INET6, socket.SOCK_DGRAM, UDPLITE)
    rx.bind(("::" if family == socket.AF_INET6 and "." in host else host, 0))
    rx.settimeout(5)
    return rx, tx, (host, rx.getsockname()[1])


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", LOOPBACKS, ids=LOOPBACK_IDS)
def test_datagrams_arrive_as_on_the_kernel(family: int, host: str) -> None:
    def run(make: Make) -> list[Any]:
        rx, tx, to = pair(make, family, host)
        with rx, tx:
            sent = [tx.sendto(PAYLOAD, to), tx.sendmsg([b"two ", b"parts"], [], 0, to)]
            first, sender = rx.recvfrom(100)
            second = rx.recvmsg(4)
            tx.connect(to)
            tx.send(b"connected")
            third = rx.recv(100)
            return [sent, first, sender[0], sender[1] == tx.getsockname()[1], second[0], second[2], third,
                    rx.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL),
                    rx.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE), rx.proto]

    ours = run(NetsockSocket)
    assert ours == run(socket.socket)
    assert ours[1] == PAYLOAD and ours[4:7] == [b"two ", socket.MSG_TRUNC, b"connected"] and ours[7] == UDPLITE


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("level", [UDPLITE, socket.IPPROTO_UDP], ids=["udplite-level", "udp-level"])
def test_coverage_options_read_back_as_on_the_kernel(level: int) -> None:
    values = [-5, 0, 1, 7, 8, 9, 100, 65535, 65536, 1 << 20]

    def run(make: Make) -> list[Any]:
        with make(socket.AF_INET6, socket.SOCK_DGRAM, UDPLITE) as s:
            results = [s.getsockopt(level, SEND_CSCOV), s.getsockopt(level, RECV_CSCOV)]
            for name in (SEND_CSCOV, RECV_CSCOV):
                for value in values:
                    s.setsockopt(level, name, value)
                    results.append((s.getsockopt(UDPLITE, name), s.getsockopt(socket.IPPROTO_UDP, name)))
            s.setsockopt(level, SEND_CSCOV, struct.pack("q", 12))      # longer than an int: its first 4 bytes
            results.append(s.getsockopt(level, SEND_CSCOV, 2))          # cut to the buffer given
            results.append(s.getsockopt(level, SEND_CSCOV, 8))
            return results

    ours = run(NetsockSocket)
    assert ours == run(socket.socket)
    assert ours[2:4] == [(8, 8), (0, 0)]


@pytest.mark.usefixtures("stack")
def test_option_errors_are_the_kernels() -> None:
    def run(make: Make) -> list[Any]:
        with make(socket.AF_INET, socket.SOCK_DGRAM, UDPLITE) as lite, \
                make(socket.AF_INET, socket.SOCK_DGRAM) as udp, make(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            return [
                outcome(lambda: lite.setsockopt(UDPLITE, SEND_CSCOV, b"\x01\x00")),     # shorter than an int
                outcome(lambda: lite.setsockopt(UDPLITE, 99, 1)),
                outcome(lambda: lite.getsockopt(UDPLITE, 99)),
                outcome(lambda: lite.setsockopt(UDPLITE, UDP_SEGMENT, -1)),
                outcome(lambda: lite.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)),
                outcome(lambda: lite.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)),
                # UDP shares the levels and the handler, but the coverage options are UDP-Lite's ...
                outcome(lambda: udp.setsockopt(UDPLITE, SEND_CSCOV, 20)),
                outcome(lambda: udp.setsockopt(socket.IPPROTO_UDP, RECV_CSCOV, 20)),
                outcome(lambda: udp.setsockopt(socket.IPPROTO_UDP, 99, b"\x01")),
                # ... though reading them answers 0
                outcome(lambda: udp.getsockopt(UDPLITE, SEND_CSCOV)),
                outcome(lambda: udp.getsockopt(socket.IPPROTO_UDP, RECV_CSCOV)),
                outcome(lambda: (udp.setsockopt(UDPLITE, UDP_SEGMENT, 1000), udp.getsockopt(socket.IPPROTO_UDP,
                                                                                             UDP_SEGMENT))),
                outcome(lambda: tcp.getsockopt(UDPLITE, SEND_CSCOV)),
                outcome(lambda: tcp.setsockopt(UDPLITE, SEND_CSCOV, 8)),
            ]

    ours = run(NetsockSocket)
    assert ours == run(socket.socket)
    assert ours[0] == "EINVAL" and ours[6] == "ENOPROTOOPT" and ours[9] == 0


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", LOOPBACKS, ids=LOOPBACK_IDS)
def test_receive_coverage_minimum_filters_as_on_the_kernel(family: int, host: str) -> None:
    """Each probe is followed by a datagram covered whole, which every receiver takes: what the
    receiver reads first tells whether the probe was dropped."""
    cases = [          # (receiver's minimum, sender's coverage); None: the option is left unset
        (None, 12), (20, 12), (20, 20), (20, 0), (0, 12), (0, 0), (0, None), (100, 12), (100, 0),
    ]

    def run(make: Make) -> list[bytes]:
        firsts = []
        for minimum, coverage in cases:
            rx, tx, to = pair(make, family, host)
            with rx, tx:
                if minimum is not None:
                    rx.setsockopt(UDPLITE, RECV_CSCOV, minimum)
                if coverage is not None:
                    tx.setsockopt(UDPLITE, SEND_CSCOV, coverage)
                tx.sendto(b"probe" + PAYLOAD, to)
                tx.setsockopt(UDPLITE, SEND_CSCOV, 0)
                tx.sendto(b"whole", to)
                firsts.append(rx.recv(100)[:5])
        return firsts

    ours = run(NetsockSocket)
    assert ours == run(socket.socket)
    assert ours == [b"probe", b"whole", b"probe", b"probe", b"whole", b"probe", b"probe", b"whole", b"probe"]


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", LOOPBACKS[:2], ids=LOOPBACK_IDS[:2])
def test_udp_and_udplite_ports_are_apart_as_on_the_kernel(family: int, host: str) -> None:
    """A UDP socket on the port does not take UDP-Lite datagrams: the sender is refused."""
    def run(make: Make) -> list[Any]:
        with make(family, socket.SOCK_DGRAM) as udp, make(family, socket.SOCK_DGRAM, UDPLITE) as lite:
            udp.bind((host, 0))
            lite.settimeout(5)
            lite.connect(udp.getsockname())
            lite.send(b"anyone?")
            refused = outcome(lambda: lite.recv(10))
            lite2 = make(family, socket.SOCK_DGRAM, UDPLITE)
            with lite2:
                lite2.bind(udp.getsockname())          # the same port number, UDP-Lite's own space
                return [refused, lite2.getsockname()[1] == udp.getsockname()[1]]

    ours = run(NetsockSocket)
    assert ours == run(socket.socket)
    assert ours == ["ECONNREFUSED", True]


@pytest.mark.usefixtures("stack")
def test_segmentation_offload_fails_the_write_as_on_the_kernel() -> None:
    def run(make: Make) -> list[Any]:
        rx, tx, to = pair(make, socket.AF_INET, "127.0.0.1")
        with rx, tx:
            tx.setsockopt(UDPLITE, UDP_SEGMENT, 100)
            results = [outcome(lambda: tx.sendto(b"x" * 50, to)), outcome(lambda: tx.sendto(b"x" * 500, to))]
            tx.setsockopt(UDPLITE, UDP_SEGMENT, 0)
            gso = [(socket.IPPROTO_UDP, UDP_SEGMENT, struct.pack("H", 100))]
            results.append(outcome(lambda: tx.sendmsg([b"x" * 50], gso, 0, to)))
            results.append(outcome(lambda: tx.sendmsg([b"ok"], [(UDPLITE, UDP_SEGMENT, struct.pack("H", 100))],
                                                      0, to)))     # not UDP's level: not read at all
            results.append(rx.recv(10))
            return results

    ours = run(NetsockSocket)
    assert ours == run(socket.socket)
    assert ours == ["EIO", "EIO", "EIO", 2, b"ok"]
