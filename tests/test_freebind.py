"""IP_FREEBIND / IPV6_FREEBIND as Linux's: a socket may bind to an address the host does not have
(yet); it listens there, and serves once the address comes. Set/get edges and bind, listen, connect
and send from such an address run on a kernel socket and on a NetsockSocket and must come out the
same (the address, 203.0.113.7 or 2001:db8::7, is on neither); then the address arriving."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from contextlib import ExitStack, closing
from typing import Any

import pytest

from netsock.adapter import NetsockSocket
from netsock.tcpip import IPV4_PROTOCOL_NUMBER

from conftest import private_kernel_network

IP_FREEBIND, IPV6_FREEBIND = 15, 78     # <linux/in.h>, <linux/in6.h>
ELSEWHERE = {socket.AF_INET: "203.0.113.7", socket.AF_INET6: "2001:db8::7"}
IP_NODEFRAG = 22
LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def outcome(steps: Callable[[], Any]) -> Any:
    try:
        return steps()
    except OSError as error:
        return "fails", errno.errorcode.get(error.errno, error.errno)


def shape(address: tuple) -> tuple:
    return (address[0], "port" if address[1] else 0)


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize(("family", "level", "option"), [
    (socket.AF_INET, socket.IPPROTO_IP, IP_FREEBIND), (socket.AF_INET6, socket.IPPROTO_IP, IP_FREEBIND),
    (socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_FREEBIND), (socket.AF_INET, socket.IPPROTO_IPV6, IPV6_FREEBIND),
])
@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
@pytest.mark.parametrize("value", [b"", b"\x01", b"\x02\x00", b"\x00\x00\x00\x00", b"\x07\x00\x00\x00",
                                   b"\xff\xff\xff\xff"])
def test_set_and_get_as_on_the_kernel(family: int, level: int, option: int, kind: int, value: bytes) -> None:
    def steps(sock: Any) -> Any:
        sock.setsockopt(level, option, value)
        return sock.getsockopt(level, option)

    with closing(socket.socket(family, kind)) as kernel, NetsockSocket(family, kind) as ours:
        assert outcome(lambda: steps(ours)) == outcome(lambda: steps(kernel))


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family", [socket.AF_INET6])
def test_either_level_sets_the_same_bit(family: int) -> None:
    for make in (socket.socket, NetsockSocket):
        with closing(make(family, socket.SOCK_STREAM)) as sock:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            assert sock.getsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND) == 1
            sock.bind((ELSEWHERE[family], 0))


def scenario_bind(sock: Any, family: int, target: Any) -> list:
    sock.bind((ELSEWHERE[family], 0))
    return [shape(sock.getsockname())]


def scenario_listen(sock: Any, family: int, target: Any) -> list:
    sock.bind((ELSEWHERE[family], 0))
    sock.listen()
    return [shape(sock.getsockname())]


def scenario_connect(sock: Any, family: int, target: Any) -> list:
    sock.bind((ELSEWHERE[family], 0))
    sock.connect(target.getsockname()[:2])
    return [shape(sock.getsockname())]


def scenario_send(sock: Any, family: int, target: Any) -> list:
    sock.bind((ELSEWHERE[family], 0))
    return [sock.sendto(b"x", target.getsockname()[:2])]


# IPv4 only for connect and send: from an address it lacks, Linux's IPv6 sends anyway, netsock
# (ENETUNREACH, as for IPv4) does not put out packets from an address that is not its own.
@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("freebind", [False, True])
@pytest.mark.parametrize(("family", "kind", "scenario"), [
    *((f, k, scenario_bind) for f in (socket.AF_INET, socket.AF_INET6)
      for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM)),
    (socket.AF_INET, socket.SOCK_STREAM, scenario_listen), (socket.AF_INET6, socket.SOCK_STREAM, scenario_listen),
    (socket.AF_INET, socket.SOCK_STREAM, scenario_connect), (socket.AF_INET, socket.SOCK_DGRAM, scenario_connect),
    (socket.AF_INET, socket.SOCK_DGRAM, scenario_send),
])
def test_binding_elsewhere_as_on_the_kernel(freebind: bool, family: int, kind: int, scenario: Callable) -> None:
    results = []
    for make in (socket.socket, NetsockSocket):
        with ExitStack() as resources:
            target = resources.enter_context(closing(make(family, kind)))
            target.bind((LOOPBACK[family], 0))
            if kind == socket.SOCK_STREAM:
                target.listen()
            sock = resources.enter_context(closing(make(family, kind)))
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, int(freebind))
            results.append(outcome(lambda: scenario(sock, family, target)))
    kernel, ours = results
    assert ours == kernel


@pytest.mark.usefixtures("stack")
def test_ipv6_connect_from_an_address_not_held_is_unreachable() -> None:
    with NetsockSocket(socket.AF_INET6, socket.SOCK_DGRAM) as target, \
            NetsockSocket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        target.bind(("::1", 0))
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        sock.bind((ELSEWHERE[socket.AF_INET6], 0))
        assert outcome(lambda: sock.connect(target.getsockname()[:2])) == ("fails", "ENETUNREACH")


def test_a_listener_bound_ahead_serves_once_the_address_comes(stack: Any) -> None:
    # What the option is for: a server started before its address is configured (a service
    # address, or one DHCP is yet to give). The accepted socket inherits the bit, as on Linux.
    address = ELSEWHERE[socket.AF_INET]
    with NetsockSocket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        listener.bind((address, 0))
        listener.listen()
        port = listener.getsockname()[1]
        with NetsockSocket(socket.AF_INET, socket.SOCK_STREAM) as early:
            early.settimeout(1)
            assert outcome(lambda: early.connect((address, port)))[0] == "fails"
        stack.add_address(1, IPV4_PROTOCOL_NUMBER, f"{address}/32")
        with NetsockSocket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect((address, port))
            accepted, peer = listener.accept()
            with accepted:
                assert peer == client.getsockname() and accepted.getsockname() == (address, port)
                assert accepted.getsockopt(socket.IPPROTO_IP, IP_FREEBIND) == 1
                client.sendall(b"hello")
                assert accepted.recv(5) == b"hello"


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_RAW])
def test_datagram_and_raw_sockets_bind_elsewhere_only_with_the_option(kind: int) -> None:
    for freebind in (False, True):
        with NetsockSocket(socket.AF_INET, kind, socket.IPPROTO_UDP) as sock:
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, int(freebind))
            result = outcome(lambda: sock.bind((ELSEWHERE[socket.AF_INET], 0)))
            assert result == (None if freebind else ("fails", "EADDRNOTAVAIL"))


def transparent_trace(make: Any) -> list[Any]:
    """IP_TRANSPARENT and IPV6_TRANSPARENT: read, set (an int, or IPv4's one byte), and a bind to an address no
    interface has, refused before and taken after; IPv4's option on an IPv6 socket sets the same bit."""
    trace: list[Any] = []
    for family, kind, host in ((socket.AF_INET, socket.SOCK_DGRAM, "198.51.100.9"),
                               (socket.AF_INET, socket.SOCK_STREAM, "198.51.100.9"),
                               (socket.AF_INET6, socket.SOCK_DGRAM, "2001:db8::9"),
                               (socket.AF_INET6, socket.SOCK_STREAM, "2001:db8::9")):
        level, option = (socket.IPPROTO_IP, 19) if family == socket.AF_INET else (socket.IPPROTO_IPV6, 75)
        with closing(make(family, kind)) as plain, closing(make(family, kind)) as sock:
            trace.append((outcome(lambda: plain.getsockopt(level, option)), outcome(lambda: plain.bind((host, 0)))))
            trace.append([outcome(lambda: sock.setsockopt(level, option, 5)),
                          outcome(lambda: sock.getsockopt(level, option)),
                          outcome(lambda: sock.setsockopt(level, option, b"\x01")),
                          outcome(lambda: sock.getsockopt(level, option, 1)), outcome(lambda: sock.bind((host, 0))),
                          outcome(lambda: sock.getsockname()[0])])
        if family == socket.AF_INET6:
            with closing(make(family, kind)) as sock:
                trace.append([outcome(lambda: sock.setsockopt(socket.IPPROTO_IP, 19, 1)),
                              outcome(lambda: sock.getsockopt(socket.IPPROTO_IPV6, 75))])
    return trace


@pytest.mark.usefixtures("stack")
def test_transparent_sockets_bind_to_any_address_as_on_the_kernel() -> None:
    assert transparent_trace(NetsockSocket) == transparent_trace(socket.socket)


@pytest.mark.usefixtures("stack")
def test_transparent_needs_a_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("netsock.adapter.socket._capable", lambda *capabilities: False)
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert outcome(lambda: sock.setsockopt(socket.IPPROTO_IP, 19, 1)) == ("fails", "EPERM")
        assert outcome(lambda: sock.setsockopt(socket.IPPROTO_IP, 19, 0)) is None


def transparent_send_trace(make: Any, family: int) -> list[Any]:
    """A datagram from a transparent socket bound to an address no interface has, over the loopback: it leaves
    from that address (Linux's FLOWI_FLAG_ANYSRC), as a transparent proxy answers in another host's name."""
    level, option = (socket.IPPROTO_IP, 19) if family == socket.AF_INET else (socket.IPPROTO_IPV6, 75)
    trace: list[Any] = []
    with closing(make(family, socket.SOCK_DGRAM)) as receiver, closing(make(family, socket.SOCK_DGRAM)) as sender:
        receiver.bind((LOOPBACK[family], 0))
        receiver.settimeout(2)
        sender.setsockopt(level, option, 1)
        sender.bind((ELSEWHERE[family], 5353))
        trace.append(outcome(lambda: sender.sendto(b"answer", receiver.getsockname())))
        data, peer = receiver.recvfrom(100)
        trace.append((data, peer[:2]))
    return trace


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_a_transparent_socket_sends_from_the_address_it_is_bound_to_as_on_the_kernel(family: int) -> None:
    with private_kernel_network():      # the kernel's run binds a fixed port
        kernel = transparent_send_trace(socket.socket, family)
    assert transparent_send_trace(NetsockSocket, family) == kernel


def nodefrag_trace(make: Any) -> list[Any]:
    """IP_NODEFRAG: set on raw IPv4 sockets only (an int or a byte), read on any IPv4-level socket."""
    trace: list[Any] = []
    for family, kind, proto in ((socket.AF_INET, socket.SOCK_RAW, 255), (socket.AF_INET, socket.SOCK_DGRAM, 0),
                                (socket.AF_INET, socket.SOCK_STREAM, 0), (socket.AF_INET6, socket.SOCK_DGRAM, 0)):
        with closing(make(family, kind, proto)) as sock:
            trace.append([outcome(lambda: sock.getsockopt(socket.IPPROTO_IP, IP_NODEFRAG)),
                          outcome(lambda: sock.setsockopt(socket.IPPROTO_IP, IP_NODEFRAG, 1)),
                          outcome(lambda: sock.getsockopt(socket.IPPROTO_IP, IP_NODEFRAG)),
                          outcome(lambda: sock.setsockopt(socket.IPPROTO_IP, IP_NODEFRAG, b"\x00")),
                          outcome(lambda: sock.getsockopt(socket.IPPROTO_IP, IP_NODEFRAG, 4))])
    return trace


NODEFRAG_ON_LINUX = [[0, None, 1, None, bytes(4)],          # (what the kernel answers: checked below as root)
                     [0, ("fails", "ENOPROTOOPT"), 0, ("fails", "ENOPROTOOPT"), bytes(4)],
                     [0, ("fails", "ENOPROTOOPT"), 0, ("fails", "ENOPROTOOPT"), bytes(4)],
                     [0, ("fails", "ENOPROTOOPT"), 0, ("fails", "ENOPROTOOPT"), bytes(4)]]


@pytest.mark.usefixtures("stack")
def test_ip_nodefrag_is_a_raw_sockets_bit_as_on_the_kernel() -> None:
    assert nodefrag_trace(NetsockSocket) == NODEFRAG_ON_LINUX
    if os.geteuid() == 0:       # (a kernel raw socket needs CAP_NET_RAW)
        assert nodefrag_trace(socket.socket) == NODEFRAG_ON_LINUX
