"""patches/socket.py: the socket module's replacements, on a loopback-only stack."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import gevent
import pytest
from gevent import socket as gevent_socket

from netsock.adapter import NetsockSocket
from netsock.adapter.runtime import build_stack, resolver, use_stack
from netsock.patches import socket as patched_socket
from netsock.stack import Stack

ORIGINALS = {name: getattr(socket, name) for _, name, _ in patched_socket._REPLACEMENTS}


@pytest.fixture
def stack() -> Iterator[Stack]:
    stack = build_stack()
    with use_stack(stack):
        patched_socket.patch()
        try:
            yield stack
        finally:
            patched_socket.unpatch()
            stack.close()


def echo_once(server: socket.socket) -> None:
    conn, _ = server.accept()
    with conn:
        conn.sendall(conn.recv(1024).upper())


def test_unpatch_restores_every_original() -> None:
    patched_socket.patch()
    patched_socket.patch()                      # idempotent: one layer to undo
    assert socket.socket is patched_socket.socket
    patched_socket.unpatch()
    assert {name: getattr(socket, name) for name in ORIGINALS} == ORIGINALS


def test_inet_sockets_are_netsock_and_others_the_kernels(stack: Stack) -> None:
    with socket.socket() as tcp, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp6, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        assert type(tcp) is NetsockSocket and type(udp6) is NetsockSocket
        assert type(unix) is gevent_socket.socket
        for sock in (tcp, udp6, unix):
            assert isinstance(sock, socket.socket)
        assert issubclass(NetsockSocket, socket.socket)
        assert not isinstance(object(), socket.socket)


def test_a_subclass_keeps_its_methods_on_either_implementation(stack: Stack) -> None:
    class Tagged(socket.socket):
        def tag(self) -> str:
            return f"{socket.AddressFamily(self.family).name}/{socket.SocketKind(self.type).name}"

    with Tagged(socket.AF_INET, socket.SOCK_STREAM) as inet, Tagged(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
        assert (inet.tag(), unix.tag()) == ("AF_INET/SOCK_STREAM", "AF_UNIX/SOCK_DGRAM")
        assert isinstance(inet, Tagged) and isinstance(inet, NetsockSocket)
        assert isinstance(unix, Tagged) and isinstance(unix, gevent_socket.socket)


def test_create_server_and_create_connection_by_name(stack: Stack) -> None:
    with socket.create_server(("localhost", 0)) as server:
        assert type(server) is NetsockSocket
        serving = gevent.spawn(echo_once, server)
        with socket.create_connection(("localhost", server.getsockname()[1]), timeout=5) as client:
            client.sendall(b"hello")
            assert client.recv(1024) == b"HELLO"
        serving.get(timeout=5)


def test_names_resolve_through_the_stacks_resolver(stack: Stack) -> None:
    resolver(stack).add_host("service.test", "127.0.0.1")
    assert socket.gethostbyname("service.test") == "127.0.0.1"
    assert socket.getaddrinfo("service.test", 80, socket.AF_INET, socket.SOCK_STREAM) == [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80))]
    assert socket.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV) == ("127.0.0.1", "80")
    with pytest.raises(socket.gaierror) as raised:
        socket.getaddrinfo("nowhere.invalid", 80)
    assert raised.value.errno == socket.EAI_NONAME
    with socket.create_server(("127.0.0.1", 0)) as server:
        serving = gevent.spawn(echo_once, server)
        with socket.create_connection(("service.test", server.getsockname()[1]), timeout=5) as client:
            client.sendall(b"by name")
            assert client.recv(1024) == b"BY NAME"
        serving.get(timeout=5)


def test_fromfd_and_fileno_argument_reach_the_same_connection(stack: Stack) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        serving = gevent.spawn(echo_once, server)
        client = socket.create_connection(server.getsockname(), timeout=5)
        duplicate = socket.fromfd(client.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        assert type(duplicate) is NetsockSocket and duplicate.fileno() != client.fileno()
        client.close()                          # the connection lives on in the duplicate
        duplicate.sendall(b"dup")
        assert duplicate.recv(1024) == b"DUP"
        adopted = socket.socket(fileno=duplicate.detach())
        assert type(adopted) is NetsockSocket and adopted.getpeername() == server.getsockname()
        adopted.close()
        serving.get(timeout=5)


def test_kernel_descriptors_stay_the_kernels(stack: Stack) -> None:
    left, right = socket.socketpair()
    with left, right:
        assert type(left) is gevent_socket.socket
        left.sendall(b"x")
        assert right.recv(1) == b"x"
        again = socket.fromfd(left.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
        with again:
            assert type(again) is gevent_socket.socket
            again.sendall(b"y")
            assert right.recv(1) == b"y"


def test_all_of_127_0_0_0_slash_8_is_local_as_on_linux(stack: Stack) -> None:
    with socket.create_server(("127.0.0.7", 0)) as server:
        serving = gevent.spawn(echo_once, server)
        with socket.socket() as client:
            client.bind(("127.0.0.9", 0))
            client.settimeout(5)
            client.connect(server.getsockname())
            assert client.getsockname()[0] == "127.0.0.9" and client.getpeername()[0] == "127.0.0.7"
            client.sendall(b"any loopback")
            assert client.recv(1024) == b"ANY LOOPBACK"
        serving.get(timeout=5)
    with socket.socket(socket.AF_INET6) as outside:
        with pytest.raises(OSError) as raised:
            outside.bind(("::2", 0))                  # ::1 is a /128: nothing else is local
        assert raised.value.errno == errno.EADDRNOTAVAIL
