"""SO_MAX_PACING_RATE on NetsockSocket, call by call beside the kernel's sockets over 127.0.0.1: the value as an
int or an unsigned long either way, what TCP_INFO's tcpi_pacing_rate and tcpi_max_pacing_rate say, and what an
accepted connection takes from its listener. (The pacing itself: test_tcp_pacing.py.)"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from netsock.adapter import NetsockSocket

from conftest import outcome

SO_MAX_PACING_RATE = 47
UNLIMITED = (1 << 64) - 1


def pacing_fields(sock: Any) -> tuple[int, int]:
    """TCP_INFO's tcpi_pacing_rate and tcpi_max_pacing_rate."""
    return struct.unpack_from("QQ", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 120), 104)


def trace(sock: Any, tcp: bool) -> list[Any]:
    """Sets and reads of the option through every width, as a program might make them."""
    seen: list[Any] = []

    def look() -> None:
        seen.append([outcome(lambda: sock.getsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, size))
                     for size in (0, 2, 4, 8, 16)])
        if tcp:
            seen.append(pacing_fields(sock))

    look()
    for value in (1000, struct.pack("Q", 1 << 40), -2, 5000, -1, struct.pack("Q", UNLIMITED), b"\x07",
                  b"\x07\x00\x00\x00\x01", 0):
        seen.append(outcome(lambda: sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, value)))
        look()
    return seen


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_the_option_reads_and_sets_as_on_the_kernel(kind: int) -> None:
    """An unsigned long: an int's -1 is no limit, another int is taken unsigned, eight bytes are taken whole;
    read into an int it is at most 2**32 - 1 (so -1 then), into eight bytes whole. TCP's pacing rate is only
    lowered by it (until a round trip is measured), tcpi_max_pacing_rate follows it."""
    traces = []
    for make in (socket.socket, NetsockSocket):
        with closing(make(socket.AF_INET, kind)) as sock:
            traces.append(trace(sock, kind == socket.SOCK_STREAM))
    assert traces[1] == traces[0]


@pytest.fixture
def connections(stack: Any) -> Iterator[list[tuple[Any, Any]]]:
    """(client, accepted) over 127.0.0.1, the kernel's and netsock's, each listener with a rate of 5,000 bytes
    a second set before the connection."""
    made = []
    for make in (socket.socket, NetsockSocket):
        listener = make(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, 5000)
        client = make(socket.AF_INET, socket.SOCK_STREAM)
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
        listener.close()
        made.append((client, accepted))
    yield made
    for pair in made:
        for sock in pair:
            sock.close()


def test_an_accepted_connection_takes_its_listeners_rate_and_paces_below_it(connections: Any) -> None:
    """Its pacing rate is the lower of the window over the RTT (far more over a loopback) and the limit."""
    answers = [(accepted.getsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE), pacing_fields(accepted))
               for _, accepted in connections]
    assert answers[1] == answers[0] == (5000, (5000, 5000))


def test_a_connected_socket_paces_at_the_lower_of_its_limit_and_what_the_window_gives(connections: Any) -> None:
    results = []
    for client, accepted in connections:
        unlimited = pacing_fields(client)
        client.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, 1000)
        limited = pacing_fields(client)
        client.sendall(b"x" * 100)
        accepted.recv(100)
        client.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, -1)
        results.append((unlimited[1], unlimited[0] > 10**6, limited, pacing_fields(client)[1]))
    assert results[1] == results[0] == (UNLIMITED, True, (1000, 1000), UNLIMITED)
