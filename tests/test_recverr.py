"""IP_RECVERR and IPV6_RECVERR: ICMP errors about what a datagram socket sent, queued for
recvmsg(MSG_ERRQUEUE) as Linux's ip_icmp_error / ipv6_icmp_error queue them. Compared with kernel
sockets over loopback (a UDP datagram to a closed port), then every ICMP error a stack can receive
(Linux's icmp_err_convert / icmpv6_err_convert say the errno), then traceroute's use: a ping socket
with a TTL of 1 learns the router's address from the error queue."""

from __future__ import annotations

import errno
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import gevent
import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6ParamProblem, ICMPv6TimeExceeded, IPv6
from scapy.packet import Raw

from netsock.adapter import NetsockSocket
from netsock.patches import select as patched_select
from netsock.privnet import Host, Network
from netsock.stack.iptables import Reject, RejectWith, Rule
from netsock.tcpip import TCP_PROTOCOL_NUMBER, Error, ErrWouldBlock, FullAddress, SockOpt
from netsock.tcpip.options import PMTUDISC_DONT

from conftest import PEER, StackHarness, addr, to
from test_ipv6 import PEER as PEER6
from test_ipv6 import V6Harness, a6

IP_RECVERR, IPV6_RECVERR, SO_SELECT_ERR_QUEUE = 11, 25, 45
EXTENDED_ERR = struct.Struct("=IBBBBII")
MSG_ERRQUEUE, MSG_TRUNC = socket.MSG_ERRQUEUE, socket.MSG_TRUNC


def outcome(call: Any) -> Any:
    try:
        return call()
    except OSError as error:
        return errno.errorcode[error.errno]


def loopback_trace(make: Any, family: int, host: str) -> list[Any]:
    """Datagrams to a closed port with the option on and off; what each call answers."""
    level, option = (socket.IPPROTO_IP, IP_RECVERR) if family == socket.AF_INET else (socket.IPPROTO_IPV6,
                                                                                     IPV6_RECVERR)
    with closing(make(family, socket.SOCK_DGRAM)) as closed:
        closed.bind((host, 0))
        port = closed.getsockname()[1]
    trace: list[Any] = []
    with closing(make(family, socket.SOCK_DGRAM)) as sock:
        sock.bind((host, 0))
        trace.append(sock.getsockopt(level, option))
        sock.setsockopt(level, option, 1)
        trace.append(sock.getsockopt(level, option))
        sock.sendto(b"hello-payload", (host, port))
        time.sleep(0.05)
        trace.append(outcome(lambda: sock.recv(100, socket.MSG_DONTWAIT)))     # the error, once
        data, ancdata, flags, address = sock.recvmsg(5, 256, MSG_ERRQUEUE)
        trace.append((data, ancdata, flags, address[0], address[1] == port))
        trace.append(outcome(lambda: sock.recvmsg(5, 256, MSG_ERRQUEUE)))
        trace.append(sock.sendto(b"x", (host, port)))
        time.sleep(0.05)
        trace.append(outcome(lambda: sock.sendto(b"yy", (host, port))))       # the error fails this send
        trace.append(sock.sendto(b"zz", (host, port)))
        time.sleep(0.05)
        trace.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        trace.append(sock.recvmsg(10, 0, MSG_ERRQUEUE)[::2])
        trace.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))    # the next one's errno
        trace.append(sock.recvfrom(10, MSG_ERRQUEUE)[0])
        trace.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))    # none left
        sock.sendto(b"q", (host, port))
        time.sleep(0.05)
        sock.setsockopt(level, option, 0)                                     # purges the queue
        trace.append(outcome(lambda: sock.recvmsg(10, 256, MSG_ERRQUEUE)))
    return trace


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_as_the_kernel_queues_a_port_unreachable(family: int, host: str) -> None:
    kernel, netsock = loopback_trace(socket.socket, family, host), loopback_trace(NetsockSocket, family, host)
    assert netsock == kernel
    data, ancdata, flags, _, _ = netsock[3]
    assert (data, flags) == (b"hello", MSG_ERRQUEUE | MSG_TRUNC)
    [(level, kind, message)] = ancdata
    err, origin, icmp_type, code, _, info, _ = EXTENDED_ERR.unpack_from(message)
    assert (err, origin, icmp_type, code, info) == ((errno.ECONNREFUSED, 2, 3, 3, 0) if family == socket.AF_INET
                                                   else (errno.ECONNREFUSED, 3, 1, 4, 0))


# (type, code) -> ee_errno, ee_info (Linux's icmp_err_convert and __udp4_lib_err), for every ICMP error
# a netsock stack takes up: transient ones too, which only IP_RECVERR reports.
IPV4_ERRORS = {
    (3, 0): (errno.ENETUNREACH, 0), (3, 1): (errno.EHOSTUNREACH, 0), (3, 2): (errno.ENOPROTOOPT, 0),
    (3, 3): (errno.ECONNREFUSED, 0), (3, 4): (errno.EMSGSIZE, 1000), (3, 6): (errno.ENETUNREACH, 0),
    (3, 7): (errno.EHOSTDOWN, 0), (3, 9): (errno.ENETUNREACH, 0), (3, 10): (errno.EHOSTUNREACH, 0),
    (3, 13): (errno.EHOSTUNREACH, 0), (11, 0): (errno.EHOSTUNREACH, 0), (12, 0): (errno.EPROTO, 20),
}


def ipv4_error(sent: IP, icmp_type: int, code: int) -> IP:
    quoted = bytes(sent)[:sent.ihl * 4 + 8 + 4]
    rest = {"ptr": 20} if icmp_type == 12 else {"nexthopmtu": 1000} if (icmp_type, code) == (3, 4) else {}
    return IP(src=PEER, dst=sent.src) / ICMP(type=icmp_type, code=code, **rest) / Raw(quoted)


@pytest.mark.parametrize(("icmp_type", "code"), sorted(IPV4_ERRORS))
@pytest.mark.parametrize("connected", [True, False])
def test_every_ipv4_error_is_queued(harness: StackHarness, icmp_type: int, code: int, connected: bool) -> None:
    ep = harness.udp()
    ep.set_sock_opt(SockOpt.RECEIVE_ERRORS, True)
    if connected:
        ep.connect(FullAddress(0, addr(PEER), 9))
        ep.write(b"hello123")
    else:
        ep.write(b"hello123", to(PEER, 9))
    harness.inject(ipv4_error(harness.sent_one(), icmp_type, code))
    expected_errno, info = IPV4_ERRORS[(icmp_type, code)]
    with pytest.raises(Error) as raised:            # the socket's error, once
        ep.read()
    assert raised.value.errno == expected_errno
    entry = ep.read_error()
    assert (entry.error.errno, entry.origin, entry.icmp_type, entry.icmp_code, entry.info) == \
        (expected_errno, 2, icmp_type, code, info)
    assert (entry.offender, bytes(entry.destination.addr), entry.destination.port) == (addr(PEER), addr(PEER), 9)
    assert entry.payload == b"hell"                  # what the 12 quoted transport bytes held after the header
    with pytest.raises(ErrWouldBlock):
        ep.read_error()


def test_a_frag_needed_with_pmtudisc_dont_is_dropped_even_so(harness: StackHarness) -> None:
    ep = harness.udp()
    ep.set_sock_opt(SockOpt.RECEIVE_ERRORS, True)
    ep.set_sock_opt(SockOpt.MTU_DISCOVER, PMTUDISC_DONT)
    ep.connect(FullAddress(0, addr(PEER), 9))
    ep.write(b"hello123")
    harness.inject(ipv4_error(harness.sent_one(), 3, 4))
    with pytest.raises(ErrWouldBlock):
        ep.read_error()


IPV6_ERRORS = [
    (ICMPv6DestUnreach(code=0), errno.ENETUNREACH, 0), (ICMPv6DestUnreach(code=1), errno.EACCES, 0),
    (ICMPv6DestUnreach(code=3), errno.EHOSTUNREACH, 0), (ICMPv6DestUnreach(code=4), errno.ECONNREFUSED, 0),
    (ICMPv6PacketTooBig(mtu=1280), errno.EMSGSIZE, 1280), (ICMPv6TimeExceeded(code=0), errno.EHOSTUNREACH, 0),
    (ICMPv6ParamProblem(code=0, ptr=4), errno.EPROTO, 4),
]


@pytest.mark.parametrize(("message", "expected", "info"), IPV6_ERRORS, ids=[m.summary() for m, _, _ in IPV6_ERRORS])
def test_every_ipv6_error_is_queued(message: Any, expected: int, info: int) -> None:
    h = V6Harness()
    ep = h.udp()
    ep.set_sock_opt(SockOpt.RECEIVE_ERRORS, True)
    ep.connect(FullAddress(0, a6(PEER6), 9))
    ep.write(b"x" * 1400)
    sent = h.sent_one()
    h.inject(IPv6(src=PEER6, dst=sent.src) / message / Raw(bytes(sent)[:1232]))
    entry = ep.read_error()
    assert (entry.error.errno, entry.origin, entry.icmp_type, entry.icmp_code, entry.info) == \
        (expected, 3, message.type, message.code, info)
    assert (entry.offender, bytes(entry.destination.addr), entry.destination.port) == (a6(PEER6), a6(PEER6), 9)
    assert entry.payload == b"x" * (1232 - 40 - 8)


def test_traceroute_with_a_ping_socket() -> None:
    """TTL 1: the router's time exceeded is queued (offender the router, EHOSTUNREACH, the echo request
    quoted); TTL 2: the echo comes back."""
    with Network(seed=3) as net:
        left, right = net.switch("left", "192.0.2.0/24"), net.switch("right", "198.51.100.0/24")
        router = net.router("router.test", left, right)
        server = net.host("server.test", right)
        client = net.host("client.test", left)

        def probe() -> list[Any]:
            hops = []
            with NetsockSocket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as sock:
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
                sock.settimeout(5)
                for ttl in (1, 2):
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
                    sock.sendto(bytes([8, 0, 0, 0, 0, 0, 0, ttl]) + b"probe", (server.address, 0))
                    deadline = time.monotonic() + 5
                    while True:
                        try:
                            data, ancdata, flags, _ = sock.recvmsg(100, 256, MSG_ERRQUEUE)
                        except BlockingIOError:
                            pass
                        else:
                            [(_, _, message)] = ancdata
                            fields = EXTENDED_ERR.unpack_from(message)
                            hops.append(("error", fields[:4], socket.inet_ntoa(message[20:24]), data[0], flags))
                            break
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                            try:
                                reply, sender = sock.recvfrom(100, socket.MSG_DONTWAIT)
                            except BlockingIOError:
                                pass
                            else:
                                hops.append(("reply", sender[0], reply[0], reply[-5:]))
                                break
                        assert time.monotonic() < deadline
                        gevent.sleep(0.01)     # (the error queue is never waited on)
            return hops

        hops = client.spawn(probe).get(timeout=10)
    assert hops == [("error", (errno.EHOSTUNREACH, 2, 11, 0), router.addresses[left], 8, MSG_ERRQUEUE),
                    ("reply", server.address, 0, b"probe")]


@contextmanager
def queued_error(make: Any) -> Iterator[Any]:
    """A UDP socket (``make``'s) with IP_RECVERR whose datagram to a closed port came back as an ICMP error,
    queued; its SO_ERROR already read."""
    with closing(make(socket.AF_INET, socket.SOCK_DGRAM)) as sock, \
            closing(make(socket.AF_INET, socket.SOCK_DGRAM)) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.sendto(b"a", ("127.0.0.1", port))
        gevent.sleep(0.05) if make is NetsockSocket else time.sleep(0.05)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
        yield sock


@pytest.mark.usefixtures("stack")
def test_a_queued_error_is_not_input() -> None:
    """Once the socket's error has been read, what is left on the queue makes poll say POLLERR, not
    POLLIN (as Linux's udp_poll), and a blocking recv waits for data rather than spin."""
    with queued_error(NetsockSocket) as sock:
        poller = patched_select.poll()
        poller.register(sock, select.POLLIN | select.POLLOUT)
        assert poller.poll(0) == [(sock.fileno(), select.POLLOUT | select.POLLERR)]
        sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        assert sock.recvmsg(10, 0, MSG_ERRQUEUE)[0] == b"a"


def error_readiness(make: Any, poll: Any) -> list[Any]:
    """What poll says for POLLPRI | POLLIN with an error queued, without and with SO_SELECT_ERR_QUEUE, then with
    it once the queue is read; and what select's exceptional set says."""
    seen = []
    with queued_error(make) as sock:
        poller = poll()
        poller.register(sock, select.POLLPRI | select.POLLIN)
        seen.append(poller.poll(0))
        sock.setsockopt(socket.SOL_SOCKET, SO_SELECT_ERR_QUEUE, 1)
        seen += [sock.getsockopt(socket.SOL_SOCKET, SO_SELECT_ERR_QUEUE), poller.poll(0)]
        seen.append(len((patched_select.select if make is NetsockSocket else select.select)([], [], [sock], 0)[2]))
        sock.recvmsg(10, 0, MSG_ERRQUEUE)
        seen.append(poller.poll(0))
    return [[events for _, events in item] if isinstance(item, list) else item for item in seen]   # (not the fds)


@pytest.mark.usefixtures("stack")
def test_select_err_queue_makes_a_queued_error_urgent_as_on_the_kernel() -> None:
    ours = error_readiness(NetsockSocket, patched_select.poll)
    assert ours == error_readiness(socket.socket, select.poll)
    assert ours[2] == [select.POLLPRI | select.POLLERR]


def recverr_option(family: int) -> tuple[int, int]:
    """(level, name) of the family's RECVERR option."""
    return (socket.IPPROTO_IP, IP_RECVERR) if family == socket.AF_INET else (socket.IPPROTO_IPV6, IPV6_RECVERR)


@contextmanager
def routed(family: int, seed: int) -> Iterator[tuple[Host, Host, Host]]:
    """(client.test, router.test, server.test): the client and the server on two subnets of ``family``, the
    router between them."""
    subnets = ("192.0.2.0/24", "198.51.100.0/24") if family == socket.AF_INET else ("2001:db8:1::/64",
                                                                                   "2001:db8:2::/64")
    with Network(seed=seed) as net:
        left, right = net.switch("left", subnets[0]), net.switch("right", subnets[1])
        router = net.router("router.test", left, right)
        yield net.host("client.test", left), router, net.host("server.test", right)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("recverr", [True, False], ids=["recverr", "plain"])
def test_tcp_hears_a_soft_error_at_once_with_recverr(family: int, recverr: bool) -> None:
    """A router starts refusing an established connection's packets (REJECT, host unreachable): with
    IP_RECVERR / IPV6_RECVERR the client's next recv fails with EHOSTUNREACH at once and the connection
    lives on; without, the error is only kept for a timeout and recv just waits."""
    level, option = recverr_option(family)
    with routed(family, seed=5) as (client, router, server):
        listener = NetsockSocket(family, stack=server.stack)
        listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 80))
        listener.listen()

        def talk() -> Any:
            with NetsockSocket(family) as sock:
                sock.setsockopt(level, option, int(recverr))
                sock.connect(("server.test", 80))
                table = router.stack.iptables.ipv6 if family == socket.AF_INET6 else router.stack.iptables.ipv4
                table.append("FORWARD", Rule(Reject(RejectWith.HOST_UNREACHABLE), protocol=TCP_PROTOCOL_NUMBER))
                sock.sendall(b"refused on the way")
                sock.settimeout(1)
                try:
                    sock.recv(10)
                except OSError as error:
                    return errno.errorcode.get(error.errno, type(error).__name__), \
                        sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                return "no error"

        outcome = client.spawn(talk).get(timeout=10)
        listener.close()
    assert outcome == (("EHOSTUNREACH", 0) if recverr else ("TimeoutError", 0))


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("recverr", [True, False], ids=["recverr", "plain"])
def test_a_failed_connect_leaves_its_error_queued(family: int, recverr: bool) -> None:
    """The ICMP error that fails a TCP connect is queued, IP_RECVERR or not (Linux's tcp_v4_err and
    tcp_v6_err call ip_icmp_error / ipv6_icmp_error unconditionally in SYN-SENT; measured on Linux 6 with a
    namespace REJECTing the SYN): the socket is readable, writable and in error; recvmsg(MSG_ERRQUEUE) hands
    out the quoted SYN, from the address and port connected to, with the extended error; SO_ERROR still
    says EHOSTUNREACH afterwards; a second read is EAGAIN."""
    level, option = recverr_option(family)
    with routed(family, seed=6) as (client, router, server):
        table = router.stack.iptables.ipv6 if family == socket.AF_INET6 else router.stack.iptables.ipv4
        table.append("FORWARD", Rule(Reject(RejectWith.HOST_UNREACHABLE), protocol=TCP_PROTOCOL_NUMBER))
        server_address, router_address = server.address, router.addresses[next(iter(client.addresses))]

        def connect() -> Any:
            with NetsockSocket(family) as sock:
                sock.setsockopt(level, option, int(recverr))
                sock.setblocking(False)
                assert sock.connect_ex((server_address, 80)) == errno.EINPROGRESS
                gevent.sleep(0.2)
                ready = patched_select.select([sock], [sock], [], 0)
                data, ancdata, flags, sender = sock.recvmsg(100, 512, MSG_ERRQUEUE)
                again = outcome(lambda: sock.recvmsg(100, 512, MSG_ERRQUEUE))
                return ready != ([], [], []), data, ancdata, flags, sender, again, \
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), sock.getsockname()[1]

        readable, data, ancdata, flags, sender, again, error, port = client.spawn(connect).get(timeout=10)
    assert readable
    assert struct.unpack("!HH", data[:4]) == (port, 80) and data[13] & 0x02   # the SYN, from its TCP header on
    assert flags == MSG_ERRQUEUE and sender[:2] == (server_address, 80)
    [(cmsg_level, cmsg_type, extended)] = ancdata
    expected = (errno.EHOSTUNREACH, 2, 3, 1) if family == socket.AF_INET else (errno.EHOSTUNREACH, 3, 1, 3)
    assert (cmsg_level, cmsg_type) == (level, option) and EXTENDED_ERR.unpack_from(extended)[:4] == expected
    offender = socket.inet_ntop(family, extended[20:24] if family == socket.AF_INET else extended[24:40])
    assert offender == router_address
    assert again == "EAGAIN" and error == errno.EHOSTUNREACH
