"""TCP Fast Open through the socket API, as on Linux: sendto(MSG_FASTOPEN) and TCP_FASTOPEN_CONNECT on the
client, TCP_FASTOPEN on the listener, TCP_FASTOPEN_NO_COOKIE and TCP_FASTOPEN_KEY. The calls' errors are
compared with the kernel's over loopback (whose default net.ipv4.tcp_fastopen, 1, is client-only, as netsock's);
the exchange itself runs between netsock sockets with server Fast Open turned on in the stack."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from contextlib import closing
from typing import Any

import gevent
import pytest

from netsock.adapter import NetsockSocket
from netsock.stack import Stack
from netsock.transport.tcp.protocol import FAST_OPEN_CLIENT, FAST_OPEN_SERVER

from conftest import outcome

MSG_FASTOPEN = 0x20000000
TCP_FASTOPEN_CONNECT, TCP_FASTOPEN_KEY, TCP_FASTOPEN_NO_COOKIE = 30, 33, 34
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
RESPONSE = b"HTTP/1.0 200 OK\r\n\r\nhello"


def calls_as_the_kernel(make: Callable[..., Any]) -> list[Any]:
    """MSG_FASTOPEN and TCP_FASTOPEN_CONNECT where they fail, and where no cookie is held yet."""
    results = []
    with closing(make()) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = server.getsockname()
        with closing(make()) as client:
            client.connect(address)
            results.append(outcome(lambda: client.send(b"x", MSG_FASTOPEN)))             # EISCONN
            results.append(outcome(lambda: client.sendto(b"x", MSG_FASTOPEN, address)))  # EISCONN
            results.append(outcome(lambda: client.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)))
            results.append(outcome(lambda: client.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_NO_COOKIE, 1)))
            results.append(outcome(lambda: client.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_KEY, bytes(16))))
            results.append(client.getsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_KEY, 64))
        with closing(make()) as fresh:
            results.append(outcome(lambda: fresh.send(b"x", MSG_FASTOPEN)))     # EINVAL: no address
            for value in (2, -1, 1):
                results.append(outcome(lambda: fresh.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, value)))
            results.append(fresh.getsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT))
            results.append(fresh.getsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_KEY, 64))      # none yet: empty
            for key in (bytes(8), bytes(range(32))):
                results.append(outcome(lambda: fresh.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_KEY, key)))
            results.append(fresh.getsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_KEY, 20))
            results.append(fresh.getsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_KEY))
            results.append(outcome(lambda: fresh.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_NO_COOKIE, 2)))
        with closing(make()) as quick:
            quick.setblocking(False)
            # No cookie from this server (and it gives none): the SYN asks, nothing is sent.
            results.append(outcome(lambda: quick.sendto(b"hello", MSG_FASTOPEN, address)))
            for _ in range(100):
                gevent.sleep(0.01)
                if quick.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and \
                        outcome(quick.getpeername) != "ENOTCONN":
                    break
            results.append(outcome(lambda: quick.sendto(b"hello", MSG_FASTOPEN, address)))   # completes: sent
            results.append(outcome(lambda: quick.connect(address)))                          # EISCONN
            results.append(quick.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[7] >> 1)  # cookie unavailable
        with closing(make()) as deferred:
            deferred.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)
            results.append(outcome(lambda: deferred.connect(address)))      # no cookie: an ordinary connect
            results.append(outcome(lambda: deferred.connect(address)))
            results.append(deferred.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[7] >> 1)
        with closing(make(socket.AF_INET, socket.SOCK_DGRAM)) as udp:
            results.append(outcome(lambda: udp.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)))
    return results


@pytest.mark.usefixtures("stack")
def test_the_calls_fail_and_succeed_as_on_the_kernel() -> None:
    kernel = calls_as_the_kernel(socket.socket)
    assert kernel == ["EISCONN", "EISCONN", "EINVAL", "EINVAL", None, bytes(16), "EINVAL", "EINVAL", "EINVAL", None, 1,
                      b"", "EINVAL", None, bytes(range(20)), 0x03020100, "EINVAL", "EINPROGRESS", 5, "EISCONN", 1,
                      None, "EISCONN", 1, "ENOPROTOOPT"]
    assert calls_as_the_kernel(NetsockSocket) == kernel


def test_without_client_fast_open_msg_fastopen_is_refused(stack: Stack) -> None:
    stack.transport_protocols[socket.IPPROTO_TCP].fast_open = 0
    with NetsockSocket() as sock:
        refused = errno.errorcode[errno.EOPNOTSUPP]
        assert outcome(lambda: sock.sendto(b"x", MSG_FASTOPEN, ("127.0.0.1", 9))) == refused
        assert outcome(lambda: sock.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)) == refused


def serve(listener: NetsockSocket, count: int) -> list[bytes]:
    """Answer ``count`` requests, one per connection; returns what each brought."""
    requests = []
    for _ in range(count):
        conn, _ = listener.accept()
        with conn:
            requests.append(conn.recv(100))
            conn.sendall(RESPONSE)
    return requests


def test_the_second_request_goes_with_its_syn(stack: Stack) -> None:
    tcp = stack.transport_protocols[socket.IPPROTO_TCP]
    tcp.fast_open = FAST_OPEN_CLIENT | FAST_OPEN_SERVER
    stats = stack.stats().tcp
    with NetsockSocket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 5)
        listener.listen()
        address = listener.getsockname()
        server = gevent.spawn(serve, listener, 3)
        for attempt in range(3):
            with NetsockSocket() as client:
                client.settimeout(5)
                if attempt < 2:
                    assert client.sendto(REQUEST, MSG_FASTOPEN, address) == len(REQUEST)
                else:
                    client.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)
                    client.connect(address)     # returns at once: the SYN waits for the request
                    client.sendall(REQUEST)
                assert client.recv(100) == RESPONSE
            # The first connection asked for the cookie; the others' requests rode on their SYNs.
            assert (stats.fast_open_cookie_requests.value, stats.fast_open_active.value,
                    stats.fast_open_passive.value) == (1, attempt, attempt)
        assert server.get(timeout=5) == [REQUEST] * 3
    assert stats.fast_open_active_fail.value == stats.fast_open_passive_fail.value == 0
