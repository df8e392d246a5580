"""SO_ATTACH_REUSEPORT_CBPF and SO_DETACH_REUSEPORT_BPF on NetsockSocket beside the kernel's sockets over
127.0.0.1: a classic BPF program, attached by any member of a SO_REUSEPORT group (or by a socket before it
binds, for the group it founds), picks the member that gets each datagram or connection by its index, reading
the payload at offset 0; an index past the group goes by the flow's hash; a closed member's place is taken by
the last; and the option's errors."""

from __future__ import annotations

import ctypes
import socket
import struct
import time
from typing import Any

import gevent
import pytest

from netsock.adapter import NetsockSocket

from conftest import outcome

SO_ATTACH_REUSEPORT_CBPF, SO_DETACH_REUSEPORT_BPF = 51, 68
SOL_SOCKET = socket.SOL_SOCKET
_programs: list[Any] = []        # the instructions' buffers, alive while a sock_fprog points at them


def fprog(*instructions: tuple[int, int, int, int]) -> bytes:
    """A struct sock_fprog for ``instructions`` (code, jt, jf, k)."""
    buffer = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in instructions))
    _programs.append(buffer)
    return struct.pack("H6xQ", len(instructions), ctypes.addressof(buffer))


FIRST_BYTE = fprog((0x30, 0, 0, 0), (0x16, 0, 0, 0))       # ld b[0]; ret a
ONE = fprog((0x06, 0, 0, 1))                                 # ret #1
INVALID = fprog((0x06, 0, 0, 0), (0xFF, 0, 0, 0))


def pause(make: Any) -> None:
    (gevent.sleep if make is NetsockSocket else time.sleep)(0.02)


def udp_trace(make: Any) -> list[Any]:
    trace: list[Any] = []
    first = make(socket.AF_INET, socket.SOCK_DGRAM)
    trace.append(outcome(lambda: first.setsockopt(SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, FIRST_BYTE)))
    trace.append(outcome(lambda: first.setsockopt(SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)))
    first.setsockopt(SOL_SOCKET, socket.SO_REUSEPORT, 1)
    for option, value in [(SO_DETACH_REUSEPORT_BPF, 0), (SO_ATTACH_REUSEPORT_CBPF, FIRST_BYTE),
                          (SO_DETACH_REUSEPORT_BPF, 0), (SO_ATTACH_REUSEPORT_CBPF, FIRST_BYTE),
                          (SO_DETACH_REUSEPORT_BPF, b"\0"), (SO_ATTACH_REUSEPORT_CBPF, INVALID)]:
        trace.append(outcome(lambda: first.setsockopt(SOL_SOCKET, option, value)))
    trace.append([outcome(lambda: first.getsockopt(SOL_SOCKET, option)) for option in (51, 68)])
    members = [first]
    first.bind(("127.0.0.1", 0))
    port = first.getsockname()[1]
    for _ in range(2):
        member = make(socket.AF_INET, socket.SOCK_DGRAM)
        member.setsockopt(SOL_SOCKET, socket.SO_REUSEPORT, 1)
        member.bind(("127.0.0.1", port))
        members.append(member)

    def deliver(first_bytes: list[int]) -> list[tuple[int, int]]:
        with make(socket.AF_INET, socket.SOCK_DGRAM) as client:
            for value in first_bytes:
                client.sendto(bytes([value]) + b"datagram", ("127.0.0.1", port))
        pause(make)
        got = []
        for index, member in enumerate(members):
            member.setblocking(False)
            while True:
                try:
                    got.append((member.recv(100)[0], index))
                except BlockingIOError:
                    break
        return sorted(got)

    trace.append(deliver([0, 1, 2, 0, 2]))
    members[0].close()
    members = [members[2], members[1]]         # the last member takes the closed one's place
    trace.append(deliver([0, 1]))
    trace.append([outcome(lambda: members[0].setsockopt(SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)),
                  outcome(lambda: members[1].setsockopt(SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)),
                  outcome(lambda: members[1].setsockopt(SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, ONE))])
    trace.append(deliver([0, 0, 0]))
    with make(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        plain.bind(("127.0.0.1", 0))
        trace.append(outcome(lambda: plain.setsockopt(SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, ONE)))
    for member in members:
        member.close()
    return trace


@pytest.mark.usefixtures("stack")
def test_a_udp_group_is_steered_by_its_program_as_on_the_kernel() -> None:
    assert udp_trace(NetsockSocket) == udp_trace(socket.socket)


def tcp_trace(make: Any) -> list[int]:
    """Three listeners on one port, the program attached (before listen) to the first: which listener
    accepts each of four connections."""
    listeners = []
    port = 0
    for index in range(3):
        listener = make(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        port = listener.getsockname()[1]
        if index == 0:
            listener.setsockopt(SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, ONE)
        listener.listen()
        listener.setblocking(False)
        listeners.append(listener)
    clients = [make(socket.AF_INET, socket.SOCK_STREAM) for _ in range(4)]
    for client in clients:
        client.connect(("127.0.0.1", port))
    pause(make)
    accepted = []
    for index, listener in enumerate(listeners):
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                break
            conn.close()
            accepted.append(index)
    for sock in clients + listeners:
        sock.close()
    return accepted


@pytest.mark.usefixtures("stack")
def test_a_tcp_listener_group_is_steered_by_its_program_as_on_the_kernel() -> None:
    assert tcp_trace(NetsockSocket) == tcp_trace(socket.socket) == [1, 1, 1, 1]
