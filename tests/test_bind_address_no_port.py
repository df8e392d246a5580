"""IP_BIND_ADDRESS_NO_PORT as Linux's: a bind to port 0 takes the address alone, and connect (TCP,
UDP), listen or UDP's first write picks the port. Each scenario runs on a kernel socket and on a
NetsockSocket over loopback and must come out the same; then what the deferral is for: connections
from one bound address to different peers may share a port, as each 4-tuple is unique. Last, the
errors of a full ephemeral range, which differ by call as on Linux."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from contextlib import ExitStack, closing
from typing import Any

import pytest

from netsock.adapter import NetsockSocket

IP_BIND_ADDRESS_NO_PORT = 24    # <linux/in.h>
LOOPBACK = {socket.AF_INET: ("127.0.0.1", "127.0.0.2"), socket.AF_INET6: ("::1", "::1")}


def shape(address: tuple) -> tuple:
    """An address with its port reduced to whether there is one (ports differ between the stacks)."""
    return (address[0], "port" if address[1] else 0)


def outcome(steps: Callable[[], Any]) -> Any:
    try:
        return steps()
    except OSError as error:
        return "fails", errno.errorcode.get(error.errno, error.errno)


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
@pytest.mark.parametrize("value", [b"\x00\x00\x00\x00", b"\x01\x00\x00\x00", b"\x05\x00\x00\x00",
                                   b"\xff\xff\xff\xff", b"\x01", b""])
def test_set_and_get_as_on_the_kernel(family: int, kind: int, value: bytes) -> None:
    def steps(sock: Any) -> Any:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, value)
        return sock.getsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT)

    with closing(socket.socket(family, kind)) as kernel, NetsockSocket(family, kind) as ours:
        assert outcome(lambda: steps(ours)) == outcome(lambda: steps(kernel))


def scenario_bind_and_rebind(sock: Any, family: int, peer: Any) -> list:
    first, second = LOOPBACK[family]
    sock.bind((first, 0))
    seen = [shape(sock.getsockname())]
    sock.bind((second, 0))         # nothing was reserved: binding again is allowed
    seen.append(shape(sock.getsockname()))
    return seen


def scenario_explicit_port(sock: Any, family: int, peer: Any) -> list:
    sock.bind((LOOPBACK[family][0], 0))
    sock.bind((LOOPBACK[family][0], peer.free_port()))     # a port named is bound at once
    return [shape(sock.getsockname()), outcome(lambda: sock.bind((LOOPBACK[family][0], 0)))]


def scenario_listen(sock: Any, family: int, peer: Any) -> list:
    sock.bind((LOOPBACK[family][1], 0))
    sock.listen()
    return [shape(sock.getsockname())]


def scenario_accepted_inherits(sock: Any, family: int, peer: Any) -> list:
    sock.bind((LOOPBACK[family][0], 0))
    sock.listen()
    with closing(peer.connect_to(sock.getsockname()[:2])):
        accepted, _ = sock.accept()
        with closing(accepted):
            return [shape(sock.getsockname()), accepted.getsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT)]


def scenario_connect(sock: Any, family: int, peer: Any) -> list:
    sock.bind((LOOPBACK[family][1], 0))
    sock.connect(peer.address(sock.type))
    return [shape(sock.getsockname())]


def scenario_send(sock: Any, family: int, peer: Any) -> list:
    sock.bind((LOOPBACK[family][1], 0))
    sock.sendto(b"x", peer.address(sock.type))
    return [shape(sock.getsockname())]


class Peer:
    """A listener and a UDP socket to aim at, on the same stack as the socket under test."""

    def __init__(self, make: Callable[[int, int], Any], family: int, resources: ExitStack) -> None:
        host = LOOPBACK[family][0]
        self._make, self._family, self._resources = make, family, resources
        self._listener = resources.enter_context(closing(make(family, socket.SOCK_STREAM)))
        self._listener.bind((host, 0))
        self._listener.listen()
        self._datagrams = resources.enter_context(closing(make(family, socket.SOCK_DGRAM)))
        self._datagrams.bind((host, 0))

    def address(self, kind: int) -> tuple:
        return (self._listener if kind == socket.SOCK_STREAM else self._datagrams).getsockname()[:2]

    def connect_to(self, address: tuple) -> Any:
        client = self._make(self._family, socket.SOCK_STREAM)
        client.connect(address)
        return client

    def free_port(self) -> int:
        probe = self._resources.enter_context(closing(self._make(self._family, socket.SOCK_STREAM)))
        probe.bind((LOOPBACK[self._family][0], 0))
        port = probe.getsockname()[1]
        probe.close()
        return port


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
@pytest.mark.parametrize(("kind", "scenario"), [
    *((k, s) for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM)
      for s in (scenario_bind_and_rebind, scenario_explicit_port, scenario_connect)),
    (socket.SOCK_STREAM, scenario_listen), (socket.SOCK_STREAM, scenario_accepted_inherits),
    (socket.SOCK_DGRAM, scenario_send),
])
def test_the_port_comes_later_as_on_the_kernel(family: int, kind: int, scenario: Callable) -> None:
    results = []
    for make in (socket.socket, NetsockSocket):
        with ExitStack() as resources:
            peer = Peer(make, family, resources)
            sock = resources.enter_context(closing(make(family, kind)))
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            results.append(outcome(lambda: scenario(sock, family, peer)))
    kernel, ours = results
    assert ours == kernel


@pytest.mark.usefixtures("stack")
def test_without_the_option_bind_takes_a_port() -> None:
    with NetsockSocket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        assert sock.getsockname()[1]
        assert outcome(lambda: sock.bind(("127.0.0.1", 0))) == ("fails", "EINVAL")


@pytest.mark.parametrize("no_port", [True, False])
def test_connections_to_different_peers_share_the_ports_of_one_address(stack: Any, no_port: bool) -> None:
    # What the option is for (a proxy opening many connections from one source address): with the
    # port chosen at connect for the whole 4-tuple, 4 ephemeral ports serve 4 connections to each of
    # two listeners; bound at bind, each connection holds a port of its own and the fifth finds none.
    stack.ports.set_port_range(40000, 40003)
    with ExitStack() as resources:
        listeners = []
        for port in (5001, 5002):
            listener = resources.enter_context(NetsockSocket(socket.AF_INET, socket.SOCK_STREAM))
            listener.bind(("127.0.0.1", port))
            listener.listen()
            listeners.append(listener)
        used: list[tuple[int, int]] = []
        for listener in listeners:
            for _ in range(4):
                sock = resources.enter_context(NetsockSocket(socket.AF_INET, socket.SOCK_STREAM))
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, int(no_port))
                result = outcome(lambda: (sock.bind(("127.0.0.2", 0)), sock.connect(listener.getsockname())))
                if result != (None, None):
                    assert not no_port and result[0] == "fails" and len(used) == 4, result
                    return
                used.append((listener.getsockname()[1], sock.getsockname()[1]))
        assert no_port and len(set(used)) == 8 and {port for _, port in used} == set(range(40000, 40004))


# Linux's errnos when no ephemeral port is left, measured in a namespace with ip_local_port_range
# "40000 40001": bind and listen EADDRINUSE, TCP connect EADDRNOTAVAIL, UDP's autobind EAGAIN.
@pytest.mark.parametrize(("kind", "last_step", "expected"), [
    (socket.SOCK_STREAM, "bind", errno.EADDRINUSE), (socket.SOCK_STREAM, "listen", errno.EADDRINUSE),
    (socket.SOCK_STREAM, "connect", errno.EADDRNOTAVAIL), (socket.SOCK_DGRAM, "bind", errno.EADDRINUSE),
    (socket.SOCK_DGRAM, "connect", errno.EAGAIN), (socket.SOCK_DGRAM, "sendto", errno.EAGAIN),
])
def test_no_ephemeral_port_left_fails_as_on_linux(stack: Any, kind: int, last_step: str, expected: int) -> None:
    stack.ports.set_port_range(40000, 40001)
    with ExitStack() as resources:
        target = resources.enter_context(NetsockSocket(socket.AF_INET, kind))
        target.bind(("127.0.0.1", 5000))
        if kind == socket.SOCK_STREAM:
            target.listen()
        for _ in range(2):          # both ports held by sockets bound to the wildcard
            holder = resources.enter_context(NetsockSocket(socket.AF_INET, kind))
            holder.bind(("0.0.0.0", 0))
        sock = resources.enter_context(NetsockSocket(socket.AF_INET, kind))
        step = {"bind": lambda: sock.bind(("127.0.0.1", 0)), "listen": sock.listen,
                "connect": lambda: sock.connect(("127.0.0.1", 5000)),
                "sendto": lambda: sock.sendto(b"x", ("127.0.0.1", 5000))}[last_step]
        assert outcome(step) == ("fails", errno.errorcode[expected])
