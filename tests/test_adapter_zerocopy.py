"""SO_ZEROCOPY and MSG_ZEROCOPY on NetsockSocket, checked against the kernel's sockets over 127.0.0.1 and ::1:
which sockets take the option, the numbering of the send calls, the completions on the error queue (their
ranges, codes, control messages and coalescing) and POLLERR while one is queued; and that a TCP send with it
really keeps the caller's buffer, not a copy, until its completion."""

from __future__ import annotations

import errno
import select
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import pytest

from netsock.adapter import NetsockSocket
from netsock.patches import select as nselect

SO_ZEROCOPY, MSG_ZEROCOPY = 60, 0x4000000
HOSTS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
ERRQUEUE_NOW = socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT


def ready(sock: Any, events: int) -> int:
    poller = (nselect if isinstance(sock, NetsockSocket) else select).poll()
    poller.register(sock, events)
    return sum(event for _, event in poller.poll(0))


def completions(sock: Any) -> list[tuple[Any, ...]]:
    """The error queue read out, once the first entry has come (and, over TCP, once the peer has acknowledged
    everything: the completions of the last bytes come with its ACK, which may be a delayed one): per entry the
    data, the message flags and address, and each control message with its sock_extended_err unpacked."""
    for _ in range(400):
        if ready(sock, select.POLLERR) and (sock.type != socket.SOCK_STREAM or not unacknowledged(sock)):
            break
        gevent.sleep(0.005)
    entries = []
    while True:
        try:
            data, ancillary, flags, address = sock.recvmsg(100, 1024, ERRQUEUE_NOW)
        except BlockingIOError:
            return entries
        entries.append((data, flags, address, [(level, kind, struct.unpack_from("IBBBBII", value), value[16:])
                                               for level, kind, value in ancillary]))


def unacknowledged(sock: Any) -> int:
    """TCP_INFO's tcpi_unacked: segments sent and not yet acknowledged."""
    return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 24)[0]


@contextmanager
def tcp_pair(make: Callable[..., Any], family: int, host: str) -> Iterator[tuple[Any, Any]]:
    with make(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen()
        with make(family, socket.SOCK_STREAM) as client:
            client.connect(listener.getsockname()[:2])
            server = listener.accept()[0]
            with server:
                yield client, server


def tcp_sends(make: Callable[..., Any], family: int, host: str) -> list[Any]:
    """Zero-copy and plain sends (an empty one too) read by the peer; then the sender's POLLERR, its error
    queue, and POLLERR again; then a second round, whose completion is queued anew."""
    with tcp_pair(make, family, host) as (client, server):
        client.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        sent = [client.send(b"a" * 10, MSG_ZEROCOPY), client.send(bytearray(3000), MSG_ZEROCOPY),
                client.send(b"", MSG_ZEROCOPY), client.send(b"plain"), client.send(memoryview(b"xyz"), MSG_ZEROCOPY)]
        received = 0
        while received < sum(sent):
            received += len(server.recv(65536))
        first = completions(client)
        after = ready(client, select.POLLERR)
        client.sendall(b"b" * 20, MSG_ZEROCOPY)
        server.recv(65536)
        return [sent, first, after, completions(client)]


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", HOSTS)
def test_tcp_sends_complete_as_on_the_kernel(family: int, host: str) -> None:
    """Three send calls that queued bytes are numbered 0 to 2 (an empty one takes no number), all completed in
    one entry once acknowledged — copied, as over any loopback — and the next call's completion is 3."""
    ours = tcp_sends(NetsockSocket, family, host)
    assert ours == tcp_sends(socket.socket, family, host)
    assert [entry[3][0][2][5:] for entry in ours[1]] == [(0, 2)] and ours[3][0][3][0][2][5:] == (3, 3)


def udp_sends(make: Callable[..., Any], family: int, host: str, option: int) -> list[Any]:
    with make(family, socket.SOCK_DGRAM) as rx, make(family, socket.SOCK_DGRAM) as tx:
        rx.bind((host, 0))
        tx.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, option)
        for payload in (b"one", b"", bytearray(b"three"), b"four"):
            tx.sendto(payload, MSG_ZEROCOPY, rx.getsockname()[:2])
        tx.sendto(b"plain", rx.getsockname()[:2])
        tx.sendto(b"corked", socket.MSG_MORE | MSG_ZEROCOPY, rx.getsockname()[:2])
        tx.sendto(b"!", rx.getsockname()[:2])
        rx.settimeout(1)
        received = [rx.recv(100) for _ in range(6)]
        return [received, completions(tx) if option else ready(tx, select.POLLERR)]


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", HOSTS)
@pytest.mark.parametrize("option", [1, 0])
def test_udp_sends_complete_as_on_the_kernel(family: int, host: str, option: int) -> None:
    """Every zero-copy send call is numbered, an empty datagram's and a corked write's too; without the
    option MSG_ZEROCOPY is ignored."""
    assert udp_sends(NetsockSocket, family, host, option) == udp_sends(socket.socket, family, host, option)


@pytest.mark.usefixtures("stack")
def test_the_option_is_tcps_and_udps_as_on_the_kernel() -> None:
    def answers(make: Callable[..., Any]) -> list[Any]:
        seen = []
        for family, kind, proto in ((socket.AF_INET, socket.SOCK_STREAM, 0), (socket.AF_INET6, socket.SOCK_STREAM, 0),
                                    (socket.AF_INET, socket.SOCK_DGRAM, 0), (socket.AF_INET6, socket.SOCK_DGRAM, 0),
                                    (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)):
            with make(family, kind, proto) as sock:
                for value in (1, 2, -1, 0):
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, value)
                        seen.append(sock.getsockopt(socket.SOL_SOCKET, SO_ZEROCOPY))
                    except OSError as e:
                        seen.append(e.errno)
        return seen
    ours = answers(NetsockSocket)
    assert ours == answers(socket.socket)
    assert ours[-4:] == [errno.EOPNOTSUPP] * 4


@pytest.mark.usefixtures("stack")
def test_a_zero_copy_send_keeps_the_callers_buffer_until_its_completion() -> None:
    """The peer reads nothing, so its small window closes and the last sends' bytes wait in the sender: a
    change to a zero-copy send's buffer before its completion is what goes out (the reason for the contract),
    where a plain send's buffer was copied; the completion comes only once the peer has taken the bytes."""
    with tcp_pair(NetsockSocket, socket.AF_INET, "127.0.0.1") as (client, server):
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        client.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        filler = 100_000
        client.sendall(bytes(filler))
        gevent.sleep(0.05)
        assert unacknowledged(client) == 0 and client.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > filler
        plain, kept = bytearray(b"p" * 8), bytearray(b"k" * 8)
        assert [client.send(plain), client.send(kept, MSG_ZEROCOPY)] == [8, 8]
        gevent.sleep(0.05)
        with pytest.raises(BlockingIOError):
            client.recvmsg(100, 1024, ERRQUEUE_NOW)
        plain[:] = kept[:] = b"X" * 8
        received = bytearray()
        server.settimeout(5)
        while len(received) < filler + 16:
            received += server.recv(1 << 20)
        assert received[filler:] == b"p" * 8 + b"X" * 8
        for _ in range(100):
            if ready(client, select.POLLERR):
                break
            gevent.sleep(0.01)
        assert ready(client, select.POLLERR | select.POLLOUT) == select.POLLERR | select.POLLOUT   # (established)
        [(_, _, _, [(_, _, extended, _)])] = completions(client)
        assert extended == (0, 5, 0, 1, 0, 0, 0)


@pytest.mark.usefixtures("stack")
def test_a_send_that_waits_for_room_is_one_call_to_complete() -> None:
    """A blocking send larger than the send buffer queues its bytes over several waits, the first of them
    acknowledged before the last are queued: still one send call, one number, completed once all of it is
    acknowledged (Linux's one ubuf_info per sendmsg, held until the call returns)."""
    with tcp_pair(NetsockSocket, socket.AF_INET, "127.0.0.1") as (client, server):
        client.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        def read_all() -> None:
            got = 0
            while got < 300_004:
                got += len(server.recv(65536))
        reader = gevent.spawn(read_all)
        client.sendall(bytearray(300_000), MSG_ZEROCOPY)
        client.send(b"next", MSG_ZEROCOPY)
        reader.join(timeout=5)
        ranges = []
        while not ranges or ranges[-1][1] < 1:
            ranges += [entry[3][0][2][5:] for entry in completions(client)]
        assert ranges in ([(0, 1)], [(0, 0), (1, 1)])
