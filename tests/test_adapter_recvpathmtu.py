"""IPV6_RECVPATHMTU on NetsockSocket beside the kernel's sockets over ::1: a send that IPV6_DONTFRAG refuses for
the path MTU (EMSGSIZE) leaves the path MTU for the next read, as an empty datagram from the destination with
an IPV6_PATHMTU control message (struct ip6_mtuinfo); only the latest is kept, a peek takes it too, and with the
option off it waits. The loopback's MTU is 65,536 on both."""

from __future__ import annotations

import socket
from contextlib import closing
from typing import Any

import pytest

from netsock.adapter import NetsockSocket

from conftest import outcome

IPV6_RECVPATHMTU, IPV6_DONTFRAG = 60, 62
IPV6 = socket.IPPROTO_IPV6


def trace(make: Any) -> list[Any]:
    steps: list[Any] = []
    with closing(make(socket.AF_INET6, socket.SOCK_DGRAM)) as sock, closing(make(socket.AF_INET6,
                                                                                  socket.SOCK_STREAM)) as stream:
        sock.bind(("::1", 0))
        steps.append([outcome(lambda: sock.getsockopt(IPV6, IPV6_RECVPATHMTU)),
                      outcome(lambda: sock.setsockopt(IPV6, IPV6_RECVPATHMTU, 1)),
                      outcome(lambda: sock.getsockopt(IPV6, IPV6_RECVPATHMTU))])
        sock.setsockopt(IPV6, IPV6_DONTFRAG, 1)
        sock.setblocking(False)
        for size in (65_500, 65_400):
            steps.append(outcome(lambda: sock.sendto(bytes(size), ("::1", 9))))
        steps += [outcome(lambda: sock.recvmsg(100, 200)) for _ in range(2)]
        steps.append(outcome(lambda: sock.sendto(bytes(65_500), ("::1", 9))))
        sock.setsockopt(IPV6, IPV6_RECVPATHMTU, 0)
        steps.append(outcome(lambda: sock.recvmsg(100, 200)))
        sock.setsockopt(IPV6, IPV6_RECVPATHMTU, 1)
        steps += [outcome(lambda: sock.recvmsg(100, 200, socket.MSG_PEEK)), outcome(lambda: sock.recvmsg(100, 200))]
        steps.append([outcome(lambda: stream.setsockopt(IPV6, IPV6_RECVPATHMTU, 1)),
                      outcome(lambda: stream.getsockopt(IPV6, IPV6_RECVPATHMTU))])
    return steps


@pytest.mark.usefixtures("stack")
def test_a_refused_send_leaves_its_path_mtu_for_the_next_read_as_on_the_kernel() -> None:
    ours, theirs = trace(NetsockSocket), trace(socket.socket)
    assert ours == theirs
    assert theirs[3][1][0][:2] == (IPV6, 61)        # (the report was read: an IPV6_PATHMTU message)
