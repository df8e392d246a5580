"""NetsockSocket over UDP and ICMP echo ("ping") datagram sockets, as CPython's socket on Linux
behaves: echo over 127.0.0.1 and ::1, Linux's truncation semantics, connected sockets and ICMP
errors, dual-stack sockets, blocking modes, multicast options and group membership."""

from __future__ import annotations

import _socket
import errno
import socket
import struct
from contextlib import closing

import gevent
import pytest

from netsock.adapter import NetsockSocket

LOOPBACKS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


def udp(family: int = socket.AF_INET, host: str | None = None) -> NetsockSocket:
    sock = NetsockSocket(family, socket.SOCK_DGRAM)
    if host is not None:
        sock.bind((host, 0))
    return sock


def error_of(call) -> OSError:
    with pytest.raises(OSError) as info:
        call()
    return info.value


# --- data -----------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", LOOPBACKS)
def test_echo(family: int, host: str) -> None:
    with udp(family, host) as server, udp(family) as client:
        def serve() -> None:
            for _ in range(3):
                data, peer = server.recvfrom(65536)
                server.sendto(data, peer)
        worker = gevent.spawn(serve)
        for message in (b"one", b"", b"x" * 60000):
            client.sendto(message, server.getsockname())
            data, peer = client.recvfrom(65536)
            assert (data, peer) == (message, server.getsockname())
        worker.get(timeout=5)
        port = client.getsockname()[1]
        assert client.getsockname() == (("0.0.0.0", port) if family == socket.AF_INET else ("::", port, 0, 0))


@pytest.mark.usefixtures("stack")
def test_short_buffers_truncate_as_linux() -> None:
    with udp(host="127.0.0.1") as rx, udp(host="127.0.0.1") as tx:
        def send() -> None:
            tx.sendto(b"hello world", rx.getsockname())
        send()
        assert rx.recv(5) == b"hello"                        # the rest of the datagram is gone
        send()
        assert rx.recvmsg(5) == (b"hello", [], socket.MSG_TRUNC, tx.getsockname())
        send()
        buffer = bytearray(5)
        assert rx.recv_into(buffer, 5, socket.MSG_TRUNC) == 11     # MSG_TRUNC: the real length
        assert buffer == b"hello"
        send()
        assert rx.recvfrom_into(buffer) == (5, tx.getsockname())
        send()
        assert rx.recvfrom(5, socket.MSG_PEEK) == (b"hello", tx.getsockname())
        assert rx.recv(0) == b""                             # CPython reads nothing for zero bytes
        assert rx.recvmsg(100) == (b"hello world", [], 0, tx.getsockname())
        send()
        buffers = [bytearray(4), bytearray(4)]
        assert rx.recvmsg_into(buffers) == (8, [], socket.MSG_TRUNC, tx.getsockname())
        assert buffers == [b"hell", b"o wo"]


@pytest.mark.usefixtures("stack")
def test_sendmsg_and_the_send_errors() -> None:
    with udp(host="127.0.0.1") as rx, udp() as tx:
        assert tx.sendmsg([b"a", b"b"], [], 0, rx.getsockname()) == 2
        assert rx.recv(10) == b"ab"
        assert tx.sendto(b"c", 0, rx.getsockname()) == 1
        assert rx.recv(10) == b"c"
        assert error_of(lambda: tx.send(b"x")).errno == errno.EDESTADDRREQ
        assert error_of(lambda: tx.sendto(b"x" * 70000, rx.getsockname())).errno == errno.EMSGSIZE
        assert tx.sendto(b"x", socket.MSG_MORE, rx.getsockname()) == 1     # corked: one datagram with the next
        assert tx.sendto(b"y", rx.getsockname()) == 1
        assert rx.recv(10) == b"xy"
        for args, count in (((), 1), ((0, rx.getsockname(), 1), 4)):
            with pytest.raises(TypeError, match=rf"sendto\(\) takes 2 or 3 arguments \({count} given\)"):
                tx.sendto(b"x", *args)
        with pytest.raises(TypeError, match="sendto\\(\\): AF_INET address must be tuple, not NoneType"):
            tx.sendto(b"x", None)


@pytest.mark.usefixtures("stack")
def test_broadcast_needs_so_broadcast() -> None:
    with udp() as s:
        assert isinstance(error_of(lambda: s.sendto(b"x", ("127.255.255.255", 9))), PermissionError)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        assert s.sendto(b"x", ("127.255.255.255", 9)) == 1


# --- connected sockets ------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_a_connected_socket_talks_to_its_peer_only() -> None:
    with udp(host="127.0.0.1") as a, udp(host="127.0.0.1") as b, udp(host="127.0.0.1") as stranger:
        a.connect(b.getsockname())
        assert a.getpeername() == b.getsockname()
        assert a.getsockname()[0] == "127.0.0.1"
        a.send(b"to b")
        assert b.recvfrom(10) == (b"to b", a.getsockname())
        stranger.sendto(b"ignored", a.getsockname())
        b.sendto(b"to a", a.getsockname())
        assert a.recv(10) == b"to a"
        a.setblocking(False)
        assert error_of(lambda: a.recv(10)).errno == errno.EAGAIN


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, host", LOOPBACKS)
def test_port_unreachable_refuses_the_next_receive(family: int, host: str) -> None:
    with udp(family, host) as probe:
        closed = probe.getsockname()
    with udp(family) as s:
        s.connect(closed)
        s.send(b"anyone?")
        err = error_of(lambda: s.recv(10))
        assert isinstance(err, ConnectionRefusedError)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0        # reported once


@pytest.mark.usefixtures("stack")
def test_shutdown() -> None:
    with udp(host="127.0.0.1") as a, udp(host="127.0.0.1") as b:
        assert error_of(lambda: a.shutdown(socket.SHUT_RDWR)).errno == errno.ENOTCONN
        a.connect(b.getsockname())
        reader = gevent.spawn(lambda: a.recvfrom(10))
        gevent.sleep(0.01)
        a.shutdown(socket.SHUT_RD)
        assert reader.get(timeout=5) == (b"", None)       # a blocked receive returns, empty
        a.shutdown(socket.SHUT_WR)
        assert isinstance(error_of(lambda: a.send(b"x")), BrokenPipeError)


# --- blocking modes -------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_blocking_modes() -> None:
    with udp(host="127.0.0.1") as s:
        s.settimeout(0.05)
        err = error_of(lambda: s.recvfrom(10))
        assert type(err) is TimeoutError and err.args == ("timed out",)
        s.setblocking(False)
        err = error_of(lambda: s.recv(10))
        assert isinstance(err, BlockingIOError) and err.args == (errno.EAGAIN, "Resource temporarily unavailable")
        s.setblocking(True)
        assert isinstance(error_of(lambda: s.recvmsg(10, 0, socket.MSG_DONTWAIT)), BlockingIOError)
        with udp() as tx:
            late = gevent.spawn_later(0.02, tx.sendto, b"late", s.getsockname())
            assert s.recv(10) == b"late"                      # blocked until it came
            late.get()


# --- dual stack -------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_ipv6_socket_exchanges_with_ipv4_through_mapped_addresses() -> None:
    with udp(socket.AF_INET6, "::") as server, udp(socket.AF_INET, "127.0.0.1") as v4, udp(socket.AF_INET6) as v6:
        port = server.getsockname()[1]
        v4.sendto(b"from v4", ("127.0.0.1", port))
        data, peer = server.recvfrom(100)
        assert (data, peer) == (b"from v4", ("::ffff:127.0.0.1", v4.getsockname()[1], 0, 0))
        server.sendto(b"reply", peer)
        assert v4.recvfrom(100) == (b"reply", ("127.0.0.1", port))
        v6.sendto(b"from v6", ("::1", port))
        data, peer = server.recvfrom(100)
        assert (data, peer[0]) == (b"from v6", "::1")
        assert server.getsockname() == ("::", port, 0, 0)


@pytest.mark.usefixtures("stack")
def test_unbound_ipv6_socket_sends_to_a_mapped_address() -> None:
    with udp(socket.AF_INET, "127.0.0.1") as v4, udp(socket.AF_INET6) as s:
        s.sendto(b"hi", ("::ffff:127.0.0.1", v4.getsockname()[1]))
        data, peer = v4.recvfrom(10)
        assert data == b"hi" and s.getsockname() == ("::", peer[1], 0, 0)
        v4.sendto(b"back", peer)
        assert s.recvfrom(10) == (b"back", ("::ffff:127.0.0.1", v4.getsockname()[1], 0, 0))
    with udp(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        assert error_of(lambda: s.sendto(b"x", ("::ffff:127.0.0.1", 9))).errno == errno.ENETUNREACH
        assert error_of(lambda: s.bind(("::ffff:127.0.0.1", 0))).errno == errno.EINVAL


@pytest.mark.usefixtures("stack")
def test_ipv6_socket_bound_to_a_mapped_address_is_ipv4() -> None:
    with udp(socket.AF_INET6) as s, udp(socket.AF_INET, "127.0.0.1") as v4:
        s.bind(("::ffff:127.0.0.1", 0))
        port = s.getsockname()[1]
        assert s.getsockname() == ("::ffff:127.0.0.1", port, 0, 0)
        v4.sendto(b"x", ("127.0.0.1", port))
        assert s.recvfrom(10) == (b"x", ("::ffff:127.0.0.1", v4.getsockname()[1], 0, 0))
        assert error_of(lambda: s.sendto(b"x", ("::1", 9))).errno == errno.EAFNOSUPPORT


# --- options ------------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
def test_datagram_options() -> None:
    with udp() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 8192         # the minimum, doubled
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 8
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, -1)
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 5)
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4) == socket.inet_aton("127.0.0.1")
        for call, code in ((lambda: s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 256), errno.EINVAL),
                           (lambda: s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                                 socket.inet_aton("192.0.2.1")), errno.EADDRNOTAVAIL),
                           (lambda: s.getsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP), errno.ENOPROTOOPT)):
            assert error_of(call).errno == code
    with udp(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, 1)
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF) == 1
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 4)
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS) == 4
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0x28)
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) == 0x28
        for call, code in ((lambda: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, 999), errno.ENODEV),
                           (lambda: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 2), errno.EINVAL),
                           (lambda: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 256), errno.EINVAL)):
            assert error_of(call).errno == code


@pytest.mark.usefixtures("stack")
def test_ipv4_multicast_over_the_loopback() -> None:
    group = socket.inet_aton("239.1.2.3")
    lo = socket.inet_aton("127.0.0.1")
    with udp() as member, udp() as sender:
        member.bind(("0.0.0.0", 0))
        port = member.getsockname()[1]
        member.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group + lo)
        assert error_of(lambda: member.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group + lo)).errno \
            == errno.EADDRINUSE
        for value, code in ((socket.inet_aton("10.1.2.3") + lo, errno.EINVAL), (group, errno.EINVAL),
                            (group + socket.inet_aton("192.0.2.1"), errno.ENODEV)):
            with pytest.raises(OSError) as info:
                member.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, value)
            assert info.value.errno == code
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, lo)
        sender.sendto(b"to the group", ("239.1.2.3", port))
        assert member.recvfrom(100) == (b"to the group", ("127.0.0.1", sender.getsockname()[1]))
        mreqn = group + bytes(4) + struct.pack("i", 1)                  # struct ip_mreqn, by interface index
        member.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreqn)
        assert error_of(lambda: member.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreqn)).errno \
            == errno.EADDRNOTAVAIL


@pytest.mark.usefixtures("stack")
def test_ipv6_group_membership() -> None:
    mreq = socket.inet_pton(socket.AF_INET6, "ff02::1:3") + struct.pack("I", 1)
    with udp(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        unicast = socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack("I", 1)
        for value, code in ((mreq, errno.EADDRINUSE), (unicast, errno.EINVAL), (mreq[:16], errno.EINVAL)):
            with pytest.raises(OSError) as info:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, value)
            assert info.value.errno == code
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, mreq)
        assert error_of(lambda: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, mreq)).errno \
            == errno.EADDRNOTAVAIL


@pytest.mark.usefixtures("stack")
def test_address_in_use_and_reuse() -> None:
    with udp(host="127.0.0.1") as a, udp() as b:
        assert error_of(lambda: b.bind(a.getsockname())).errno == errno.EADDRINUSE
    with udp() as a, udp() as b:
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        a.bind(("127.0.0.1", 0))
        b.bind(a.getsockname())


# --- ping sockets -------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("family, proto, host, request_type, reply_type", [
    (socket.AF_INET, socket.IPPROTO_ICMP, "127.0.0.1", 8, 0),
    (socket.AF_INET6, socket.IPPROTO_ICMPV6, "::1", 128, 129),
])
def test_ping(family: int, proto: int, host: str, request_type: int, reply_type: int) -> None:
    with NetsockSocket(family, socket.SOCK_DGRAM, proto) as s:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == proto
        s.sendto(struct.pack("!BBHHH", request_type, 0, 0, 0, 7) + b"payload", (host, 0))
        reply, peer = s.recvfrom(100)
        assert reply[0] == reply_type and reply[6:8] == b"\0\x07" and reply[8:] == b"payload"
        assert reply[4:6] == struct.pack("!H", s.getsockname()[1])       # the identifier is the "port"
        assert peer[:2] == (host, 0)
        assert error_of(lambda: s.sendto(b"\x00" * 8, (host, 0))).errno == errno.EINVAL    # echo requests only


# IP_MTU_DISCOVER (10) / IP_MTU (14) and IPV6_MTU_DISCOVER (23) / IPV6_MTU (24): <linux/in.h>, <linux/in6.h>.
_PATH_MTU_CASES = [
    *((socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_IP, 10, v, None) for v in (-1, 0, 1, 2, 3, 4, 5, 6)),
    *((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_IP, 10, v, None) for v in (-1, 0, 2, 5, 6)),
    *((socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_IPV6, 23, v, None) for v in (-1, 0, 2, 5, 6)),
    *((socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_IP, 10, v, None) for v in (0, 2)),
    (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_IP, 14, None, None),
    (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_IP, 14, None, ("127.0.0.1", 9)),
    (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_IP, 14, 1000, None),
    (socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_IPV6, 24, None, None),
    (socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_IPV6, 24, None, ("::1", 9)),
]


def path_mtu_outcome(sock, level: int, option: int, value: int | None, peer: tuple | None) -> tuple:
    try:
        if peer is not None:
            sock.connect(peer)
        if value is not None:
            sock.setsockopt(level, option, value)
        return "reads", sock.getsockopt(level, option)
    except OSError as error:
        return "fails", error.errno


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize(("family", "kind", "level", "option", "value", "peer"), _PATH_MTU_CASES)
def test_path_mtu_options_as_on_the_kernel(family: int, kind: int, level: int, option: int, value: int | None,
                                           peer: tuple | None) -> None:
    with closing(_socket.socket(family, kind)) as kernel, NetsockSocket(family, kind) as ours:
        assert path_mtu_outcome(ours, level, option, value, peer) == \
            path_mtu_outcome(kernel, level, option, value, peer)
