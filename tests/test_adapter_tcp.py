"""NetsockSocket over TCP, as CPython's socket on Linux behaves: echo servers in greenlets over
127.0.0.1 and ::1, dual-stack listeners, bulk transfers, makefile streams, half-close, resets,
refusals, the three blocking modes with their exact exceptions, connect_ex codes and TCP options."""

from __future__ import annotations

import _socket
import errno
import hashlib
import io
import os
import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import gevent
import pytest

from netsock.adapter import NetsockSocket
from netsock.patches import select as nselect
from netsock.transport.tcp import TCPState

LOOPBACKS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


def listener(family: int = socket.AF_INET, host: str = "127.0.0.1", backlog: int = 16) -> NetsockSocket:
    sock = NetsockSocket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(backlog)
    return sock


def connected_pair(family: int = socket.AF_INET, host: str = "127.0.0.1") -> tuple[NetsockSocket, NetsockSocket]:
    """(client, server) of one connection."""
    with listener(family, host) as server_socket:
        client = NetsockSocket(family, socket.SOCK_STREAM)
        client.connect(server_socket.getsockname()[:2])
        server, _ = server_socket.accept()
    return client, server


def echo_server(sock: NetsockSocket) -> gevent.Greenlet:
    """Serve one connection: echo everything until EOF."""
    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
    return gevent.spawn(serve)


def error_of(call) -> OSError:
    with pytest.raises(OSError) as info:
        call()
    return info.value


# --- data -----------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", LOOPBACKS)
def test_echo(family: int, host: str) -> None:
    with listener(family, host) as srv:
        server = echo_server(srv)
        with NetsockSocket(family, socket.SOCK_STREAM) as client:
            client.connect(srv.getsockname())
            assert client.getpeername() == srv.getsockname()
            for message in (b"hello", b"x" * 100_000, b"bye"):
                client.sendall(message)
                received = b""
                while len(received) < len(message):
                    received += client.recv(65536)
                assert received == message
            client.shutdown(socket.SHUT_WR)
            assert client.recv(10) == b""
        server.get(timeout=5)


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", LOOPBACKS)
def test_addresses_have_cpythons_shape(family: int, host: str) -> None:
    client, server = connected_pair(family, host)
    with client, server:
        if family == socket.AF_INET:
            assert client.getpeername() == server.getsockname() == ("127.0.0.1", server.getsockname()[1])
        else:
            assert client.getpeername() == server.getsockname() == ("::1", server.getsockname()[1], 0, 0)
        assert server.getpeername() == client.getsockname()


@pytest.mark.usefixtures("stack")
def test_ten_megabytes_arrive_intact() -> None:
    data = random.Random(7).randbytes(10 << 20)
    client, server = connected_pair()

    def receive() -> str:
        digest = hashlib.sha256()
        buffer = bytearray(1 << 20)
        while count := server.recv_into(buffer):
            digest.update(memoryview(buffer)[:count])
        return digest.hexdigest()

    with client, server:
        receiver = gevent.spawn(receive)
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        assert receiver.get(timeout=30) == hashlib.sha256(data).hexdigest()


@pytest.mark.usefixtures("stack")
def test_makefile_line_protocol() -> None:
    client, server = connected_pair()

    def serve() -> None:
        with server, server.makefile("rw", encoding="utf-8", newline="\n") as stream:
            for line in stream:
                stream.write(line.upper())
                stream.flush()

    worker = gevent.spawn(serve)
    with client:
        reader = client.makefile("r", encoding="utf-8")
        writer = client.makefile("wb")
        for word in ("hello", "wörld", "x" * 20000):
            writer.write(f"{word}\n".encode())
            writer.flush()
            assert reader.readline() == f"{word.upper()}\n"
        writer.close()
        client.close()                  # the streams keep the socket open (CPython's _io_refs)
        assert client.fileno() != -1
        client.shutdown(socket.SHUT_WR)
        assert reader.read() == ""
        reader.close()                  # the last stream closes it
        assert client.fileno() == -1
    worker.get(timeout=5)


@pytest.mark.usefixtures("stack")
def test_half_close() -> None:
    client, server = connected_pair()
    with client, server:
        client.sendall(b"request")
        client.shutdown(socket.SHUT_WR)
        assert server.recv(100) == b"request"
        assert server.recv(100) == b""
        server.sendall(b"response")            # the other direction still works
        server.close()
        assert client.recv(100) == b"response"
        assert client.recv(100) == b""
        assert isinstance(error_of(lambda: client.send(b"more")), BrokenPipeError)


@pytest.mark.usefixtures("stack")
def test_peek_waitall_and_the_other_receive_calls() -> None:
    client, server = connected_pair()
    with client, server:
        client.sendall(b"abcdef")
        assert server.recv(3, socket.MSG_PEEK) == b"abc"
        assert server.recvfrom(2) == (b"ab", None)
        buffer = bytearray(10)
        assert server.recv_into(buffer, 2) == 2 and buffer[:2] == b"cd"
        assert server.recvmsg(10) == (b"ef", [], 0, None)
        # Without Nagle: "6" must not wait for the ACK of "12345", which the stack sends when this
        # greenlet next yields.
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.sendmsg([b"12", memoryview(b"34"), bytearray(b"5")])
        client.sendto(b"6", ("192.0.2.1", 9))  # the address of a stream socket is ignored
        assert server.recvfrom_into(buffer) == (6, None) and buffer[:6] == b"123456"

        def slow_writer() -> None:
            for piece in (b"wa", b"it", b"all"):
                gevent.sleep(0.01)
                client.send(piece)
        writer = gevent.spawn(slow_writer)
        assert server.recv(7, socket.MSG_WAITALL) == b"waitall"
        writer.get(timeout=5)


@pytest.mark.usefixtures("stack")
def test_sendfile(tmp_path) -> None:
    path = tmp_path / "payload"
    path.write_bytes(random.Random(3).randbytes(300_000))
    client, server = connected_pair()
    with client, server, open(path, "rb") as file:
        received = gevent.spawn(lambda: server.recv(1 << 20, socket.MSG_WAITALL))
        assert client.sendfile(file, offset=1000, count=200_000) == 200_000
        assert file.tell() == 201_000
        with open(path) as text, pytest.raises(ValueError, match="file should be opened in binary mode"):
            client.sendfile(text)
        client.shutdown(socket.SHUT_WR)
        assert received.get(timeout=5) == path.read_bytes()[1000:201_000]


@pytest.mark.usefixtures("stack")
def test_sendfile_reads_what_has_no_file_behind_it() -> None:
    """As CPython's (checked against it on the kernel): the descriptor path gives up on an object
    without a descriptor, whose read() serves instead, and sends nothing from a pipe (whose size
    fstat gives as 0)."""
    client, server = connected_pair()
    read_end, write_end = os.pipe()
    with client, server, open(read_end, "rb") as pipe:
        os.write(write_end, b"in the pipe")
        os.close(write_end)
        with pytest.raises(socket._GiveupOnSendfile):
            client._sendfile_use_sendfile(io.BytesIO(b"in memory"))
        assert client.sendfile(io.BytesIO(b"in memory")) == 9
        assert client.sendfile(pipe) == 0
        client.shutdown(socket.SHUT_WR)
        assert server.recv(100, socket.MSG_WAITALL) == b"in memory"


@pytest.mark.usefixtures("stack")
def test_close_with_so_linger_waits_until_everything_sent_is_acknowledged_or_the_time_is_up() -> None:
    """As Linux's close() (checked on the kernel: 1.01 s with a peer that takes nothing, 0.04 s with
    one that does, O_NONBLOCK or not): the connection goes on closing by itself afterwards."""
    client, server = connected_pair()
    with server:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 1))
        client.send(b"taken at once")
        endpoint = client._core.ep
        client.close()                                  # returns once the FIN is acknowledged
        assert endpoint.state not in (TCPState.FIN_WAIT1, TCPState.CLOSING, TCPState.LAST_ACK)
        assert server.recv(100, socket.MSG_WAITALL) == b"taken at once"

    client, server = connected_pair()
    with server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)    # (less than the sender's buffer)
        client.setblocking(False)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 1))
        with pytest.raises(BlockingIOError):
            while True:                                 # until the peer, reading nothing, has no room
                client.send(bytes(1 << 16))
        endpoint = client._core.ep
        start = time.monotonic()
        client.close()
        assert time.monotonic() - start >= 1            # the whole linger time: nothing more got through
        assert endpoint.state is TCPState.FIN_WAIT1


@pytest.mark.usefixtures("stack")
def test_ancillary_data_is_not_supported_yet() -> None:
    client, server = connected_pair()
    with client, server:
        assert error_of(lambda: client.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"\0" * 4)])
                        ).errno == errno.EOPNOTSUPP
        with pytest.raises(TypeError, match="must be sequence of length 3, not 2"):
            client.sendmsg([b"x"], [(1, 2)])


@pytest.mark.usefixtures("stack")
def test_urgent_data_through_the_socket_calls() -> None:
    """MSG_OOB and SO_OOBINLINE over loopback: the calls' shapes and errors (what Linux gives the
    same program is checked in integration/test_dropin_urgent.py)."""
    client, server = connected_pair()
    with client, server:
        client.setblocking(False)
        assert error_of(lambda: client.recv(1, socket.MSG_OOB)).errno == errno.EINVAL     # none yet
        server.sendall(b"ab")
        assert server.send(b"!", socket.MSG_OOB) == 1
        server.sendall(b"cd")
        gevent.sleep(0.01)
        assert nselect.select([], [], [client], 0)[2] == [client]                      # "exceptional"
        assert client.recv(10) == b"ab"
        assert client.recvmsg(1, 0, socket.MSG_OOB | socket.MSG_PEEK)[::2] == (b"!", socket.MSG_OOB)
        buffer = bytearray(4)
        assert client.recv_into(buffer, 1, socket.MSG_OOB) == 1 and buffer[:1] == b"!"
        assert error_of(lambda: client.recv(1, socket.MSG_OOB)).errno == errno.EINVAL
        assert nselect.select([], [], [client], 0)[2] == []
        assert client.recv(10) == b"cd"
        # Pointed at, not yet arrived: EAGAIN, at once even on a blocking socket, as Linux answers.
        endpoint = client._core.ep
        endpoint.rcv.urg_seq = endpoint.rcv.nxt + 5
        client.setblocking(True)
        assert isinstance(error_of(lambda: client.recv(1, socket.MSG_OOB)), BlockingIOError)
        client.settimeout(0.05)         # a timeout: CPython waits for POLLIN first, then gives up
        assert isinstance(error_of(lambda: client.recv(1, socket.MSG_OOB)), TimeoutError)
        endpoint.rcv.urg_seq = -1
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE) == 0
        client.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE) == 1
        server.send(b"X", socket.MSG_OOB)
        assert client.recv(10) == b"X"
        client.setblocking(False)
        assert error_of(lambda: client.recv(1, socket.MSG_OOB)).errno == errno.EINVAL


# (level, option, value set): the TCP socket options a program may set and read back, each compared
# with what the kernel's own socket makes of it (the edges are Linux's: EINVAL ranges, 0 meaning the
# default, the least window clamp, the longest FIN-WAIT-2).
KERNEL_COMPARED_OPTIONS = [
    *((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, v) for v in (-1, 0, 1, 5000, 10**9)),
    *((socket.IPPROTO_TCP, socket.TCP_SYNCNT, v) for v in (-1, 0, 1, 3, 127, 128)),
    *((socket.IPPROTO_TCP, socket.TCP_LINGER2, v) for v in (-1, 0, 1, 30, 121, 1000)),
    *((socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, v) for v in (0, 1, 100_000)),
    *((socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, v) for v in (-1, 0, 1, 16384)),
    *((socket.IPPROTO_TCP, socket.TCP_FASTOPEN, v) for v in (-1, 0, 5)),
    *((socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, v) for v in (-1, 0, 1, 2, 5, 8, 100, 1000, 100_000)),
    *((socket.SOL_SOCKET, socket.SO_RCVLOWAT, v) for v in (0, 1, 10, 65536)),
]


def outcome(sock: Any, level: int, option: int, value: int) -> tuple[str, int]:
    try:
        sock.setsockopt(level, option, value)
    except OSError as error:
        return "set failed", error.errno or 0
    return "reads back", sock.getsockopt(level, option)


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize(("level", "option", "value"), KERNEL_COMPARED_OPTIONS)
def test_tcp_options_set_and_read_back_as_on_the_kernel(level: int, option: int, value: int) -> None:
    with closing(_socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as kernel, NetsockSocket() as ours:
        assert outcome(ours, level, option, value) == outcome(kernel, level, option, value)


@pytest.mark.usefixtures("stack")
def test_tcp_option_defaults_are_the_kernels() -> None:
    names = [socket.TCP_USER_TIMEOUT, socket.TCP_SYNCNT, socket.TCP_LINGER2, socket.TCP_WINDOW_CLAMP,
             socket.TCP_NOTSENT_LOWAT, socket.TCP_FASTOPEN, socket.TCP_DEFER_ACCEPT]
    with closing(_socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as kernel, NetsockSocket() as ours:
        assert [ours.getsockopt(socket.IPPROTO_TCP, n) for n in names] == \
            [kernel.getsockopt(socket.IPPROTO_TCP, n) for n in names]
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        # "As much as can be": half the largest receive buffer (Linux: of tcp_rmem's, here netsock's).
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, -1)
        largest = ours._core.ep.proto.max_receive_buffer_size
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == largest // 2


@pytest.mark.usefixtures("stack")
def test_rcvlowat_and_notsent_lowat_move_readiness_and_reads() -> None:
    client, server = connected_pair()
    with client, server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 10)
        client.sendall(b"12345")
        gevent.sleep(0.01)
        assert nselect.select([server], [], [], 0)[0] == []              # 5 bytes: not yet readable
        client.sendall(b"67890")
        gevent.sleep(0.01)
        assert nselect.select([server], [], [], 0)[0] == [server]
        assert server.recv(100) == b"1234567890"
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 1)
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 1)
        assert nselect.select([], [client], [], 0)[1] == [client]         # nothing unsent


# --- connection setup and teardown --------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", LOOPBACKS)
def test_connecting_to_a_closed_port_is_refused(family: int, host: str) -> None:
    with NetsockSocket(family) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]          # a port nobody listens on
    with NetsockSocket(family) as s:
        err = error_of(lambda: s.connect((host, port)))
        assert isinstance(err, ConnectionRefusedError) and err.args == (errno.ECONNREFUSED, "Connection refused")
    with NetsockSocket(family) as s:
        assert s.connect_ex((host, port)) == errno.ECONNREFUSED
    with NetsockSocket(family) as s:
        assert isinstance(error_of(lambda: s.connect((host, 0))), ConnectionRefusedError)


@pytest.mark.usefixtures("stack")
def test_non_blocking_connect() -> None:
    with listener() as srv, NetsockSocket() as s:
        s.setblocking(False)
        assert s.connect_ex(srv.getsockname()) == errno.EINPROGRESS
        assert select.select([], [s.fileno()], [], 0)[1]
        gevent.sleep(0)
        assert s.connect_ex(srv.getsockname()) == 0             # the completion, reported once
        assert s.connect_ex(srv.getsockname()) == errno.EISCONN
        assert isinstance(error_of(lambda: s.connect(srv.getsockname())), OSError)
        srv.accept()[0].close()


@pytest.mark.usefixtures("stack")
def test_failed_non_blocking_connect_reports_through_so_error() -> None:
    with NetsockSocket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()
    with NetsockSocket() as s:
        s.setblocking(False)
        err = error_of(lambda: s.connect(closed))
        assert isinstance(err, BlockingIOError) and err.errno == errno.EINPROGRESS
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0       # reading it clears it
        assert s.connect_ex(closed) == errno.ECONNABORTED


@pytest.mark.usefixtures("stack")
def test_connect_timeout_and_connect_ex_timeout() -> None:
    with listener(backlog=0) as srv:
        first = NetsockSocket()
        first.connect(srv.getsockname())       # fills the accept queue (backlog + 1): further SYNs are dropped
        with NetsockSocket() as s:
            s.settimeout(0.05)
            err = error_of(lambda: s.connect(srv.getsockname()))
            assert type(err) is TimeoutError and err.args == ("timed out",)
            assert s.connect_ex(srv.getsockname()) == errno.EALREADY
        with NetsockSocket() as s:
            s.settimeout(0.05)
            assert s.connect_ex(srv.getsockname()) == errno.EAGAIN    # CPython's SOCK_TIMEOUT_ERR
        first.close()


@pytest.mark.usefixtures("stack")
def test_connected_socket_misuse() -> None:
    client, server = connected_pair()
    with client, server:
        assert error_of(lambda: client.connect(server.getsockname())).errno == errno.EISCONN
        assert client.connect_ex(server.getsockname()) == errno.EISCONN
        assert error_of(lambda: client.bind(("127.0.0.1", 0))).errno == errno.EINVAL
        assert error_of(client.listen).errno == errno.EINVAL
        assert error_of(client.accept).errno == errno.EINVAL
        assert error_of(lambda: client.shutdown(7)).errno == errno.EINVAL


@pytest.mark.usefixtures("stack")
def test_unconnected_socket_misuse() -> None:
    with NetsockSocket() as s:
        assert isinstance(error_of(lambda: s.send(b"x")), BrokenPipeError)    # Linux: EPIPE, not ENOTCONN
        assert error_of(lambda: s.recv(1)).errno == errno.ENOTCONN
        assert error_of(lambda: s.shutdown(socket.SHUT_RDWR)).errno == errno.ENOTCONN
        assert error_of(s.accept).errno == errno.EINVAL
        assert s.recv(0) == b""


@pytest.mark.usefixtures("stack")
def test_peer_reset() -> None:
    client, server = connected_pair()
    with server:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()                          # linger 0: RST
        err = error_of(lambda: server.recv(10))
        assert isinstance(err, ConnectionResetError) and err.args == (errno.ECONNRESET, "Connection reset by peer")
        assert server.recv(10) == b""           # reported once
        assert isinstance(error_of(lambda: server.send(b"x")), BrokenPipeError)


@pytest.mark.usefixtures("stack")
def test_address_in_use_and_reuse() -> None:
    with listener() as first, NetsockSocket() as second:
        assert error_of(lambda: second.bind(first.getsockname())).errno == errno.EADDRINUSE
    with NetsockSocket() as a, NetsockSocket() as b:
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        a.bind(("127.0.0.1", 0))
        b.bind(a.getsockname())                 # shared, but only one may listen
        a.listen()
        assert error_of(b.listen).errno == errno.EADDRINUSE


# --- blocking modes -----------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_accept_timeout_and_non_blocking_accept() -> None:
    with listener() as srv:
        srv.settimeout(0.05)
        err = error_of(srv.accept)
        assert type(err) is TimeoutError and err.args == ("timed out",)
        srv.setblocking(False)
        err = error_of(srv.accept)
        assert isinstance(err, BlockingIOError) and err.args == (errno.EAGAIN, "Resource temporarily unavailable")
        with NetsockSocket() as client:
            client.connect(srv.getsockname())
            conn, address = srv.accept()
            with conn:
                assert address == client.getsockname()
                assert conn.gettimeout() is None        # accepted sockets block, as CPython's


@pytest.mark.usefixtures("stack")
def test_receive_timeout_non_blocking_and_dontwait() -> None:
    client, server = connected_pair()
    with client, server:
        server.settimeout(0.05)
        assert error_of(lambda: server.recv(1)).args == ("timed out",)
        server.setblocking(True)
        assert isinstance(error_of(lambda: server.recv(1, socket.MSG_DONTWAIT)), BlockingIOError)
        server.setblocking(False)
        assert error_of(lambda: server.recv(1)).errno == errno.EAGAIN
        assert error_of(lambda: server.recv_into(bytearray(1))).errno == errno.EAGAIN
        server.setblocking(True)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 50000))
        assert isinstance(error_of(lambda: server.recv(1)), BlockingIOError)   # SO_RCVTIMEO: EAGAIN
        client.sendall(b"z")
        assert server.recv(1) == b"z"


@pytest.mark.usefixtures("stack")
def test_a_full_send_buffer() -> None:
    with NetsockSocket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)    # inherited by the accepted socket
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        client = NetsockSocket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.connect(srv.getsockname())
        server, _ = srv.accept()
    with client, server:
        chunk = b"x" * 100_000
        sent = [client.send(chunk, socket.MSG_DONTWAIT)]
        with pytest.raises(BlockingIOError):      # the peer's window and our buffer fill up
            while len(sent) < 10:
                sent.append(client.send(chunk, socket.MSG_DONTWAIT))
        assert 0 < sum(sent) < 10 * len(chunk)
        client.settimeout(0.05)
        assert error_of(lambda: client.sendall(chunk)).args == ("timed out",)
        client.setblocking(True)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 50000))
        assert isinstance(error_of(lambda: client.send(chunk)), BlockingIOError)    # SO_SNDTIMEO: EAGAIN
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))

        def drain() -> int:
            total = 0
            while data := server.recv(65536):
                total += len(data)
            return total
        reader = gevent.spawn(drain)
        assert client.send(chunk) == len(chunk)     # a blocking send queues all of it
        client.shutdown(socket.SHUT_WR)
        assert reader.get(timeout=10) > len(chunk)


@pytest.mark.usefixtures("stack")
def test_closing_wakes_a_greenlet_blocked_on_the_socket() -> None:
    client, server = connected_pair()
    with client:
        waiter = gevent.spawn(lambda: error_of(lambda: server.recv(10)))
        gevent.sleep(0.01)
        server.close()
        assert waiter.get(timeout=5).errno == errno.EBADF


# --- dual stack -------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_ipv6_listener_accepts_ipv4_clients_as_mapped_addresses() -> None:
    with listener(socket.AF_INET6, "::") as srv:
        port = srv.getsockname()[1]
        server = echo_server(srv)
        with NetsockSocket(socket.AF_INET) as client:
            client.connect(("127.0.0.1", port))
            client.sendall(b"over IPv4")
            assert client.recv(100) == b"over IPv4"
            client.shutdown(socket.SHUT_WR)
            assert client.recv(100) == b""
        server.get(timeout=5)
        with NetsockSocket(socket.AF_INET) as client:
            client.connect(("127.0.0.1", port))
            conn, address = srv.accept()
            with conn:
                assert address == ("::ffff:127.0.0.1", client.getsockname()[1], 0, 0)
                assert conn.getsockname() == ("::ffff:127.0.0.1", port, 0, 0)
                assert conn.family == socket.AF_INET6
        with NetsockSocket(socket.AF_INET6) as client:        # IPv6 clients still reach it
            client.connect(("::1", port))
            conn, address = srv.accept()
            conn.close()
            assert address[0] == "::1"


@pytest.mark.usefixtures("stack")
def test_a_dual_stack_socket_holds_its_port_for_ipv4() -> None:
    with NetsockSocket(socket.AF_INET6) as s6, NetsockSocket(socket.AF_INET) as s4:
        s6.bind(("::", 0))
        assert error_of(lambda: s4.bind(("127.0.0.1", s6.getsockname()[1]))).errno == errno.EADDRINUSE
    with NetsockSocket(socket.AF_INET6) as s6, NetsockSocket(socket.AF_INET) as s4:
        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s6.bind(("::", 0))
        s4.bind(("127.0.0.1", s6.getsockname()[1]))           # V6ONLY: the IPv4 port is free
        assert error_of(lambda: s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)).errno == errno.EINVAL


@pytest.mark.usefixtures("stack")
def test_a_v6only_listener_refuses_ipv4() -> None:
    with NetsockSocket(socket.AF_INET6) as srv:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        assert srv.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        srv.bind(("::", 0))
        srv.listen()
        with NetsockSocket(socket.AF_INET) as client:
            assert client.connect_ex(("127.0.0.1", srv.getsockname()[1])) == errno.ECONNREFUSED


@pytest.mark.usefixtures("stack")
def test_ipv6_socket_connects_to_a_mapped_address() -> None:
    with listener() as srv:
        with NetsockSocket(socket.AF_INET6) as client:
            client.connect(("::ffff:127.0.0.1", srv.getsockname()[1]))
            conn, address = srv.accept()
            with conn:
                assert address == ("127.0.0.1", client.getsockname()[1])
                assert client.getpeername() == ("::ffff:127.0.0.1", srv.getsockname()[1], 0, 0)
                assert client.getsockname()[0] == "::ffff:127.0.0.1"
                client.sendall(b"mapped")
                assert conn.recv(10) == b"mapped"
        with NetsockSocket(socket.AF_INET6) as client:
            client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            assert error_of(lambda: client.connect(("::ffff:127.0.0.1", srv.getsockname()[1]))).errno \
                == errno.ENETUNREACH


# --- TCP options --------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_tcp_options() -> None:
    with NetsockSocket() as s:
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 5)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) == 536
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1000)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) == 1000
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7200
        for name, value in ((socket.TCP_KEEPIDLE, 30), (socket.TCP_KEEPINTVL, 5), (socket.TCP_KEEPCNT, 3),
                            (socket.TCP_CORK, 1), (socket.TCP_QUICKACK, 1)):
            s.setsockopt(socket.IPPROTO_TCP, name, value)
            assert s.getsockopt(socket.IPPROTO_TCP, name) == value
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16) == b"cubic".ljust(16, b"\0")
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0") == b"reno"
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xFF)
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == 0xFC          # TCP keeps the ECN bits
        for call, code in ((lambda: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"nope"), errno.ENOENT),
                           (lambda: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 0), errno.EINVAL),
                           (lambda: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 40000), errno.EINVAL),
                           (lambda: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 200), errno.EINVAL),
                           (lambda: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 10), errno.EINVAL),
                           (lambda: s.setsockopt(socket.IPPROTO_TCP, 9999, 1), errno.ENOPROTOOPT),
                           (lambda: s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 5), errno.EINVAL),
                           (lambda: s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, bytes(8)), errno.EPROTO)):
            assert error_of(call).errno == code
    with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert error_of(lambda: udp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)).errno == errno.ENOPROTOOPT
        assert error_of(lambda: udp.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)).errno == errno.EOPNOTSUPP


@pytest.mark.usefixtures("stack")
def test_tcp_info_and_listening_state() -> None:
    with listener() as srv:
        assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with NetsockSocket() as client:
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0] == 7      # TCP_CLOSE
            client.connect(srv.getsockname())
            conn, _ = srv.accept()
            with conn:
                info = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
                assert len(info) == 104 and info[0] == 1                              # TCP_ESTABLISHED
                fields = struct.unpack("8B24I", info)
                assert fields[5] & 1                 # tcpi_options: timestamps
                assert fields[8 + 2] > 0             # tcpi_snd_mss
                assert fields[8 + 18] == 10          # tcpi_snd_cwnd: the initial window
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1     # inherited


TCP_INFO_FIELDS = struct.Struct("8B24I4Q6IQ3Q2I2Q6I2HI7I2H")   # Linux 6.18's struct tcp_info, 280 bytes
(BYTES_ACKED, BYTES_RECEIVED, SEGS_OUT, SEGS_IN, NOTSENT, MIN_RTT, BYTES_SENT, BYTES_RETRANS, SND_WND,
 RCV_WND, TOTAL_RTO) = 34, 35, 36, 37, 38, 39, 48, 49, 53, 54, 56
LAST_DATA_SENT, LAST_DATA_RECV, LAST_ACK_RECV, PACING_RATE, DELIVERY_RATE = 17, 19, 20, 32, 42
# tcpi_ca_state, _retransmits, _probes, _backoff, the flags byte (delivery_rate_app_limited), _ato, _data_segs_in,
# _data_segs_out, _delivered
STATE_FIELDS = (1, 2, 3, 4, 7, 9, 40, 41, 46)
REORDERING = 28


def tcp_info_after_an_exchange(client: Any, server: Any) -> tuple[Any, ...]:
    """The client's TCP_INFO after it sent 5,000 bytes, the server read them and answered 3,000."""
    client.sendall(b"q" * 5000)
    got = 0
    while got < 5000:
        got += len(server.recv(65536))
    server.sendall(b"a" * 3000)
    got = 0
    while got < 3000:
        got += len(client.recv(65536))
    time.sleep(0.05)        # (the server's ACK of the answer lands)
    info = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)
    return len(info), TCP_INFO_FIELDS.unpack(info) if len(info) == TCP_INFO_FIELDS.size else ()


@pytest.mark.usefixtures("stack")
def test_tcp_info_counts_bytes_and_windows_as_the_kernel() -> None:
    """Linux's whole struct (as long as the kernel's), the byte counts as it gives them over loopback."""
    with closing(_socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as kernel_listener:
        kernel_listener.bind(("127.0.0.1", 0))
        kernel_listener.listen()
        with closing(_socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as kernel_client:
            kernel_client.connect(kernel_listener.getsockname())
            kernel_server = _socket.socket(fileno=kernel_listener._accept()[0])
            with closing(kernel_server):
                kernel_size, kernel = tcp_info_after_an_exchange(kernel_client, kernel_server)
    client, server = connected_pair()
    with client, server:
        size, ours = tcp_info_after_an_exchange(client, server)
    assert size == kernel_size
    if kernel_size < TCP_INFO_FIELDS.size:
        pytest.skip(f"this kernel's struct tcp_info is {kernel_size} bytes")
    for fields in (kernel, ours):
        # (bytes_acked counts the SYN the peer acknowledged, as Linux's tcp_snd_una_update does)
        counts = (fields[BYTES_ACKED], fields[BYTES_RECEIVED], fields[NOTSENT], fields[BYTES_SENT])
        assert counts == (5001, 3000, 0, 5000)
        assert fields[BYTES_RETRANS] == fields[TOTAL_RTO] == 0
        assert fields[SEGS_OUT] >= 2 and fields[SEGS_IN] >= 2 and fields[MIN_RTT] > 0     # (the handshake, the data)
        assert fields[SND_WND] > 60000 and fields[RCV_WND] > 60000        # in bytes, scaled
    assert ours[8 + 23] == kernel[8 + 23] == 0                          # tcpi_total_retrans, before them
    # Open, nothing lost or probed; the one segment each way app-limited; the SYN and the data delivered.
    assert [ours[i] for i in STATE_FIELDS] == [kernel[i] for i in STATE_FIELDS] == [0, 0, 0, 0, 1, 40000, 1, 1, 2]
    # The reordering allowed for starts at 3 (the kernel's grows when it sees reordering, which a loaded
    # loopback can show it).
    assert ours[REORDERING] == 3 <= kernel[REORDERING]
    for fields in (kernel, ours):
        assert all(30 <= fields[i] < 1000 for i in (LAST_DATA_SENT, LAST_DATA_RECV, LAST_ACK_RECV))    # ms ago
        assert fields[DELIVERY_RATE] > 0 and fields[PACING_RATE] > 0


TCP_RTO_MAX_MS = 44


@contextmanager
def accepted_connection(listener: Any) -> Iterator[tuple[Any, Any]]:
    """``listener`` (a kernel or netsock socket, not yet bound) bound on loopback and listening: a client's
    connection to it, and the one accepted; closed after."""
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    with closing(type(listener)(socket.AF_INET, socket.SOCK_STREAM)) as client:
        client.connect(listener.getsockname())
        accepted = listener.accept()[0]
        with closing(accepted):
            yield client, accepted


@pytest.mark.usefixtures("stack")
def test_tcp_rto_max_ms_takes_what_the_kernel_takes_and_is_inherited() -> None:
    def answers(make: Any) -> list[Any]:
        seen = []
        with closing(make(socket.AF_INET, socket.SOCK_STREAM)) as listener:
            seen.append(listener.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS))
            for value in (999, 120_001, -1, 120_000, 1000, 5000):
                try:
                    listener.setsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS, value)
                    seen.append(listener.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS))
                except OSError as error:
                    seen.append(errno.errorcode[error.errno])
            with accepted_connection(listener) as (_, accepted):
                seen.append(accepted.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS))
        return seen
    assert answers(NetsockSocket) == answers(socket.socket) == [120_000, "EINVAL", "EINVAL", "EINVAL", 120_000,
                                                                1000, 5000, 5000]


BUSY_TIME, RWND_LIMITED, SNDBUF_LIMITED = 43, 44, 45


def held_back_by_the_window(make: Any) -> tuple[int, int, int]:
    """A sender's TCP_INFO busy, peer-window-limited and send-buffer-limited µs after it filled a peer that
    reads nothing and waited 200 ms."""
    with closing(make(socket.AF_INET, socket.SOCK_STREAM)) as listener, accepted_connection(listener) as (client, _):
        client.setblocking(False)
        blocked = 0
        while blocked < 2:      # (until the send buffer stays full: the peer's is full too)
            try:
                client.send(bytes(65536))
                blocked = 0
            except BlockingIOError:
                blocked += 1
                gevent.sleep(0.05)
        gevent.sleep(0.2)
        fields = TCP_INFO_FIELDS.unpack(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_FIELDS.size))
        return fields[BUSY_TIME], fields[RWND_LIMITED], fields[SNDBUF_LIMITED]


@pytest.mark.usefixtures("stack")
def test_the_time_a_full_peer_holds_the_sender_back_is_counted_as_by_the_kernel() -> None:
    """Linux's chronograph: RWND_LIMITED while the peer's window is shut (not SNDBUF_LIMITED: what was
    written is not all sent), part of the busy time."""
    for make in (socket.socket, NetsockSocket):
        busy, rwnd, sndbuf = held_back_by_the_window(make)
        assert busy >= rwnd >= 150_000 and sndbuf == 0, make


@pytest.mark.usefixtures("stack")
def test_a_connection_reset_before_accept_is_still_accepted() -> None:
    """A connection reset while in the accept queue stays there (Linux's): accept() returns it, its reads
    give what came before the reset, then ECONNRESET, then end of stream; one reset before any data
    fails its first read — the kernel's answers over loopback."""
    traces = []
    for make in (socket.socket, NetsockSocket):
        trace: list[Any] = []
        with closing(make()) as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            server.settimeout(2)
            for data in (b"then a reset", b""):
                client = make()
                client.connect(server.getsockname())
                if data:
                    client.sendall(data)
                gevent.sleep(0.05)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                gevent.sleep(0.05)
                accepted, _ = server.accept()
                with accepted:
                    for _ in range(3 if data else 1):
                        try:
                            trace.append(accepted.recv(100))
                        except OSError as error:
                            trace.append(errno.errorcode[error.errno])
        traces.append(trace)
    assert traces[0] == traces[1] == [b"then a reset", "ECONNRESET", b"", "ECONNRESET"]
