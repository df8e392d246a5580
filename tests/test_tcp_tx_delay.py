"""TCP_TX_DELAY: every segment of the connection leaves that many microseconds late (Linux's, for testing:
fq holds each segment till then) — set and read as on the kernel, inherited by accepted connections, and
seen in a request's round trip between two hosts of a private network."""

from __future__ import annotations

import socket
import time
from contextlib import closing
from typing import Any

import pytest

from netsock.adapter import NetsockSocket
from netsock.privnet import Network

from conftest import outcome

TCP_TX_DELAY = 37


def trace(make: Any) -> list[Any]:
    steps: list[Any] = []
    with closing(make(socket.AF_INET, socket.SOCK_STREAM)) as listener:
        for value in (0, 1000, -1, 2**31 - 1, -2**31, 1):
            steps += [outcome(lambda: listener.setsockopt(socket.IPPROTO_TCP, TCP_TX_DELAY, value)),
                      outcome(lambda: listener.getsockopt(socket.IPPROTO_TCP, TCP_TX_DELAY))]
        steps.append(outcome(lambda: listener.setsockopt(socket.IPPROTO_TCP, TCP_TX_DELAY, b"\x01")))
        listener.setsockopt(socket.IPPROTO_TCP, TCP_TX_DELAY, 2500)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with closing(make(socket.AF_INET, socket.SOCK_STREAM)) as client:
            client.connect(listener.getsockname())
            accepted, _ = listener.accept()
            with closing(accepted):
                steps += [client.getsockopt(socket.IPPROTO_TCP, TCP_TX_DELAY),
                          accepted.getsockopt(socket.IPPROTO_TCP, TCP_TX_DELAY)]
    return steps


@pytest.mark.usefixtures("stack")
def test_the_option_reads_sets_and_is_inherited_as_on_the_kernel() -> None:
    assert trace(NetsockSocket) == trace(socket.socket)


def round_trip(delay_us: int) -> float:
    """Seconds from a 1-byte request to its answer, the server's segments delayed ``delay_us``."""
    with Network(seed=9) as net:
        lan = net.switch("lan", "192.0.2.0/24")
        server, client = net.host("server.test", lan), net.host("client.test", lan)
        with server:
            listener = NetsockSocket()
            listener.setsockopt(socket.IPPROTO_TCP, TCP_TX_DELAY, delay_us)
            listener.bind(("0.0.0.0", 7))
            listener.listen()

        def echo() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(1))
        server.spawn(echo)
        with client, NetsockSocket() as sock:
            sock.settimeout(5)
            sock.connect(("server.test", 7))
            start = time.monotonic()
            sock.sendall(b"?")
            assert sock.recv(1) == b"?"
            elapsed = time.monotonic() - start
        listener.close()
        return elapsed


def test_each_segment_leaves_that_much_later() -> None:
    # The answer's segments wait 80 ms before they leave: the round trip takes at least that (a bound the
    # stack's clock enforces), and that much more than without the delay (however slow the machine is).
    undelayed, delayed = round_trip(0), round_trip(80_000)
    assert delayed >= 0.08 and delayed - undelayed >= 0.06
