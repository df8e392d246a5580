"""At exit a process's connections deliver what they still owe (``runtime.finish_connections``, which the
default stack runs at exit and ``netsock run`` runs when the program ends), as the kernel's do after the
process. The exiting process is one host of a private network, its peer another: a client paced to 1 MB/s
closes with most of its 300 KB unsent."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from netsock.adapter import NetsockSocket
from netsock.adapter.runtime import EXIT_STALL, finish_connections
from netsock.privnet import Host, Network
from netsock.transport.tcp import TCPState

SO_MAX_PACING_RATE = 47
SIZE = 300_000
PORT = 5000


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    """(the exiting host, its peer), whose listener on PORT keeps what it is sent unread."""
    with Network(seed=1) as net:
        lan = net.switch("lan", "192.0.2.0/24")
        yield net.host("exiting.test", lan), net.host("peer.test", lan)


def connect(exiting: Host, peer: Host) -> tuple[Any, Any, Any]:
    """(listener and accepted socket on the peer, client on the exiting host), connected."""
    listener = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=peer.stack)
    listener.bind(("0.0.0.0", PORT))
    listener.listen()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SIZE * 2)
    client = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=exiting.stack)
    client.connect((peer.address, PORT))
    accepted, _ = listener.accept()
    return listener, accepted, client


def paced_upload(exiting: Host, peer: Host, rate: int) -> tuple[Any, Any]:
    """(the client's endpoint, the accepted socket) once the client has written SIZE bytes at ``rate`` and closed."""
    _, accepted, client = connect(exiting, peer)
    client.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, rate)
    client.sendall(bytes(SIZE))
    endpoint = client._core.ep
    client.close()
    return endpoint, accepted


def received(sock: Any) -> bytes:
    data = bytearray()
    while chunk := sock.recv(1 << 20):
        data += chunk
    return bytes(data)


def test_a_closed_connection_delivers_what_it_owes_before_the_process_goes(hosts: tuple[Host, Host]) -> None:
    endpoint, accepted = paced_upload(*hosts, 1_000_000)
    assert endpoint.state is TCPState.FIN_WAIT1 and len(endpoint.snd.buffer) > SIZE // 2
    start = time.monotonic()
    finish_connections(hosts[0].stack)
    assert 0.1 < time.monotonic() - start < 2
    assert endpoint.state in (TCPState.FIN_WAIT2, TCPState.TIME_WAIT, TCPState.CLOSED)
    assert received(accepted) == bytes(SIZE)


def test_the_wait_ends_after_its_timeout(hosts: tuple[Host, Host]) -> None:
    endpoint, _ = paced_upload(*hosts, 10_000)      # 30 s of sending
    start = time.monotonic()
    finish_connections(hosts[0].stack, timeout=0.1)
    assert time.monotonic() - start == pytest.approx(0.1, abs=0.1)
    assert endpoint.state is TCPState.FIN_WAIT1


def test_a_socket_left_open_is_closed_as_at_exit(hosts: tuple[Host, Host]) -> None:
    """An open connection gets its FIN after what was written; the exiting host's listener resets a connection
    it had not accepted."""
    exiting, peer = hosts
    _, accepted, client = connect(exiting, peer)
    client.sendall(b"last words")
    listener = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=exiting.stack)
    listener.bind(("0.0.0.0", PORT))
    listener.listen()
    waiting = NetsockSocket(socket.AF_INET, socket.SOCK_STREAM, stack=peer.stack)
    waiting.connect((exiting.address, PORT))
    finish_connections(exiting.stack)
    assert received(accepted) == b"last words"
    with pytest.raises(ConnectionResetError):
        waiting.recv(100)


def test_a_peer_that_takes_nothing_is_not_waited_for(hosts: tuple[Host, Host]) -> None:
    """Its window shut (it never reads): Linux's orphan would probe it on its own; the process goes at once."""
    exiting, peer = hosts
    _, accepted, client = connect(exiting, peer)
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        while True:
            client.send(bytes(65536))
    endpoint = client._core.ep
    for _ in range(100):
        if endpoint.snd.persisting:
            break
        gevent.sleep(0.01)
    start = time.monotonic()
    finish_connections(exiting.stack)
    assert time.monotonic() - start < EXIT_STALL / 2 and endpoint.state is TCPState.FIN_WAIT1   # (no wait for a stall)


def test_a_peer_gone_is_waited_for_until_nothing_was_acknowledged_for_the_stall_time(hosts: tuple[Host, Host],
                                                                                     ) -> None:
    exiting, peer = hosts
    _, _, client = connect(exiting, peer)
    exiting.network.partition(exiting, peer)
    client.sendall(bytes(10_000))
    start = time.monotonic()
    finish_connections(exiting.stack, stall=0.3)
    assert time.monotonic() - start == pytest.approx(0.3, abs=0.15)
    assert client._core.ep.state is TCPState.FIN_WAIT1


def test_datagrams_held_for_later_leave_before_the_process_goes(hosts: tuple[Host, Host]) -> None:
    """As a qdisc's packets outlive their process: a datagram sent for 200 ms from now, its socket closed."""
    exiting, peer = hosts
    receiver = NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM, stack=peer.stack)
    receiver.bind(("0.0.0.0", PORT))
    sender = NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM, stack=exiting.stack)
    sender.setsockopt(socket.SOL_SOCKET, 61, struct.pack("iI", time.CLOCK_MONOTONIC, 0))
    due = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 200_000_000
    sender.sendmsg([b"later"], [(socket.SOL_SOCKET, 61, struct.pack("Q", due))], 0, (peer.address, PORT))
    sender.close()
    start = time.monotonic()
    finish_connections(exiting.stack)
    assert 0.15 < time.monotonic() - start < 1
    receiver.settimeout(1)
    assert receiver.recv(100) == b"later"
